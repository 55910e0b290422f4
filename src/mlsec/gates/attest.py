"""Signed records: in-toto Statements v1 in DSSE envelopes (securesystemslib), and the gate decision as a
SLSA Verification Summary Attestation (VSA) signed with the gate key of the environment that took it.

A record is believed only after its envelope verifies with a key the reader trusts for the environment
the statement names: a dev gate key cannot vouch for a prod decision.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, Key, SSlibKey

from mlsec.digest import canonical_json
from mlsec.fsutil import write_secret
from mlsec.gates.decision import Decision

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
VSA_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_PREFIX = "urn:mlsec:gate:"
MAX_ENVELOPE_BYTES = 1 << 20


class AttestationError(ValueError):
    pass


# -- envelopes -------------------------------------------------------------------------------------
def sign_statement(statement: Mapping[str, Any], signer: CryptoSigner) -> dict[str, Any]:
    env = Envelope(payload=canonical_json(statement), payload_type=PAYLOAD_TYPE, signatures={})
    env.sign(signer)
    return env.to_dict()  # type: ignore[no-any-return]


def peek(envelope: Mapping[str, Any] | bytes) -> dict[str, Any]:
    """The statement an envelope carries, NOT verified: only to choose which keys to verify it with."""
    try:
        doc = json.loads(envelope) if isinstance(envelope, bytes) else dict(envelope)
        stmt = json.loads(base64.b64decode(doc["payload"], validate=True))
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # RecursionError: a JSON nesting bomb
        raise AttestationError(f"not a DSSE envelope: {str(e)[:200]}") from e
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise AttestationError("envelope payload is not an in-toto Statement v1")
    return stmt


def open_envelope(envelope: Mapping[str, Any] | bytes, keys: Iterable[Key]) -> dict[str, Any]:
    """The statement, once the envelope verifies with one of keys; AttestationError otherwise."""
    if isinstance(envelope, bytes) and len(envelope) > MAX_ENVELOPE_BYTES:
        raise AttestationError(f"envelope of {len(envelope)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    stmt = peek(envelope)
    trusted = list(keys)
    if not trusted:
        raise AttestationError("no trusted key to verify it with")
    try:
        # from_dict rewrites the signatures it is given in place: hand it a copy.
        doc = json.loads(envelope) if isinstance(envelope, bytes) else copy.deepcopy(dict(envelope))
        env = Envelope.from_dict(doc)
        if env.payload_type != PAYLOAD_TYPE:
            raise AttestationError(f"payload type {env.payload_type!r} is not {PAYLOAD_TYPE}")
        env.verify(trusted, 1)
    except AttestationError:
        raise
    except Exception as e:  # securesystemslib raises VerificationError and format errors alike
        raise AttestationError(f"signature does not verify with a trusted key ({type(e).__name__})") from e
    return stmt


# -- keys ------------------------------------------------------------------------------------------
def create_key(private: Path) -> SSlibKey:
    """A new Ed25519 key pair: private PEM (0600) at `private`, public PEM beside it as .pub."""
    key = ed25519.Ed25519PrivateKey.generate()
    write_secret(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    pub = key.public_key()
    private.with_suffix(".pub").write_bytes(
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return SSlibKey.from_crypto(pub)


def load_signer(private: Path) -> CryptoSigner:
    try:
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise AttestationError(f"cannot read signing key {private}: {e}") from e
    return CryptoSigner(key)  # type: ignore[arg-type]


def load_public(path: Path) -> SSlibKey:
    try:
        return SSlibKey.from_crypto(serialization.load_pem_public_key(path.read_bytes()))  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError) as e:
        raise AttestationError(f"cannot read public key {path}: {e}") from e


def fingerprint(key: Key) -> str:
    """A key's identity in policy data: sha256 over its public PEM (securesystemslib's keyid)."""
    return f"sha256:{key.keyid}"


@dataclass(frozen=True)
class GateTrust:
    """Environment -> the gate public keys trusted for decisions taken under it (several while rotating)."""

    keys: Mapping[str, list[SSlibKey]] = field(default_factory=dict)

    @classmethod
    def from_dir(cls, directory: Path) -> GateTrust:
        """<env>.pub, and <env>.<anything>.pub for keys kept during a rotation."""
        keys: dict[str, list[SSlibKey]] = {}
        for pub in sorted(directory.glob("*.pub")) if directory.is_dir() else []:
            keys.setdefault(pub.name.split(".", 1)[0], []).append(load_public(pub))
        return cls(keys)

    def for_env(self, environment: str) -> list[SSlibKey]:
        return list(self.keys.get(environment, []))

    def all_keys(self) -> list[SSlibKey]:
        return [k for ks in self.keys.values() for k in ks]


def gate_key_dir(key_dir: Path) -> Path:
    return Path(os.environ.get("MLSEC_GATE_TRUST_DIR") or key_dir / "gates")


def gate_signer(environment: str, key_dir: Path, *, create: bool) -> CryptoSigner:
    """The key this process signs decisions with: MLSEC_GATE_KEY (a mounted Secret in a cluster), else
    <env>.key beside the trusted public keys (locally .mlsec/keys/gates/), made on first use only where
    create is allowed (local runs)."""
    private = gate_key_path(environment, key_dir)
    if not private.exists():
        if not create:
            raise AttestationError(f"no gate signing key for {environment}: set MLSEC_GATE_KEY or put "
                                   f"{private.name} in {private.parent}")
        create_key(private)
    return load_signer(private)


def gate_key_path(environment: str, key_dir: Path) -> Path:
    # The audit log's checkpoints have a key of their own (MLSEC_AUDIT_KEY), never an environment's.
    if explicit := os.environ.get("MLSEC_AUDIT_KEY" if environment == "audit" else "MLSEC_GATE_KEY"):
        return Path(explicit)
    return gate_key_dir(key_dir) / f"{environment}.key"


def gate_trust(key_dir: Path) -> GateTrust:
    return GateTrust.from_dir(gate_key_dir(key_dir))


# -- decisions as VSAs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SignedDecision:
    decision: Decision
    subject_name: str
    envelope: dict[str, Any]


def verifier_id(gate: str, environment: str) -> str:
    return f"{VERIFIER_PREFIX}{gate}:{environment}"


def decision_statement(decision: Decision, subject_name: str) -> dict[str, Any]:
    """The decision as a VSA: verifier = gate + environment, the policy bundle and evidence it judged,
    PASSED/FAILED, about the model or dataset digest. The full decision rides along for the audit trail."""
    subject = decision.subject or decision.evidence_sha256 or "0" * 64
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": subject}}],
        "predicateType": VSA_TYPE,
        "predicate": {
            "verifier": {"id": verifier_id(decision.gate, decision.environment), "version": {"engine": decision.engine}},
            "timeVerified": decision.time.isoformat(),
            "resourceUri": f"mlsec:{decision.gate}:{subject_name}" + (f"@{decision.stage}" if decision.stage else ""),
            "policy": {"uri": f"policies/{decision.gate}.rego", "digest": {"sha256": decision.policy_sha256 or ""}},
            "inputAttestations": [{"uri": "evidence", "digest": {"sha256": decision.evidence_sha256 or ""}}],
            "verificationResult": "PASSED" if decision.allow else "FAILED",
            "verifiedLevels": [],
            "slsaVersion": "1.0",
            "mlsecDecision": decision.model_dump(mode="json"),
        },
    }


def sign_decision(decision: Decision, subject_name: str, signer: CryptoSigner) -> SignedDecision:
    return SignedDecision(decision, subject_name, sign_statement(decision_statement(decision, subject_name), signer))


def unverified_decision(envelope: Mapping[str, Any] | bytes) -> Decision:
    """The decision a VSA carries, NOT verified: for tools that only ask what a policy would say (replay,
    policy eval); gates, the registry and the server use verify_decision."""
    try:
        return Decision.model_validate(peek(envelope)["predicate"]["mlsecDecision"])
    except (KeyError, TypeError, ValueError) as e:
        raise AttestationError(f"not a gate decision VSA: {e}") from e


def verify_decision(envelope: Mapping[str, Any] | bytes, trust: GateTrust) -> SignedDecision:
    """The decision, once its VSA verifies with a key trusted for the environment it names and every
    standard VSA field agrees with the decision it carries."""
    decision = unverified_decision(envelope)  # read first only to choose the environment's keys
    keys = trust.for_env(decision.environment)
    if not keys:
        raise AttestationError(f"no trusted gate key for environment {decision.environment!r}")
    stmt = open_envelope(envelope, keys)
    if stmt.get("predicateType") != VSA_TYPE:
        raise AttestationError("statement is not a SLSA verification summary")
    name = stmt["subject"][0]["name"] if stmt.get("subject") else ""
    if stmt != decision_statement(decision, name):
        raise AttestationError("VSA fields disagree with the decision it carries")
    doc = json.loads(envelope) if isinstance(envelope, bytes) else dict(envelope)
    return SignedDecision(decision, name, doc)


def write_history(path: Path, history: Iterable[SignedDecision]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([s.envelope for s in history], indent=2))


def read_history(path: Path, trust: GateTrust) -> list[SignedDecision]:
    try:
        envelopes = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AttestationError(f"decision history {path} is unreadable: {e}") from e
    if not isinstance(envelopes, list):
        raise AttestationError(f"decision history {path} is not a list of signed decisions")
    out = []
    for i, env in enumerate(envelopes):  # one forged entry makes the whole history untrusted, naming it
        try:
            out.append(verify_decision(env, trust))
        except AttestationError as e:
            raise AttestationError(f"decision #{i + 1} in the history: {e}") from e
    return out
