"""SHA-256 naming for files and directories: downstream trusts a digest it computed itself."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_json_object(members: dict[str, bytes]) -> bytes:
    """canonical_json of an object whose member values are already canonical JSON, without encoding
    them again (a gate reuses the evidence bytes it hashed as part of the policy input)."""
    return b"{" + b",".join(canonical_json(k) + b":" + v for k, v in sorted(members.items())) + b"}"


def sha256_json(value: Any) -> str:
    return sha256_bytes(canonical_json(value))


def tree_manifest(root: Path) -> dict[str, str]:
    """Relative POSIX path -> SHA-256 of every regular file under root. Symlinks are refused."""
    manifest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"symlink not allowed in an artifact: {path}")
        if path.is_file():
            manifest[path.relative_to(root).as_posix()] = sha256_file(path)
    return manifest


def manifest_digest(manifest: dict[str, str]) -> str:
    """The digest that names a directory: SHA-256 of its canonical manifest."""
    return sha256_json(manifest)


def tree_digest(root: Path) -> str:
    return manifest_digest(tree_manifest(root))
