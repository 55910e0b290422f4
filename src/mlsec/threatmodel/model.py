"""Load and check threats.yaml (STRIDE, MITRE ATLAS, OWASP ML Top 10, DREAD; controls proven by tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

THREATS = Path(__file__).with_name("threats.yaml")
Stride = Literal["Spoofing", "Tampering", "Repudiation", "Information disclosure", "Denial of service",
                 "Elevation of privilege"]


class Dread(BaseModel):
    model_config = ConfigDict(extra="forbid")
    damage: int = Field(ge=1, le=10)
    reproducibility: int = Field(ge=1, le=10)
    exploitability: int = Field(ge=1, le=10)
    affected_users: int = Field(ge=1, le=10)
    discoverability: int = Field(ge=1, le=10)

    @property
    def score(self) -> float:
        return (self.damage + self.reproducibility + self.exploitability + self.affected_users
                + self.discoverability) / 5


class Threat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^T\d{2}$")
    title: str
    stage: Literal["ingest", "train", "sign", "registry", "serve", "gates", "cluster"]
    stride: list[Stride] = Field(min_length=1)
    atlas: list[str] = Field(min_length=1)
    owasp_ml: list[str] = Field(default_factory=list)
    dread: Dread
    control: str
    tests: list[str] = Field(min_length=1)  # pytest node ids (file::function) that fail without the control


def load(path: Path = THREATS) -> list[Threat]:
    return [Threat.model_validate(t) for t in yaml.safe_load(path.read_text())["threats"]]
