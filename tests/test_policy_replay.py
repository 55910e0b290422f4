"""`mlsec policy replay`: past runs' decisions judged again under changed policies, before a rollout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlsec.cli import main
from mlsec.config import policy_dir
from mlsec.gates.attest import write_history
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.replay import replay_run

from conftest import Signed


@pytest.fixture
def run(tmp_path: Path, signed: Signed) -> Path:
    """A run directory laid out as kfp.local leaves it: each task's outputs under its own folder."""
    run = tmp_path / "runs" / "mlsec-secure-pipeline-1"
    data_d, train_d, sign_d = signed.attested
    signed.trained.data_evidence.write(run / "ingest" / "evidence")
    signed.trained.training_evidence.write(run / "train" / "evidence")
    write_history(run / "gate" / "decisions", [data_d])
    write_history(run / "gate-2" / "decisions", [data_d, train_d])
    write_history(run / "gate-3" / "decisions", [data_d, train_d, sign_d])  # its evidence is not kept here
    return run


@pytest.fixture
def stricter(tmp_path: Path) -> Path:
    policies = Path(shutil.copytree(policy_dir(), tmp_path / "policies"))
    dev = json.loads((policies / "data" / "dev.json").read_text())
    dev["dev"]["training"]["min_accuracy"] = 0.999
    (policies / "data" / "dev.json").write_text(json.dumps(dev))
    return policies


def test_unchanged_policies_reproduce_every_recorded_decision(run: Path, engine: InProcessEngine) -> None:
    replayed = replay_run(run, engine)
    assert [r.recorded.gate for r in replayed] == ["data", "training", "signing"]
    assert [r.changed for r in replayed] == [False, False, False]
    assert replayed[2].now is None  # no signing evidence in this run directory


def test_a_raised_threshold_shows_which_past_decisions_flip(run: Path, stricter: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    engine = InProcessEngine(stricter)
    try:
        replayed = replay_run(run, engine)
    finally:
        engine.close()
    data, training, _ = replayed
    assert not data.changed and training.changed
    assert training.now is not None and not training.now.allow
    assert any("below dev minimum 0.999" in r for r in training.now.deny)

    args = ["policy", "replay", "--runs", str(run.parent), "--policies", str(stricter)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "training   dev      ALLOW -> DENY  accuracy" in out and "signing" in out
    assert "replayed 3 decisions from 1 runs" in out and "1 would change, 1 without their evidence" in out
    assert main([*args, "--fail-on-change"]) == 1
    assert main(["policy", "replay", "--runs", str(run.parent), "--fail-on-change"]) == 0
