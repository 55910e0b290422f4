"""The threat model is data that checks itself: schema, references that resolve, statuses that match the
attack tests, and controls whose removal a linked test notices (the Rego ones proven here; every one by
`mlsec threats check --prove`, make prove)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mlsec.cli import main
from mlsec.threatmodel import proof
from mlsec.threatmodel.model import THREATS, ThreatModel, load_model

MODEL = load_model()
NAMED_IN_ISSUE = ["Evasion", "Membership inference", "Model inversion", "Backdoor trigger", "supply chain",
                  "Pipeline definition", "Signing key", "GPU memory", "Denial of service", "Stolen API key"]


def _raw() -> dict[str, Any]:
    return yaml.safe_load(THREATS.read_text())  # type: ignore[no-any-return]


def test_threats_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["threats", "check"]) == 0, capsys.readouterr().err
    assert f"{len(MODEL.threats)} threats" in capsys.readouterr().out


def test_every_threat_the_issue_names_is_modelled_with_an_attack_test() -> None:
    titles = " | ".join(t.title for t in MODEL.threats)
    assert all(name.lower() in titles.lower() for name in NAMED_IN_ISSUE), titles
    assert all(t.attack_tests for t in MODEL.threats)


def test_open_threats_are_listed_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["threats"]) == 0
    statuses = [line.split()[3] for line in capsys.readouterr().out.splitlines() if re.match(r"T\d\d ", line)]
    order = {"open": 0, "partial": 1, "mitigated": 2}
    assert len(statuses) == len(MODEL.threats) and statuses == sorted(statuses, key=order.__getitem__)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.update(status="mitigated", controls=[]), "mitigated needs controls"),
    (lambda t: t.update(cia3r=["Availability"]), "cia3r must name"),
    (lambda t: t.update(owasp_ml=["ML11"]), "unknown OWASP"),
    (lambda t: t["controls"][0].pop("rego", None) or t["controls"][0].pop("code"), "exactly one of code"),
    (lambda t: t["attack_tree"].update(children=[]), "AND/OR need some"),
])
def test_schema_refuses_a_threat_that_claims_too_much(change: Any, message: str) -> None:
    raw = _raw()
    change(raw["threats"][0])
    with pytest.raises(ValidationError, match=message):
        ThreatModel.model_validate(raw)


def test_check_finds_every_kind_of_dangling_reference() -> None:
    raw = _raw()
    t = raw["threats"][0]
    t["attack_tests"].append("tests/test_ingest.py::test_that_does_not_exist")
    t["controls"].append({"what": "x", "rego": "policies/data.rego#deny[no such message]",
                          "tests": ["policies/data_test.rego::test_nope"]})
    t["controls"].append({"what": "y", "code": "mlsec.ingest.stage:nothing_here",
                          "switch": {"target": "mlsec.ingest.stage:nothing_here"}, "tests": t["attack_tests"][:1]})
    problems = "\n".join(proof.check(ThreatModel.model_validate(raw)))
    for fragment in ("test_that_does_not_exist", "no such message", "test_nope", "nothing_here"):
        assert fragment in problems, problems


def test_an_open_threat_whose_attack_test_is_not_marked_xfail_is_a_problem() -> None:
    raw = _raw()
    mitigated = next(t for t in raw["threats"] if t["status"] == "mitigated")
    mitigated.update(status="open", gap="pretend")
    assert any("mark" in p and "xfail" in p for p in proof.check(ThreatModel.model_validate(raw)))


REGO_CONTROLS = [(t, c) for t in MODEL.threats if t.status != "open" for c in t.controls
                 if c.rego and any(x.endswith(".rego") or ".rego::" in x for x in c.tests)]


@pytest.mark.parametrize(("threat", "control"), REGO_CONTROLS, ids=[f"{t.id}-{c.rego}" for t, c in REGO_CONTROLS])
def test_removing_a_rego_control_fails_a_linked_test(threat, control) -> None:  # type: ignore[no-untyped-def]
    p = proof.prove_rego(threat, control)
    assert p.proven, f"{threat.id}: {control.rego}: {p.detail}"


def test_a_proof_fails_when_the_linked_test_does_not_notice() -> None:
    t = next(t for t, c in REGO_CONTROLS)
    unrelated = t.controls[0].model_copy(update={"tests": ["policies/data_test.rego::test_good_dataset_allowed"]})
    assert not proof.prove_rego(t, unrelated).proven


def test_a_test_failing_once_by_chance_is_not_set_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    # The baseline runs every linked Python test with the controls in place; a failure is run again on its own,
    # and only a test failing both times is set aside (a chance failure once left a CI control unproven).
    code = [t for t in MODEL.threats if t.status != "open" and any(c.code for c in t.controls)]
    node = next(n for t in code for c in t.controls for n in c.tests if ".py::" in n)
    name = node.partition("::")[2]
    runs: list[list[str]] = []

    def flaky(nodes: list[str], env: dict[str, str]) -> tuple[set[str], str]:
        runs.append(nodes)
        return ({name} if len(runs) == 1 else set()), ""

    monkeypatch.setattr(proof, "_run_pytest", flaky)
    assert proof.baseline(code) == frozenset() and runs[1] == [node]
    monkeypatch.setattr(proof, "_run_pytest", lambda nodes, env: ({name}, ""))
    assert proof.baseline(code) == {name}


def test_the_table_ends_with_what_was_not_proven() -> None:
    proofs = [proof.Proof("T01", "a", "rego", True, "x fails"), proof.Proof("T02", "m:f", "code", False, "still passes")]
    assert proof.table(proofs).splitlines()[-2:] == [
        "1/2 controls proven: removing each makes a linked test fail", "NOT PROVEN T02 m:f: still passes"]


def test_committed_report_matches_the_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/threat-report is what `mlsec threats report` writes from threats.yaml today (regenerate it with
    `mlsec threats report -o docs/threat-report` after editing the model)."""
    from mlsec.threatmodel.report import write

    for fresh in write(MODEL, tmp_path):
        committed = proof.REPO / "docs" / "threat-report" / fresh.name
        assert committed.read_text() == fresh.read_text(), f"{committed} is stale"
    md = (tmp_path / "threats.md").read_text()
    open_ids = [t.id for t in MODEL.threats if t.status == "open"]
    first_rows = re.findall(r"^\| (T\d\d) \|", md.split("## Threats, open first")[1], re.M)
    assert first_rows[:len(open_ids)] == [t.id for t in MODEL.ranked()][:len(open_ids)]
    assert set(first_rows[:len(open_ids)]) == set(open_ids)
    assert "### Gaps" in md and "Coverage:" in md
