"""Removing any single deny rule from a gate policy, or any condition from the shared library, must make
at least one Rego test fail."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mlsec.config import policy_dir
from mlsec.gates.rego_tests import discover, run_one
from mlsec.gates.engine import InProcessEngine, PolicyError

GATES = ["data", "training", "signing", "promotion", "deployment"]
# A deny rule starts at column 0 and ends at the first closing brace at column 0.
RULE = re.compile(r"^deny contains msg if \{\n.*?^\}\n", re.M | re.S)


def _rules(gate: str) -> list[str]:
    return RULE.findall((policy_dir() / f"{gate}.rego").read_text())


CASES = [(gate, i) for gate in GATES for i in range(len(_rules(gate)))]


def test_every_policy_has_deny_rules() -> None:
    assert all(len(_rules(g)) >= 3 for g in GATES)


@pytest.mark.parametrize(("gate", "index"), CASES, ids=[f"{g}-rule{i}" for g, i in CASES])
def test_removing_a_deny_rule_fails_a_test(tmp_path: Path, gate: str, index: int) -> None:
    root = tmp_path / "policies"
    shutil.copytree(policy_dir(), root)
    source = (root / f"{gate}.rego").read_text()
    rule = _rules(gate)[index]
    (root / f"{gate}.rego").write_text(source.replace(rule, "", 1))
    engine = InProcessEngine(root, tests=True)
    try:
        results = [run_one(engine, t)[0] for t in discover(root / f"{gate}_test.rego")]
    finally:
        engine.close()
    assert not all(results), f"no test noticed the removal of:\n{rule}"


# The shared library's conditions decide for every gate that calls it: each comparison in it is
# removed in turn, and some Rego test must notice.
CONDITION = re.compile(r"^\t+[^\n]*(==|!=|<|>)[^\n]*\n", re.M)


def _conditions() -> list[tuple[str, int]]:
    return [(f.name, m.start()) for f in sorted((policy_dir() / "lib").glob("*.rego"))
            if not f.name.endswith("_test.rego") for m in CONDITION.finditer(f.read_text())]


@pytest.mark.parametrize(("name", "at"), _conditions(), ids=[f"{n}@{a}" for n, a in _conditions()])
def test_removing_a_library_condition_fails_a_test(tmp_path: Path, name: str, at: int) -> None:
    root = tmp_path / "policies"
    shutil.copytree(policy_dir(), root)
    source = (root / "lib" / name).read_text()
    line = CONDITION.match(source, at)
    assert line is not None
    (root / "lib" / name).write_text(source[:at] + source[line.end():])
    try:
        engine = InProcessEngine(root, tests=True)
    except PolicyError:  # a library that no longer compiles fails every test
        return
    try:
        results = [run_one(engine, t)[0] for f in sorted(root.rglob("*_test.rego")) for t in discover(f)]
    finally:
        engine.close()
    assert not all(results), f"no test noticed the removal of {line.group(0).strip()!r} from lib/{name}"
