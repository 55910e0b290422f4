"""Mutation testing of the policies (mlsec.threatmodel.mutation): every mutant of a gate policy or of the
shared library is killed by a Rego test, or documented as equivalent with the reason.

make test runs every rule deletion and comparison flip and a fixed 1-in-10 share of expression deletions
and negations; MLSEC_MUTANTS=all (make prove) runs every mutant.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlsec.config import policy_dir
from mlsec.threatmodel import mutation

ALL = mutation.mutants(policy_dir())
CHOSEN = ALL if os.environ.get("MLSEC_MUTANTS") == "all" else mutation.sample(ALL, 10)


def test_every_operator_has_mutants_in_every_gate() -> None:
    for gate in mutation.GATES:
        ops = {m.operator for m in ALL if m.file == f"{gate}.rego"}
        assert {"delete-rule", "delete", "negate"} <= ops, f"{gate}.rego: only {ops}"
    assert any(m.operator == "flip" for m in ALL)


def test_a_flip_changes_only_its_comparison() -> None:
    flip = next(m for m in ALL if m.operator == "flip")
    source = (policy_dir() / flip.file).read_text()
    changed = [(a, b) for a, b in zip(source.splitlines(), flip.apply(source).splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1].strip() == flip.after


def test_mutants_are_killed_or_documented_equivalent(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = mutation.run_all(policy_dir(), CHOSEN)
    equivalent = mutation.equivalent()
    survivors = [o.mutant for o in outcomes if o.status == "survived" and o.mutant.key not in equivalent]
    with capsys.disabled():
        print(f"\n{mutation.score(outcomes)} [{'all' if CHOSEN is ALL else 'sample'}]")
    assert not survivors, "mutants no Rego test kills (add a boundary/toggle test, or document them):\n" + "\n".join(
        f"  {m.id}  {m.before!r} -> {m.after!r}   key: {m.key}" for m in survivors)


def test_documented_equivalents_exist_and_survive(tmp_path: Path) -> None:
    by_key = {m.key: m for m in ALL}
    stale = [k for k in mutation.equivalent() if k not in by_key]
    assert not stale, f"mutants_equivalent.yaml names mutants the policies no longer have: {stale}"
    killed = [o.mutant.key for o in (mutation.run(by_key[k], policy_dir(), tmp_path) for k in mutation.equivalent())
              if o.status != "survived"]
    assert not killed, f"documented as equivalent, yet a test kills them (remove the entry): {killed}"


def test_a_removed_boundary_test_lets_its_flip_survive(tmp_path: Path) -> None:
    """The tester itself can fail: without the promotion boundary test, the `<`→`<=` flip survives."""
    root = tmp_path / "policies"
    import shutil

    shutil.copytree(policy_dir(), root)
    tests = root / "promotion_test.rego"
    tests.write_text(tests.read_text().replace("test_prod_metric_bars_at_the_boundary if", "boundary_unused if"))
    flip = next(m for m in ALL if m.file == "promotion.rego" and m.operator == "flip" and "accuracy" in m.before)
    assert mutation.run(flip, root, tmp_path / "work").status == "survived"
    assert mutation.run(flip, policy_dir(), tmp_path / "work").status == "killed"
