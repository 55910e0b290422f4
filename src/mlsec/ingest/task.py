"""The ingest stage as a pipeline task."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlsec.config import contract_path, sample_dataset
from mlsec.ingest import stage


def run(source: str, contract: str, dataset_out: Path, evidence_out: Path) -> None:
    work = dataset_out.with_name(dataset_out.name + ".work")
    result = stage.run(source or str(sample_dataset()), Path(contract) if contract else contract_path(), work,
                       name="dataset")
    shutil.move(result.dataset, dataset_out)
    shutil.rmtree(work, ignore_errors=True)
    result.evidence.write(evidence_out)
