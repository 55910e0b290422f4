"""The platform team's policy commands: check, test, eval, bundle."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from mlsec.cli import main
from mlsec.config import policy_dir
from mlsec.gates.decision import write_decisions
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate

from conftest import Trained


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return Path(shutil.copytree(policy_dir(), tmp_path / "policies"))


def test_check_passes_and_names_file_and_line_on_syntax_error(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", "--policies", str(policies)]) == 0
    (policies / "signing.rego").write_text((policies / "signing.rego").read_text() + "\ndeny contains x if {\n")
    assert main(["policy", "check", "--policies", str(policies)]) == 1
    assert "signing.rego:" in capsys.readouterr().err


def test_a_typo_in_policy_data_fails_check_and_bundle(policies: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Rego skips a rule whose threshold is undefined: a misnamed key must not quietly disable a check."""
    prod = json.loads((policies / "data" / "prod.json").read_text())
    prod["prod"]["training"]["min_acuracy"] = prod["prod"]["training"].pop("min_accuracy")
    (policies / "data" / "prod.json").write_text(json.dumps(prod))
    assert main(["policy", "check", "--policies", str(policies)]) == 1
    assert "policy data prod.training.min_accuracy is missing" in capsys.readouterr().err
    assert main(["policy", "bundle", "-o", str(tmp_path / "b.tar.gz"), "--policies", str(policies)]) == 1
    assert "refusing to build the bundle" in capsys.readouterr().err and not (tmp_path / "b.tar.gz").exists()


def test_check_finds_a_gate_that_would_deny_every_run(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gate without a policy, an environment without a gate's section: every run would stop there."""
    (policies / "signing.rego").unlink()
    (policies / "signing_test.rego").unlink()
    staging = json.loads((policies / "data" / "staging.json").read_text())
    del staging["staging"]["deployment"]
    (policies / "data" / "staging.json").write_text(json.dumps(staging))
    assert main(["policy", "check", "--policies", str(policies)]) == 1
    err = capsys.readouterr().err
    assert "no policy for the signing gate: data.mlsec.gates.signing.decision is undefined" in err
    assert "policies/data/staging.json has no 'deployment' section" in err


def test_check_finds_a_policy_that_does_not_fail_closed(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rego = (policies / "data.rego").read_text()
    (policies / "data.rego").write_text(rego.replace('decision := {"allow": count(deny) == 0,',
                                                     'decision := {"allow": count(deny) < 100,'))
    assert main(["policy", "check", "--policies", str(policies)]) == 1
    assert "the data policy does not deny an empty evidence document in prod" in capsys.readouterr().err


def test_a_typo_in_policy_data_denies_instead_of_allowing(policies: Path, trained: Trained) -> None:
    dev = json.loads((policies / "data" / "dev.json").read_text())
    dev["dev"]["training"]["min_acuracy"] = dev["dev"]["training"].pop("min_accuracy")
    (policies / "data" / "dev.json").write_text(json.dumps(dev))
    weak = trained.training_evidence.model_copy(
        update={"metrics": trained.training_evidence.metrics.model_copy(update={"accuracy": 0.1})})
    data = evaluate("data", trained.data_evidence, environment="dev", engine=InProcessEngine(policies))
    d = evaluate("training", weak, environment="dev", engine=InProcessEngine(policies), decisions=[data])
    assert not d.allow and d.deny == ["policy data dev.training.min_accuracy is missing"]


def test_test_command_fails_when_a_rule_is_broken(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", "--coverage", "--policies", str(policies)]) == 0
    out = capsys.readouterr().out
    assert "Rego tests passed" in out and "training.rego" in out and "100.0%" in out
    path = policies / "training.rego"
    path.write_text(path.read_text().replace("ev.metrics.accuracy < cfg.min_accuracy", "ev.metrics.accuracy < 0"))
    assert main(["policy", "test", "--policies", str(policies)]) == 1
    assert "FAIL training_test.rego::test_low_accuracy_denied" in capsys.readouterr().out


def test_eval_prints_the_decision(tmp_path: Path, trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    doc = trained.training_evidence.model_dump(mode="json")
    doc["metrics"]["accuracy"] = 0.5
    (tmp_path / "ev.json").write_text(json.dumps(doc))
    assert main(["policy", "eval", "--gate", "training", "--env", "prod", "--input", str(tmp_path / "ev.json")]) == 1
    decision = json.loads(capsys.readouterr().out)
    assert not decision["allow"]
    assert any("accuracy 0.5 below prod minimum 0.8" in r for r in decision["deny"])


def test_eval_takes_earlier_decisions(tmp_path: Path, trained: Trained, engine: InProcessEngine,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    trained.training_evidence.write(tmp_path / "ev.json")
    args = ["policy", "eval", "--gate", "training", "--env", "dev", "--input", str(tmp_path / "ev.json")]
    assert main(args) == 1  # alone, training evidence lacks the data gate's decision
    assert "no allowing data-gate decision" in capsys.readouterr().err
    write_decisions(tmp_path / "decisions.json",
                    [evaluate("data", trained.data_evidence, environment="dev", engine=engine)])
    assert main([*args, "--decisions", str(tmp_path / "decisions.json")]) == 0
    assert json.loads(capsys.readouterr().out)["allow"]


@pytest.mark.parametrize("bad", ["input", "decisions"])
def test_eval_names_an_unreadable_file(tmp_path: Path, trained: Trained, bad: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    trained.training_evidence.write(tmp_path / "ev.json")
    (tmp_path / "bad.json").write_text('{"not": "decisions"')
    files = {"input": str(tmp_path / "ev.json"), "decisions": str(tmp_path / "ev.json"), bad: str(tmp_path / "bad.json")}
    assert main(["policy", "eval", "--gate", "training", "--input", files["input"],
                 "--decisions", files["decisions"]]) == 2
    assert f"{tmp_path / 'bad.json'}" in capsys.readouterr().err


def test_bundle_is_an_opa_bundle_with_the_same_decisions(tmp_path: Path, trained: Trained,
                                                         engine: InProcessEngine) -> None:
    out = tmp_path / "bundle.tar.gz"
    assert main(["policy", "bundle", "-o", str(out), "--revision", "abc123"]) == 0
    root = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(".manifest") or io.BytesIO())
        tar.extractall(root, filter="data")
    assert manifest["revision"] == "abc123" and set(manifest["roots"]) == {"mlsec", "data"}
    assert manifest["metadata"]["mlsec_policy_sha256"] == engine.policy_sha256
    assert "data/data.json" in names and not any(n.endswith("_test.rego") for n in names)
    from_bundle = InProcessEngine(root)
    for env in ("dev", "prod"):
        a = evaluate("training", trained.training_evidence, environment=env, engine=from_bundle)
        b = evaluate("training", trained.training_evidence, environment=env, engine=engine)
        assert (a.allow, a.deny) == (b.allow, b.deny)


def test_environment_files_are_keyed_by_their_name() -> None:
    for f in (policy_dir() / "data").glob("*.json"):
        assert list(json.loads(f.read_text())) == [f.stem], f"{f.name} must hold exactly {{{f.stem!r}: ...}}"
