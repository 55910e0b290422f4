from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(source: str, contract: str, dataset: Output[Dataset], evidence: Output[Artifact], profile: Output[Artifact],
           model_name: str = "", stage: str = "dev") -> None:
    """Validate, PII-protect, fingerprint and screen a dataset (empty source/contract: the bundled sample)
    against the signed reference profile of model_name's version at stage. profile: the dataset's own
    profile, which the evidence names by digest (promote stores it as the next reference)."""
    import os
    from pathlib import Path

    from mlsec.ingest.task import run

    # This task's registry identity reads the signed reference and nothing else (seaweed.reference_actions).
    if reader := os.environ.get("MLSEC_REFERENCE_S3_CREDENTIALS_DIR"):
        os.environ["MLSEC_S3_CREDENTIALS_DIR"] = reader

    run(source, contract, Path(dataset.path), Path(evidence.path), model_name, stage, Path(profile.path))
