"""Rotating the model-signing key after a suspected theft (threat T23; docs/incident-response.md).

A new key pair is made; every version a served stage points at is fetched from the registry, verified with
the old key, and only then re-signed and re-attested with the new one; the new signature set is stored
beside the version (write-once, the version itself is never rewritten); the old key becomes verify-only
until a date (mlsec.sign.keyring) and its private key is replaced. A version that does not verify with the
old key is REFUSED, never re-signed: re-signing whatever is in the registry would launder a tampered model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from mlsec.digest import sha256_json
from mlsec.incident import record
from mlsec.registry.store import Registry, RegistryError
from mlsec.sign import keyring, keys
from mlsec.sign import stage as signing
from mlsec.sign.keys import KeyPair, fingerprint
from mlsec.sign.methods import Signing, Trust

SERVED_STAGES = ("prod", "staging")
NEXT_DIR = "next"  # the new key while a rotation runs: a rerun after a crash reuses it
MAX_GRACE = timedelta(days=90)  # the longest the old key may keep verifying after a rotation


@dataclass(frozen=True)
class Resign:
    model: str
    version: str
    stages: list[str]
    status: str  # "re-signed" | "already" | "REFUSED"
    detail: str = ""


@dataclass(frozen=True)
class Rotation:
    old: str  # fingerprints
    new: str
    verify_until: date
    versions: list[Resign] = field(default_factory=list)

    @property
    def refused(self) -> list[Resign]:
        return [r for r in self.versions if r.status == "REFUSED"]


def reattest(bundle_dir: Path, old: Trust, new: Signing) -> dict[str, Any]:
    """The provenance statement the old key signed, opened with it, with the dataset provenance it carries
    re-signed by the new key (and named by its new digest): the same facts, vouched for by the new key."""
    sig = bundle_dir / signing.SIGNATURE
    stmt = old.open_statement((bundle_dir / signing.ATTESTATION).read_bytes(), sig)
    build = stmt["predicate"]["buildDefinition"]
    carried = build.get("internalParameters", {}).get("datasetProvenance")
    if carried is not None:
        resigned = new.sign_document(old.open_statement(json.dumps(carried).encode(), sig))
        build["internalParameters"]["datasetProvenance"] = resigned
        for dep in build["resolvedDependencies"]:
            if dep.get("annotations", {}).get("role") == "dataset-provenance":
                dep["digest"]["sha256"] = sha256_json(resigned)
    return stmt


def check_before_resigning(bundle_dir: Path, old: Trust, promoted: str) -> str:
    """The control that keeps a rotation from laundering a swap: the bundle verifies with the old key and
    its bytes are the ones its stage's signed promotion names (a thief holding the old key can re-sign
    swapped weights, not forge a gate's promotion). Returns the digest; ValueError otherwise."""
    digest = signing.verify(bundle_dir, old).model_digest
    if digest != promoted:
        raise ValueError(f"its bytes are {digest}, not the {promoted} its signed promotion names")
    return digest


def resign(bundle_dir: Path, old: Trust, new: Signing, new_trust: Trust, promoted: str) -> str:
    """Re-signs a bundle in place once check_before_resigning passes; returns the model digest. Raises
    ValueError, having changed nothing, when it does not."""
    digest = check_before_resigning(bundle_dir, old, promoted)
    stmt = reattest(bundle_dir, old, new)
    new.model_signer().set_hashing_config(signing._hashing_config()).sign(
        bundle_dir / signing.MODEL, bundle_dir / signing.SIGNATURE)
    new.sign_attestation(stmt, bundle_dir / signing.ATTESTATION)
    signing.verify(bundle_dir, new_trust)  # what is stored verifies with the key that will be trusted
    return digest


def served_versions(reg: Registry, stages: tuple[str, ...]) -> dict[tuple[str, str], tuple[list[str], str]]:
    """(model, version) -> (stages pointing at it, the digest their signed promotion names)."""
    out: dict[tuple[str, str], tuple[list[str], str]] = {}
    for name in reg.models():
        for stage in stages:
            if stage not in reg.stage_envs:
                continue
            try:
                version, digest = reg.resolve(name, stage)
            except RegistryError:
                continue  # no verified promotion to this stage: nothing served from it
            held, _ = out.setdefault((name, version), ([], digest or ""))
            held.append(stage)
    return out


def _rewritten(reg: Registry, name: str, version: str, old: Trust) -> list[str]:
    """The signature files verified with old (the version's own, or a set an earlier rotation stored) that have
    more than one stored object version. The registry writes each once (conditional create); a second is
    someone with S3 write access replacing it. The promotion pins the model bytes, but the provenance's facts
    (dataset, decisions) are vouched for only by the old key, which may be the stolen one: re-signing a
    rewritten set would make the thief's claims outlive that key."""
    prefix = reg.signature_set(name, version, old) or reg._prefix(name, version)  # noqa: SLF001 - its layout
    return [rel for rel in (signing.SIGNATURE, signing.ATTESTATION)
            if sum(1 for _ in reg._all_versions(prefix + rel, exact=True)) > 1]  # noqa: SLF001


def _resign_one(reg: Registry, name: str, version: str, held: list[str], promoted: str, old: Trust,
                new: Signing, new_trust: Trust, hint: str) -> Resign:
    if why := reg.revocation(name, version):
        return Resign(name, version, held, "REFUSED", f"revoked ({why}); not re-signed")
    if reg.signature_set(name, version, new_trust) is not None:  # a rerun, or a set someone planted
        with reg.fetched(name, version, new_trust) as (root, _files):
            try:
                digest = signing.verify(root, new_trust).model_digest
            except ValueError as e:
                return Resign(name, version, held, "REFUSED", f"a set stored under the new key does not verify: {e}")
        if digest != promoted:
            return Resign(name, version, held, "REFUSED", f"the set stored under the new key is about {digest}")
        return Resign(name, version, held, "already", "a set signed with the new key is stored")
    with reg.fetched(name, version, old) as (root, _files):
        try:
            digest = resign(root, old, new, new_trust, promoted)
        except ValueError as e:
            return Resign(name, version, held, "REFUSED", f"not what the old key and its promotion vouch for: {e}")
        if rewritten := _rewritten(reg, name, version, old):
            return Resign(name, version, held, "REFUSED", f"{', '.join(rewritten)} written again after the registry "
                          "stored it once: what the old key vouches for there may be the thief's; not re-signed")
        try:
            reg.add_signature_set(name, version, hint, (root / signing.SIGNATURE).read_bytes(),
                                  (root / signing.ATTESTATION).read_bytes())
        except RegistryError as e:
            return Resign(name, version, held, "REFUSED", f"cannot store the re-signed set: {e}")
    return Resign(name, version, held, "re-signed", digest)


def resign_served(reg: Registry, old: Trust, new_keys: KeyPair, log_path: Path, by: str,
                  stages: tuple[str, ...] = SERVED_STAGES) -> list[Resign]:
    """Every version a served stage points at: verified with old from the registry's copy, re-signed with
    new_keys, stored beside the version. Each outcome is appended to the incident log."""
    new, new_trust = Signing("key", new_keys), Trust("key", public_key=new_keys.public_key)
    hint = keyring.key_hint(keys.load_public(new_keys.public_key))
    out = []
    for (name, version), (held, promoted) in sorted(served_versions(reg, stages).items()):
        result = _resign_one(reg, name, version, held, promoted, old, new, new_trust, hint)
        record(log_path, "re-sign" if result.status != "REFUSED" else "re-sign-refused", model=name,
               version=version, stages=held, status=result.status, detail=result.detail, by=by)
        out.append(result)
    return out


def rotate(reg: Registry, key_dir: Path, old: Trust, verify_until: date, log_path: Path, by: str,
           stages: tuple[str, ...] = SERVED_STAGES) -> Rotation:
    """The whole rotation over a local key directory: new key, re-sign what is served, then the trust file
    names the new key active and the old one verify-only until verify_until, and the new key replaces the
    old one in key_dir (the old private key is gone). Refused versions do not stop the rotation: the
    stolen key must stop signing either way; they are listed, logged, and fail verification everywhere."""
    if old.method != "key" or old.public_key is None:
        raise ValueError("rotate-signing-key rotates a signing key (MLSEC_SIGNING_METHOD=key); certificate and "
                         "Sigstore identities are revoked at their CA or OIDC provider")
    if verify_until < keyring.today():
        raise ValueError(f"--old-key-valid-until {verify_until.isoformat()} is in the past")
    if verify_until > keyring.today() + MAX_GRACE:  # a typo (2062) would keep a stolen key trusted for decades
        raise ValueError(f"--old-key-valid-until {verify_until.isoformat()} is more than {MAX_GRACE.days} days away; "
                         "a compromised key must stop verifying soon: re-sign what is served instead")
    new_keys = keys.ensure(key_dir / NEXT_DIR)
    old_fp, new_fp = fingerprint(old.public_key), fingerprint(new_keys.public_key)
    record(log_path, "rotate-signing-key:start", old=old_fp, new=new_fp, verify_until=verify_until.isoformat(), by=by)
    results = resign_served(reg, old, new_keys, log_path, by, stages)
    old_public = key_dir / NEXT_DIR / "retiring.pub"
    shutil.copyfile(old.public_key, old_public)  # the configured key may be the one about to be replaced
    keyring.retire(keyring.trust_path(key_dir), old_public, new_keys.public_key, verify_until)
    new_keys.private_key.replace(key_dir / keys.PRIVATE)
    new_keys.public_key.replace(key_dir / keys.PUBLIC)
    shutil.rmtree(key_dir / NEXT_DIR)
    rotation = Rotation(old_fp, new_fp, verify_until, results)
    record(log_path, "rotate-signing-key", old=old_fp, new=new_fp, verify_until=verify_until.isoformat(), by=by,
           resigned=[f"{r.model}:{r.version}" for r in results if r.status != "REFUSED"],
           refused=[f"{r.model}:{r.version}" for r in rotation.refused])
    return rotation
