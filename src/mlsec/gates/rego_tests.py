"""Run Rego unit tests (`test_` rules in *_test.rego) with the real OPA engine, with line coverage.

The same files pass `opa test policies/` unchanged; this module exists because no `opa` binary is
available here. Used by the pytest plugin and by `mlsec policy test`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsec.gates.engine import InProcessEngine

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.M)
_TEST = re.compile(r"^(test_\w+)\b", re.M)


@dataclass(frozen=True)
class RegoTest:
    file: Path
    package: str
    rule: str


def discover(test_file: Path) -> list[RegoTest]:
    text = test_file.read_text()
    m = _PACKAGE.search(text)
    if not m:
        raise ValueError(f"{test_file}: no package declaration")
    return [RegoTest(test_file, m.group(1), rule) for rule in dict.fromkeys(_TEST.findall(text))]


def run_one(engine: InProcessEngine, test: RegoTest, coverage: Coverage | None = None) -> tuple[bool, str]:
    """(passed, why). A test passes only when its rule evaluates to exactly true."""
    from opa_bindings import OpaError, OpaUndefinedError

    try:
        value = engine.opa.eval_document(f"{test.package}.{test.rule}", coverage=coverage is not None)
    except OpaUndefinedError:
        return False, "undefined: a condition in the test body was false"
    except OpaError as e:
        return False, f"evaluation error: {e.message}"
    finally:
        if coverage is not None and engine.opa.last_coverage:
            coverage.add(engine.opa.last_coverage)
    return (value is True), ("" if value is True else f"evaluated to {value!r}, not true")


@dataclass
class Coverage:
    covered: dict[str, set[int]] = field(default_factory=dict)
    seen: dict[str, set[int]] = field(default_factory=dict)

    def add(self, report: dict[str, Any]) -> None:
        for path, rep in report.get("files", {}).items():
            if path.endswith("_test.rego"):
                continue
            cov, seen = self.covered.setdefault(path, set()), self.seen.setdefault(path, set())
            for kind in ("covered", "not_covered"):
                for span in rep.get(kind, []):
                    rows = set(range(span["start"]["row"], span["end"]["row"] + 1))
                    seen |= rows
                    if kind == "covered":
                        cov |= rows

    def percent(self, path: str) -> float:
        seen = self.seen.get(path, set())
        return 100.0 * len(self.covered.get(path, set()) & seen) / len(seen) if seen else 100.0

    def uncovered(self, path: str) -> list[int]:
        return sorted(self.seen.get(path, set()) - self.covered.get(path, set()))

    def report(self) -> str:
        lines = [f"{'policy':<24} {'coverage':>8}  uncovered lines"]
        for path in sorted(self.seen):
            missing = self.uncovered(path)
            lines.append(f"{path:<24} {self.percent(path):7.1f}%  {','.join(map(str, missing)) or '-'}")
        return "\n".join(lines)


def run_all(policy_root: Path, *, coverage: bool = False) -> tuple[list[tuple[RegoTest, bool, str]], Coverage]:
    engine = InProcessEngine(policy_root, tests=True)
    cov = Coverage()
    results = []
    try:
        for f in sorted(policy_root.rglob("*_test.rego")):
            for t in discover(f):
                ok, why = run_one(engine, t, cov if coverage else None)
                results.append((t, ok, why))
    finally:
        engine.close()
    return results, cov
