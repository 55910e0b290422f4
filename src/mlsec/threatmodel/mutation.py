"""Mutation testing of the Rego policies: each mutant changes one thing in a copy of the policies, and
some Rego test must fail on it (the mutant is "killed").

Operators: rule deletion (a whole `deny`/`warn` rule), comparison flip (`<`↔`<=`, `>`↔`>=`), expression
deletion (one body line) and negation (`not` added to or taken from one body line). A mutant that no
longer compiles is stillborn and not scored. A survivor is either killed by a new boundary/toggle test or
listed in mutants_equivalent.yaml with the reason it cannot be told apart from the original.

Tests run a package at a time: evaluating `data.<test package>` once evaluates every test rule in it, and
the engine's cost is per query (a fresh query costs ~50 ms, its tests re-evaluated cost ~1 ms).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlsec.gates.engine import InProcessEngine, PolicyError
from mlsec.gates.rego_tests import discover, run_one

EQUIVALENT = Path(__file__).with_name("mutants_equivalent.yaml")
GATES = ("data", "training", "signing", "promotion", "deployment")
# A rule starts at column 0 and ends at the first closing brace at column 0.
_RULE = re.compile(r"^(?:deny|warn) contains msg if \{\n.*?^\}\n", re.M | re.S)
_FLIPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}
_COMPARISON = re.compile(r"(?<=\s)(<=|>=|<|>)(?=\s)")
# Body lines that bind or iterate rather than test: negating them does not compile or means nothing.
_BINDING = re.compile(r"^\t+(some |every |default |import )|:=|\bin\b.*\{$|^\t+[\]\}\)]|[\[\{\(,]$")


@dataclass(frozen=True)
class Mutant:
    file: str          # relative to the policy root, e.g. "data.rego" or "lib/config.rego"
    operator: str      # delete-rule | flip | delete | negate
    line: int          # 1-based line of the change
    before: str        # the changed text, stripped (identifies the mutant across line moves)
    after: str
    nth: int = 0       # which of the file's lines with this same text


    @property
    def key(self) -> str:
        """Names a mutant independent of its line number, for the equivalence list."""
        return f"{self.file}|{self.operator}|{self.before}|{self.after}|{self.nth}"

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.operator}:{hashlib.sha256(self.key.encode()).hexdigest()[:6]}"

    def apply(self, source: str) -> str:
        if self.operator == "delete-rule":
            return _delete_rule(source, self.line)
        lines = source.splitlines(keepends=True)
        old = lines[self.line - 1]
        lines[self.line - 1] = "" if self.operator == "delete" else old.replace(
            old.strip(), self.after, 1)
        return "".join(lines)


def _delete_rule(source: str, line: int) -> str:
    for m in _RULE.finditer(source):
        if source.count("\n", 0, m.start()) + 1 == line:
            return source[:m.start()] + source[m.end():]
    raise ValueError(f"no rule starts at line {line}")


def _policy_files(root: Path) -> list[Path]:
    return [root / f"{g}.rego" for g in GATES] + sorted(
        f for f in (root / "lib").glob("*.rego") if not f.name.endswith("_test.rego"))


def _body_lines(source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each expression line inside a rule body (tab-indented, not a comment)."""
    for n, text in enumerate(source.splitlines(), 1):
        if text.startswith("\t") and text.strip() and not text.strip().startswith("#"):
            yield n, text


def mutants(root: Path) -> list[Mutant]:
    out: list[Mutant] = []
    for path in _policy_files(root):
        rel, source = path.relative_to(root).as_posix(), path.read_text()
        for m in _RULE.finditer(source):
            head = m.group(0).splitlines()
            out.append(Mutant(rel, "delete-rule", source.count("\n", 0, m.start()) + 1,
                              " / ".join(s.strip() for s in head[1:3]), ""))
        seen: dict[str, int] = {}
        for n, text in _body_lines(source):
            expr = text.strip()
            nth = seen[expr] = seen.get(expr, -1) + 1
            for c in _COMPARISON.finditer(text):
                flipped = text[:c.start()] + _FLIPS[c.group(1)] + text[c.end():]
                out.append(Mutant(rel, "flip", n, expr, flipped.strip(), nth))
            if _BINDING.search(text):
                continue
            out.append(Mutant(rel, "delete", n, expr, "", nth))
            negated = expr[4:] if expr.startswith("not ") else f"not {expr}"
            out.append(Mutant(rel, "negate", n, expr, negated, nth))
    return out


@dataclass(frozen=True)
class Outcome:
    mutant: Mutant
    status: str        # killed | survived | stillborn
    killed_by: str = ""


def _test_files(root: Path, mutant: Mutant) -> list[Path]:
    own = root / mutant.file.replace(".rego", "_test.rego")
    if not mutant.file.startswith("lib/") and own.exists():
        return [own]
    return sorted(root.rglob("*_test.rego"))


def _first_failure(engine: InProcessEngine, test_files: Iterable[Path]) -> str | None:
    from opa_bindings import OpaError

    for f in test_files:
        tests = discover(f)
        if not tests:
            continue
        try:
            doc = engine.opa.eval_document(tests[0].package)
        except OpaError:  # some rule errs: run one by one to name the test
            doc = None
        for t in tests:
            ok = (doc.get(t.rule) is True) if isinstance(doc, dict) else run_one(engine, t)[0]
            if not ok:
                return f"{f.name}::{t.rule}"
    return None


def run(mutant: Mutant, policy_root: Path, work: Path) -> Outcome:
    """Apply one mutant to a fresh copy of the policies under `work` and run the relevant Rego tests."""
    root = work / "policies"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(policy_root, root)
    target = root / mutant.file
    target.write_text(mutant.apply(target.read_text()))
    try:
        engine = InProcessEngine(root, tests=True)
    except PolicyError:
        return Outcome(mutant, "stillborn")
    try:
        failed = _first_failure(engine, _test_files(root, mutant))
    finally:
        engine.close()
    return Outcome(mutant, "killed", failed) if failed else Outcome(mutant, "survived")


def equivalent() -> dict[str, str]:
    """key → why the mutant cannot be told apart from the original policy."""
    entries = yaml.safe_load(EQUIVALENT.read_text()) or []
    return {e["key"]: e["reason"] for e in entries}


def sample(all_mutants: list[Mutant], every: int) -> list[Mutant]:
    """Every rule deletion and comparison flip, and a fixed 1-in-`every` share of line mutants (chosen by
    hash, so a policy edit elsewhere does not reshuffle the choice)."""
    def keep(m: Mutant) -> bool:
        return m.operator in ("delete-rule", "flip") or int(hashlib.sha256(m.key.encode()).hexdigest(), 16) % every == 0
    return [m for m in all_mutants if keep(m)]


def run_all(policy_root: Path, chosen: list[Mutant], progress: bool = False) -> list[Outcome]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, m in enumerate(chosen, 1):
            out.append(run(m, policy_root, Path(tmp)))
            if progress and i % 25 == 0:
                print(f"  mutants {i}/{len(chosen)}", flush=True)
    return out


def score(outcomes: list[Outcome]) -> str:
    eq = equivalent()
    scored = [o for o in outcomes if o.status != "stillborn"]
    killed = sum(o.status == "killed" for o in scored)
    documented = sum(o.status == "survived" and o.mutant.key in eq for o in scored)
    pct = 100.0 * (killed + documented) / len(scored) if scored else 100.0
    return (f"Rego mutation score {pct:.1f}%: {killed} killed, {documented} documented equivalent, "
            f"{len(scored) - killed - documented} surviving of {len(scored)} mutants "
            f"({len(outcomes) - len(scored)} stillborn)")
