"""The ingest stage as a pipeline task. It does not fail: a bad source is a data-gate deny with the reason.

The dataset artifact is the clean dataset (0600), or an empty 0600 file when the data was refused (the
evidence's subject is then the digest of no bytes), so the artifact exists for KFP either way. The profile
artifact is the clean dataset's reference profile as canonical JSON (the evidence names it by digest), or
an empty file likewise.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mlsec.config import contract_path
from mlsec.fsutil import write_secret
from mlsec.ingest import stage


def run(source: str, contract: str, dataset_out: Path, evidence_out: Path, model_name: str = "",
        stage_name: str = "dev", profile_out: Path | None = None) -> None:
    """model_name: screen against the signed reference of the version `stage_name` follows (else the sample's)."""
    from mlsec.registry.reference import for_ingest, write_profile

    work = dataset_out.with_name(dataset_out.name + ".work")
    try:
        reference = for_ingest(model_name, stage_name) if model_name else None
        result = stage.run(source, Path(contract) if contract else contract_path(), work, name="dataset",
                           reference=reference)
        if result.dataset is not None:
            os.replace(result.dataset, dataset_out)  # same directory: a rename, the 0600 file itself
        else:
            write_secret(dataset_out, b"")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if profile_out is not None:
        write_profile(profile_out, result.profile)
    result.evidence.write(evidence_out)
