"""The whole chain under kfp.local, against the real OPA engine and a real SeaweedFS server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlsec.config import policy_dir, sample_dataset
from mlsec.gates.audit import AuditLog
from mlsec.gates.engine import InProcessEngine
from mlsec.runner import RunResult, local_services, run_pipeline

pytestmark = pytest.mark.slow

PARAMS = {"model_name": "credit", "stage": "dev", "environment": "dev", "epochs": 8}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("home")
    with local_services(root):
        yield root


@pytest.fixture(scope="module")
def good_run(home: Path) -> RunResult:
    return run_pipeline(home, {**PARAMS, "source": ""})


def test_good_run_passes_every_gate_and_serves(good_run: RunResult, home: Path) -> None:
    assert good_run.succeeded, good_run.error
    assert [(d["gate"], d["result"]) for d in good_run.decisions] == [
        ("data", "allow"), ("training", "allow"), ("signing", "allow"), ("promotion", "allow"), ("deployment", "allow")]
    (prediction,) = good_run.prediction["output"]["predictions"]
    assert prediction["label"] in (0, 1) and 0 <= prediction["probability"] <= 1
    assert AuditLog(home / "audit" / "decisions.jsonl").verify() >= 5


def test_the_accepted_datasets_profile_is_the_next_ingests_reference(good_run: RunResult) -> None:
    """Ingest writes the dataset's profile as an artifact of its own, named by digest in the data evidence;
    promote stores it signed beside the model, and the next ingest for the model screens against it."""
    from mlsec.digest import sha256_file
    from mlsec.ingest.evidence import DataEvidence
    from mlsec.registry.reference import for_ingest

    assert good_run.succeeded and good_run.run_dir is not None, good_run.error
    evidence = DataEvidence.model_validate_json((good_run.run_dir / "ingest" / "evidence").read_bytes())
    assert evidence.poisoning.profile_sha256 == sha256_file(good_run.run_dir / "ingest" / "profile")
    got = for_ingest("credit", "dev")
    assert got.used.source == "registry" and got.used.sha256 == evidence.poisoning.profile_sha256


def test_every_decision_can_be_judged_again_from_the_run(good_run: RunResult, engine: InProcessEngine) -> None:
    """The run keeps each gate's evidence and history: `mlsec policy replay` reproduces every decision."""
    from mlsec.gates.replay import replay_run

    assert good_run.run_dir is not None
    replayed = replay_run(good_run.run_dir, engine)
    assert [r.recorded.gate for r in replayed] == ["data", "training", "signing", "promotion", "deployment"]
    assert all(r.now is not None and not r.changed for r in replayed)


def test_every_decision_is_about_the_same_model(good_run: RunResult) -> None:
    data, *model_decisions = good_run.decisions
    assert len({d["subject"] for d in model_decisions}) == 1
    assert data["subject"] != model_decisions[0]["subject"]  # the data gate judged the dataset


def test_served_server_was_stopped(good_run: RunResult) -> None:
    from mlsec.serve.deploy import running

    assert good_run.endpoint is not None and not running(good_run.endpoint["pid"])


def test_contract_breaking_dataset_stops_at_the_data_gate(home: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEC_DATA_DIRS", str(tmp_path))  # sources are allow-listed
    df = pd.read_csv(sample_dataset(), dtype=str)
    df.loc[0, "age"] = "7"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    result = run_pipeline(home, {**PARAMS, "source": str(bad)})
    assert not result.succeeded
    assert "halt" in result.error
    assert [(d["gate"], d["result"]) for d in result.decisions] == [("data", "deny")]
    assert "age: expect_column_values_to_be_between" in result.decisions[0]["reasons"][0]
    assert not (result.run_dir / "train").exists()


def test_policy_engine_error_denies_and_stops(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "policies"
    shutil.copytree(policy_dir(), broken)
    (broken / "data.rego").write_text((broken / "data.rego").read_text().replace("count(deny) == 0", "count(deny) =="))
    monkeypatch.setenv("MLSEC_POLICY_DIR", str(broken))
    result = run_pipeline(home, {**PARAMS, "source": ""})
    assert not result.succeeded
    (decision,) = result.decisions
    assert decision["result"] == "deny" and "policy engine unavailable" in decision["reasons"][0]


def test_environment_parameter_reaches_every_gate(home: Path) -> None:
    """In staging the local key is not on the signer allow list: the run must stop at the signing gate."""
    result = run_pipeline(home, {**PARAMS, "source": "", "environment": "staging"})
    assert not result.succeeded
    assert [(d["gate"], d["environment"], d["result"]) for d in result.decisions] == [
        ("data", "staging", "allow"), ("training", "staging", "allow"), ("signing", "staging", "deny")]
    assert "is not on the staging allow list" in result.decisions[-1]["reasons"][0]


def test_no_raw_personal_data_in_anything_a_run_wrote(home: Path, good_run: RunResult, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A passing run, and runs denied for swapped email/gender headers and for an undeclared email column:
    no name, email, SSN or phone of the input is in any file they wrote (logs, audit log, decisions,
    evidence, datasets, the server's logs). The registry's own objects are the same evidence and decisions."""
    import re

    df = pd.read_csv(sample_dataset(), dtype=str)
    monkeypatch.setenv("MLSEC_DATA_DIRS", str(tmp_path))
    df.rename(columns={"email": "gender", "gender": "email"}).to_csv(tmp_path / "swapped.csv", index=False)
    df.assign(contact=df["email"]).to_csv(tmp_path / "extra.csv", index=False)
    for source in ("swapped.csv", "extra.csv"):
        denied = run_pipeline(home, {**PARAMS, "source": str(tmp_path / source)})
        assert not denied.succeeded and [(d["gate"], d["result"]) for d in denied.decisions] == [("data", "deny")]
    raw = {v for col in ("name", "email", "ssn", "phone") for v in df[col]}
    # Candidates cut out of each file by shape, then looked up: one pass per file, not one per value.
    shapes = re.compile(rb"[\w.+-]+@[\w.-]+|\d{3}-\d{2}-\d{4}|\(\d{3}\) \d{3}-\d{4}|[A-Z][\w'-]+ [A-Z][\w'-]+")
    found = {}
    for f in home.rglob("*"):
        if f.is_file() and not f.is_relative_to(home / "s3"):
            hits = {m.decode(errors="replace") for m in shapes.findall(f.read_bytes())} & raw
            if hits:
                found[str(f.relative_to(home))] = sorted(hits)[:3]
    assert found == {}
    assert any(v in (tmp_path / "swapped.csv").read_text() for v in list(raw)[:10])  # the inputs did hold them
