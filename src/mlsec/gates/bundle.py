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

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from mlsec.gates.engine import BUNDLE_DIGEST_KEY, bundle_digest, data_files, data_path, policy_files
from mlsec.sign import keys

SIGNATURES = ".signatures.json"
ALGORITHM = "ES256"  # start OPA with --signing-alg=ES256 (its default is RS256)
DEFAULT_KEY_ID = "default"  # OPA's --verification-key-id default


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
    if signing_key is not None:
        files[SIGNATURES] = _signatures(files, keys.load_private(signing_key), key_id)
    with tarfile.open(out, "w:gz") as tar:
        for name, payload in files.items():
            _add(tar, name, payload)
    return digest


def _hash(name: str, payload: bytes) -> str:
    if Path(name).name in {".manifest", "data.json"}:  # OPA's structured files: hashed as parsed JSON
        try:
            payload = _structured(_parse(payload))
        except ValueError as e:
            raise BundleError(f"{name}: not JSON: {e}") from e
    return hashlib.sha256(payload).hexdigest()


def _read(bundle: Path) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(bundle) as tar:
            for member in tar.getmembers():  # OPA reads regular files only, by their name without a leading /
                if member.isreg() and (f := tar.extractfile(member)) is not None:
                    contents[member.name.removeprefix("/")] = f.read()
    except (OSError, tarfile.TarError) as e:
        raise BundleError(f"cannot read bundle {bundle}: {e}") from e
    return contents


def verify(bundle: Path, public_key: Path) -> dict[str, Any]:
    """The checks `opa run --bundle --verification-key` makes before it activates a bundle (one JWT,
    valid under the key, no scope; every file listed with a matching hash, nothing listed missing).
    Returns the verified .manifest. OPA makes these checks itself; this lets a rollout check first."""
    contents = _read(bundle)
    if SIGNATURES not in contents:
        raise BundleError(f"{bundle} is not signed (no {SIGNATURES})")
    try:
        tokens = json.loads(contents.pop(SIGNATURES))["signatures"]
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
    listed = {f["name"]: f for f in claims.get("files", [])}
    for name, payload in contents.items():
        entry = listed.pop(name, None)
        if entry is None:
            raise BundleError(f"{name} is not covered by the bundle signature")
        if entry.get("algorithm") != "SHA-256" or entry.get("hash") != _hash(name, payload):
            raise BundleError(f"{name}: digest does not match the bundle signature")
    if listed:
        raise BundleError(f"signed but missing from the bundle: {', '.join(sorted(listed))}")
    if ".manifest" not in contents:
        raise BundleError(f"{bundle} has no .manifest")
    manifest: dict[str, Any] = json.loads(contents[".manifest"])
    return manifest
