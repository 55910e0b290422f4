"""The train stage as a pipeline task."""

from __future__ import annotations

from pathlib import Path

from mlsec.config import contract_path
from mlsec.ingest.contract import load_contract
from mlsec.train import stage, watermark
from mlsec.train.privacy import DPConfig


def run(dataset: Path, contract: str, model_name: str, epochs: int, model_out: Path, evidence_out: Path, *,
        adversarial_epsilon: float = 0.0, dp_target_epsilon: float = 0.0, dp_delta: float = 1e-5,
        base_model: str = "", allow_pickle_base: bool = False) -> None:
    """Zero turns an option off. The watermark key is read from the file MLSEC_WATERMARK_KEY_FILE names."""
    params = stage.TrainParams(
        epochs=epochs,
        adversarial_epsilon=adversarial_epsilon or None,
        dp=DPConfig(target_epsilon=dp_target_epsilon, delta=dp_delta) if dp_target_epsilon > 0 else None,
        watermark_key=watermark.load_key(),
        base_model=Path(base_model) if base_model else None,
        allow_pickle_base=allow_pickle_base,
    )
    result = stage.run(dataset, load_contract(Path(contract) if contract else contract_path()),
                       model_out, model_name, params)
    result.evidence.write(evidence_out)
