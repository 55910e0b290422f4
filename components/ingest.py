from kfp import dsl
from kfp.dsl import Artifact, Dataset, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(source: str, contract: str, dataset: Output[Dataset], evidence: Output[Artifact]) -> None:
    """Validate, PII-protect and fingerprint a dataset (empty source/contract: the bundled sample)."""
    from pathlib import Path

    from mlsec.ingest.task import run

    run(source, contract, Path(dataset.path), Path(evidence.path))
