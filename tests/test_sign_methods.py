"""Certificate-based signing, and Sigstore keyless failing fast (never falling back) when offline."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mlsec.sign import keys, stage
from mlsec.sign.attestation import Materials
from mlsec.sign.methods import Signing, SigningError, Trust

from conftest import Trained

MATERIALS = Materials("data.csv", "a" * 64, {}, "commit", "image")


def _ca(tmp: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def _leaf(tmp: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> tuple[keys.KeyPair, Path]:
    pair = keys.create(tmp / "leaf")
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ml-platform signer")]))
            .issuer_name(ca.subject).public_key(keys.load_public(pair.public_key))
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=12))
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256()))
    path = tmp / "leaf.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pair, path


def test_certificate_signing_verifies_against_the_ca_only(tmp_path: Path, trained: Trained) -> None:
    ca_key, ca, ca_pem = _ca(tmp_path, "mlsec-root")
    pair, leaf = _leaf(tmp_path, ca_key, ca)
    bundle = stage.sign(trained.model_dir, tmp_path / "signed", Signing("certificate", pair, leaf, [ca_pem]),
                        MATERIALS, "cert-run")
    verified = stage.verify(bundle, Trust("certificate", chain=[ca_pem]))
    assert verified.signer == keys.fingerprint(pair.public_key)
    assert verified.model_digest == trained.training_evidence.subject.digest
    ev = stage.evidence(bundle, "credit", Trust("certificate", chain=[ca_pem]))
    assert ev.signature.method == "certificate" and ev.signature.verified and ev.attestation.verified

    _, _, other_ca = _ca(tmp_path, "someone-else")
    with pytest.raises(ValueError, match="signature verification failed"):
        stage.verify(bundle, Trust("certificate", chain=[other_ca]))
    assert not stage.evidence(bundle, "credit", Trust("certificate", chain=[other_ca])).signature.verified


def test_sigstore_offline_fails_at_once_and_writes_nothing(tmp_path: Path, trained: Trained,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEC_SIGNING_METHOD", "sigstore")
    monkeypatch.setenv("MLSEC_OIDC_TOKEN", "eyJ.not-a-real.token")
    signing = Signing.from_env(None)
    started = time.monotonic()
    with pytest.raises(SigningError, match="needs network access to fulcio.sigstore.dev.*No other signing method"):
        stage.sign(trained.model_dir, tmp_path / "out", signing, MATERIALS, "x")
    assert time.monotonic() - started < 15
    assert not (tmp_path / "out").exists()


def test_sigstore_without_token_or_identity_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEC_SIGNING_METHOD", "sigstore")
    monkeypatch.delenv("MLSEC_OIDC_TOKEN", raising=False)
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    with pytest.raises(SigningError, match="needs an OIDC identity token"):
        Signing.from_env(None)
    with pytest.raises(SigningError, match="MLSEC_SIGSTORE_IDENTITY and MLSEC_SIGSTORE_ISSUER"):
        Trust.from_env(None)


def test_unknown_method_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEC_SIGNING_METHOD", "none")
    with pytest.raises(SigningError, match="use key, certificate or sigstore"):
        Signing.from_env(None)
