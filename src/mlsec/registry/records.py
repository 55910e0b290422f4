"""Signed registry records other than gate decisions: approvals (signed by the approver's own key) and
revocations (signed by a gate key). Both are in-toto Statements in DSSE envelopes."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, Key

from mlsec.evidence import utcnow
from mlsec.gates.attest import STATEMENT_TYPE, AttestationError, open_envelope, sign_statement
from mlsec.sign.keys import sslib_key, sslib_signer

APPROVAL_TYPE = "https://mlsec.dev/attestation/approval/v1"
REVOCATION_TYPE = "https://mlsec.dev/attestation/revocation/v1"


def normalize_identity(identity: str) -> str:
    """What two spellings of one person have in common: NFKC, case-folded, trimmed."""
    return unicodedata.normalize("NFKC", identity).casefold().strip()


def _statement(name: str, digest: str, predicate_type: str, predicate: dict[str, Any]) -> dict[str, Any]:
    return {"_type": STATEMENT_TYPE, "subject": [{"name": name, "digest": {"sha256": digest}}],
            "predicateType": predicate_type, "predicate": predicate}


def _subject(stmt: Mapping[str, Any]) -> tuple[str, str]:
    (subject,) = stmt["subject"]
    return subject["name"], subject["digest"]["sha256"]


# -- approvals ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Approval:
    identity: str  # normalised
    key: str  # sha256 fingerprint of the approver's public key (as `mlsec keys create` prints it)


def sign_approval(name: str, digest: str, stage: str, identity: str, private_key: Path) -> dict[str, Any]:
    """{"envelope": DSSE, "public_key": PEM}: the key travels with it; policy data says whose key it is."""
    signer = sslib_signer(private_key)
    stmt = _statement(name, digest, APPROVAL_TYPE, {
        "stage": stage, "approver": normalize_identity(identity), "time": utcnow().isoformat()})
    return {"envelope": sign_statement(stmt, signer), "public_key": signer.public_key.keyval["public"]}


def verify_approval(record: Mapping[str, Any], name: str, digest: str, stage: str) -> Approval:
    """An approval counts only if its signature verifies with the key it carries and it is about this
    model, this digest and this stage; whether that key may approve is the policy's call."""
    try:
        pub = serialization.load_pem_public_key(str(record["public_key"]).encode())
        key = sslib_key(pub)  # type: ignore[arg-type]
        stmt = open_envelope(record["envelope"], [key])
        pred = stmt["predicate"]
        if stmt["predicateType"] != APPROVAL_TYPE or _subject(stmt) != (name, digest) or pred["stage"] != stage:
            raise AttestationError("approval is for another model, digest or stage")
        return Approval(identity=normalize_identity(str(pred["approver"])), key=key.keyid)
    except AttestationError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise AttestationError(f"not an approval record: {e}") from e


# -- revocations -------------------------------------------------------------------------------------
def sign_revocation(name: str, version: str, digest: str, reason: str, by: str,
                    signer: CryptoSigner) -> dict[str, Any]:
    return sign_statement(_statement(name, digest, REVOCATION_TYPE, {
        "version": version, "reason": reason, "by": by, "time": utcnow().isoformat()}), signer)


def revocation_reason(raw: bytes, name: str, digest: str, keys: Iterable[Key]) -> str:
    """Why a version was revoked, from a record that verifies; AttestationError otherwise."""
    try:
        stmt = open_envelope(json.loads(raw), keys)
        if stmt["predicateType"] != REVOCATION_TYPE or _subject(stmt) != (name, digest):
            raise AttestationError("revocation is about another model")
        return f"{stmt['predicate']['reason']} (by {stmt['predicate']['by']})"
    except AttestationError:
        raise
    except (KeyError, TypeError, ValueError, RecursionError) as e:  # RecursionError: a JSON nesting bomb
        raise AttestationError(f"not a revocation record: {str(e)[:200]}") from e
