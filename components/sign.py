from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def sign(model: Input[Model], data_evidence: Input[Artifact], decisions: Input[Artifact], model_name: str,
         invocation: str, signed: Output[Model], evidence: Output[Artifact]) -> None:
    """Sign the model with model-signing and sign its SLSA provenance (dataset + gate decisions)."""
    from pathlib import Path

    from mlsec.sign.task import run

    run(Path(model.path), Path(data_evidence.path), Path(decisions.path), model_name, invocation,
        Path(signed.path), Path(evidence.path))
