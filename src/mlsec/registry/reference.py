"""The reference profile of a model's last accepted dataset, as a signed record beside the model version.

models/<name>/<version>/reference/<sha256>.dsse.json holds an in-toto Statement (DSSE) about the model
digest whose predicate is the dataset digest and that dataset's profile (mlsec.ingest.profile), signed by
the gate key of the environment that promoted the version. The next ingest for the model reads it for the
version the stage's newest signed promotion names (Registry.head), and believes it only if it verifies
with a gate key trusted for that stage's environment and is about that model and digest. Anything else
(missing, unsigned, forged, signed by another environment's key, about another model) is no reference,
with the reason: the data gate then warns or denies per policy data.

The profile reaches promote as ingest's own artifact (its canonical JSON), not inside the data evidence:
the evidence names it by SHA-256, and promote stores the file only if its bytes hash to the digest that a
signed, allowing data decision judged. A file swapped in the artifact store is refused and nothing is
stored; the promotion itself goes on (the model does not depend on the file, and the next ingest then
screens against the shipped reference and says why).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from securesystemslib.signer import CryptoSigner

from mlsec.config import Settings, policy_dir
from mlsec.digest import canonical_json, sha256_bytes
from mlsec.fsutil import write_secret
from mlsec.gates.attest import (
    STATEMENT_TYPE, AttestationError, SignedDecision, gate_trust, open_envelope, sign_statement,
)
from mlsec.ingest.evidence import DataEvidence
from mlsec.ingest.profile import Reference, ReferenceProfile, shipped
from mlsec.registry import names
from mlsec.registry.s3 import client_from_env
from mlsec.registry.stages import governing_environments
from mlsec.registry.store import RECORD_LIMIT, Registry, RegistryError

log = logging.getLogger(__name__)

REFERENCE_TYPE = "https://mlsec.dev/attestation/reference-profile/v1"
MAX_PROFILE_BYTES = RECORD_LIMIT  # a profile is tens of KB; past what the registry reads back, not ingest's


def _dir(name: str, version: str) -> str:
    return f"models/{names.model(name)}/{names.version(version)}/reference/"


def statement(name: str, model_digest: str, dataset_digest: str, profile: ReferenceProfile) -> dict[str, Any]:
    return {"_type": STATEMENT_TYPE, "subject": [{"name": name, "digest": {"sha256": model_digest}}],
            "predicateType": REFERENCE_TYPE,
            "predicate": {"dataset": {"sha256": dataset_digest}, "profile": profile.model_dump(mode="json")}}


def store(registry: Registry, name: str, version: str, model_digest: str, dataset_digest: str,
          profile: ReferenceProfile, signer: CryptoSigner) -> str:
    """Signs and stores the profile of the dataset a promoted version learned from; returns its key."""
    body = canonical_json(sign_statement(statement(name, model_digest, dataset_digest, profile), signer))
    key = f"{_dir(name, version)}{sha256_bytes(body)}.dsse.json"
    registry._put_once(key, body)  # noqa: SLF001 - the registry's own write-once, locked primitive
    log.info("registry: reference profile of %s %s stored (%d rows)", name, version, profile.rows)
    return key


def _verified(body: bytes, registry: Registry, environment: str, name: str, model_digest: str) -> ReferenceProfile:
    stmt = open_envelope(body, registry.gates.for_env(environment))
    try:
        (subject,) = stmt["subject"]
        if stmt["predicateType"] != REFERENCE_TYPE or (subject["name"], subject["digest"]["sha256"]) != (name, model_digest):
            raise AttestationError("it is about another model or digest")
        return ReferenceProfile.model_validate(stmt["predicate"]["profile"])
    except (KeyError, TypeError, ValueError, ValidationError) as e:
        raise AttestationError(f"not a reference profile record: {str(e).splitlines()[0][:200]}") from e


def read(registry: Registry, name: str, stage: str) -> Reference:
    """The signed reference profile of the version `stage` follows, or no reference with the reason."""
    environment = registry.stage_envs.get(stage)
    if environment is None:
        return Reference.none(f"stage {stage!r} is governed by no environment; no reference is trusted for it")
    try:
        head = registry.head(name, stage)
        if head is None or not head.decision.subject:
            return Reference.none(f"model {name} has no accepted dataset yet: no signed promotion to {stage}")
        digest = head.decision.subject
        version = digest[:16]
        problems = []
        for key in registry._keys(_dir(name, version)):  # noqa: SLF001 - the registry's own listing
            got = registry._get(key)  # noqa: SLF001
            try:
                profile = _verified(got[0] if got else b"", registry, environment, name, digest)
            except (AttestationError, json.JSONDecodeError) as e:
                log.warning("registry: ignoring reference record %s: %s", key, e)
                problems.append(str(e))
                continue
            return Reference.of(profile, "registry", f"{name}@{version} ({stage})")
    except (RegistryError, ClientError, BotoCoreError) as e:
        return Reference.none(f"the registry's reference for {name}:{stage} cannot be read: {str(e)[:200]}")
    why = f"; none verifies ({problems[0]})" if problems else ""
    return Reference.none(f"{name}@{version} ({stage}) has no signed reference profile{why}")


def encode(profile: ReferenceProfile) -> bytes:
    """A profile as ingest writes its artifact: canonical JSON, the bytes ReferenceProfile.sha256 is of."""
    return canonical_json(profile.model_dump(mode="json"))


def write_profile(path: Path, profile: ReferenceProfile | None) -> None:
    """Ingest's profile artifact: the clean dataset's profile, or no bytes when there is none (so KFP has a file)."""
    write_secret(path, encode(profile) if profile is not None else b"")


def read_profile(path: Path) -> bytes:
    """Ingest's profile artifact as promote reads it: at most one byte over MAX_PROFILE_BYTES, so a file
    swapped for a huge one (or a sparse 1 TiB file) is refused by judged_profile, never read whole."""
    with path.open("rb") as f:
        return f.read(MAX_PROFILE_BYTES + 1)


class NotAccepted(Exception):
    """No accepted profile to store, and why."""


class ProfileMismatch(NotAccepted):
    """The profile file is not the one the judged data evidence names: it was swapped or damaged on the way."""


def judged_profile(body: bytes | None, evidence: DataEvidence, history: Sequence[SignedDecision]) -> ReferenceProfile:
    """The profile in `body` (ingest's artifact), if the data evidence is what a signed, allowing data-gate
    decision judged (history: verified decisions) and it names these bytes' digest; NotAccepted otherwise
    (ProfileMismatch when the bytes are not the ones named)."""
    digest = sha256_bytes(canonical_json(evidence.model_dump(mode="json")))
    judged = any(s.decision.gate == "data" and s.decision.allow and s.decision.evidence_sha256 == digest
                 and s.decision.subject == evidence.subject.digest for s in history)
    named = evidence.poisoning.profile_sha256
    if named is None:
        raise NotAccepted("the data evidence names no profile")
    if not judged:
        raise NotAccepted("no signed, allowing data decision judged the data evidence that names it")
    if body is None:
        raise NotAccepted("no profile file reached promote")
    if len(body) > MAX_PROFILE_BYTES:
        raise ProfileMismatch(f"the profile file is over {MAX_PROFILE_BYTES} bytes, larger than any profile ingest "
                              f"writes: swapped after ingest; not read")
    got = sha256_bytes(body)
    if got != named:
        raise ProfileMismatch(f"the profile file ({len(body)} bytes, sha256 {got}) is not the profile {named} "
                              f"that the judged data evidence names: swapped or damaged after ingest")
    return ReferenceProfile.model_validate_json(body)  # ingest's own bytes, as the signed decision judged them


def store_accepted(registry: Registry, name: str, version: str, model_digest: str, evidence: DataEvidence,
                   profile: bytes | None, history: Sequence[SignedDecision], signer: CryptoSigner) -> str | None:
    """Once a version is promoted, signs and stores the profile ingest wrote (`profile`, the artifact's bytes)
    as the next ingest's reference, if the judged data evidence names exactly those bytes; None, logged,
    otherwise (a mismatch as an error: nothing is stored, the promotion stands)."""
    try:
        accepted = judged_profile(profile, evidence, history)
    except ProfileMismatch as e:
        log.error("registry: reference profile of %s %s REFUSED, none stored: %s", name, version, e)
        return None
    except NotAccepted as e:
        log.warning("registry: no reference profile stored for %s %s: %s", name, version, e)
        return None
    return store(registry, name, version, model_digest, evidence.subject.digest, accepted, signer)


def for_ingest(name: str, stage: str) -> Reference:
    """What the next ingest of model `name` screens against: the registry's signed reference for the version
    `stage` follows, else the one the sample ships (with the registry's reason beside it)."""
    settings = Settings()
    try:
        registry = Registry(client_from_env(), settings.s3_bucket, gates=gate_trust(settings.key_dir),
                            stage_envs=governing_environments(policy_dir()))
        found = read(registry, name, stage)
    except Exception as e:  # noqa: BLE001 - a registry that cannot be asked is no registry reference
        found = Reference.none(f"the registry cannot be asked ({type(e).__name__})")
    if found.profile is not None:
        return found
    fallback = shipped()
    if fallback.profile is None:
        return Reference.none(f"{found.used.detail}; {fallback.used.detail}")
    return Reference(fallback.profile, fallback.used.model_copy(
        update={"detail": f"{fallback.used.detail} ({found.used.detail})"}))
