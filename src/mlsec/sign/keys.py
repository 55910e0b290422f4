"""ECDSA P-256 signing keys: created 0600, identified by the SHA-256 of the public key."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner, SSlibKey

from mlsec.fsutil import write_secret

PRIVATE = "signing.key"
PUBLIC = "signing.pub"


@dataclass(frozen=True)
class KeyPair:
    private_key: Path
    public_key: Path


def fingerprint(public_key: Path) -> str:
    """The signer identity policies allow-list: sha256 over the DER SubjectPublicKeyInfo."""
    return key_fingerprint(load_public(public_key))


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def sslib_key(key: ec.EllipticCurvePublicKey) -> SSlibKey:
    """The key as securesystemslib verifies with it; its keyid is the fingerprint policies allow-list, so
    an envelope names its key the way policy data does."""
    return SSlibKey.from_crypto(key, keyid=key_fingerprint(key))


def sslib_signer(private_key: Path) -> CryptoSigner:
    key = load_private(private_key)
    return CryptoSigner(key, sslib_key(key.public_key()))


def load_public(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read public key {path}: {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path} is not an ECDSA P-256 public key")
    return key


def load_private(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"cannot read private key {path}: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path} is not an ECDSA P-256 private key")
    return key


def create(key_dir: Path, *, overwrite: bool = False) -> KeyPair:
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pair = KeyPair(key_dir / PRIVATE, key_dir / PUBLIC)
    if pair.private_key.exists() and not overwrite:
        raise FileExistsError(f"{pair.private_key} exists; refusing to replace a signing key")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # A new 0600 file renamed into place: never an old file's mode, never through a planted symlink.
    write_secret(pair.private_key, pem)
    pair.public_key.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pair


def ensure(key_dir: Path) -> KeyPair:
    """The local key pair, created on first use."""
    pair = KeyPair(key_dir / PRIVATE, key_dir / PUBLIC)
    return pair if pair.private_key.exists() and pair.public_key.exists() else create(key_dir, overwrite=True)


def configured(key_dir: Path, *, create: bool) -> KeyPair:
    """The signing key pair: explicit paths (a mounted Secret), else key_dir, created only if allowed."""
    private, public = os.environ.get("MLSEC_SIGNING_KEY"), os.environ.get("MLSEC_PUBLIC_KEY")
    if private and public:
        return KeyPair(Path(private), Path(public))
    if create:
        return ensure(key_dir)
    pair = KeyPair(key_dir / PRIVATE, key_dir / PUBLIC)
    if not pair.private_key.exists():
        raise FileNotFoundError(f"no signing key: set MLSEC_SIGNING_KEY/MLSEC_PUBLIC_KEY or put {PRIVATE} in {key_dir}")
    return pair


def public_key(key_dir: Path) -> Path:
    """The key verifiers trust: MLSEC_PUBLIC_KEY, else the local key directory's."""
    path = Path(os.environ.get("MLSEC_PUBLIC_KEY") or key_dir / PUBLIC)
    if not path.exists():
        raise FileNotFoundError(f"public key {path} not found (set MLSEC_PUBLIC_KEY)")
    return path
