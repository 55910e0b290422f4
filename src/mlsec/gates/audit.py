"""Append-only decision logs, kept as transparency logs.

Each entry is hash-chained to the one before (editing one in place breaks the chain) and is a leaf of an
RFC 6962 Merkle tree; after every append a signed checkpoint of the tree goes to the object-locked bucket
(mlsec.gates.transparency). Whoever can rewrite the log, even recomputing every hash, cannot re-sign those
checkpoints: `verify` recomputes the tree from the entry bytes and finds the rewrite, the truncation or
the emptied log.

AuditLog is a local JSON-lines file; S3AuditLog keeps the same log in the registry bucket, one
write-once, retention-locked object per entry, so decisions from every pipeline pod land in one log.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Protocol

from securesystemslib.signer import CryptoSigner, Key

from mlsec.digest import sha256_json
from mlsec.gates.decision import Decision
from mlsec.gates.transparency import Checkpoint, CheckpointStore, Frontier, LogError, Notary, Report, Witness, leaf_hash

GENESIS = "0" * 64
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}


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


def verify_chain(entries: Iterable[tuple[str, str]], prev: str = GENESIS) -> int:
    """entries: (where, raw JSON), following the entry whose hash is prev. Returns the count; raises
    ValueError naming the first broken entry."""
    n = 0
    for n, (where, raw) in enumerate(entries, start=1):
        try:
            entry = json.loads(raw)
            entry.pop("seq", None)
            claimed = entry.pop("entry_sha256")
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ValueError(f"{where}: not an audit entry ({e})") from e
        if entry.get("prev_sha256") != prev:
            raise ValueError(f"{where}: chain broken (an entry before it was changed or removed)")
        if sha256_json(entry) != claimed:
            raise ValueError(f"{where}: entry was modified after it was written")
        prev = claimed
    return n


def _notary(checkpoints: CheckpointStore | None, log_id: str, signer: CryptoSigner | None,
            keys: Sequence[Key]) -> Notary | None:
    return Notary(checkpoints, log_id, signer, tuple(keys)) if checkpoints is not None else None


# -- the local file --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _State:
    """<log>.tree: where the last append left the file and its tree. Only a writer's shortcut: the
    verifier recomputes everything from the entries."""

    offset: int = 0
    last: str = GENESIS
    frontier: Frontier = field(default_factory=Frontier)

    def to_json(self) -> str:
        return json.dumps({"offset": self.offset, "last": self.last, "size": self.frontier.size,
                           "frontier": self.frontier.to_json()})

    @classmethod
    def load(cls, path: Path) -> _State | None:
        try:
            doc = json.loads(path.read_text())
            return cls(int(doc["offset"]), str(doc["last"]), Frontier.from_json(int(doc["size"]), doc["frontier"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def extend(self, lines: bytes) -> _State:
        """The state after the complete lines `lines` that follow this one's offset."""
        state = self
        for line in lines.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a torn last line: a writer died mid-write; verify will name it
            last = json.loads(line)["entry_sha256"]
            state = _State(state.offset + len(line), last, state.frontier.append(leaf_hash(line.rstrip(b"\n"))))
        return state


@dataclass(frozen=True)
class AuditLog:
    """A JSON-lines file. With `checkpoints`, every append publishes a checkpoint signed by `signer`,
    and verify checks the file against every checkpoint that verifies with `keys`."""

    path: Path
    checkpoints: CheckpointStore | None = None
    signer: CryptoSigner | None = None
    keys: Sequence[Key] = ()
    log_id: str | None = None

    @property
    def origin(self) -> str:
        return self.log_id or f"mlsec-audit:file:{self.path.resolve()}"

    @property
    def _state_path(self) -> Path:
        return self.path.with_name(self.path.name + ".tree")

    def _state(self, f: IO[bytes]) -> _State:
        """Amortised O(1): the saved state, brought up to date with any lines appended after it (a
        writer that died before saving it); rebuilt from the whole file only when there is none."""
        end = f.seek(0, os.SEEK_END)
        state = _State.load(self._state_path) or _State()
        if state.offset > end:
            raise LogError(f"{self.path} is shorter ({end} bytes) than after its last append "
                           f"({state.offset} bytes): truncated? run `mlsec audit verify`")
        if state.offset < end:
            f.seek(state.offset)
            try:
                state = state.extend(f.read())
            except (ValueError, KeyError, TypeError) as e:
                raise LogError(f"{self.path}: unreadable entry after byte {state.offset}: {e}") from e
        return state

    def append(self, decision: Decision) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        notary = _notary(self.checkpoints, self.origin, self.signer, self.keys)
        with self.path.open("a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # KFP tasks and the CLI may append at the same time
            state = self._state(f)
            entry = make_entry(decision, state.last)
            line = json.dumps(entry, sort_keys=True).encode()
            f.seek(0, os.SEEK_END)
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
            state = _State(state.offset + len(line) + 1, entry["entry_sha256"], state.frontier.append(leaf_hash(line)))
            tmp = self._state_path.with_name(self._state_path.name + ".tmp")
            tmp.write_text(state.to_json())
            tmp.replace(self._state_path)
            if notary is not None:
                notary.publish(state.frontier)
        return entry

    def check(self, witness: Witness | None = None, incremental: bool = False) -> Report:
        """Chain, Merkle tree and every signed checkpoint; ValueError saying how the log is wrong. With a
        witness, remembers the newest checkpoint verified; incremental: verifies only the entries and
        checkpoints after the witness's (a full check where there is none)."""
        notary = _notary(self.checkpoints, self.origin, self.signer, self.keys)
        if not self.path.exists():
            newest = max(notary.signed(), default=0) if notary else 0
            if newest:
                raise LogError(f"audit log {self.path} was deleted but the signed checkpoint says {newest} entries")
            raise ValueError(f"audit log {self.path} does not exist")
        trusted = witness.load(notary) if incremental and witness and notary else None
        if trusted is not None:
            assert witness is not None and notary is not None
            return self._check_since(notary, witness, *trusted)
        lines = self.path.read_bytes().splitlines()
        n = verify_chain((f"{self.path}:{i}", line.decode()) for i, line in enumerate(lines, start=1))
        report = notary.check(lines, str(self.path)) if notary else Report(n, 0, 0)
        if witness is not None and notary is not None and report.anchored:
            self._remember(notary, witness, report.anchored, 0, lines[:report.anchored])
        return report

    def _check_since(self, notary: Notary, witness: Witness, cp: Checkpoint, offset: int, last: str) -> Report:
        """The entries after the witnessed checkpoint: chained to its last entry, and its signed tree
        extended by them reaching every newer checkpoint. Costs what was appended since, not the log."""
        with self.path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            if end < offset:
                raise LogError(f"{self.path}: log truncated to {end} bytes but {cp.size} entries signed in "
                               f"checkpoint {cp.size} ended at byte {offset}")
            f.seek(offset)
            lines = f.read().splitlines()
        verify_chain(((f"{self.path}:{cp.size + i}", line.decode()) for i, line in enumerate(lines, start=1)), last)
        report, _ = notary.check_since(cp, lines, str(self.path))
        if report.anchored > cp.size:
            self._remember(notary, witness, report.anchored, offset, lines[:report.anchored - cp.size])
        return report

    @staticmethod
    def _remember(notary: Notary, witness: Witness, size: int, offset: int, lines: Sequence[bytes]) -> None:
        end = offset + sum(len(line) + 1 for line in lines)
        witness.save(notary, size, end, json.loads(lines[-1])["entry_sha256"])

    def verify(self) -> int:
        return self.check().entries


def witness_for(home: Path, log: AuditLog) -> Witness:
    """Where this machine keeps the newest checkpoint it verified of a log: with its own state, by log id."""
    return Witness(home / "audit" / "witness" / f"{sha256_json(log.origin)[:32]}.json")


# -- the shared S3 log -----------------------------------------------------------------------------
@dataclass(frozen=True)
class S3AuditLog:
    """audit/entries/<seq>.json, each written once; audit/HEAD names the last, moved by conditional write.
    With `signer`, each writer then checkpoints the tree of its entry's size under audit/checkpoints/."""

    s3: Any
    bucket: str
    prefix: str = "audit"
    retention_days: int = 365
    max_attempts: int = 20
    signer: CryptoSigner | None = None
    keys: Sequence[Key] = ()
    checkpointed: bool | None = None  # check checkpoints on verify; None: when given a signer or keys

    @property
    def origin(self) -> str:
        return f"mlsec-audit:s3:{self.bucket}/{self.prefix}"

    def _notary(self) -> Notary | None:
        if not (self.checkpointed if self.checkpointed is not None else self.signer or self.keys):
            return None
        store = CheckpointStore(self.s3, self.bucket, f"{self.prefix}/checkpoints", self.retention_days)
        return Notary(store, self.origin, self.signer, tuple(self.keys))

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
                    ServerSideEncryption="AES256", ObjectLockMode="COMPLIANCE",
                    ObjectLockRetainUntilDate=datetime.now(timezone.utc) + timedelta(days=self.retention_days),
                )
            except ClientError as e:
                if e.response["Error"]["Code"] in _CONFLICT:
                    continue  # another writer took this sequence number; read HEAD again
                raise
            new_head = json.dumps({"seq": seq, "entry_sha256": entry["entry_sha256"]}).encode()
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}/HEAD", Body=new_head,
                                   ServerSideEncryption="AES256", **condition)
            except ClientError as e:
                if e.response["Error"]["Code"] not in _CONFLICT:
                    raise
                # HEAD moved on past us; our entry is already in the chain and a later writer extended it.
            self._checkpoint(seq, body)
            return entry
        raise RuntimeError(f"could not append to s3://{self.bucket}/{self.prefix} after {self.max_attempts} tries")

    def _checkpoint(self, seq: int, body: bytes) -> None:
        """The tree of `seq` entries, from the newest signed frontier below it plus the entries since
        (normally just this one: the writer of seq-1 has checkpointed already)."""
        notary = self._notary()
        if notary is None or notary.signer is None:
            return
        frontier = notary.latest_frontier(seq)
        between = [self._get(self._entry_key(i)) for i in range(frontier.size + 1, seq)]
        notary.publish(frontier.extend(leaf_hash(b) for b in [*between, body]))

    def _get(self, key: str) -> bytes:
        data: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

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
                nxt = json.loads(self._get(self._entry_key(head["seq"] + 1)))
            except ClientError:
                return head, etag
            head = {"seq": nxt["seq"], "entry_sha256": nxt["entry_sha256"]}

    def _raw_entries(self) -> tuple[list[tuple[str, bytes]], list[str]]:
        """The entries as first written, and the keys a delete marker hides. A key with a second
        version was overwritten: entries are written once."""
        versions: dict[str, int] = {}
        hidden: set[str] = set()
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/entries/")
        for page in pages:
            for v in page.get("Versions", []):
                versions[v["Key"]] = versions.get(v["Key"], 0) + 1
            hidden |= {m["Key"] for m in page.get("DeleteMarkers", []) if m.get("IsLatest")}
        out = []
        for n, key in enumerate(sorted(set(versions) - hidden), start=1):
            where = f"s3://{self.bucket}/{key}"
            if key != self._entry_key(n):
                raise ValueError(f"{where}: expected entry {n} here (one is missing or was deleted)")
            if versions[key] > 1:
                raise ValueError(f"{where}: entry was modified after it was written ({versions[key]} versions)")
            out.append((where, self._get(key)))
        return out, sorted(hidden)

    def check(self) -> Report:
        """Chain, Merkle tree and every signed checkpoint; ValueError saying how the log is wrong."""
        raw, hidden = self._raw_entries()
        n = verify_chain((where, body.decode()) for where, body in raw)
        notary = self._notary()
        report = notary.check([b for _, b in raw], f"s3://{self.bucket}/{self.prefix}") if notary else Report(n, 0, 0)
        if hidden:
            raise ValueError(f"s3://{self.bucket}/{hidden[0]}: entry was deleted (a delete marker hides it; "
                             f"{len(hidden)} entries hidden)")
        return report

    def verify(self) -> int:
        return self.check().entries


@dataclass(frozen=True)
class AuditLogs:
    """Several sinks as one; a sink that fails makes the gate fail, never silently drops a decision."""

    sinks: Sequence[AuditSink]

    def append(self, decision: Decision) -> dict[str, Any]:
        entries = [s.append(decision) for s in self.sinks]
        return entries[0]
