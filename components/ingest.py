from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(source: str, contract: str, dataset: Output[Dataset], evidence: Output[Artifact], model_name: str = "",
           stage: str = "dev") -> None:
    """Validate, PII-protect, fingerprint and screen a dataset (empty source/contract: the bundled sample)
    against the signed reference profile of model_name's version at stage."""
    from pathlib import Path

    from mlsec.ingest.task import run

    run(source, contract, Path(dataset.path), Path(evidence.path), model_name, stage)
