from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(signed: Input[Model], training_evidence: Input[Artifact], data_evidence: Input[Artifact],
            profile: Input[Artifact], decisions: Input[Artifact],
            model_name: str, stage: str, author: str, environment: str,
            decisions_out: Output[Artifact], release: Output[Artifact], evidence: Output[Artifact]) -> None:
    """Register the signed model in the S3 registry and move the stage alias if the promotion gate allows.
    evidence is what the promotion gate judged (the registry's own verification of the version). profile is
    ingest's: stored as the next ingest's reference only if the judged data evidence names its digest."""
    from pathlib import Path

    from mlsec.registry.task import run

    run(Path(signed.path), Path(training_evidence.path), Path(data_evidence.path), Path(decisions.path), model_name, stage, author,
        Path(decisions_out.path), Path(release.path), environment or None, Path(evidence.path), Path(profile.path))
