"""API keys for the model server, stored only as SHA-256 hashes: {"client-id": "sha256:<hex>"}."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path


def _hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def create(path: Path, client: str) -> str:
    """Adds a client and returns its new key; the key itself is never stored."""
    keys = load(path) if path.exists() else {}
    if client in keys:
        raise ValueError(f"client {client!r} already has a key in {path}")
    key = "mlsec_" + secrets.token_urlsafe(32)
    keys[client] = _hash(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f, indent=2)
    return key


def load(path: Path) -> dict[str, str]:
    try:
        keys = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read API keys from {path}: {e}") from e
    if not isinstance(keys, dict) or not all(isinstance(v, str) and v.startswith("sha256:") for v in keys.values()):
        raise ValueError(f"{path} must map client ids to 'sha256:<hex>' key hashes")
    return keys


class ApiKeys:
    def __init__(self, hashes: dict[str, str]) -> None:
        if not hashes:
            raise ValueError("no API keys configured: the server does not run unauthenticated")
        self._by_hash = {h: client for client, h in hashes.items()}

    def client(self, presented: str | None) -> str | None:
        """The client a key belongs to, or None. Compared in constant time."""
        if not presented:
            return None
        digest = _hash(presented)
        for h, client in self._by_hash.items():
            if hmac.compare_digest(h, digest):
                return client
        return None
