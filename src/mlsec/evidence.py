"""The common shape of every evidence document: typed, versioned and bound to a subject digest."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Strict(BaseModel):
    """Unknown fields are an error: a policy must know exactly what it receives."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Subject(Strict):
    name: str = Field(min_length=1)
    digest: Sha256


class Evidence(Strict):
    kind: str
    subject: Subject
    created: datetime = Field(default_factory=utcnow)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))


E = TypeVar("E", bound=Evidence)


def read_evidence(cls: type[E], path: Path) -> E:
    return cls.model_validate(json.loads(path.read_text()))
