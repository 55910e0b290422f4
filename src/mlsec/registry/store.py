"""The model registry on S3.

models/<name>/<version>/{model/..., model.sig, provenance.dsse.json}  immutable, locked, encrypted
models/<name>/<version>/manifest.json    written last: its presence means the upload is complete
models/<name>/<version>/decisions/<id>.json   promotion decisions taken about this version
aliases/<name>/<stage>.json              which version a stage points at; moved by conditional write
revocations/<name>/<version>.json        presence means revoked, forever
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from mlsec.digest import sha256_bytes, sha256_file, tree_manifest
from mlsec.evidence import Subject, utcnow
from mlsec.gates.audit import AuditSink
from mlsec.gates.decision import Decision
from mlsec.gates.engine import PolicyEngine
from mlsec.gates.gate import evaluate
from mlsec.registry.evidence import PromotionEvidence, RegistryCheck
from mlsec.sign import stage as signing
from mlsec.sign.methods import Trust
from mlsec.train.evidence import Metrics

log = logging.getLogger(__name__)

SSE = "AES256"


class RegistryError(RuntimeError):
    pass


class VersionRecord(BaseModel):
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
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str
    model_digest: str
    decision_id: str
    moved_at: datetime
    previous: str | None
    history: list[str] = []  # every version this stage has pointed at, oldest first


PROD_STAGE = "prod"
# Records kept beside a version that are not part of it (not in its manifest, not locked with it).
RECORD_DIRS = ("decisions/", "deployments/")


@dataclass(frozen=True)
class Registry:
    s3: Any
    bucket: str
    retention_days: int = 30

    # -- bucket --------------------------------------------------------------------------------
    def ensure_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            # Object lock can only be enabled at creation; it also turns versioning on.
            self.s3.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
        status = self.s3.get_bucket_versioning(Bucket=self.bucket).get("Status")
        if status != "Enabled":
            raise RegistryError(f"bucket {self.bucket} must have versioning enabled (status: {status})")
        lock = self.s3.get_object_lock_configuration(Bucket=self.bucket)
        if lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise RegistryError(f"bucket {self.bucket} must have object lock enabled")

    # -- low level -----------------------------------------------------------------------------
    def _retain_until(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(days=self.retention_days)

    def _put_once(self, key: str, body: bytes) -> None:
        """Write a key that must never change: conditional create, encrypted, under retention."""
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", ServerSideEncryption=SSE,
                ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=self._retain_until(),
                Metadata={"sha256": sha256_bytes(body)},
            )
        except ClientError as e:
            if _code(e) not in {"PreconditionFailed", "ConditionalRequestConflict"}:
                raise
            # Left by an earlier, interrupted upload: fine if identical, fatal otherwise.
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
            if head.get("Metadata", {}).get("sha256") != sha256_bytes(body):
                raise RegistryError(f"{key} already exists with different content; versions are immutable") from e

    def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if _code(e) in {"NoSuchKey", "404"}:
                return None
            raise
        return obj["Body"].read(), obj["ETag"]

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    @staticmethod
    def _prefix(name: str, version: str) -> str:
        return f"models/{name}/{version}/"

    # -- register ------------------------------------------------------------------------------
    def register(self, name: str, bundle: Path, trust: Trust | Path, *, dataset_digest: str, metrics: Metrics,
                 decisions: Sequence[Decision], author: str) -> VersionRecord:
        verified = signing.verify(bundle, trust)  # never store what does not verify
        attested = set(verified.attestation.decision_digests)
        for d in decisions:
            if d.gate != "signing" and d.digest not in attested:
                raise RegistryError(f"{d.gate}-gate decision {d.id} is not covered by the signed attestation")
        version = verified.model_digest[:16]
        prefix = self._prefix(name, version)
        existing = self.record(name, version)
        if existing is not None:
            if existing.model_digest != verified.model_digest:
                raise RegistryError(f"version {version} of {name} exists with another digest")
            return existing
        files = tree_manifest(bundle)
        for i, (rel, _) in enumerate(sorted(files.items()), start=1):
            log.info("registry: upload %s (%d/%d)", rel, i, len(files))
            self._put_once(prefix + rel, (bundle / rel).read_bytes())
        record = VersionRecord(
            name=name, version=version, model_digest=verified.model_digest, files=files,
            dataset_digest=dataset_digest, metrics=metrics, signer=verified.signer, author=author,
            created=utcnow(), decisions=list(decisions),
        )
        self._put_once(prefix + "manifest.json", record.model_dump_json(indent=2).encode())
        return record

    def record(self, name: str, version: str) -> VersionRecord | None:
        got = self._get(self._prefix(name, version) + "manifest.json")
        return VersionRecord.model_validate_json(got[0]) if got else None

    # -- verify from the registry's own copy ---------------------------------------------------
    @contextmanager
    def fetched(self, name: str, version: str,
                record: VersionRecord | None = None) -> Iterator[tuple[VersionRecord, Path]]:
        """Downloads a version and checks every stored file against its manifest; extra or missing files fail."""
        record = record or self._existing(name, version)
        prefix = self._prefix(name, version)
        stored = {k.removeprefix(prefix) for k in self._keys(prefix)} - {"manifest.json"}
        stored = {k for k in stored if not k.startswith(RECORD_DIRS)}
        if stored != set(record.files):
            extra, missing = sorted(stored - set(record.files)), sorted(set(record.files) - stored)
            raise RegistryError(f"{name} {version}: stored files differ from its manifest "
                                f"(extra: {extra}, missing: {missing})")
        with tempfile.TemporaryDirectory(prefix="mlsec-pull-") as tmp:
            root = Path(tmp)
            for rel, digest in record.files.items():
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(self.bucket, prefix + rel, str(target))
                if sha256_file(target) != digest:
                    raise RegistryError(f"{name} {version}: {rel} does not match its recorded digest")
            yield record, root

    def _existing(self, name: str, version: str) -> VersionRecord:
        record = self.record(name, version)
        if record is None:
            raise RegistryError(f"{name} version {version} does not exist (or its upload never completed)")
        return record

    def check(self, name: str, version: str, trust: Trust | Path) -> tuple[VersionRecord, RegistryCheck]:
        """What the registry's own copy proves; a version that does not exist is an error, not a fact."""
        files_ok = sig_ok = att_ok = False
        record = self._existing(name, version)
        try:
            with self.fetched(name, version, record) as (_, root):
                files_ok = True
                ev = signing.evidence(root, name, trust)  # signature and attestation, each checked once
                same = ev.subject.digest == record.model_digest
                sig_ok = same and ev.signature.verified and ev.signature.signed_digest == record.model_digest
                att_ok = same and ev.attestation.verified and ev.attestation.subject_digest == record.model_digest
        except RegistryError as e:
            log.warning("registry: %s %s failed verification: %s", name, version, e)
        return record, RegistryCheck(
            version=version, files_verified=files_ok, signature_verified=sig_ok, attestation_verified=att_ok,
            signer=record.signer, revoked=self.is_revoked(name, version),
        )

    # -- stages --------------------------------------------------------------------------------
    def alias(self, name: str, stage: str) -> tuple[Alias, str] | None:
        got = self._get(f"aliases/{name}/{stage}.json")
        return (Alias.model_validate_json(got[0]), got[1]) if got else None

    def stages(self, name: str) -> dict[str, str]:
        """stage -> the version its alias points at now."""
        out = {}
        for key in self._keys(f"aliases/{name}/"):
            stage = key.rsplit("/", 1)[-1].removesuffix(".json")
            current = self.alias(name, stage)
            if current:
                out[stage] = current[0].version
        return out

    def stages_of(self, name: str, version: str) -> list[str]:
        return sorted(stage for stage, v in self.stages(name).items() if v == version)

    def promote(self, name: str, version: str, stage: str, *, trust: Trust | Path, engine: PolicyEngine,
                environment: str, author: str, approvals: Sequence[str] = (),
                audit: AuditSink | None = None, rollback: bool = False, evidence_out: Path | None = None) -> Decision:
        """Moves `stage` to `version` only if the promotion gate allows what the registry itself verified.

        rollback=True asks to move the stage back to a version it pointed at before; the registry,
        not the caller, establishes whether that is true, and the policy decides what it allows.
        evidence_out keeps the evidence the gate judged (a pipeline run's record of it).
        """
        before = self.alias(name, stage)  # read first: a concurrent move in between makes our write fail
        record, check = self.check(name, version, trust)
        evidence = PromotionEvidence(
            subject=Subject(name=name, digest=record.model_digest), target_stage=stage,
            current_stages=self.stages_of(name, version), dataset_digest=record.dataset_digest,
            metrics=record.metrics, registry=check, author=author, approvals=list(approvals),
            rollback=rollback, held_stage_before=before is not None and version in before[0].history,
        )
        if evidence_out is not None:
            evidence.write(evidence_out)
        decision = evaluate("promotion", evidence, environment=environment, engine=engine,
                            decisions=record.decisions, audit=audit)
        self.s3.put_object(Bucket=self.bucket, Key=f"{self._prefix(name, version)}decisions/{decision.id}.json",
                           Body=decision.model_dump_json().encode(), ServerSideEncryption=SSE)
        if decision.allow:
            if stage == PROD_STAGE:
                self._lock_compliance(name, version)  # before the alias: prod never points at a deletable copy
            self._move_alias(name, stage, record, decision, before)
        return decision

    def rollback(self, name: str, stage: str, version: str, **kwargs: Any) -> Decision:
        return self.promote(name, version, stage, rollback=True, **kwargs)

    def _lock_compliance(self, name: str, version: str) -> None:
        """COMPLIANCE retention: not even an administrator can delete or shorten it until it expires."""
        until = self._retain_until()
        prefix = self._prefix(name, version)
        for key in self._keys(prefix):
            if key.removeprefix(prefix).startswith(RECORD_DIRS):
                continue
            self.s3.put_object_retention(Bucket=self.bucket, Key=key, BypassGovernanceRetention=True,
                                         Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})

    def _move_alias(self, name: str, stage: str, record: VersionRecord, decision: Decision,
                    before: tuple[Alias, str] | None) -> None:
        history = before[0].history if before else []
        alias = Alias(version=record.version, model_digest=record.model_digest, decision_id=decision.id,
                      moved_at=utcnow(), previous=before[0].version if before else None,
                      history=history if record.version in history else [*history, record.version])
        condition = {"IfMatch": before[1]} if before else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=f"aliases/{name}/{stage}.json",
                               Body=alias.model_dump_json().encode(), ServerSideEncryption=SSE, **condition)
        except ClientError as e:
            if _code(e) in {"PreconditionFailed", "ConditionalRequestConflict"}:
                raise RegistryError(f"{name}:{stage} was moved by someone else during this promotion; "
                                    "nothing changed, retry") from e
            raise
        log.info("registry: %s:%s -> %s", name, stage, record.version)

    # -- revoke / pull -------------------------------------------------------------------------
    def revoke(self, name: str, version: str, reason: str, by: str) -> None:
        self._existing(name, version)
        body = json.dumps({"version": version, "reason": reason, "by": by, "at": utcnow().isoformat()})
        self._put_once(f"revocations/{name}/{version}.json", body.encode())

    def is_revoked(self, name: str, version: str) -> bool:
        return self._get(f"revocations/{name}/{version}.json") is not None

    def resolve(self, name: str, ref: str) -> str:
        """A stage name resolves through its alias; anything else is taken as a version."""
        current = self.alias(name, ref)
        return current[0].version if current else ref

    def pull(self, name: str, ref: str, dest: Path, trust: Trust | Path) -> VersionRecord:
        """Copies a verified, unrevoked version into dest (the bundle layout the server loads)."""
        version = self.resolve(name, ref)
        if self.is_revoked(name, version):
            raise RegistryError(f"{name} version {version} is revoked")
        with self.fetched(name, version) as (record, root):
            verified = signing.verify(root, trust)
            if verified.model_digest != record.model_digest:
                raise RegistryError(f"{name} {version}: model digest differs from the registry record")
            dest.mkdir(parents=True, exist_ok=True)
            for rel in record.files:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / rel).write_bytes((root / rel).read_bytes())
        return record

    def record_deployment(self, name: str, version: str, where: dict[str, Any]) -> None:
        """Remembered so `inventory` can say where each version runs."""
        body = json.dumps({**where, "at": utcnow().isoformat()}).encode()
        key = f"{self._prefix(name, version)}deployments/{sha256_bytes(body)[:16]}.json"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ServerSideEncryption=SSE)

    def _records(self, name: str, version: str, kind: str) -> list[bytes]:
        bodies = (self._get(key) for key in self._keys(f"{self._prefix(name, version)}{kind}/"))
        return [got[0] for got in bodies if got]

    def deployments(self, name: str, version: str) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self._records(name, version, "deployments")]

    def promotion_decisions(self, name: str, version: str) -> list[Decision]:
        decisions = [Decision.model_validate_json(body) for body in self._records(name, version, "decisions")]
        return sorted(decisions, key=lambda d: d.time)

    def inventory(self) -> list[dict[str, Any]]:
        """For each model version: stages, signer, dataset, gates passed, revocation, deployments."""
        rows = []
        for name in self.models():
            stages: dict[str, list[str]] = {}
            for stage, at in self.stages(name).items():
                stages.setdefault(at, []).append(stage)
            for version in self.versions(name):
                record = self.record(name, version)
                if record is None:
                    continue  # an upload that never completed is not a version
                passed = {d.gate for d in [*record.decisions, *self.promotion_decisions(name, version)] if d.allow}
                rows.append({
                    "model": name, "version": version, "digest": record.model_digest,
                    "stages": sorted(stages.get(version, [])), "signer": record.signer,
                    "dataset": record.dataset_digest, "gates_passed": sorted(passed),
                    "revoked": self.is_revoked(name, version), "deployed": self.deployments(name, version),
                    "created": record.created.isoformat(), "author": record.author,
                })
        return rows

    def versions(self, name: str) -> list[str]:
        prefix = f"models/{name}/"
        return sorted({k.removeprefix(prefix).split("/", 1)[0] for k in self._keys(prefix)})

    def models(self) -> list[str]:
        return sorted({k.split("/")[1] for k in self._keys("models/")})


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))
