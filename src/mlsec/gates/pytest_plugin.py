"""pytest plugin: every `test_` rule in a *_test.rego file is its own pytest test (file::rule).

Coverage of the gate policies by those tests is printed at the end of the session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlsec.gates.engine import InProcessEngine, PolicyError
from mlsec.gates.rego_tests import Coverage, RegoTest, discover, run_one

_engines: dict[Path, InProcessEngine] = {}
_coverage = Coverage()


def _engine(root: Path) -> InProcessEngine:
    if root not in _engines:
        _engines[root] = InProcessEngine(root, tests=True)
    return _engines[root]


def _policy_root(path: Path) -> Path:
    """The directory `opa test` would be pointed at: the highest ancestor named 'policies'."""
    for parent in path.parents:
        if parent.name == "policies":
            return parent
    return path.parent


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith("_test.rego"):
        return RegoFile.from_parent(parent, path=file_path)
    return None


class RegoFile(pytest.File):
    def collect(self) -> Any:
        try:
            _engine(_policy_root(self.path))  # a syntax error anywhere fails collection, with file:line
        except PolicyError as e:
            raise self.CollectError(str(e)) from e
        for test in discover(self.path):
            yield RegoItem.from_parent(self, name=test.rule, test=test)


class RegoItem(pytest.Item):
    def __init__(self, *, test: RegoTest, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test = test

    def runtest(self) -> None:
        ok, why = run_one(_engine(_policy_root(self.test.file)), self.test, _coverage)
        if not ok:
            raise RegoTestFailure(why)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RegoTestFailure):
            return f"{self.test.file.name}::{self.test.rule} {excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.test.package}.{self.test.rule}"


class RegoTestFailure(Exception):
    pass


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _coverage.seen:
        terminalreporter.write_sep("-", "Rego policy coverage (lines)")
        terminalreporter.write_line(_coverage.report())
