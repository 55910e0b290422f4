"""How a model is signed, and what a verifier trusts: a key, a certificate chain, or a Sigstore identity.

Chosen by configuration (MLSEC_SIGNING_METHOD = key | certificate | sigstore); a method that cannot
run fails at once with the reason. Nothing ever falls back to another method.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mlsec.sign import attestation, keyring
from mlsec.sign.keyring import RetiredKey
from mlsec.sign.keys import KeyPair, key_fingerprint, load_public

Method = Literal["key", "certificate", "sigstore"]
SIGSTORE_HOSTS = ("fulcio.sigstore.dev", "rekor.sigstore.dev", "tuf-repo-cdn.sigstore.dev")


class SigningError(RuntimeError):
    pass


def _method() -> Method:
    method = os.environ.get("MLSEC_SIGNING_METHOD") or "key"
    if method not in ("key", "certificate", "sigstore"):
        raise SigningError(f"MLSEC_SIGNING_METHOD={method!r}: use key, certificate or sigstore")
    return method  # type: ignore[return-value]


def _chain() -> list[Path]:
    return [Path(p) for p in (os.environ.get("MLSEC_CERT_CHAIN") or "").split(os.pathsep) if p]


def require_sigstore_network(timeout_s: float = 3.0) -> None:
    """Keyless signing needs Fulcio, Rekor and the TUF root; say so now rather than hang later."""
    for host in SIGSTORE_HOSTS:
        try:
            socket.create_connection((host, 443), timeout=timeout_s).close()
        except OSError as e:
            raise SigningError(
                f"Sigstore keyless signing needs network access to {host}:443, which failed ({e}). "
                "No other signing method is used in its place: set MLSEC_SIGNING_METHOD=key for offline signing."
            ) from e


@dataclass(frozen=True)
class Signing:
    method: Method
    keys: KeyPair | None = None
    certificate: Path | None = None
    chain: list[Path] = field(default_factory=list)
    oidc_token: str | None = None

    @classmethod
    def from_env(cls, keys: KeyPair | None) -> Signing:
        method = _method()
        if method == "sigstore":
            token = os.environ.get("MLSEC_OIDC_TOKEN") or os.environ.get("SIGSTORE_ID_TOKEN")
            if not token:
                raise SigningError("Sigstore keyless signing needs an OIDC identity token "
                                   "(MLSEC_OIDC_TOKEN or SIGSTORE_ID_TOKEN); none is set")
            return cls("sigstore", oidc_token=token)
        if keys is None:
            raise SigningError(f"{method} signing needs a private key")
        if method == "certificate":
            cert = os.environ.get("MLSEC_SIGNING_CERT")
            if not cert:
                raise SigningError("certificate signing needs MLSEC_SIGNING_CERT (and MLSEC_CERT_CHAIN)")
            return cls("certificate", keys, Path(cert), _chain())
        return cls("key", keys)

    def model_signer(self) -> Any:
        import model_signing

        cfg = model_signing.signing.Config()
        if self.method == "sigstore":
            require_sigstore_network()
            return cfg.use_sigstore_signer(identity_token=self.oidc_token)
        assert self.keys is not None
        if self.method == "certificate":
            assert self.certificate is not None
            return cfg.use_certificate_signer(private_key=self.keys.private_key, signing_certificate=self.certificate,
                                              certificate_chain=self.chain)
        return cfg.use_elliptic_key_signer(private_key=self.keys.private_key)

    def sign_attestation(self, stmt: dict[str, Any], out: Path) -> None:
        out.write_text(json.dumps(self.sign_document(stmt), indent=2))

    def sign_document(self, stmt: dict[str, Any]) -> dict[str, Any]:
        """stmt signed: a DSSE envelope (key, certificate) or a Sigstore bundle holding one."""
        if self.method != "sigstore":
            assert self.keys is not None
            from mlsec.gates.attest import sign_statement
            from mlsec.sign.keys import sslib_signer

            return sign_statement(stmt, sslib_signer(self.keys.private_key))
        from sigstore.dsse import Statement
        from sigstore.models import ClientTrustConfig
        from sigstore.oidc import IdentityToken
        from sigstore.sign import SigningContext

        require_sigstore_network()
        ctx = SigningContext.from_trust_config(ClientTrustConfig.production())
        with ctx.signer(IdentityToken(self.oidc_token or "")) as signer:
            bundle = signer.sign_dsse(Statement(json.dumps(stmt, sort_keys=True).encode()))
        doc: dict[str, Any] = json.loads(bundle.to_json())
        return doc


@dataclass(frozen=True)
class Trust:
    """What verifiers accept. Never read from the artifact being verified."""

    method: Method
    public_key: Path | None = None
    chain: list[Path] = field(default_factory=list)
    identity: str | None = None
    issuer: str | None = None
    retired: tuple[RetiredKey, ...] = ()  # key method: verify-only keys, each until its date (mlsec.sign.keyring)

    @classmethod
    def from_env(cls, public_key: Path | None) -> Trust:
        method = _method()
        if method == "sigstore":
            identity, issuer = os.environ.get("MLSEC_SIGSTORE_IDENTITY"), os.environ.get("MLSEC_SIGSTORE_ISSUER")
            if not identity or not issuer:
                raise SigningError("Sigstore verification needs MLSEC_SIGSTORE_IDENTITY and MLSEC_SIGSTORE_ISSUER")
            return cls("sigstore", identity=identity, issuer=issuer)
        if method == "certificate":
            if not _chain():
                raise SigningError("certificate verification needs MLSEC_CERT_CHAIN (the trusted CA certificates)")
            return cls("certificate", chain=_chain())
        if public_key is None:
            raise SigningError("key verification needs a public key")
        return cls("key", public_key=public_key)

    def model_verifier(self) -> Any:
        import model_signing

        cfg = model_signing.verifying.Config()
        if self.method == "sigstore":
            return cfg.use_sigstore_verifier(identity=self.identity or "", oidc_issuer=self.issuer or "")
        if self.method == "certificate":
            return cfg.use_certificate_verifier(certificate_chain=self.chain)
        return _KeyForSignature(self)

    def key_for(self, signature: Path) -> Path:
        """The trusted public key to verify this signature with: the active key, or a retired key whose
        hint the signature carries while that key is still valid. A retired key past its date raises."""
        assert self.public_key is not None  # from_env and as_trust guarantee it for "key"
        if not self.retired:
            return self.public_key
        try:
            hint = json.loads(signature.read_text())["verificationMaterial"]["publicKey"]["hint"]
        except (OSError, ValueError, KeyError, TypeError):
            return self.public_key  # verification with the active key names what is wrong
        for r in self.retired:
            if keyring.key_hint(load_public(r.public_key)) == hint:
                if not keyring.trusted_on(r, keyring.today()):
                    raise ValueError(f"signed by the retired key {r.fingerprint}, trusted for verification only "
                                     f"until {r.verify_until.isoformat()}")
                return r.public_key
        return self.public_key

    def _leaf_key(self, signature: Path) -> ec.EllipticCurvePublicKey:
        """The signing certificate's key, read from a signature model-signing has already verified."""
        bundle = json.loads(signature.read_text())
        der = base64.b64decode(bundle["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"])
        key = x509.load_der_x509_certificate(der).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("signing certificate does not hold an EC key")
        return key

    def signer(self, signature: Path) -> str:
        """The identity policies allow-list: key fingerprint, or Sigstore identity@issuer."""
        if self.method == "sigstore":
            return f"{self.identity}@{self.issuer}"
        if self.method == "certificate":
            return key_fingerprint(self._leaf_key(signature))
        return key_fingerprint(load_public(self.key_for(signature)))

    def verify_attestation(self, envelope: Path, signature: Path) -> attestation.VerifiedAttestation:
        if self.method == "key":
            return attestation.verify(envelope, self.key_for(signature))
        if self.method == "certificate":
            return attestation.verify(envelope, self._leaf_key(signature))
        return attestation.read_statement(json.dumps(self.open_statement(envelope.read_bytes(), signature)).encode())

    def open_statement(self, document: bytes, signature: Path) -> dict[str, Any]:
        """The statement a signed document (sign_document's output) carries, once it verifies with this
        trust; ValueError otherwise. signature: the model's model.sig (a certificate trust's leaf key)."""
        if self.method != "sigstore":
            key = load_public(self.key_for(signature)) if self.method == "key" else self._leaf_key(signature)
            return attestation.open_signed(document, key)
        from sigstore.models import Bundle
        from sigstore.verify import Verifier
        from sigstore.verify.policy import Identity

        try:
            bundle = Bundle.from_json(document)
            _, payload = Verifier.production().verify_dsse(bundle, Identity(identity=self.identity or "",
                                                                            issuer=self.issuer or ""))
        except Exception as e:  # sigstore raises VerificationError and format errors alike
            raise ValueError(f"Sigstore bundle does not verify: {e}") from e
        stmt: dict[str, Any] = json.loads(payload)
        return stmt


def configured_trust(key_dir: Path) -> Trust:
    """The trust verifiers use here: per MLSEC_SIGNING_METHOD, with the key from MLSEC_PUBLIC_KEY/key_dir
    and, after a rotation, the retired keys of the trust file (verify-only, each until its date)."""
    from dataclasses import replace

    from mlsec.sign.keys import public_key

    trust = Trust.from_env(public_key(key_dir) if _method() == "key" else None)
    if trust.method != "key" or trust.public_key is None:
        return trust
    ring = keyring.load(keyring.trust_path(key_dir))
    fp = key_fingerprint(load_public(trust.public_key))
    if ring.active is not None and fp != ring.active:
        raise SigningError(f"the configured public key {fp} is not the active signing key {ring.active} "
                           f"({keyring.trust_path(key_dir)}); configure the active key")
    return replace(trust, retired=ring.retired)


def configured_signing(key_dir: Path, *, create_key: bool) -> Signing:
    from mlsec.sign.keys import configured

    keys = None if _method() == "sigstore" else configured(key_dir, create=create_key)
    if keys is not None and keys.public_key.exists():
        fp = key_fingerprint(load_public(keys.public_key))
        if (r := keyring.load(keyring.trust_path(key_dir)).is_retired(fp)) is not None:
            raise SigningError(f"the signing key {fp} was retired (verify-only until {r.verify_until.isoformat()}); "
                               "it never signs again: configure the active key")
    return Signing.from_env(keys)


class _KeyForSignature:
    """model-signing's verifier for the key a signature names among the trusted ones (Trust.key_for)."""

    def __init__(self, trust: Trust) -> None:
        self._trust = trust
        self._hashing: Any = None

    def set_hashing_config(self, hashing: Any) -> _KeyForSignature:
        self._hashing = hashing
        return self

    def verify(self, model: Path, signature: Path) -> None:
        import model_signing

        cfg = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=self._trust.key_for(Path(signature)))
        (cfg.set_hashing_config(self._hashing) if self._hashing is not None else cfg).verify(model, signature)


def as_trust(trust: Trust | Path) -> Trust:
    """A bare path is a public key: the default, key-based trust."""
    return trust if isinstance(trust, Trust) else Trust("key", public_key=trust)


def as_signing(signing: Signing | KeyPair) -> Signing:
    return signing if isinstance(signing, Signing) else Signing("key", signing)
