"""The model registry on S3.

models/<name>/<version>/{model/..., model.sig, provenance.dsse.json}  the signed bundle: locked, encrypted
models/<name>/<version>/evidence/<gate>/<sha256>.json  what the data and training gates judged (locked)
models/<name>/<version>/attestations/<id>.dsse.json  gate decisions about this version, as signed VSAs
models/<name>/<version>/approvals/<stage>/<id>.json  approvals, each signed by its approver
models/<name>/<version>/manifest.json                cache of the above, written last (upload complete)
models/<name>/<version>/signatures/<key hint>/{model.sig, provenance.dsse.json}  re-signed after a key
                                                     rotation (locked); used when the active key's is there
promotions/<name>/<stage>/<time>-<id>.dsse.json      signed promotion decisions, named in time order
aliases/<name>/<stage>.json                          cache of the newest promotion; moved by conditional write
revocations/<name>/<version>.json                    signed, COMPLIANCE-locked; any version of it revokes

What the registry relies on is recomputed from bytes or read from a signed record (docs/trust.md). A
manifest or alias anyone with write access can replace is a cache: a disagreement is reported, never used.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import attrgetter
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, ValidationError
from securesystemslib.signer import CryptoSigner

from mlsec.digest import canonical_json, sha256_bytes, tree_manifest
from mlsec.evidence import Evidence, Subject, utcnow
from mlsec.gates.attest import AttestationError, GateTrust, SignedDecision, sign_decision, verify_decision
from mlsec.gates.audit import AuditSink
from mlsec.gates.decision import Decision
from mlsec.gates.engine import PolicyEngine
from mlsec.gates.gate import GATES, evaluate
from mlsec.registry import fetch, names
from mlsec.registry.evidence import ApprovalFact, PromotionEvidence, RegistryCheck
from mlsec.registry.records import (
    Approval, normalize_identity, revocation_reason, sign_approval, sign_revocation, verify_approval,
)
from mlsec.sign import stage as signing
from mlsec.sign.evidence import SigningEvidence
from mlsec.sign.keyring import key_hint
from mlsec.sign.keys import load_public
from mlsec.sign.methods import Trust, as_trust
from mlsec.train.evidence import Metrics, TrainingEvidence

log = logging.getLogger(__name__)

SSE = "AES256"
PROD_STAGE = "prod"
RECORD_DIRS = ("deployments/", "attestations/", "approvals/")  # beside a version, not part of it
REJUDGED = ("data", "training", "signing")  # gates a promotion judges again under the stage's environment


RECORD_LIMIT = 16 * 1024 * 1024  # bytes of a stored record (manifest, alias, promotion, decision, evidence)


class RegistryError(RuntimeError):
    pass


class VersionRecord(BaseModel):
    """A cache of what the signed records say; checked against them, never believed on its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    version: str
    model_digest: str
    files: dict[str, str]  # bundle-relative path -> sha256
    dataset_digest: str
    metrics: Metrics
    signer: str
    author: str
    created: datetime
    decisions: list[Decision]


class Alias(BaseModel):
    """A cache of the newest signed promotion for a stage, and the object a move conditionally replaces."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str
    model_digest: str
    decision_id: str
    moved_at: datetime
    previous: str | None
    decision_time: datetime | None = None  # names the promotion's key: head() checks it without listing all


@dataclass(frozen=True)
class Verified:
    """What a version's own bytes and signed records establish."""

    record: VersionRecord  # the manifest cache, for display
    check: RegistryCheck
    decisions: list[SignedDecision]  # verified VSAs about this model or its dataset
    metrics: Metrics  # from the training evidence a signed training decision judged
    dataset_digest: str  # from the signed provenance
    signing: SigningEvidence | None  # recomputed from the registry's copy (None: it could not be fetched)


@dataclass(frozen=True)
class Registry:
    s3: Any
    bucket: str
    retention_days: int = 30
    gates: GateTrust = field(default_factory=GateTrust)  # gate keys per environment
    stage_envs: Mapping[str, str] = field(default_factory=dict)  # stage -> environment that governs it

    # -- bucket --------------------------------------------------------------------------------
    def ensure_bucket(self, create: bool = True) -> None:
        """Checks that the bucket keeps versions under object lock; needs read access only.

        create=True is bucket setup (admin credentials, never a run-time identity): a missing bucket is
        created with object lock. Run-time callers pass create=False and a missing bucket is an error.
        """
        if create:
            try:
                self.s3.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if _code(e) not in {"404", "NoSuchBucket", "NotFound"}:
                    raise
                # Object lock can only be enabled at creation; it also turns versioning on.
                self.s3.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
        try:
            status = self.s3.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except ClientError as e:
            if _code(e) in {"404", "NoSuchBucket", "NotFound"}:
                raise RegistryError(f"bucket {self.bucket} does not exist; the bucket setup (admin credentials) "
                                    "creates it, not a pipeline or server identity") from e
            raise
        if status != "Enabled":
            raise RegistryError(f"bucket {self.bucket} must have versioning enabled (status: {status})")
        lock = self.s3.get_object_lock_configuration(Bucket=self.bucket)
        if lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise RegistryError(f"bucket {self.bucket} must have object lock enabled")

    # -- low level -----------------------------------------------------------------------------
    def _retain_until(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(days=self.retention_days)

    def _put_once(self, key: str, body: bytes) -> None:
        """Write a key that must never change: conditional create, encrypted, COMPLIANCE-locked (the
        pipeline's identity may extend retention but never change its mode, so it is set here)."""
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", ServerSideEncryption=SSE,
                ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=self._retain_until(),
                Metadata={"sha256": sha256_bytes(body)},
            )
        except ClientError as e:
            if _code(e) not in {"PreconditionFailed", "ConditionalRequestConflict"}:
                raise
            got = self._get(key)
            # Left by an earlier, interrupted upload: fine if identical, fatal otherwise.
            if got is None or got[0] != body:
                raise RegistryError(f"{key} already exists with different content; versions are immutable") from e

    def _get(self, key: str, version_id: str | None = None) -> tuple[bytes, str] | None:
        try:
            extra = {"VersionId": version_id} if version_id else {}
            obj = self.s3.get_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as e:
            if _code(e) in {"NoSuchKey", "404", "NoSuchVersion"}:
                return None
            raise
        # Records are small signed JSON; one planted with the pipeline's S3 key may be gigabytes. Read at
        # most one byte past the limit: an oversized record then fails to parse or verify like any forgery.
        with obj["Body"] as body:
            return body.read(RECORD_LIMIT + 1), obj["ETag"]

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def _all_versions(self, prefix: str, *, exact: bool = False, after: str | None = None) -> Iterator[tuple[str, bytes]]:
        """Every stored version under prefix (exact: of that one key; after: of keys sorting after it),
        newest or not: a delete marker or an overwrite hides nothing."""
        marker = {"KeyMarker": after} if after else {}
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix, **marker):
            for v in page.get("Versions", []):
                if exact and v["Key"] != prefix:
                    continue
                got = self._get(v["Key"], v["VersionId"])
                if got is not None:
                    yield v["Key"], got[0]

    @staticmethod
    def _prefix(name: str, version: str) -> str:
        return f"models/{names.model(name)}/{names.version(version)}/"

    # -- register ------------------------------------------------------------------------------
    def register(self, name: str, bundle: Path, trust: Trust | Path, *, evidence: Mapping[str, Evidence],
                 decisions: Sequence[SignedDecision], author: str) -> VersionRecord:
        """Stores the signed bundle, the evidence the data and training gates judged, and their signed
        decisions. evidence: {"data": DataEvidence, "training": TrainingEvidence}."""
        verified = signing.verify(bundle, trust)  # never store what does not verify
        attested = set(verified.attestation.decision_digests)
        for d in decisions:
            verify_decision(d.envelope, self.gates)  # raises unless signed by a trusted gate key
            if d.decision.gate != "signing" and d.decision.digest not in attested:
                raise RegistryError(f"{d.decision.gate}-gate decision {d.decision.id} is not covered by the "
                                    "signed attestation")
        training = evidence["training"]
        assert isinstance(training, TrainingEvidence)
        version = verified.model_digest[:16]
        prefix = self._prefix(name, version)
        existing = self.record(name, version)
        if existing is not None and existing.model_digest != verified.model_digest:
            raise RegistryError(f"version {version} of {name} exists with another digest")
        files = tree_manifest(bundle)
        if existing is None:  # a later run of the same model keeps the stored bundle; its records still land
            for i, (rel, _) in enumerate(sorted(files.items()), start=1):
                log.info("registry: upload %s (%d/%d)", rel, i, len(files))
                self._put_once(prefix + rel, (bundle / rel).read_bytes())
        for gate, ev in evidence.items():  # named by digest: each run's evidence beside the others'
            body = canonical_json(ev.model_dump(mode="json"))
            self._put_once(f"{prefix}evidence/{gate}/{sha256_bytes(body)}.json", body)
        for d in decisions:
            self._put_once(f"{prefix}attestations/{d.decision.id}.dsse.json", canonical_json(d.envelope))
        if existing is not None:
            return existing
        record = VersionRecord(
            name=name, version=version, model_digest=verified.model_digest, files=files,
            dataset_digest=verified.attestation.dataset_digest, metrics=training.metrics, signer=verified.signer,
            author=author, created=utcnow(), decisions=[d.decision for d in decisions],
        )
        self._put_once(prefix + "manifest.json", record.model_dump_json(indent=2).encode())
        return record

    def record(self, name: str, version: str) -> VersionRecord | None:
        got = self._get(self._prefix(name, version) + "manifest.json")
        return VersionRecord.model_validate_json(got[0]) if got else None

    def _existing(self, name: str, version: str) -> VersionRecord:
        record = self.record(name, version)
        if record is None:
            raise RegistryError(f"{name} version {version} does not exist (or its upload never completed)")
        return record

    # -- verify from the registry's own copy ---------------------------------------------------
    def signature_set(self, name: str, version: str, trust: Trust | Path | None) -> str | None:
        """The prefix of the set re-signed with the trusted active key (mlsec.incident.rotate), if stored;
        None: the version's own signature. Which set is used only picks the key: verification decides."""
        t = as_trust(trust) if trust is not None else None
        if t is None or t.method != "key" or t.public_key is None:
            return None
        prefix = f"{self._prefix(name, version)}signatures/{key_hint(load_public(t.public_key))}/"
        return prefix if self._get(prefix + signing.SIGNATURE) is not None else None

    def add_signature_set(self, name: str, version: str, hint: str, signature: bytes, provenance: bytes) -> None:
        """Stores a re-signed signature and provenance beside the version; write-once, like the version."""
        self._existing(name, version)
        if len(hint) != 64 or not all(c in "0123456789abcdef" for c in hint):
            raise RegistryError(f"key hint {hint!r} is not a sha256 hex digest")
        prefix = f"{self._prefix(name, version)}signatures/{hint}/"
        self._put_once(prefix + signing.ATTESTATION, provenance)
        self._put_once(prefix + signing.SIGNATURE, signature)  # last: signature_set looks for it

    @contextmanager
    def fetched(self, name: str, version: str, trust: Trust | Path | None = None) -> Iterator[tuple[Path, list[str]]]:
        """The signed file set of a version, downloaded into a private directory (removed afterwards); with
        trust, the set re-signed with its active key where there is one."""
        root = fetch.private_dir("mlsec-pull-")
        try:
            try:
                files = fetch.download(self.s3, self.bucket, self._prefix(name, version), root,
                                       self.signature_set(name, version, trust))
            except ClientError as e:
                raise RegistryError(f"{name} {version}: cannot download its signed files ({_code(e)})") from e
            except fetch.FetchError as e:
                raise RegistryError(f"{name} {version}: {e}") from e
            yield root, files
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def signed_decisions(self, name: str, version: str, subjects: set[str]) -> list[SignedDecision]:
        """Decisions stored beside a version that verify with a trusted gate key and are about one of
        subjects; anything else there (forged, foreign, unsigned) is ignored."""
        out = []
        for key in self._keys(self._prefix(name, version) + "attestations/"):
            got = self._get(key)
            try:
                signed = verify_decision(got[0], self.gates) if got else None
            except AttestationError as e:
                log.warning("registry: ignoring %s: %s", key, e)
                continue
            if signed is not None and signed.decision.subject in subjects:
                out.append(signed)
        return sorted(out, key=lambda s: s.decision.time)

    def _evidence(self, name: str, version: str, gate: str, judged_by: Sequence[SignedDecision]) -> Evidence | None:
        """The stored evidence a signed decision of that gate judged: looked up by the digest the decision
        names, and believed only if the stored bytes hash to it."""
        for s in judged_by:
            d = s.decision
            if d.gate != gate or not d.evidence_sha256:
                continue
            got = self._get(f"{self._prefix(name, version)}evidence/{gate}/{d.evidence_sha256}.json")
            if got is None or sha256_bytes(got[0]) != d.evidence_sha256:
                continue
            try:
                ev = GATES[gate].model_validate_json(got[0])
            except ValidationError:
                continue
            if ev.subject.digest == d.subject:
                return ev
        return None

    def verify_version(self, name: str, version: str, trust: Trust | Path) -> Verified:
        """Everything a gate may rely on about a version, each fact from bytes or a signed record."""
        record = self._existing(name, version)
        signing_ev: SigningEvidence | None = None
        files: list[str] = []
        try:
            with self.fetched(name, version, trust) as (root, files):
                signing_ev = signing.evidence(root, name, trust)  # signature and attestation, each checked once
        except RegistryError as e:  # the signed files cannot be fetched: a fact for the gate, not a crash
            log.warning("registry: %s %s failed verification: %s", name, version, e)
        sig_ok = att_ok = False
        if signing_ev is not None and signing_ev.subject.digest == record.model_digest:
            sig_ok = signing_ev.signature.verified and signing_ev.signature.signed_digest == record.model_digest
            att_ok = signing_ev.attestation.verified and signing_ev.attestation.subject_digest == record.model_digest
        trusted = signing_ev if sig_ok and att_ok else None  # only then are its signer and dataset facts
        signer = trusted.signature.signer if trusted else "unverified"
        dataset = trusted.attestation.dataset_digest if trusted else record.dataset_digest
        decisions = self.signed_decisions(name, version, {record.model_digest, dataset}) if trusted else []
        training = self._evidence(name, version, "training", decisions)
        metrics = training.metrics if isinstance(training, TrainingEvidence) else record.metrics
        mismatches = [f for f, ok in (
            ("files", set(record.files) == set(files)),
            # re-signed after a rotation: the manifest names the retired key that signed first
            ("signer", record.signer in (signer, *(r.fingerprint for r in as_trust(trust).retired))),
            ("dataset_digest", record.dataset_digest == dataset),
            ("metrics", record.metrics == metrics),
            ("decisions", {d.digest for d in record.decisions} <= {s.decision.digest for s in decisions}),
        ) if not ok]
        check = RegistryCheck(
            version=version, files_verified=signing_ev is not None, signature_verified=sig_ok,
            attestation_verified=att_ok, signer=signer, revoked=self.is_revoked(name, version),
            evidence_verified=training is not None, cache_mismatches=mismatches if trusted else [],
        )
        return Verified(record, check, decisions, metrics, dataset, signing_ev)

    # -- stages --------------------------------------------------------------------------------
    def environment_for(self, stage: str) -> str:
        if stage not in self.stage_envs:
            raise RegistryError(f"no environment governs stage {stage!r} (policies/data/*.json: promotion.governs)")
        return self.stage_envs[stage]

    def alias(self, name: str, stage: str) -> tuple[Alias, str] | None:
        got = self._get(f"aliases/{names.model(name)}/{names.stage(stage)}.json")
        if not got:
            return None
        try:
            return Alias.model_validate_json(got[0]), got[1]
        except ValidationError as e:
            raise RegistryError(f"alias {name}:{stage} is malformed: {e.error_count()} errors") from e

    def _promotions_in(self, name: str, stage: str, versions: Iterator[tuple[str, bytes]]) -> list[SignedDecision]:
        """The allowing promotions to stage that verify under the environment governing it, oldest first."""
        env = self.environment_for(stage)
        out = []
        for key, body in versions:
            try:
                s = verify_decision(body, self.gates)
            except AttestationError as e:
                log.warning("registry: ignoring %s: %s", key, e)
                continue
            d = s.decision
            if (d.gate == "promotion" and d.allow and d.stage == stage and d.environment == env
                    and s.subject_name == name and d.subject):
                out.append(s)
        return sorted({s.decision.id: s for s in out}.values(), key=_order)

    def promotions(self, name: str, stage: str) -> list[SignedDecision]:
        """Every allowing promotion to stage that verifies, oldest first. Read from every object version,
        so deleting or overwriting one hides nothing."""
        return self._promotions_in(name, stage, self._all_versions(_promotion_prefix(name, stage)))

    def _head_by_key(self, name: str, stage: str, a: Alias) -> SignedDecision | None:
        """The head in O(1) requests, or None to fall back on reading every promotion. The alias only says
        which key to read: that key must hold the signed promotion it names, and no promotion that verifies
        may sort after it. Promotions are written under keys in (time, id) order, so a newer one lies after
        that key; every object version there is read, so a delete marker or an overwrite hides nothing."""
        if a.decision_time is None or not names.DECISION_ID.fullmatch(a.decision_id):
            return None
        key = _promotion_prefix(name, stage) + _promotion_name(a.decision_time, a.decision_id)
        named = [s for s in self._promotions_in(name, stage, self._all_versions(key, exact=True))
                 if s.decision.id == a.decision_id]
        if not named or (a.model_digest, a.version) != (named[-1].decision.subject, (named[-1].decision.subject or "")[:16]):
            return None
        after = self._promotions_in(name, stage, self._all_versions(_promotion_prefix(name, stage), after=key))
        if any(_order(s) > _order(named[-1]) for s in after):
            return None  # a newer signed promotion: the full read below names the disagreement
        return named[-1]

    def held_before(self, name: str, stage: str, v: Verified) -> bool:
        """Whether stage has pointed at this version: a signed promotion of it, stored beside the version,
        that is also in the stage's promotion records (looked up by key, not by listing the stage)."""
        if stage not in self.stage_envs:
            return False
        for s in v.decisions:
            d = s.decision
            if (d.gate == "promotion" and d.allow and d.stage == stage and d.subject == v.record.model_digest
                    and d.environment == self.stage_envs[stage] and s.subject_name == name):
                key = _promotion_prefix(name, stage) + _promotion_name(d.time, d.id)
                if any(p.decision.id == d.id for p in self._promotions_in(name, stage, self._all_versions(key, exact=True))):
                    return True
        return False

    def head(self, name: str, stage: str) -> SignedDecision | None:
        """The signed promotion a stage follows: the newest one; the alias object must agree with it."""
        current = self.alias(name, stage)
        if current is not None and (fast := self._head_by_key(name, stage, current[0])) is not None:
            return fast
        history = self.promotions(name, stage)
        if not history:
            return None
        newest = history[-1]
        if current is not None:
            a = current[0]
            if (a.decision_id, a.model_digest, a.version) != (newest.decision.id, newest.decision.subject,
                                                                (newest.decision.subject or "")[:16]):
                raise RegistryError(
                    f"alias {name}:{stage} names version {a.version} (decision {a.decision_id}) but the newest signed "
                    f"promotion to {stage} is version {(newest.decision.subject or '')[:16]} (decision "
                    f"{newest.decision.id}): the alias was rewritten or replayed; refusing it")
        return newest

    def stages(self, name: str) -> dict[str, str]:
        """stage -> the version its newest signed promotion points at."""
        out = {}
        for stage in self.stage_envs:
            try:
                h = self.head(name, stage)
            except RegistryError as e:
                log.warning("registry: %s", e)
                continue
            if h is not None and h.decision.subject:
                out[stage] = h.decision.subject[:16]
        return out

    def stages_of(self, name: str, version: str) -> list[str]:
        return sorted(stage for stage, v in self.stages(name).items() if v == version)

    def _rejudge(self, name: str, version: str, v: Verified, environment: str, engine: PolicyEngine,
                 signer: CryptoSigner, audit: AuditSink | None) -> list[SignedDecision]:
        """The data, training and signing gates under the stage's environment, from the stored evidence
        their signed decisions judged (signing: recomputed from the registry's bytes), when no decision
        from that environment exists yet. A model is judged by each environment's policy it enters."""
        decisions = list(v.decisions)
        subject = {"data": v.dataset_digest, "training": v.record.model_digest, "signing": v.record.model_digest}
        for gate in REJUDGED:
            here = [s for s in decisions if s.decision.gate == gate and s.decision.environment == environment
                    and s.decision.subject == subject[gate] and s.decision.allow]
            if here:
                continue
            ev: Evidence | None = v.signing if gate == "signing" else self._evidence(name, version, gate, decisions)
            if ev is None:
                break  # no authentic evidence: the promotion gate denies for the missing decision
            prior = [s.decision for s in decisions if s.decision.environment == environment]
            d = evaluate(gate, ev, environment=environment, engine=engine, decisions=prior, audit=audit)
            s = sign_decision(d, ev.subject.name, signer)
            self._put_once(f"{self._prefix(name, version)}attestations/{d.id}.dsse.json", canonical_json(s.envelope))
            log.info("registry: %s gate judged again under %s: %s", gate, environment, d.result)
            decisions.append(s)
            if not d.allow:
                break
        return decisions

    def approvals(self, name: str, version: str, stage: str, digest: str) -> list[Approval]:
        out = []
        for key in self._keys(f"{self._prefix(name, version)}approvals/{names.stage(stage)}/"):
            got = self._get(key)
            try:
                out.append(verify_approval(json.loads(got[0]) if got else {}, name, digest, stage))
            except (AttestationError, ValueError) as e:
                log.warning("registry: ignoring approval %s: %s", key, e)
        return out

    def approve(self, name: str, version: str, stage: str, identity: str, private_key: Path) -> None:
        """Stores an approval signed with the approver's own key; the policy decides whether it counts."""
        record = self._existing(name, version)
        body = canonical_json(sign_approval(name, record.model_digest, names.stage(stage), identity, private_key))
        self._put_once(f"{self._prefix(name, version)}approvals/{stage}/{sha256_bytes(body)[:32]}.json", body)

    def promote(self, name: str, version: str, stage: str, *, trust: Trust | Path, engine: PolicyEngine,
                environment: str, signer: CryptoSigner, author: str, audit: AuditSink | None = None,
                rollback: bool = False, evidence_out: Path | None = None) -> SignedDecision:
        """Moves `stage` to `version` only if the promotion gate allows what the registry itself verified;
        returns the signed promotion decision, as stored.

        rollback=True asks to move the stage back to a version it pointed at before; the registry,
        not the caller, establishes whether that is true, and the policy decides what it allows.
        evidence_out keeps the evidence the gate judged (a pipeline run's record of it).
        """
        names.stage(stage)
        before = self.alias(name, stage)  # read first: a concurrent move in between makes our write fail
        v = self.verify_version(name, version, trust)
        verified = v.check.signature_verified and v.check.attestation_verified
        decisions = self._rejudge(name, version, v, environment, engine, signer, audit) \
            if verified and environment == self.stage_envs.get(stage) else v.decisions
        evidence = PromotionEvidence(
            subject=Subject(name=name, digest=v.record.model_digest), target_stage=stage,
            current_stages=self.stages_of(name, version), dataset_digest=v.dataset_digest,
            metrics=v.metrics, registry=v.check, author=normalize_identity(author),
            approvals=[ApprovalFact(identity=a.identity, key=a.key)
                       for a in self.approvals(name, version, stage, v.record.model_digest)],
            rollback=rollback,
            held_stage_before=self.held_before(name, stage, v),
        )
        if evidence_out is not None:
            evidence.write(evidence_out)
        decision = evaluate("promotion", evidence, environment=environment, engine=engine,
                            decisions=policy_history(s.decision for s in decisions), audit=audit, stage=stage)
        signed = sign_decision(decision, name, signer)
        body = canonical_json(signed.envelope)
        self._put_once(f"{self._prefix(name, version)}attestations/{decision.id}.dsse.json", body)
        if decision.allow:
            if stage == PROD_STAGE:
                self._lock_compliance(name, version)  # before the alias: prod never points at a deletable copy
            self._put_once(_promotion_prefix(name, stage) + _promotion_name(decision.time, decision.id), body)
            self._move_alias(name, stage, v.record, decision, before)
        return signed

    def rollback(self, name: str, stage: str, version: str, **kwargs: Any) -> SignedDecision:
        return self.promote(name, version, stage, rollback=True, **kwargs)

    def _lock_compliance(self, name: str, version: str) -> None:
        """Restarts a prod version's COMPLIANCE retention from today. Every record is COMPLIANCE-locked from
        its first write, since the pipeline's identity may extend retention but never change its mode."""
        until = self._retain_until()
        prefix = self._prefix(name, version)
        for key in self._keys(prefix):
            if key.removeprefix(prefix).startswith(RECORD_DIRS):
                continue
            self.s3.put_object_retention(Bucket=self.bucket, Key=key,
                                         Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})

    def _move_alias(self, name: str, stage: str, record: VersionRecord, decision: Decision,
                    before: tuple[Alias, str] | None) -> None:
        alias = Alias(version=record.version, model_digest=record.model_digest, decision_id=decision.id,
                      moved_at=utcnow(), previous=before[0].version if before else None, decision_time=decision.time)
        condition = {"IfMatch": before[1]} if before else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=f"aliases/{name}/{stage}.json",
                               Body=alias.model_dump_json().encode(), ServerSideEncryption=SSE, **condition)
        except ClientError as e:
            if _code(e) in {"PreconditionFailed", "ConditionalRequestConflict"}:
                raise RegistryError(f"{name}:{stage} was moved by someone else during this promotion; "
                                    "the signed promotion stands but the alias cache is stale: retry") from e
            raise
        log.info("registry: %s:%s -> %s", name, stage, record.version)

    # -- revoke / pull -------------------------------------------------------------------------
    def revoke(self, name: str, version: str, reason: str, by: str, signer: CryptoSigner) -> None:
        record = self._existing(name, version)
        body = canonical_json(sign_revocation(name, version, record.model_digest, reason, by, signer))
        try:
            self._put_once(f"revocations/{name}/{version}.json", body)
        except RegistryError:
            pass  # revoked before: a revocation is never undone, and a second one changes nothing

    def revocation(self, name: str, version: str) -> str | None:
        """Why a version is revoked, or None. Any stored version of its revocation key counts, even one
        that is not signed (fail closed): a delete marker or a newer object cannot undo it."""
        key = f"revocations/{names.model(name)}/{names.version(version)}.json"
        found: list[str] = []
        record = None
        for k, body in self._all_versions(key):
            if k != key:
                continue
            record = record or self.record(name, version)
            try:
                found.append(revocation_reason(body, name, record.model_digest if record else "", self.gates.all_keys()))
            except AttestationError as e:
                found.append(f"an unverified revocation record ({e})")
        return "; ".join(found) if found else None

    def is_revoked(self, name: str, version: str) -> bool:
        return self.revocation(name, version) is not None

    def resolve(self, name: str, ref: str) -> tuple[str, str | None]:
        """(version, digest the stage's signed promotion names) for a stage; (version, None) for a version."""
        if names.VERSION.fullmatch(ref):
            return ref, None
        names.stage(ref)
        head = self.head(name, ref)
        if head is None or not head.decision.subject:
            raise RegistryError(f"{name}:{ref} has no verified promotion (no signed promotion decision to "
                                f"{ref} under the {self.stage_envs.get(ref, '?')} environment)")
        return head.decision.subject[:16], head.decision.subject

    def pull(self, name: str, ref: str, dest: Path, trust: Trust | Path) -> VersionRecord:
        """Copies a verified, unrevoked version into dest (the bundle layout the server loads). The ref is
        resolved once; only the signed files are fetched, verified, and then moved into dest."""
        version, promoted = self.resolve(name, ref)
        if why := self.revocation(name, version):
            raise RegistryError(f"{name} version {version} is revoked: {why}")
        record = self._existing(name, version)
        with self.fetched(name, version, trust) as (root, files):
            try:
                verified = signing.verify(root, trust)
            except ValueError as e:
                raise RegistryError(f"{name} {version}: {e}") from e
            if verified.model_digest != (promoted or record.model_digest):
                raise RegistryError(f"{name} {version}: model digest {verified.model_digest} is not the one "
                                    f"{'its signed promotion' if promoted else 'the registry record'} names")
            if extra := sorted(set(record.files) - set(files)):
                raise RegistryError(f"{name} {version}: the manifest lists files outside the signed set: {extra}")
            fetch.install(root, files, dest)
        return record

    def record_deployment(self, name: str, version: str, where: dict[str, Any]) -> None:
        """Remembered so `inventory` can say where each version runs."""
        body = json.dumps({**where, "at": utcnow().isoformat()}).encode()
        key = f"{self._prefix(name, version)}deployments/{sha256_bytes(body)[:16]}.json"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ServerSideEncryption=SSE)

    def deployments(self, name: str, version: str) -> list[dict[str, Any]]:
        bodies = (self._get(key) for key in self._keys(f"{self._prefix(name, version)}deployments/"))
        return [json.loads(got[0]) for got in bodies if got]

    def promotion_decisions(self, name: str, version: str) -> list[Decision]:
        record = self.record(name, version)
        digests = {record.model_digest} if record else set()
        return [s.decision for s in self.signed_decisions(name, version, digests) if s.decision.gate == "promotion"]

    def inventory(self) -> list[dict[str, Any]]:
        """For each model version: stages, signer, dataset, gates passed (signed), revocation, deployments."""
        rows = []
        for name in self.models():
            stages: dict[str, list[str]] = {}
            for stage, at in self.stages(name).items():
                stages.setdefault(at, []).append(stage)
            for version in self.versions(name):
                record = self.record(name, version)
                if record is None:
                    continue  # an upload that never completed is not a version
                signed = self.signed_decisions(name, version, {record.model_digest, record.dataset_digest})
                rows.append({
                    "model": name, "version": version, "digest": record.model_digest,
                    "stages": sorted(stages.get(version, [])), "signer": record.signer,
                    "dataset": record.dataset_digest, "gates_passed": sorted({s.decision.gate for s in signed
                                                                              if s.decision.allow}),
                    "revoked": self.is_revoked(name, version), "deployed": self.deployments(name, version),
                    "created": record.created.isoformat(), "author": record.author,
                })
        return rows

    def _children(self, prefix: str) -> list[str]:
        """The names one level below prefix (S3 common prefixes), without listing every file beneath."""
        found: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            found += [p["Prefix"].removeprefix(prefix).rstrip("/") for p in page.get("CommonPrefixes", [])]
        return found

    def versions(self, name: str) -> list[str]:
        return sorted(v for v in self._children(f"models/{names.model(name)}/") if names.VERSION.fullmatch(v))

    def models(self) -> list[str]:
        return sorted(m for m in self._children("models/") if names.MODEL.fullmatch(m))


def _promotion_prefix(name: str, stage: str) -> str:
    return f"promotions/{names.model(name)}/{names.stage(stage)}/"


def _promotion_name(time: datetime, decision_id: str) -> str:
    """Keys sort as (time, id) do: fixed-width UTC time first."""
    utc = (time if time.tzinfo else time.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    return f"{utc.strftime('%Y%m%dT%H%M%S%fZ')}-{decision_id}.dsse.json"


def _order(s: SignedDecision) -> tuple[datetime, str]:
    return s.decision.time, s.decision.id


def policy_history(decisions: Iterable[Decision]) -> list[Decision]:
    """The earlier decisions as the promotion policy reads them: a set of facts (mlsec.lib.decisions asks
    whether one exists), so decisions with the same facts are passed once. A version promoted hundreds of
    times hands the gate a handful of distinct facts, not its whole history."""
    facts = attrgetter(*Decision.POLICY_FIELDS)
    seen: dict[tuple[object, ...], Decision] = {}
    for d in decisions:
        seen.setdefault(facts(d), d)
    return list(seen.values())


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))
