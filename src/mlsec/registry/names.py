"""Names that become S3 keys and local paths: checked before use, never trusted from a record."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

VERSION = re.compile(r"^[0-9a-f]{16}$")
MODEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
STAGE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
DECISION_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_FILES = 10_000


def check(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{kind} {value!r} is not valid (expected {pattern.pattern})")
    return value


def version(value: str) -> str:
    return check("version", value, VERSION)


def model(value: str) -> str:
    return check("model name", value, MODEL)


def stage(value: str) -> str:
    return check("stage", value, STAGE)


def relative_file(value: str) -> str:
    """A file name inside a bundle: relative, no '..', no empty or hidden-traversal parts, no backslash."""
    p = PurePosixPath(value) if isinstance(value, str) else None
    if (p is None or not value or len(value) > 1024 or p.is_absolute() or "\\" in value or "\x00" in value
            or any(part in ("", ".", "..") for part in value.split("/"))):
        raise ValueError(f"file name {value!r} would leave the bundle directory")
    return value
