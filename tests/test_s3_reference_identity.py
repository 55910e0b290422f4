"""Ingest's registry identity ("reference", mlsec.registry.seaweed.reference_actions) on the real SeaweedFS.

Ingest parses files an attacker may have crafted, so what it holds of the registry must be worth little
to whoever takes it over: it reads what the reference lookup reads (the stage's alias, its promotion
records, the version's reference records) and nothing else: no write or delete anywhere, no model file,
no evidence, no raw dataset.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mlsec.config import policy_dir
from mlsec.gates.engine import InProcessEngine
from mlsec.registry import reference
from mlsec.registry.seaweed import ADMIN, PIPELINE, REFERENCE, LocalS3
from mlsec.registry.stages import governing_environments
from mlsec.registry.store import Registry
from mlsec.sign import keys

from conftest import GateKeys, Signed, _authenticated
from registry_support import chain_engine, promote

BUCKET = f"refid-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A SeaweedFS of its own whose identities are scoped to BUCKET, as kind-up.sh scopes them to the registry's."""
    with LocalS3(tmp_path_factory.mktemp("weed-ref"), buckets=(BUCKET,)) as server:
        yield server


@pytest.fixture(scope="module")
def stored(weed: LocalS3, signed: Signed, key_pair: keys.KeyPair, gate_keys: GateKeys,
           tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample's model registered, promoted to dev and given its reference record, by the pipeline's
    identity (and the dev gate key); returns the version."""
    registry = Registry(_authenticated(weed, role=PIPELINE), BUCKET, retention_days=1, gates=gate_keys.trust,
                        stage_envs=governing_environments(policy_dir()))
    engine: InProcessEngine = chain_engine(tmp_path_factory.mktemp("chain"), key_pair.public_key, [])
    try:
        version = signed.register(registry, key_pair)
        assert promote(registry, version, "dev", key_pair, engine, gate_keys).allow
    finally:
        engine.close()
    record = registry.record("credit", version)
    assert record is not None and signed.trained.profile is not None
    reference.store(registry, "credit", version, record.model_digest, signed.trained.data_evidence.subject.digest,
                    signed.trained.profile, gate_keys.signer("dev"))
    return version


def _refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(**kwargs)
    return str(e.value.response["Error"]["Code"])


def test_ingest_reads_the_signed_reference_with_the_reference_identity_alone(
        weed: LocalS3, stored: str, signed: Signed, gate_keys: GateKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lookup as the ingest task runs it in a cluster: its only registry credential is the mounted
    reference identity (the ambient keys here are deliberately wrong)."""
    for k, v in {"MLSEC_S3_ENDPOINT": weed.endpoint, "MLSEC_S3_BUCKET": BUCKET,
                 "MLSEC_S3_CREDENTIALS_DIR": str(weed.credentials_dir(REFERENCE)),
                 "MLSEC_GATE_TRUST_DIR": str(gate_keys.dir),
                 "AWS_ACCESS_KEY_ID": "not-a-key", "AWS_SECRET_ACCESS_KEY": "not-a-secret"}.items():
        monkeypatch.setenv(k, v)
    got = reference.for_ingest("credit", "dev")
    assert got.used.source == "registry" and got.used.detail == f"credit@{stored} (dev)", got.used
    assert got.profile is not None and signed.trained.profile is not None
    assert got.profile.sha256 == signed.trained.profile.sha256
    # The control: without it (only the wrong ambient keys) the lookup finds nothing and falls back.
    monkeypatch.delenv("MLSEC_S3_CREDENTIALS_DIR")
    assert reference.for_ingest("credit", "dev").used.source == "shipped"


def test_the_reference_identity_writes_nothing_and_reads_only_the_lookups_objects(weed: LocalS3, stored: str) -> None:
    reader, pipeline = _authenticated(weed, max_attempts=1, role=REFERENCE), _authenticated(weed, role=PIPELINE)
    keys_ = [o["Key"] for o in pipeline.list_objects_v2(Bucket=BUCKET, Prefix=f"models/credit/{stored}/")["Contents"]]
    refs = [k for k in keys_ if "/reference/" in k]
    others = [k for k in keys_ if "/reference/" not in k]
    assert refs and any(k.endswith(".safetensors") for k in others) and any("/evidence/" in k or "evidence" in k
                                                                              for k in others), keys_
    readable = [*refs, "aliases/credit/dev.json",
                *(o["Key"] for o in pipeline.list_objects_v2(Bucket=BUCKET, Prefix="promotions/credit/dev/")["Contents"])]
    for key in readable:
        assert reader.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    for key in others:  # model weights, signature, provenance, evidence, decisions of the version
        assert _refused(reader.get_object, Bucket=BUCKET, Key=key) == "AccessDenied", key
    for key in [*readable, *others, "audit/entries/x.json", "revocations/credit/x.json", "models/credit/x/reference/y"]:
        assert _refused(reader.put_object, Bucket=BUCKET, Key=key, Body=b"evil") == "AccessDenied", key
        assert _refused(reader.delete_object, Bucket=BUCKET, Key=key) == "AccessDenied", key
        assert _refused(reader.copy_object, Bucket=BUCKET, Key=key,
                        CopySource={"Bucket": BUCKET, "Key": readable[0]}) == "AccessDenied", key
    gone = reader.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in readable]})
    assert not gone.get("Deleted") and len(gone["Errors"]) == len(readable)
    assert pipeline.get_object(Bucket=BUCKET, Key="aliases/credit/dev.json")["Body"].read()  # still there
    # Another bucket (a raw dataset bucket, say) is out of its reach altogether.
    data_bucket = f"data-{uuid.uuid4().hex[:10]}"
    admin = _authenticated(weed, role=ADMIN)
    admin.create_bucket(Bucket=data_bucket)
    admin.put_object(Bucket=data_bucket, Key="incoming/credit.csv", Body=b"a,b\n1,2\n")
    admin.put_object(Bucket=data_bucket, Key="aliases/credit/dev.json", Body=b"{}")
    for key in ("incoming/credit.csv", "aliases/credit/dev.json"):
        assert _refused(reader.get_object, Bucket=data_bucket, Key=key) == "AccessDenied", key
    assert _refused(reader.list_objects_v2, Bucket=data_bucket) == "AccessDenied"
    assert _refused(reader.create_bucket, Bucket=f"x-{uuid.uuid4().hex[:10]}") == "AccessDenied"


def test_the_ingest_component_looks_the_reference_up_with_its_reference_identity(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """components/ingest.py makes the reference identity its registry credential before anything reads S3,
    wherever MLSEC_REFERENCE_S3_CREDENTIALS_DIR names one (the cluster's ConfigMap, LocalS3.env)."""
    import inspect
    import os

    import mlsec.ingest.task
    from components.ingest import ingest

    seen: list[str | None] = []
    monkeypatch.setattr(mlsec.ingest.task, "run", lambda *a, **k: seen.append(os.environ.get("MLSEC_S3_CREDENTIALS_DIR")))
    monkeypatch.setenv("MLSEC_REFERENCE_S3_CREDENTIALS_DIR", str(tmp_path / "reference"))
    monkeypatch.setenv("MLSEC_S3_CREDENTIALS_DIR", "unset")  # so that undoing it removes what the component sets
    monkeypatch.delenv("MLSEC_S3_CREDENTIALS_DIR")

    class Out:
        path = str(tmp_path / "out")

    outputs = [p for p in inspect.signature(ingest.python_func).parameters if p in ("dataset", "evidence", "profile")]
    ingest.python_func("", "", **{p: Out() for p in outputs}, model_name="credit", stage="dev")
    assert seen == [str(tmp_path / "reference")]
