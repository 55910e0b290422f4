"""API keys for the model server, stored only as SHA-256 hashes.

File format: {"client-id": {"hash": "sha256:<hex>", "models": ["credit"]}}; "models" absent or ["*"]
means every model. A bare "sha256:<hex>" string is the same as {"hash": ..., "models": ["*"]}.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def create(path: Path, client: str, models: list[str] | None = None) -> str:
    """Adds a client and returns its new key; the key itself is never stored."""
    keys = load(path) if path.exists() else {}
    if client in keys:
        raise ValueError(f"client {client!r} already has a key in {path}")
    key = "mlsec_" + secrets.token_urlsafe(32)
    keys[client] = {"hash": _hash(key), "models": models or ["*"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f, indent=2)
    return key


def _entry(client: str, value: Any) -> dict[str, Any]:
    entry = {"hash": value, "models": ["*"]} if isinstance(value, str) else value
    if (not isinstance(entry, dict) or not str(entry.get("hash", "")).startswith("sha256:")
            or not isinstance(entry.get("models", ["*"]), list)):
        raise ValueError(f"API key entry for {client!r} must be 'sha256:<hex>' or {{'hash': ..., 'models': [...]}}")
    return {"hash": entry["hash"], "models": entry.get("models", ["*"])}


def load(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no API keys at {path}: create one with `mlsec keys api-key <client> --file {path}`"
                         " (the server refuses to run without authentication)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read API keys from {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must map client ids to key hashes")
    return {client: _entry(client, value) for client, value in raw.items()}


@dataclass(frozen=True)
class Client:
    id: str
    models: frozenset[str]

    def may_use(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class ApiKeys:
    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        if not entries:
            raise ValueError("no API keys configured: the server does not run unauthenticated")
        self._by_hash = {e["hash"]: Client(client, frozenset(e["models"])) for client, e in entries.items()}

    def client(self, presented: str | None) -> Client | None:
        """Whose key this is, or None: one lookup by the SHA-256 of the presented key, whatever the number of
        clients (comparing against every stored hash cost time linear in the clients on every request). The
        lookup's timing depends only on hashes: how a guess's hash differs from a stored one tells nothing
        about the key (finding a key for a given hash prefix is a preimage search), and the stored hashes
        hold 256 bits of random keys."""
        if not presented:
            return None
        return self._by_hash.get(_hash(presented))


class Lockout:
    """Failed authentications per source address: past max_failures within window_s, the address is
    locked out for lockout_s. Checked before any key lookup, so guessing keys costs the guesser time."""

    def __init__(self, max_failures: int = 20, window_s: float = 60.0, lockout_s: float = 300.0,
                 max_addresses: int = 100_000) -> None:
        self.max_failures, self.window_s, self.lockout_s = max_failures, window_s, lockout_s
        self.max_addresses = max_addresses
        self._failures: dict[str, list[float]] = {}
        self._until: dict[str, float] = {}

    def locked(self, address: str, now: float) -> float:
        """Seconds this address stays locked out (0.0: not locked)."""
        until = self._until.get(address, 0.0)
        if until <= now:
            self._until.pop(address, None)
            return 0.0
        return until - now

    def failed(self, address: str, now: float) -> None:
        if address not in self._failures and len(self._failures) >= self.max_addresses:
            self._prune(now)
        recent = [t for t in self._failures.get(address, []) if t > now - self.window_s] + [now]
        self._failures[address] = recent
        if len(recent) >= self.max_failures:
            if address not in self._until and len(self._until) >= self.max_addresses:
                self._prune_locks(now)
            self._until[address] = now + self.lockout_s
            del self._failures[address]

    def _prune_locks(self, now: float) -> None:
        """Lockouts are dropped only when their address comes back: without this, addresses that never return
        (a flood of fresh ones) grew the table without bound. Expired ones go; if all are live, the soonest to
        expire half (an attacker holding that many addresses gains nothing it lacked)."""
        for address in [a for a, until in self._until.items() if until <= now]:
            del self._until[address]
        if len(self._until) >= self.max_addresses:
            for address in sorted(self._until, key=self._until.__getitem__)[: len(self._until) // 2]:
                del self._until[address]

    def _prune(self, now: float) -> None:
        for address in [a for a, ts in self._failures.items() if ts[-1] <= now - self.window_s]:
            del self._failures[address]
        if len(self._failures) >= self.max_addresses:  # a flood of fresh addresses: forget the oldest half
            for address in sorted(self._failures, key=lambda a: self._failures[a][-1])[: len(self._failures) // 2]:
                del self._failures[address]
