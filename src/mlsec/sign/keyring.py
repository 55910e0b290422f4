"""Which model-signing keys are trusted, and until when: the active key, and retired keys that verify only.

After a rotation (`mlsec incident rotate-signing-key`) the old key stays trusted for verification until a
date, so what it signed keeps loading while it is re-signed, and never afterwards; it never signs again.
The trust file (`signing-trust.json` beside the keys, or MLSEC_SIGNING_TRUST; in a cluster the ConfigMap
`mlsec-signing-trust`) names the active key's fingerprint and each retired key with its last valid day; a
retired key's public key lies beside it as `retired-<fingerprint hex>.pub` (flat, so that one ConfigMap holds
them all). No trust file: the configured
public key alone, as before any rotation.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlsec.sign.keys import key_fingerprint, load_public

TRUST_FILE = "signing-trust.json"
RETIRED_PREFIX = "retired-"


@dataclass(frozen=True)
class RetiredKey:
    fingerprint: str
    public_key: Path
    verify_until: date  # the last day (UTC) a signature by this key is accepted


def today() -> date:
    return datetime.now(timezone.utc).date()


def trusted_on(key: RetiredKey, day: date) -> bool:
    """A retired key verifies up to and including its last valid day, never after."""
    return day <= key.verify_until


def key_hint(key: ec.EllipticCurvePublicKey) -> str:
    """What model-signing writes as the signing key's hint: sha256 of its PEM SubjectPublicKeyInfo. Read
    from a signature only to pick which trusted key to verify it with; the verification decides."""
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def retired_public(trust_file: Path, fingerprint: str) -> Path:
    return trust_file.parent / f"{RETIRED_PREFIX}{fingerprint.removeprefix('sha256:')}.pub"


def trust_path(key_dir: Path) -> Path:
    return Path(os.environ.get("MLSEC_SIGNING_TRUST") or key_dir / TRUST_FILE)


@dataclass(frozen=True)
class Keyring:
    active: str | None  # fingerprint of the key that signs now (None: no rotation has happened)
    retired: tuple[RetiredKey, ...] = ()

    def is_retired(self, fingerprint: str) -> RetiredKey | None:
        return next((r for r in self.retired if r.fingerprint == fingerprint), None)


def load(path: Path) -> Keyring:
    """The trust file; a missing file is an empty keyring. Every retired key's file must hold the key
    its fingerprint names."""
    if not path.exists():
        return Keyring(None)
    try:
        doc = json.loads(path.read_text())
        retired = []
        for r in doc.get("retired", []):
            pub = retired_public(path, r["fingerprint"])
            if key_fingerprint(load_public(pub)) != r["fingerprint"]:
                raise ValueError(f"{pub} does not hold the key {r['fingerprint']}")
            retired.append(RetiredKey(r["fingerprint"], pub, date.fromisoformat(r["verify_until"])))
        return Keyring(doc["active"], tuple(retired))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"signing trust file {path} is invalid: {e}") from e


def save(path: Path, ring: Keyring) -> None:
    """Written whole and renamed into place: a verifier never reads half a trust file."""
    doc = {"active": ring.active,
           "retired": [{"fingerprint": r.fingerprint, "verify_until": r.verify_until.isoformat()} for r in ring.retired]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def retire(path: Path, old_public: Path, new_public: Path, verify_until: date) -> Keyring:
    """The new key becomes active, the old one verify-only until verify_until (its public key copied beside
    the trust file). A key retired before keeps its earlier date."""
    ring = load(path)
    old_fp, new_fp = key_fingerprint(load_public(old_public)), key_fingerprint(load_public(new_public))
    if old_fp == new_fp:
        raise ValueError("the new signing key is the old one")
    pub = retired_public(path, old_fp)
    pub.write_bytes(old_public.read_bytes())
    kept = tuple(r for r in ring.retired if r.fingerprint not in (old_fp, new_fp))
    ring = Keyring(new_fp, (*kept, RetiredKey(old_fp, pub, verify_until)))
    save(path, ring)
    return ring
