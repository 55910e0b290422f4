"""The train stage as a pipeline task."""

from __future__ import annotations

from pathlib import Path

from mlsec.config import contract_path
from mlsec.ingest.contract import load_contract
from mlsec.train import stage


def run(dataset: Path, contract: str, model_name: str, epochs: int, model_out: Path, evidence_out: Path) -> None:
    params = stage.TrainParams(epochs=epochs)
    result = stage.run(dataset, load_contract(Path(contract) if contract else contract_path()),
                       model_out, model_name, params)
    result.evidence.write(evidence_out)
