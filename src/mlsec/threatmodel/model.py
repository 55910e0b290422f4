"""The threat model's schema: the system (assets, components, trust boundaries, data flows) and each threat
rated (STRIDE-AI, CIA3-R, MITRE ATLAS, OWASP ML Top 10, DREAD, likelihood × impact), drawn as an attack
tree, and tied to the controls that stop it and the tests that prove they do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

THREATS = Path(__file__).with_name("threats.yaml")
Stride = Literal["Spoofing", "Tampering", "Repudiation", "Information disclosure", "Denial of service",
                 "Elevation of privilege"]
Cia3r = Literal["Confidentiality", "Integrity", "Availability", "Authenticity", "Authorization",
                "Non-repudiation"]
# STRIDE-AI (Mauri & Damiani): each STRIDE category threatens one property of the CIA3-R hexagon.
STRIDE_PROPERTY: dict[str, str] = {
    "Spoofing": "Authenticity", "Tampering": "Integrity", "Repudiation": "Non-repudiation",
    "Information disclosure": "Confidentiality", "Denial of service": "Availability",
    "Elevation of privilege": "Authorization"}
# OWASP Machine Learning Security Top 10 (2023).
OWASP_ML = {"ML01": "Input manipulation", "ML02": "Data poisoning", "ML03": "Model inversion",
            "ML04": "Membership inference", "ML05": "Model theft", "ML06": "AI supply chain attacks",
            "ML07": "Transfer learning attack", "ML08": "Model skewing", "ML09": "Output integrity attack",
            "ML10": "Model poisoning"}
CODE = re.compile(r"^[a-z_][\w.]*:[A-Za-z_][\w.]*$")                   # module:qualname
REGO = re.compile(r"^policies/[\w/]+\.rego#(deny|warn|rule)\[.+\]$")     # policies/x.rego#deny[fragment]
TEST = re.compile(r"^(tests/[\w/]+\.py|policies/[\w/]+_test\.rego)::\w+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Asset(_Strict):
    id: str = Field(pattern=r"^A\d{2}$")
    name: str
    properties: list[Cia3r] = Field(min_length=1)


class Component(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    boundary: str


class Boundary(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    why: str


class Flow(_Strict):
    source: str
    target: str
    carries: str


class Dread(_Strict):
    damage: int = Field(ge=1, le=10)
    reproducibility: int = Field(ge=1, le=10)
    exploitability: int = Field(ge=1, le=10)
    affected_users: int = Field(ge=1, le=10)
    discoverability: int = Field(ge=1, le=10)

    @property
    def score(self) -> float:
        return (self.damage + self.reproducibility + self.exploitability + self.affected_users
                + self.discoverability) / 5


class Node(_Strict):
    """An attack tree node: a goal reached when all (AND) or any (OR) of its children are."""
    goal: str
    gate: Literal["AND", "OR", "LEAF"] = "LEAF"
    children: list[Node] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> Node:
        if (self.gate == "LEAF") != (not self.children):
            raise ValueError(f"attack tree node {self.goal!r}: a LEAF has no children, AND/OR need some")
        return self


class Switch(_Strict):
    """How a proof run turns a code control off: `target` (module:attribute) is replaced by a function
    that ignores its arguments and returns `returns`, or by `use` (a stand-in in threatmodel.switches)."""
    target: str = Field(pattern=CODE.pattern)
    returns: Any = None
    use: str | None = Field(default=None, pattern=CODE.pattern)


class Control(_Strict):
    what: str
    code: str | None = Field(default=None, pattern=CODE.pattern)
    switch: Switch | None = None
    rego: str | None = Field(default=None, pattern=REGO.pattern)
    tests: list[str] = Field(min_length=1)   # the tests that fail when this control is removed

    @model_validator(mode="after")
    def _one_kind(self) -> Control:
        if (self.code is None) == (self.rego is None):
            raise ValueError(f"control {self.what!r}: name exactly one of code (module:function) or rego")
        if self.code and not self.switch:
            raise ValueError(f"control {self.what!r}: a code control declares the switch that turns it off")
        bad = [t for t in self.tests if not TEST.match(t)]
        if bad:
            raise ValueError(f"control {self.what!r}: tests must be file::function, not {bad}")
        return self


class Threat(_Strict):
    id: str = Field(pattern=r"^T\d{2}$")
    title: str
    component: str
    stride: list[Stride] = Field(min_length=1)
    cia3r: list[Cia3r] = Field(min_length=1)
    atlas: list[str] = Field(min_length=1)
    owasp_ml: list[str] = Field(default_factory=list)
    dread: Dread
    likelihood: int = Field(ge=1, le=5)
    impact: int = Field(ge=1, le=5)
    attack_tree: Node
    status: Literal["mitigated", "partial", "open"]
    gap: str = ""                             # what is missing, for partial/open
    attack_tests: list[str] = Field(min_length=1)  # the attacker's move, played for real; must fail
    controls: list[Control] = Field(default_factory=list)

    @property
    def risk(self) -> int:
        return self.likelihood * self.impact

    @property
    def tests(self) -> list[str]:
        return list(dict.fromkeys(self.attack_tests + [t for c in self.controls for t in c.tests]))

    @model_validator(mode="after")
    def _consistent(self) -> Threat:
        implied = {STRIDE_PROPERTY[s] for s in self.stride}
        if not implied <= set(self.cia3r):
            raise ValueError(f"{self.id}: STRIDE {self.stride} threatens {sorted(implied)}; cia3r must name them")
        unknown = [o for o in self.owasp_ml if o not in OWASP_ML]
        if unknown:
            raise ValueError(f"{self.id}: unknown OWASP ML Top 10 ids {unknown}")
        if any(not re.match(r"^AML\.T\d{4}(\.\d{3})?$", a) for a in self.atlas):
            raise ValueError(f"{self.id}: ATLAS ids look like AML.T0020 or AML.T0024.001")
        if self.status == "mitigated" and not self.controls:
            raise ValueError(f"{self.id}: mitigated needs controls to prove")
        if self.status != "mitigated" and not self.gap:
            raise ValueError(f"{self.id}: a {self.status} threat names its gap")
        return self


class ThreatModel(_Strict):
    assets: list[Asset]
    boundaries: list[Boundary]
    components: list[Component]
    flows: list[Flow]
    threats: list[Threat]

    @model_validator(mode="after")
    def _references(self) -> ThreatModel:
        boundaries, components = {b.id for b in self.boundaries}, {c.id for c in self.components}
        problems = [f"component {c.id}: unknown boundary {c.boundary}" for c in self.components
                    if c.boundary not in boundaries]
        problems += [f"flow {f.source}->{f.target}: unknown component" for f in self.flows
                     if not {f.source, f.target} <= components]
        problems += [f"{t.id}: unknown component {t.component}" for t in self.threats if t.component not in components]
        ids = [t.id for t in self.threats]
        problems += [f"duplicate threat id {i}" for i in sorted({i for i in ids if ids.count(i) > 1})]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def ranked(self) -> list[Threat]:
        """Open threats first, then partial, then mitigated; within each by DREAD, then likelihood × impact."""
        order = {"open": 0, "partial": 1, "mitigated": 2}
        return sorted(self.threats, key=lambda t: (order[t.status], -t.dread.score, -t.risk, t.id))


def load_model(path: Path = THREATS) -> ThreatModel:
    return ThreatModel.model_validate(yaml.safe_load(path.read_text()))


def load(path: Path = THREATS) -> list[Threat]:
    return load_model(path).threats
