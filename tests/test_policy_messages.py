"""Every deny/warn message a policy renders must fit its values: Rego's sprintf writes a verb that does
not fit (%f given an integer, %d given a string) as "%!f(int64=0)" instead of failing. Each gate's Rego
tests are evaluated with the real engine (mlsec.gates.engine.InProcessEngine) and its evaluation trace;
every string the evaluation bound (every rendered reason among them) must be free of "%!"."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsec.config import policy_dir
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.rego_tests import Coverage, discover

GATES = ["data", "training", "signing", "promotion", "deployment"]
BAD = re.compile(r"[^\"]*%![^\"]*")


@pytest.fixture(scope="module")
def test_engine() -> Iterator[InProcessEngine]:
    e = InProcessEngine(policy_dir(), tests=True)
    yield e
    e.close()


def _rendered(engine: InProcessEngine, gate: str, coverage: Coverage | None = None) -> tuple[list[str], list[str]]:
    """(failed Rego tests, badly rendered strings) over every test rule of <gate>_test.rego."""
    failed, bad = [], set()
    for t in discover(policy_dir() / f"{gate}_test.rego"):
        value = engine.opa.eval_document(f"{t.package}.{t.rule}", trace=True, coverage=coverage is not None)
        if value is not True:
            failed.append(t.rule)
        if coverage is not None:
            coverage.add(engine.opa.last_coverage)
        for event in engine.opa.last_trace or []:
            bad |= set(BAD.findall(json.dumps(event.get("locals") or {}) + str(event.get("node", ""))))
    return failed, sorted(bad)


def test_the_trace_sees_rendered_reasons(test_engine: InProcessEngine) -> None:
    """The control: a reason that a Rego test renders is visible to this check."""
    test_engine.opa.eval_document("mlsec.gates.data_test.test_integer_label_rate_renders", trace=True)
    assert "label rate 0 outside [0.02, 0.98]" in json.dumps(test_engine.opa.last_trace)


def test_every_data_message_renders(test_engine: InProcessEngine) -> None:
    cov = Coverage()
    failed, bad = _rendered(test_engine, "data", cov)
    assert failed == [] and bad == []
    source = (policy_dir() / "data.rego").read_text().splitlines()
    messages = {i for i, line in enumerate(source, 1) if re.search(r"msg :=|^deny contains|^warn contains|sprintf", line)}
    assert messages - cov.covered["data.rego"] == set(), "a message line of data.rego no Rego test renders"


def _data_input(evidence: dict[str, Any]) -> dict[str, Any]:
    return {"environment": "dev", "evidence": evidence, "decisions": []}


@pytest.mark.parametrize("number", [0, 1, 0.5, 7, 1e-9, 123456789012])
def test_data_messages_render_any_json_number(test_engine: InProcessEngine, number: float) -> None:
    """Integer or float in every numeric field the data policy prints, with each config threshold crossed."""
    good: dict[str, Any] = test_engine.opa.eval_document("mlsec.gates.data_test.good")
    ev = {**good, "rows": int(number) if number >= 1 else 0, "errors": [{"code": "empty", "message": "x"}],
          "poisoning": {"conflicting_duplicates": int(number), "label_rate": number},
          "pii": {**good["pii"], "undeclared_findings": [{"column": "c", "kind": "ssn", "matches": int(number)}]}}
    for doc in (ev, {**ev, "errors": []}):
        decision = test_engine.opa.eval_document("mlsec.gates.data.decision", _data_input(doc))
        assert not [r for r in [*decision["deny"], *decision["warn"]] if "%!" in r], decision


def _numbers(o: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(o, dict | list):
        for k, v in (o.items() if isinstance(o, dict) else enumerate(o)):
            yield from _numbers(v, (*path, k))
    elif isinstance(o, int | float) and not isinstance(o, bool):
        yield path


def _set(o: Any, path: tuple[Any, ...], value: Any) -> Any:
    o = json.loads(json.dumps(o))
    target = o
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return o


def _perturbed(engine: InProcessEngine, gate: str) -> list[str]:
    """Each number in the gate's sample input (<gate>_test.good) as the integers 0 and 1 (canonical JSON
    writes 0.0 as 0), in every environment: the reasons that render badly."""
    try:
        good = engine.opa.eval_document(f"mlsec.gates.{gate}_test.good")
    except Exception:  # noqa: BLE001 - a test package without a `good` sample input
        return []
    bad = set()
    for path in _numbers(good):
        for value in (0, 1):
            for env in ("dev", "staging", "prod"):
                d = engine.opa.eval_document(f"mlsec.gates.{gate}.decision",
                                             {"environment": env, "evidence": _set(good, path, value), "decisions": []})
                bad |= {r for r in [*d["deny"], *d["warn"]] if "%!" in r}
    return sorted(bad)


@pytest.mark.parametrize("gate", [g for g in GATES if g != "data"])
def test_other_gates_messages_render(test_engine: InProcessEngine, gate: str) -> None:
    failed, bad = _rendered(test_engine, gate)
    assert failed == []
    bad += _perturbed(test_engine, gate)
    assert bad == [], f"{gate}.rego renders: {bad}"


def test_policy_dir_is_the_checkout() -> None:
    assert Path(policy_dir(), "data.rego").is_file()
