"""Append-only, hash-chained decision logs: editing, reordering or removing an entry breaks the chain.

AuditLog is a local JSON-lines file; S3AuditLog keeps the same chain in the registry bucket, one
write-once, retention-locked object per entry, so decisions from every pipeline pod land in one log.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from mlsec.digest import sha256_json
from mlsec.gates.decision import Decision

GENESIS = "0" * 64


class AuditSink(Protocol):
    def append(self, decision: Decision) -> dict[str, Any]: ...


def make_entry(decision: Decision, prev: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": decision.id,
        "time": decision.time.isoformat(),
        "gate": decision.gate,
        "environment": decision.environment,
        "policy_sha256": decision.policy_sha256,
        "evidence_sha256": decision.evidence_sha256,
        "subject": decision.subject,
        "result": decision.result,
        "reasons": decision.deny,
        "warnings": decision.warn,
        "decision_sha256": decision.digest,
        "prev_sha256": prev,
    }
    entry["entry_sha256"] = sha256_json(entry)
    return entry


def verify_chain(entries: Iterable[tuple[str, str]]) -> int:
    """entries: (where, raw JSON). Returns the count; raises ValueError naming the first broken entry."""
    prev, n = GENESIS, 0
    for n, (where, raw) in enumerate(entries, start=1):
        try:
            entry = json.loads(raw)
            claimed = entry.pop("entry_sha256")
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ValueError(f"{where}: not an audit entry ({e})") from e
        if entry.get("prev_sha256") != prev:
            raise ValueError(f"{where}: chain broken (an entry before it was changed or removed)")
        if sha256_json(entry) != claimed:
            raise ValueError(f"{where}: entry was modified after it was written")
        prev = claimed
    return n


@dataclass(frozen=True)
class AuditLog:
    path: Path

    def append(self, decision: Decision) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # KFP tasks and the CLI may append at the same time
            f.seek(0)
            lines = f.read().splitlines()
            entry = make_entry(decision, json.loads(lines[-1])["entry_sha256"] if lines else GENESIS)
            f.write(json.dumps(entry, sort_keys=True) + "\n")
        return entry

    def verify(self) -> int:
        if not self.path.exists():
            raise ValueError(f"audit log {self.path} does not exist")
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return verify_chain((f"{self.path}:{n}", line) for n, line in enumerate(lines, start=1))


@dataclass(frozen=True)
class S3AuditLog:
    """audit/entries/<seq>.json, each written once; audit/HEAD names the last, moved by conditional write."""

    s3: Any
    bucket: str
    prefix: str = "audit"
    retention_days: int = 365
    max_attempts: int = 20

    def _entry_key(self, seq: int) -> str:
        return f"{self.prefix}/entries/{seq:012d}.json"

    def append(self, decision: Decision) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        for _ in range(self.max_attempts):
            head, etag = self._head()
            seq = head["seq"] + 1
            entry = {**make_entry(decision, head["entry_sha256"]), "seq": seq}
            body = json.dumps(entry, sort_keys=True).encode()
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=self._entry_key(seq), Body=body, IfNoneMatch="*",
                    ServerSideEncryption="AES256", ObjectLockMode="GOVERNANCE",
                    ObjectLockRetainUntilDate=datetime.now(timezone.utc) + timedelta(days=self.retention_days),
                )
            except ClientError as e:
                if e.response["Error"]["Code"] in {"PreconditionFailed", "ConditionalRequestConflict"}:
                    continue  # another writer took this sequence number; read HEAD again
                raise
            new_head = json.dumps({"seq": seq, "entry_sha256": entry["entry_sha256"]}).encode()
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}/HEAD", Body=new_head,
                                   ServerSideEncryption="AES256", **condition)
            except ClientError as e:
                if e.response["Error"]["Code"] not in {"PreconditionFailed", "ConditionalRequestConflict"}:
                    raise
                # HEAD moved on past us; our entry is already in the chain and a later writer extended it.
            return entry
        raise RuntimeError(f"could not append to s3://{self.bucket}/{self.prefix} after {self.max_attempts} tries")

    def _head(self) -> tuple[dict[str, Any], str | None]:
        """The chain's tip. HEAD may lag behind a writer that crashed between its two puts: walk forward."""
        from botocore.exceptions import ClientError

        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/HEAD")
            head, etag = json.loads(obj["Body"].read()), obj["ETag"]
        except ClientError as e:
            if e.response["Error"]["Code"] not in {"NoSuchKey", "404"}:
                raise
            head, etag = {"seq": 0, "entry_sha256": GENESIS}, None
        while True:
            try:
                nxt = json.loads(self.s3.get_object(Bucket=self.bucket, Key=self._entry_key(head["seq"] + 1))["Body"].read())
            except ClientError:
                return head, etag
            head = {"seq": nxt["seq"], "entry_sha256": nxt["entry_sha256"]}

    def _raw_entries(self) -> Sequence[tuple[str, str]]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/entries/"):
            keys += [o["Key"] for o in page.get("Contents", [])]
        out = []
        for n, key in enumerate(sorted(keys), start=1):
            if key != self._entry_key(n):
                raise ValueError(f"s3://{self.bucket}/{key}: expected entry {n} here (one is missing)")
            raw = json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            raw.pop("seq", None)
            out.append((f"s3://{self.bucket}/{key}", json.dumps(raw)))
        return out

    def verify(self) -> int:
        return verify_chain(self._raw_entries())


@dataclass(frozen=True)
class AuditLogs:
    """Several sinks as one; a sink that fails makes the gate fail, never silently drops a decision."""

    sinks: Sequence[AuditSink]

    def append(self, decision: Decision) -> dict[str, Any]:
        entries = [s.append(decision) for s in self.sinks]
        return entries[0]
