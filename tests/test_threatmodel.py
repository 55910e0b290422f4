"""The threat model is data, and each threat's control is proven by tests that exist (and that the suite runs)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mlsec.threatmodel.model import load

REPO = Path(__file__).resolve().parents[1]
THREATS = load()


def test_ids_are_unique_and_every_stage_is_covered() -> None:
    assert len({t.id for t in THREATS}) == len(THREATS)
    assert {t.stage for t in THREATS} >= {"ingest", "train", "sign", "registry", "serve", "gates", "cluster"}


def _exists(node: str) -> bool:
    file, _, name = node.partition("::")
    path = REPO / file
    if not path.exists():
        return False
    if path.suffix == ".rego":
        return re.search(rf"^{re.escape(name)}\b", path.read_text(), re.M) is not None
    tree = ast.parse(path.read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


@pytest.mark.parametrize("threat", THREATS, ids=[t.id for t in THREATS])
def test_every_control_is_proven_by_existing_tests(threat) -> None:  # type: ignore[no-untyped-def]
    missing = [node for node in threat.tests if not _exists(node)]
    assert not missing, f"{threat.id} names tests that do not exist: {missing}"


def test_cli_lists_threats_by_dread(capsys: pytest.CaptureFixture[str]) -> None:
    from mlsec.cli import main

    assert main(["threats"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if re.match(r"T\d\d ", line)]
    scores = [float(line.split()[1]) for line in lines]
    assert len(lines) == len(THREATS) and scores == sorted(scores, reverse=True)
