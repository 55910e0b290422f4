"""The data contract: the columns a dataset must have, their types and ranges, and which are PII."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlsec.digest import sha256_file

PiiKind = Literal["name", "email", "ssn", "phone", "zip", "credit_card", "iban", "ip_address"]
MAX_SOURCE_BYTES = 1 << 30  # the ceiling no contract can raise


class Pii(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: PiiKind
    # tokenize: keyed HMAC-SHA256 (mlsec.ingest.pii.Tokenizer), so equal values still join
    action: Literal["drop", "mask", "tokenize"]


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["int", "float", "str"]
    nullable: bool = False
    unique: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float] | None = None
    pii: Pii | None = None


class SourceLimits(BaseModel):
    """What a source may be before it is parsed: format, size, shape, and what to do with formula cells."""

    model_config = ConfigDict(extra="forbid")
    formats: list[Literal["csv", "parquet"]] = ["csv", "parquet"]
    max_bytes: int = Field(default=MAX_SOURCE_BYTES, gt=0, le=MAX_SOURCE_BYTES)
    max_rows: int = Field(default=10_000_000, gt=0)
    max_columns: int = Field(default=256, gt=0)
    max_cell_chars: int = Field(default=65_536, gt=0)
    # A text cell starting with = + - @ (or tab/CR) that is not a number runs as a formula when the
    # processed CSV is opened in a spreadsheet: deny the dataset, or neutralise it with a leading '.
    formula_cells: Literal["deny", "neutralise"] = "deny"


class DataContract(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    label: str
    protected_attribute: str | None = None
    features: list[str]
    columns: dict[str, Column]
    source: SourceLimits = SourceLimits()
    sha256: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> DataContract:
        for col in [self.label, *self.features, *([self.protected_attribute] if self.protected_attribute else [])]:
            if col not in self.columns:
                raise ValueError(f"column {col!r} is used but not declared under columns")
        for col in self.features:
            if self.columns[col].pii is not None:
                raise ValueError(f"feature {col!r} is declared PII: PII never reaches training")
        return self

    @property
    def pii_columns(self) -> dict[str, Pii]:
        return {name: c.pii for name, c in self.columns.items() if c.pii is not None}


def load_contract(path: Path) -> DataContract:
    try:
        raw = yaml.safe_load(path.read_text())
        return DataContract.model_validate({**raw, "sha256": sha256_file(path)})
    except (OSError, yaml.YAMLError, TypeError) as e:
        raise ValueError(f"cannot read data contract {path}: {e}") from e
    except ValidationError as e:
        raise ValueError(f"invalid data contract {path}: {e}") from e
