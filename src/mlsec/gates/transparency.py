"""The audit log as a transparency log: entries are the leaves of an RFC 6962 Merkle tree, and after
every append a signed checkpoint (log id, tree size, root hash, time) goes to the object-locked bucket.

A checkpoint is an in-toto Statement in a DSSE envelope signed with the audit key. It is written once
under a key named by its tree size, retention-locked in COMPLIANCE mode (nobody, not even an admin,
can delete it before it expires), and read back from every object version of every checkpoint key, so
a delete marker or a newer version laid on top hides nothing. The verifier recomputes the tree from the
entry bytes and proves that every signed checkpoint is a prefix of it (the root of the first `size`
leaves is the signed root: what an RFC 6962 consistency proof shows, computed directly from the leaves in
one pass): a rewritten, truncated or emptied log contradicts a signature its attacker cannot make.

A verifier keeps the newest checkpoint it has verified (a Witness). From it, a later verify reads only what
came after: the trusted frontier extended by the new leaves must reach every newer signed root, so the
cost follows what was appended, not the size of the log.

The checkpoint also carries the tree's frontier (the roots of its maximal perfect subtrees), so the next
writer extends the tree in O(log n) without reading the log.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Key

from mlsec.gates.attest import STATEMENT_TYPE, AttestationError, open_envelope, sign_statement

CHECKPOINT_TYPE = "https://mlsec.dev/audit-checkpoint/v1"
HASH_ALGORITHM = "RFC6962-SHA256"
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}


class LogError(ValueError):
    """The log, or a checkpoint, is not what the signed checkpoints say it was."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True)
class Frontier:
    """A tree of `size` leaves as the roots of its maximal perfect subtrees, largest first."""

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def append(self, leaf: bytes) -> Frontier:
        hashes, h, n = list(self.hashes), leaf, self.size
        while n & 1:  # each trailing 1 bit is a perfect subtree the new leaf completes
            h, n = _node(hashes.pop(), h), n >> 1
        return Frontier(self.size + 1, (*hashes, h))

    def extend(self, leaves: Iterable[bytes]) -> Frontier:
        f = self
        for leaf in leaves:
            f = f.append(leaf)
        return f

    def root(self) -> bytes:
        if not self.hashes:
            return hashlib.sha256(b"").digest()
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = _node(left, h)
        return h

    def to_json(self) -> list[str]:
        return [h.hex() for h in self.hashes]

    @classmethod
    def from_json(cls, size: int, hashes: Sequence[str]) -> Frontier:
        f = cls(size, tuple(bytes.fromhex(h) for h in hashes))
        if len(f.hashes) != bin(size).count("1") or any(len(h) != 32 for h in f.hashes):
            raise LogError(f"frontier does not describe a tree of {size} leaves")
        return f


@dataclass(frozen=True)
class Checkpoint:
    log_id: str
    size: int
    root: bytes
    time: str
    frontier: Frontier

    def statement(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.log_id, "digest": {"sha256": self.root.hex()}}],
            "predicateType": CHECKPOINT_TYPE,
            "predicate": {"origin": self.log_id, "treeSize": self.size, "rootHash": self.root.hex(),
                          "hashAlgorithm": HASH_ALGORITHM, "timestamp": self.time,
                          "frontier": self.frontier.to_json()},
        }

    @classmethod
    def from_statement(cls, stmt: dict[str, Any]) -> Checkpoint:
        try:
            if stmt["predicateType"] != CHECKPOINT_TYPE:
                raise LogError(f"predicate type {stmt['predicateType']!r} is not an audit checkpoint")
            p = stmt["predicate"]
            size, root = int(p["treeSize"]), bytes.fromhex(p["rootHash"])
            frontier = Frontier.from_json(size, p["frontier"])
            if p["hashAlgorithm"] != HASH_ALGORITHM or frontier.root() != root:
                raise LogError("root hash does not match the frontier it carries")
            return cls(str(p["origin"]), size, root, str(p["timestamp"]), frontier)
        except (KeyError, TypeError, ValueError) as e:
            raise LogError(f"not an audit checkpoint: {e}") from e


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class Stored:
    key: str
    version: str
    body: bytes


@dataclass(frozen=True)
class CheckpointStore:
    """<prefix>/<log>/<size>.json in an object-lock bucket: written once, COMPLIANCE-locked."""

    s3: Any
    bucket: str
    prefix: str = "audit/checkpoints"
    retention_days: int = 365

    def _dir(self, log_id: str) -> str:
        return f"{self.prefix}/{hashlib.sha256(log_id.encode()).hexdigest()[:32]}/"

    def key(self, log_id: str, size: int) -> str:
        return f"{self._dir(log_id)}{size:012d}.json"

    def put(self, log_id: str, size: int, body: bytes) -> None:
        args = dict(Bucket=self.bucket, Key=self.key(log_id, size), Body=body, IfNoneMatch="*",
                    ServerSideEncryption="AES256", ObjectLockMode="COMPLIANCE",
                    ObjectLockRetainUntilDate=datetime.now(timezone.utc) + timedelta(days=self.retention_days))
        try:
            self.s3.put_object(**args)
        except Exception as e:
            if _code(e) in _CONFLICT:
                raise LogError(f"s3://{self.bucket}/{args['Key']}: a signed checkpoint for {size} entries "
                               "already exists: this log was truncated or rewritten since it was written "
                               "(run `mlsec audit verify`)") from e
            raise

    def get(self, log_id: str, size: int) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=self.key(log_id, size))["Body"].read()
        except Exception as e:
            if _code(e) in {"NoSuchKey", "404", "NoSuchBucket"}:
                return None
            raise
        return body

    def sizes(self, log_id: str) -> list[int]:
        """Sizes with a checkpoint key (newest object versions only: a hint for writers)."""
        out: list[int] = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._dir(log_id)):
                out += [_size_of(o["Key"]) for o in page.get("Contents", [])]
        except Exception as e:
            if _code(e) != "NoSuchBucket":
                raise
        return sorted(out)

    def versions(self, log_id: str, after: int | None = None) -> list[Stored]:
        """Every object version under this log's checkpoints, also those under a delete marker; with
        `after`, only those of sizes above it (keys sort by size)."""
        found: list[tuple[str, str]] = []
        marker = {"KeyMarker": self.key(log_id, after)} if after is not None else {}
        try:
            for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                                Prefix=self._dir(log_id), **marker):
                found += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
        except Exception as e:
            if _code(e) != "NoSuchBucket":
                raise
            return []

        def read(kv: tuple[str, str]) -> Stored:
            body = self.s3.get_object(Bucket=self.bucket, Key=kv[0], VersionId=kv[1])["Body"].read()
            return Stored(kv[0], kv[1], body)

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(read, found))


def _size_of(key: str) -> int:
    try:
        return int(key.rsplit("/", 1)[-1].removesuffix(".json"))
    except ValueError:
        return -1


@dataclass(frozen=True)
class Report:
    entries: int
    checkpoints: int  # distinct signed tree sizes
    anchored: int  # entries covered by the newest checkpoint

    @property
    def unanchored(self) -> int:
        return self.entries - self.anchored


@dataclass(frozen=True)
class Notary:
    """Signs checkpoints for one log into a store; verifies a log's entries against all of them."""

    store: CheckpointStore
    log_id: str
    signer: CryptoSigner | None = None
    keys: Sequence[Key] = field(default_factory=tuple)

    def trusted(self) -> list[Key]:
        """The keys given; a writer also believes what it signed itself (its next append starts there)."""
        return [*self.keys, *([self.signer.public_key] if self.signer else [])]

    def publish(self, frontier: Frontier) -> Checkpoint:
        if self.signer is None:
            raise LogError(f"no audit signing key to checkpoint {self.log_id}")
        cp = Checkpoint(self.log_id, frontier.size, frontier.root(),
                        datetime.now(timezone.utc).isoformat(), frontier)
        self.store.put(self.log_id, cp.size, json.dumps(sign_statement(cp.statement(), self.signer)).encode())
        return cp

    def open(self, body: bytes, where: str) -> Checkpoint:
        try:
            cp = Checkpoint.from_statement(open_envelope(body, self.trusted()))
        except AttestationError as e:
            raise LogError(f"{where}: checkpoint signature invalid: {e}") from e
        except LogError as e:
            raise LogError(f"{where}: {e}") from e
        if cp.log_id != self.log_id:
            raise LogError(f"{where}: checkpoint of another log ({cp.log_id!r}) stored under this one")
        return cp

    def latest_frontier(self, below: int) -> Frontier:
        """The newest signed frontier of fewer than `below` entries (a writer's starting point)."""
        candidates = [below - 1] if below > 1 else []
        for size in candidates + [s for s in reversed(self.store.sizes(self.log_id)) if 0 < s < below - 1]:
            body = self.store.get(self.log_id, size)
            if body is not None:
                return self.open(body, self.store.key(self.log_id, size)).frontier
        return Frontier()

    def signed(self, after: int | None = None) -> dict[int, Checkpoint]:
        """Every stored checkpoint version (of sizes above `after`), verified; two signed roots for one size
        are a split view."""
        out: dict[int, Checkpoint] = {}
        for s in self.store.versions(self.log_id, after):
            where = f"s3://{self.store.bucket}/{s.key} (version {s.version})"
            cp = self.open(s.body, where)
            if cp.size != _size_of(s.key):
                raise LogError(f"{where}: holds the checkpoint of size {cp.size}, not of its key's size")
            if cp.size in out and out[cp.size].root != cp.root:
                raise LogError(f"{where}: two signed checkpoints for size {cp.size} disagree (split view)")
            out[cp.size] = cp
        return out

    def check(self, leaves: Sequence[bytes], where: str) -> Report:
        """leaves: the entries' bytes in order. LogError saying how the log disagrees with its checkpoints."""
        checkpoints = self.signed()
        n, newest = len(leaves), max(checkpoints, default=0)
        if newest and n == 0:
            raise LogError(f"{where}: log emptied: 0 entries but the signed checkpoint says {newest}")
        if n < newest:
            raise LogError(f"{where}: log truncated to {n} entries but the signed checkpoint says {newest}")
        if not checkpoints:
            return Report(n, 0, 0)
        extend(Frontier(), leaves, checkpoints, where)
        return Report(n, len(checkpoints), newest)

    def check_since(self, witness: Checkpoint, leaves: Sequence[bytes], where: str) -> tuple[Report, Frontier]:
        """leaves: the entries after the witness's size. Every checkpoint signed since must be the witness's
        tree extended by them; returns the report and the frontier of the whole log."""
        checkpoints = self.signed(after=witness.size)
        n, newest = witness.size + len(leaves), max(checkpoints, default=witness.size)
        if n < newest:
            raise LogError(f"{where}: log truncated to {n} entries but the signed checkpoint says {newest}")
        frontier = extend(witness.frontier, leaves, checkpoints, where)
        return Report(n, len(checkpoints), newest), frontier


def extend(start: Frontier, leaves: Iterable[bytes], checkpoints: Mapping[int, Checkpoint], where: str) -> Frontier:
    """start extended by the leaves (entry bytes); at each checkpointed size its root must be the signed one."""
    frontier, previous = start, start.size
    for data in leaves:
        frontier = frontier.append(leaf_hash(data))
        cp = checkpoints.get(frontier.size)
        if cp is None:
            continue
        if frontier.root() != cp.root:
            size = frontier.size
            which = f"entry {size}" if previous == size - 1 else f"an entry among {previous + 1}..{size}"
            raise LogError(f"{where}: {which} was modified: the log is inconsistent with the signed "
                           f"checkpoint of size {size}")
        previous = frontier.size
    return frontier


@dataclass(frozen=True)
class Witness:
    """The newest checkpoint this verifier has checked, with where its entries end in the local file. The
    checkpoint is signed and opened again on every load, so a forged witness is refused; an older genuine
    one only makes the next verify read more. Kept with the verifier's state (MLSEC_HOME), not the log."""

    path: Path

    def load(self, notary: Notary) -> tuple[Checkpoint, int, str] | None:
        try:
            doc = json.loads(self.path.read_text())
            body, offset, last = doc["checkpoint"].encode(), int(doc["offset"]), str(doc["last"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return notary.open(body, str(self.path)), offset, last

    def save(self, notary: Notary, size: int, offset: int, last: str) -> None:
        body = notary.store.get(notary.log_id, size) if size else None
        if body is None:
            return
        notary.open(body, notary.store.key(notary.log_id, size))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"checkpoint": body.decode(), "offset": offset, "last": last}))
        tmp.replace(self.path)
