"""`mlsec threats check`: every reference in the threat model resolves. `--prove`: every control matters —
taking it away makes at least one of its threat's tests fail.

A Rego control is removed from a temporary copy of the policies and its linked Rego tests are run with the
real engine there. A code control is switched off (mlsec.threatmodel.switch) in a pytest run of its tests;
a test that already fails with the control in place proves nothing and is reported, not counted.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlsec.config import policy_dir
from mlsec.gates.engine import InProcessEngine, PolicyError
from mlsec.gates.rego_tests import discover, run_one
from mlsec.threatmodel import switch
from mlsec.threatmodel.model import Control, Threat, ThreatModel

REPO = policy_dir().parent
_REGO_REF = re.compile(r"^(policies/[\w/]+\.rego)#(deny|warn|rule)\[(.+)\]$")
_BLOCK = re.compile(r"^(deny|warn) contains msg if \{\n.*?^\}\n", re.M | re.S)


# -- references ------------------------------------------------------------------------------------
def rego_span(root: Path, ref: str) -> tuple[Path, list[tuple[int, int]]]:
    """The file and the character spans the reference names: one deny/warn rule holding the fragment, or
    every definition of a named rule (its head at column 0 up to the next blank line)."""
    m = _REGO_REF.match(ref)
    if not m:
        raise ValueError(f"{ref}: not policies/<file>.rego#deny[fragment], #warn[fragment] or #rule[name]")
    path = root / m.group(1).removeprefix("policies/")
    if not path.exists():
        raise ValueError(f"{ref}: no such policy file")
    text, kind, what = path.read_text(), m.group(2), m.group(3)
    if kind == "rule":
        spans = [(h.start(), _end_of_definition(text, h.start()))
                 for h in re.finditer(rf"^{re.escape(what)}\b[^\n]*(:=|=| if |contains|\{{)", text, re.M)]
    else:
        spans = [(b.start(), b.end()) for b in _BLOCK.finditer(text) if b.group(1) == kind and what in b.group(0)]
    if kind != "rule" and len(spans) != 1:
        raise ValueError(f"{ref}: {len(spans)} {kind} rules hold {what!r}; the fragment must name exactly one")
    if not spans:
        raise ValueError(f"{ref}: no rule {what!r}")
    return path, spans


def _end_of_definition(text: str, start: int) -> int:
    blank = text.find("\n\n", start)
    return len(text) if blank < 0 else blank + 1


def _python_test_defined(node: str) -> str | None:
    file, _, name = node.partition("::")
    path = REPO / file
    if not path.exists():
        return f"{node}: no such file"
    tree = ast.parse(path.read_text())
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body):
        return f"{node}: no test function {name} at module level"
    return None


def xfail_marked(node: str) -> bool:
    """Whether a Python test carries @pytest.mark.xfail(strict=True): an attack known to succeed today."""
    file, _, name = node.partition("::")
    tree = ast.parse((REPO / file).read_text())
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name:
            for d in n.decorator_list:
                if isinstance(d, ast.Call) and ast.unparse(d.func).endswith("mark.xfail"):
                    return any(k.arg == "strict" and ast.unparse(k.value) == "True" for k in d.keywords)
    return False


def check(model: ThreatModel) -> list[str]:
    """Problems with the model's references; empty when every one resolves."""
    problems: list[str] = []
    rego_tests: dict[str, set[str]] = {}
    for t in model.threats:
        for c in t.controls:
            for ref in filter(None, [c.code, c.switch.target if c.switch else None,
                                     c.switch.use if c.switch and c.switch.use else None]):
                try:
                    switch.resolve(ref)
                except (ImportError, AttributeError) as e:
                    problems.append(f"{t.id}: {ref} does not resolve ({e})")
            if c.rego:
                try:
                    rego_span(policy_dir(), c.rego)
                except ValueError as e:
                    problems.append(f"{t.id}: {e}")
        for node in t.tests:
            file, _, name = node.partition("::")
            if file.endswith(".rego"):
                path = REPO / file
                names = rego_tests.setdefault(file, {x.rule for x in discover(path)} if path.exists() else set())
                if name not in names:
                    problems.append(f"{t.id}: {node}: no such Rego test")
            elif (why := _python_test_defined(node)) is not None:
                problems.append(f"{t.id}: {why}")
        for node in t.attack_tests:
            if node.endswith(".py") or ".py::" not in node or _python_test_defined(node):
                continue
            marked = xfail_marked(node)
            if t.status == "open" and not marked:
                problems.append(f"{t.id} is open, so its attack succeeds: mark {node} xfail(strict=True)")
            if t.status != "open" and marked:
                problems.append(f"{t.id} is {t.status}, yet its attack test {node} is marked xfail")
    return problems


# -- proofs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proof:
    threat: str
    control: str
    kind: str
    proven: bool
    detail: str


def _rego_tests(nodes: Iterable[str]) -> list[tuple[Path, str]]:
    return [(Path(f), n) for f, _, n in (x.partition("::") for x in nodes) if f.endswith(".rego")]


def prove_rego(threat: Threat, control: Control) -> Proof:
    assert control.rego
    tests = _rego_tests(control.tests)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "policies"
        shutil.copytree(policy_dir(), root)
        path, spans = rego_span(root, control.rego)
        text = path.read_text()
        for start, end in sorted(spans, reverse=True):
            text = text[:start] + text[end:]
        path.write_text(text)
        if not tests:  # only Python tests: run them against the copy
            return _pytest_proof(threat, control, "rego", control.tests, {"MLSEC_POLICY_DIR": str(root)})
        try:
            engine = InProcessEngine(root, tests=True)
        except PolicyError as e:
            return Proof(threat.id, control.rego, "rego", True, f"policies no longer compile: {str(e)[:80]}")
        try:
            for file, name in tests:
                found = [x for x in discover(root / file.relative_to("policies")) if x.rule == name]
                if found and not run_one(engine, found[0])[0]:
                    return Proof(threat.id, control.rego, "rego", True, f"{file.name}::{name} fails")
        finally:
            engine.close()
    return Proof(threat.id, control.rego, "rego", False, "every linked Rego test still passes")


def _run_pytest(nodes: list[str], env: dict[str, str]) -> tuple[set[str], str]:
    """Names of the tests that failed in a pytest run over `nodes` (read from its JUnit XML report)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "mlsec.threatmodel.switch", "-p", "no:cacheprovider",
             f"--junitxml={report}", *nodes],
            cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, check=False)
        failed = _junit_failures(report) if report.exists() else {"(pytest did not run: " + proc.stderr[-200:] + ")"}
        return failed, proc.stdout[-2000:]


def _junit_failures(report: Path) -> set[str]:
    """Names (function, no parameters) of the tests that failed or errored."""
    import xml.etree.ElementTree as ET

    return {str(case.get("name", "")).split("[")[0] for case in ET.parse(report).iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None}


def _pytest_proof(threat: Threat, control: Control, kind: str, nodes: list[str], env: dict[str, str],
                  failing_anyway: frozenset[str] = frozenset()) -> Proof:
    failed, _ = _run_pytest(nodes, env)
    label = control.code or control.rego or ""
    noticed = failed - failing_anyway
    if noticed:
        return Proof(threat.id, label, kind, True, f"{len(noticed)} of {len(nodes)} linked tests fail: "
                     + ", ".join(sorted(noticed))[:120])
    if failed:
        return Proof(threat.id, label, kind, False, "the linked tests fail with the control in place too")
    return Proof(threat.id, label, kind, False, "every linked test still passes with the control off")


def prove_code(threat: Threat, control: Control, failing_anyway: frozenset[str] = frozenset()) -> Proof:
    assert control.switch is not None
    spec = {"target": control.switch.target, "returns": control.switch.returns, "use": control.switch.use}
    return _pytest_proof(threat, control, "code", control.tests, {switch.ENV: json.dumps(spec)}, failing_anyway)


def baseline(threats: list[Threat]) -> frozenset[str]:
    """Python tests failing with every control in place (they would prove nothing): one run for all, then the
    failures once more on their own. Only a test failing both times is set aside: one that failed once by chance
    (a loaded machine) would otherwise leave its control unproven."""
    nodes = sorted({n for t in threats for c in t.controls for n in c.tests if ".py::" in n})
    failed = _run_pytest(nodes, {})[0] if nodes else set()
    again = [n for n in nodes if n.partition("::")[2].split("[")[0] in failed]
    return frozenset(failed & _run_pytest(again, {})[0]) if again else frozenset(failed)


def prove(model: ThreatModel, only: set[str] | None = None, progress: bool = True) -> list[Proof]:
    chosen = [t for t in model.ranked() if t.status != "open" and (not only or t.id in only)]
    failing_anyway = baseline(chosen)
    if progress and failing_anyway:
        print(f"  failing with every control in place (not counted): {sorted(failing_anyway)}", flush=True)
    proofs = []
    for t in chosen:
        for c in t.controls:
            p = prove_rego(t, c) if c.rego else prove_code(t, c, failing_anyway)
            proofs.append(p)
            if progress:
                print(f"  {p.threat} {'proven' if p.proven else 'NOT PROVEN':<10} {p.control}", flush=True)
    return proofs


def table(proofs: list[Proof]) -> str:
    rows = [f"{'threat':<6} {'kind':<4} {'result':<10} {'control':<58} why"]
    rows += [f"{p.threat:<6} {p.kind:<4} {'proven' if p.proven else 'NOT PROVEN':<10} {p.control:<58} {p.detail}"
             for p in proofs]
    done = sum(p.proven for p in proofs)
    rows.append(f"{done}/{len(proofs)} controls proven: removing each makes a linked test fail")
    # Repeated last: a CI log that keeps only its tail still names what was not proven, and why.
    rows += [f"NOT PROVEN {p.threat} {p.control}: {p.detail}" for p in proofs if not p.proven]
    return "\n".join(rows)
