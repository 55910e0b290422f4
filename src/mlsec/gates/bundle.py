"""Build, sign and verify an OPA bundle (what `opa run --bundle` and bundle servers load) from policies/.

Bundles only read data from files named data.json, so the per-environment files are merged into
data/data.json: the same document tree `opa test policies/` builds from them.

A signed bundle carries .signatures.json in OPA's format: one ES256 JWT whose payload lists every other
file with its SHA-256. OPA started with `--verification-key` refuses to activate a bundle whose signature
does not verify or whose files do not match it, so nobody who can only write the ConfigMap (or the
bundle server) can change the gates. OPA hashes .rego files as bytes and .manifest/data.json as their
parsed JSON re-encoded compactly with sorted keys (bundle/hash.go); these files are written in exactly
that form, so their hash is the hash of their bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from mlsec.gates.engine import BUNDLE_DIGEST_KEY, bundle_digest, data_files, data_path, policy_files
from mlsec.sign import keys

SIGNATURES = ".signatures.json"
ALGORITHM = "ES256"  # start OPA with --signing-alg=ES256 (its default is RS256)
DEFAULT_KEY_ID = "default"  # OPA's --verification-key-id default
_CHUNK = 1 << 16
_HEADER_MAX = 64 << 10  # pax / GNU long-name headers: tarfile reads them whole, so they are capped too


class BundleError(ValueError):
    """The bundle is not one OPA would activate under the given key."""


class _Number(str):
    """A JSON number as written: OPA re-encodes a parsed data file's numbers by their literal."""


def _encode(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{_encode(str(k))}:{_encode(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, _Number):
        return str.__str__(value)
    if isinstance(value, str):  # Go's encoder also escapes U+2028 and U+2029; Python's does not
        return json.dumps(value, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return json.dumps(value, allow_nan=False)  # number, boolean, null


def _structured(value: Any) -> bytes:
    """JSON the way OPA's bundle hasher re-encodes it (bundle/hash.go): compact, keys sorted, strings
    escaped like Go's encoder with HTML escaping off, numbers by their literal."""
    return _encode(value).encode()


def _parse(payload: bytes) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(payload, parse_int=_Number, parse_float=_Number, parse_constant=no_constant)


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(payload), 0o644, 0  # reproducible: same input, same bytes
    tar.addfile(info, io.BytesIO(payload))


def _files(root: Path, revision: str, digest: str) -> dict[str, bytes]:
    """Every file of the bundle, by its path in the bundle."""
    merged: dict[str, dict[str, object]] = {}
    for f in data_files(root):
        merged.setdefault(data_path(root, f), {}).update(json.loads(f.read_text()))
    manifest = {"revision": revision, "roots": ["mlsec", *sorted(merged)],
                "metadata": {BUNDLE_DIGEST_KEY: digest}}
    files = {".manifest": _structured(manifest)}
    files.update({f.relative_to(root).as_posix(): f.read_bytes() for f in policy_files(root)})
    files.update({f"{path.replace('.', '/')}/data.json": _structured(doc) for path, doc in sorted(merged.items())})
    return files


def _signatures(files: dict[str, bytes], private_key: ec.EllipticCurvePrivateKey, key_id: str) -> bytes:
    listed = [{"name": name, "hash": hashlib.sha256(payload).hexdigest(), "algorithm": "SHA-256"}
              for name, payload in sorted(files.items())]
    token = jwt.encode({"files": listed}, private_key, algorithm=ALGORITHM, headers={"kid": key_id})
    return _structured({"signatures": [token]})


def build(root: Path, out: Path, revision: str, *, signing_key: Path | None = None,
          key_id: str = DEFAULT_KEY_ID) -> str:
    """Writes the bundle, signed when signing_key (an ECDSA P-256 PEM) is given; returns the policy
    digest recorded in every decision it will produce."""
    digest = bundle_digest(root)
    files = _files(root, revision, digest)
    if signing_key is not None:  # first in the archive, as OPA writes it: readers check it before the rest
        files = {SIGNATURES: _signatures(files, keys.load_private(signing_key), key_id), **files}
    with tarfile.open(out, "w:gz") as tar:
        for name, payload in files.items():
            _add(tar, name, payload)
    return digest


@dataclass(frozen=True)
class Limits:
    """What a bundle may expand to. This project's bundles are a few hundred KiB; a bundle past these
    is refused as soon as a header says so, before its content is decompressed."""

    member_bytes: int = 8 << 20
    total_bytes: int = 32 << 20
    members: int = 1000

    @property
    def stream_bytes(self) -> int:  # content plus tar headers and padding
        return self.total_bytes + self.members * 2048 + (1 << 20)


class _Capped:
    """The decompressed tar stream, refused once it runs past `cap` bytes: bounds whatever tarfile
    reads that no member header announces (long-name and pax headers, padding)."""

    def __init__(self, inner: IO[bytes], cap: int) -> None:
        self.inner, self.cap, self.count = inner, cap, 0

    def read(self, size: int = -1) -> bytes:
        want = self.cap - self.count + 1 if size is None or size < 0 else min(size, self.cap - self.count + 1)
        data = self.inner.read(want)
        self.count += len(data)
        if self.count > self.cap:
            raise BundleError(f"bundle expands past {self.cap} bytes")
        return data


class _BoundedInfo(tarfile.TarInfo):
    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        # Extended headers are read into memory whole before the member they describe is seen.
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                         tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) and self.size > _HEADER_MAX:
            raise BundleError(f"tar extended header of {self.size} bytes exceeds {_HEADER_MAX}")
        return super()._proc_member(tf)  # type: ignore[misc,no-any-return]


def _members(bundle: Path, limits: Limits) -> Iterator[tuple[str, IO[bytes]]]:
    """Regular files in archive order, streamed (nothing is decompressed ahead of the reader); refused
    past the limits on what their headers announce, before their content is read."""
    names: set[str] = set()
    total = 0
    try:
        with bundle.open("rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if gz else raw  # type: ignore[assignment]
            capped = _Capped(stream, limits.stream_bytes)
            with tarfile.open(fileobj=capped, mode="r|", tarinfo=_BoundedInfo) as tar:  # type: ignore[call-overload]
                for count, member in enumerate(tar, start=1):
                    if count > limits.members:
                        raise BundleError(f"bundle has more than {limits.members} members")
                    if not member.isreg():  # OPA reads regular files only, by their name without a leading /
                        continue
                    name = member.name.removeprefix("/")
                    if member.size > limits.member_bytes:
                        raise BundleError(f"{name}: {member.size} bytes exceeds the {limits.member_bytes}-byte limit")
                    total += member.size
                    if total > limits.total_bytes:
                        raise BundleError(f"bundle content exceeds the {limits.total_bytes}-byte limit")
                    if name in names:
                        raise BundleError(f"{name} appears twice in the bundle")
                    names.add(name)
                    f = tar.extractfile(member)
                    if f is not None:
                        yield name, f
    except (OSError, EOFError, tarfile.TarError) as e:
        raise BundleError(f"cannot read bundle {bundle}: {e}") from e


def _read(bundle: Path, limits: Limits | None = None) -> dict[str, bytes]:
    return {name: f.read() for name, f in _members(bundle, limits or Limits())}


def _hash(name: str, payload: bytes) -> str:
    if Path(name).name in {".manifest", "data.json"}:  # OPA's structured files: hashed as parsed JSON
        try:
            payload = _structured(_parse(payload))
        except ValueError as e:
            raise BundleError(f"{name}: not JSON: {e}") from e
    return hashlib.sha256(payload).hexdigest()


def _digest(name: str, f: IO[bytes]) -> tuple[str, bytes | None]:
    """(OPA's hash of the file, its bytes when it is a structured file); .rego files are streamed."""
    if Path(name).name in {".manifest", "data.json"}:
        payload = f.read()
        return _hash(name, payload), payload
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest(), None


def _claims(raw: bytes, public_key: Path) -> dict[str, dict[str, Any]]:
    """The files the one JWT in .signatures.json lists, once it verifies under public_key."""
    try:
        tokens = json.loads(raw)["signatures"]
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{SIGNATURES} is malformed: {e}") from e
    if not isinstance(tokens, list) or len(tokens) != 1:
        raise BundleError(f"{SIGNATURES} must hold exactly one JWT")
    try:
        claims = jwt.decode(tokens[0], keys.load_public(public_key), algorithms=[ALGORITHM])
    except jwt.PyJWTError as e:
        raise BundleError(f"bundle signature does not verify with {public_key}: {e}") from e
    if claims.get("scope", "") != "":
        raise BundleError(f"bundle signature has scope {claims['scope']!r}; OPA is started without one")
    return {f["name"]: f for f in claims.get("files", [])}


def _check(name: str, digest: str, listed: dict[str, dict[str, Any]]) -> None:
    entry = listed.pop(name, None)
    if entry is None:
        raise BundleError(f"{name} is not covered by the bundle signature")
    if entry.get("algorithm") != "SHA-256" or entry.get("hash") != digest:
        raise BundleError(f"{name}: digest does not match the bundle signature")


def verify(bundle: Path, public_key: Path, limits: Limits | None = None) -> dict[str, Any]:
    """The checks `opa run --bundle --verification-key` makes before it activates a bundle (one JWT,
    valid under the key, no scope; every file listed with a matching hash, nothing listed missing).
    Returns the verified .manifest. OPA makes these checks itself; this lets a rollout check first.

    The archive is streamed under `limits`. When .signatures.json comes first (as build and OPA write
    it) the signature is checked before anything else is decompressed, and every later file must be
    listed in it before it is read; files before it are hashed as they stream, never held whole."""
    listed: dict[str, dict[str, Any]] | None = None
    early: dict[str, str] = {}  # files met before the signature: name -> digest
    manifest: bytes | None = None
    for name, f in _members(bundle, limits or Limits()):
        if name == SIGNATURES:
            listed = _claims(f.read(), public_key)
            for seen, digest in early.items():
                _check(seen, digest, listed)
            continue
        if listed is not None and name not in listed:
            raise BundleError(f"{name} is not covered by the bundle signature")
        digest, payload = _digest(name, f)
        if name == ".manifest":
            manifest = payload
        if listed is None:
            early[name] = digest
        else:
            _check(name, digest, listed)
    if listed is None:
        raise BundleError(f"{bundle} is not signed (no {SIGNATURES})")
    if listed:
        raise BundleError(f"signed but missing from the bundle: {', '.join(sorted(listed))}")
    if manifest is None:
        raise BundleError(f"{bundle} has no .manifest")
    doc: dict[str, Any] = json.loads(manifest)
    return doc
