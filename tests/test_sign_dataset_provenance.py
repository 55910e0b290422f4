"""The signing gate and the dataset provenance the model's provenance carries (issue 12).

Played as an attacker who holds the pipeline's signing key (a compromised sign step: it can sign any model
provenance it likes, but not the gate's decisions): the model's provenance stripped of the dataset
provenance, or carrying one about another dataset, is re-signed with the trusted key so that only the
signing gate's policy stands in the way. And as one who holds only write access to the bundle's bytes.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlsec.digest import sha256_bytes, sha256_file
from mlsec.gates.decision import Decision
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.sign import keys
from mlsec.sign import stage as signing

from conftest import Signed
from registry_support import chain_engine

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def staging_engine(tmp_path_factory: pytest.TempPathFactory, key_pair: keys.KeyPair) -> InProcessEngine:
    """The repo's policies with the test signer trusted in staging (its allow list is empty)."""
    return chain_engine(tmp_path_factory.mktemp("policies"), key_pair.public_key, [])


def _here(decisions: list[Decision], env: str) -> list[Decision]:
    """The data and training decisions as if taken under env (the registry judges them again there)."""
    return [d.model_copy(update={"environment": env}) for d in decisions[:2]]


def _forged(signed: Signed, tmp_path: Path, edit: Edit, key: keys.KeyPair | None) -> Path:
    """A copy of the signed bundle whose model provenance statement edit changed, re-signed with key
    (None: the original signature kept, as by one who holds no signing key)."""
    bundle = Path(shutil.copytree(signed.bundle, tmp_path / "forged"))
    att = bundle / signing.ATTESTATION
    envelope = json.loads(att.read_text())
    stmt = json.loads(base64.b64decode(envelope["payload"]))
    edit(stmt["predicate"]["buildDefinition"])
    if key is not None:
        signing.as_signing(key).sign_attestation(stmt, att)
    else:
        envelope["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
        att.write_text(json.dumps(envelope))
    return bundle


def _strip(build: dict[str, Any]) -> None:
    build.pop("internalParameters")
    build["resolvedDependencies"] = [d for d in build["resolvedDependencies"]
                                     if d.get("annotations", {}).get("role") != "dataset-provenance"]


def _carry(build: dict[str, Any], document: dict[str, Any]) -> None:
    from mlsec.ingest.provenance import document_digest

    build["internalParameters"]["datasetProvenance"] = document
    dep = next(d for d in build["resolvedDependencies"] if d.get("annotations", {}).get("role") == "dataset-provenance")
    dep["digest"]["sha256"] = document_digest(document)


def _inner(signed: Signed) -> dict[str, Any]:
    stmt = json.loads(base64.b64decode(json.loads((signed.bundle / signing.ATTESTATION).read_text())["payload"]))
    doc: dict[str, Any] = stmt["predicate"]["buildDefinition"]["internalParameters"]["datasetProvenance"]
    return json.loads(base64.b64decode(doc["payload"]))


def _judge(bundle: Path, signed: Signed, key_pair: keys.KeyPair, engine: InProcessEngine, env: str) -> Decision:
    ev = signing.evidence(bundle, "credit", key_pair.public_key)
    return evaluate("signing", ev, environment=env, engine=engine, decisions=_here(signed.decisions, env))


def test_the_genuine_bundle_carries_a_verified_dataset_provenance_about_its_dataset(
        signed: Signed, key_pair: keys.KeyPair, staging_engine: InProcessEngine) -> None:
    ev = signing.evidence(signed.bundle, "credit", key_pair.public_key)
    data = signed.trained.data_evidence
    dp = ev.dataset_provenance
    assert dp.present and dp.verified and dp.matches_dataset and dp.problem is None
    assert dp.dataset_digest == data.subject.digest == sha256_file(signed.trained.dataset)
    assert dp.source_digest == data.provenance.source_sha256
    d = _judge(signed.bundle, signed, key_pair, staging_engine, "staging")
    assert d.allow, d.deny  # the control for every denial below: the same chain, genuine, passes staging


def test_stripped_dataset_provenance_resigned_with_the_trusted_key_is_denied(
        tmp_path: Path, signed: Signed, key_pair: keys.KeyPair, staging_engine: InProcessEngine) -> None:
    bundle = _forged(signed, tmp_path, _strip, key_pair)
    assert signing.verify(bundle, key_pair.public_key).attestation.dataset_provenance is None  # verifies as a model
    d = _judge(bundle, signed, key_pair, staging_engine, "staging")
    assert d.deny == ["the model's provenance carries no dataset provenance (the model's provenance carries none), "
                      "which staging requires (policies/data/staging.json: signing.require_dataset_provenance)"]
    dev = _judge(bundle, signed, key_pair, staging_engine, "dev")  # dev only warns (policy data)
    assert dev.allow and any("accepted only because dev does not require one" in w for w in dev.warn), dev.warn


def test_stripped_dataset_provenance_without_the_key_fails_the_model_provenance(
        tmp_path: Path, signed: Signed, key_pair: keys.KeyPair, staging_engine: InProcessEngine) -> None:
    bundle = _forged(signed, tmp_path, _strip, None)
    d = _judge(bundle, signed, key_pair, staging_engine, "staging")
    assert "provenance attestation did not verify" in d.deny
    assert any("carries no dataset provenance (the model's provenance did not verify)" in r for r in d.deny), d.deny


def test_a_dataset_provenance_about_another_dataset_is_denied(
        tmp_path: Path, signed: Signed, key_pair: keys.KeyPair, staging_engine: InProcessEngine) -> None:
    """A poisoned copy of the dataset: its provenance is signed with the trusted key and carried, but the
    model's provenance still names the dataset the data gate judged."""
    poisoned = sha256_bytes(signed.trained.dataset.read_bytes() + b"1,2,3\n")
    other = {**_inner(signed), "subject": [{"name": "data.csv", "digest": {"sha256": poisoned}}]}
    bundle = _forged(signed, tmp_path, lambda b: _carry(b, signing.as_signing(key_pair).sign_document(other)), key_pair)
    ev = signing.evidence(bundle, "credit", key_pair.public_key)
    assert ev.attestation.verified and ev.dataset_provenance.verified and not ev.dataset_provenance.matches_dataset
    with pytest.raises(ValueError, match=f"the dataset provenance is about {poisoned}"):
        signing.verify(bundle, key_pair.public_key)  # the registry and the server refuse it as well
    for env in ("dev", "staging"):  # whatever the toggle
        d = _judge(bundle, signed, key_pair, staging_engine, env)
        named = signed.trained.data_evidence.subject.digest
        assert sorted(d.deny) == [
            f"dataset provenance: no allowing data-gate decision for {poisoned}",
            f"the dataset provenance is about dataset {poisoned}, not the dataset {named} the model's provenance names"]


def test_a_consistent_forgery_about_a_dataset_the_data_gate_never_allowed_is_denied(
        tmp_path: Path, signed: Signed, key_pair: keys.KeyPair, staging_engine: InProcessEngine) -> None:
    """Model provenance and dataset provenance both re-pointed at a poisoned dataset, both signed with the
    trusted key: everything verifies and matches; only the data gate's missing decision is left."""
    poisoned = sha256_bytes(signed.trained.dataset.read_bytes() + b"1,2,3\n")
    other = {**_inner(signed), "subject": [{"name": "data.csv", "digest": {"sha256": poisoned}}]}

    def edit(build: dict[str, Any]) -> None:
        next(d for d in build["resolvedDependencies"] if d.get("annotations", {}).get("role") == "dataset")["digest"] = {
            "sha256": poisoned}
        _carry(build, signing.as_signing(key_pair).sign_document(other))

    bundle = _forged(signed, tmp_path, edit, key_pair)
    assert signing.verify(bundle, key_pair.public_key).attestation.dataset_digest == poisoned
    d = _judge(bundle, signed, key_pair, staging_engine, "staging")
    assert d.deny == [f"dataset provenance: no allowing data-gate decision for {poisoned}"]


def test_a_dataset_provenance_signed_by_another_key_is_denied_even_in_dev(
        tmp_path: Path, signed: Signed, key_pair: keys.KeyPair, other_key_pair: keys.KeyPair,
        staging_engine: InProcessEngine) -> None:
    theirs = signing.as_signing(other_key_pair).sign_document(_inner(signed))
    bundle = _forged(signed, tmp_path, lambda b: _carry(b, theirs), key_pair)
    ev = signing.evidence(bundle, "credit", key_pair.public_key)
    assert ev.attestation.verified and ev.dataset_provenance.present and not ev.dataset_provenance.verified
    d = _judge(bundle, signed, key_pair, staging_engine, "dev")
    assert not d.allow and len(d.deny) == 1, d.deny
    assert d.deny[0].startswith("the dataset provenance in the model's provenance did not verify: the dataset "
                                "provenance does not verify: attestation signature does not verify with the trusted key")
