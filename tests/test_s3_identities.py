"""Least privilege on the registry's S3, against the real SeaweedFS: each refusal is asserted with the
credential an attacker who stole it would hold (the server's, the pipeline's, or none at all)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mlsec.registry.seaweed import ADMIN, AUDIT, DATA, PIPELINE, SERVER, LocalS3
from mlsec.registry.store import Registry

from conftest import GateKeys, _authenticated


def _as(server: LocalS3, role: str) -> Any:
    return _authenticated(server, max_attempts=1, role=role)


def _refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    return str(e.value.response["Error"]["Code"])


def _locked(server: LocalS3, bucket: str, key: str, mode: str = "GOVERNANCE") -> str:
    """An object the pipeline wrote under retention, as the registry writes model files; its version id."""
    until = datetime.now(timezone.utc) + timedelta(days=1)
    return str(_as(server, PIPELINE).put_object(Bucket=bucket, Key=key, Body=b"model bytes", ObjectLockMode=mode,
                                                ObjectLockRetainUntilDate=until)["VersionId"])


def _http(method: str, url: str, body: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_the_server_identity_can_read_but_never_write_or_delete(s3_server: LocalS3, locked_bucket: str) -> None:
    _as(s3_server, PIPELINE).put_object(Bucket=locked_bucket, Key="models/m/v/model.bin", Body=b"weights")
    server = _as(s3_server, SERVER)
    assert server.get_object(Bucket=locked_bucket, Key="models/m/v/model.bin")["Body"].read() == b"weights"
    Registry(server, locked_bucket).ensure_bucket(create=False)  # what the server checks before it pulls

    for key in ("models/m/v/model.bin", "aliases/m/prod.json", "revocations/m/v.json"):
        assert _refused(server.put_object, Bucket=locked_bucket, Key=key, Body=b"evil") == "AccessDenied"
        assert _refused(server.copy_object, Bucket=locked_bucket, Key=key,
                        CopySource={"Bucket": locked_bucket, "Key": "models/m/v/model.bin"}) == "AccessDenied"
        assert _refused(server.create_multipart_upload, Bucket=locked_bucket, Key=key) == "AccessDenied"
    assert _refused(server.delete_object, Bucket=locked_bucket, Key="models/m/v/model.bin") == "AccessDenied"
    errors = server.delete_objects(Bucket=locked_bucket, Delete={"Objects": [{"Key": "models/m/v/model.bin"}]})
    assert [e["Code"] for e in errors.get("Errors", [])] == ["AccessDenied"] and not errors.get("Deleted")
    assert _refused(server.put_object_tagging, Bucket=locked_bucket, Key="models/m/v/model.bin",
                    Tagging={"TagSet": [{"Key": "k", "Value": "v"}]}) == "AccessDenied"
    assert _refused(server.create_bucket, Bucket=f"srv-{uuid.uuid4().hex[:8]}") == "AccessDenied"
    versions = _as(s3_server, ADMIN).list_object_versions(Bucket=locked_bucket)
    assert len(versions.get("Versions", [])) == 1 and not versions.get("DeleteMarkers")


def test_the_pipeline_identity_cannot_bypass_governance_retention(s3_server: LocalS3, locked_bucket: str) -> None:
    pipeline = _as(s3_server, PIPELINE)
    version = _locked(s3_server, locked_bucket, "models/m/v/model.sig")
    assert _refused(pipeline.delete_object, Bucket=locked_bucket, Key="models/m/v/model.sig", VersionId=version,
                    BypassGovernanceRetention=True) == "AccessDenied"
    soon = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert _refused(pipeline.put_object_retention, Bucket=locked_bucket, Key="models/m/v/model.sig",
                    VersionId=version, BypassGovernanceRetention=True,
                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon}) == "AccessDenied"
    assert _refused(pipeline.put_object_legal_hold, Bucket=locked_bucket, Key="models/m/v/model.sig",
                    VersionId=version, LegalHold={"Status": "OFF"}) == "AccessDenied"
    retention = pipeline.get_object_retention(Bucket=locked_bucket, Key="models/m/v/model.sig", VersionId=version)
    assert retention["Retention"]["Mode"] == "GOVERNANCE" and retention["Retention"]["RetainUntilDate"] > soon
    assert pipeline.head_object(Bucket=locked_bucket, Key="models/m/v/model.sig", VersionId=version)


def test_the_pipeline_identity_cannot_change_bucket_policy_acl_lock_or_create_buckets(
        s3_server: LocalS3, locked_bucket: str) -> None:
    pipeline = _as(s3_server, PIPELINE)
    pipeline.put_object(Bucket=locked_bucket, Key="models/m/v/model.bin", Body=b"weights")
    public_read = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                           "Resource": f"arn:aws:s3:::{locked_bucket}/*"}]}
    assert _refused(pipeline.put_bucket_policy, Bucket=locked_bucket, Policy=json.dumps(public_read)) == "AccessDenied"
    assert _refused(pipeline.put_bucket_acl, Bucket=locked_bucket, ACL="public-read") == "AccessDenied"
    assert _refused(pipeline.put_object_acl, Bucket=locked_bucket, Key="models/m/v/model.bin",
                    ACL="public-read") == "AccessDenied"
    assert _refused(pipeline.put_object_lock_configuration, Bucket=locked_bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}) == "AccessDenied"
    assert _refused(pipeline.delete_bucket, Bucket=locked_bucket) == "AccessDenied"
    assert _refused(pipeline.create_bucket, Bucket=f"pipe-{uuid.uuid4().hex[:8]}",
                    ObjectLockEnabledForBucket=True) == "AccessDenied"
    assert _http("GET", f"{s3_server.endpoint}/{locked_bucket}/models/m/v/model.bin") == 403  # still not public


def test_the_admin_identity_sets_up_a_bucket_the_others_only_verify(s3_server: LocalS3) -> None:
    bucket = f"setup-{uuid.uuid4().hex[:12]}"
    with pytest.raises(ClientError):
        Registry(_as(s3_server, PIPELINE), bucket).ensure_bucket(create=True)
    Registry(_as(s3_server, ADMIN), bucket).ensure_bucket(create=True)
    for role in (PIPELINE, SERVER):
        Registry(_as(s3_server, role), bucket).ensure_bucket(create=False)
    lock = _as(s3_server, ADMIN).get_object_lock_configuration(Bucket=bucket)
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"


def test_local_s3_creates_the_configured_bucket_and_hands_out_role_credentials(s3_server: LocalS3) -> None:
    from mlsec.config import Settings

    assert s3_server.env["AWS_ACCESS_KEY_ID"] == s3_server.credentials.access_key == s3_server.identities[PIPELINE].access_key
    assert len({s3_server.identities[r].access_key for r in (ADMIN, PIPELINE, SERVER)}) == 3
    assert s3_server.env_for(SERVER)["AWS_ACCESS_KEY_ID"] == s3_server.identities[SERVER].access_key
    reader = s3_server.credentials_dir(SERVER)
    assert (reader / "AWS_ACCESS_KEY_ID").read_text() == s3_server.identities[SERVER].access_key
    assert s3_server.env["MLSEC_SERVE_S3_CREDENTIALS_DIR"] == str(reader)
    assert not (s3_server.data_dir / "credentials" / ADMIN).exists()
    for secret in (s3_server.data_dir / "s3.json", s3_server.data_dir / "security" / "security.toml",
                   s3_server.data_dir / "security" / "weed.key", reader / "AWS_SECRET_ACCESS_KEY"):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    Registry(_as(s3_server, PIPELINE), Settings().s3_bucket).ensure_bucket(create=False)


def test_the_local_model_server_gets_only_the_reader_credentials(s3_server: LocalS3) -> None:
    from mlsec.serve.deploy import server_env

    env = server_env({**s3_server.env, "MLSEC_S3_CREDENTIALS_DIR": "/pipeline/secret", "PATH": "/bin"})
    assert env["MLSEC_S3_CREDENTIALS_DIR"] == str(s3_server.credentials_dir(SERVER)) and env["PATH"] == "/bin"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLSEC_SERVE_S3_CREDENTIALS_DIR"} & set(env)
    with pytest.raises(RuntimeError, match="read-only"):
        server_env({k: v for k, v in s3_server.env.items() if k != "MLSEC_SERVE_S3_CREDENTIALS_DIR"})


def test_nothing_but_s3_reaches_the_stored_bytes(s3_server: LocalS3, locked_bucket: str) -> None:
    """Filer, master and volume ports, without credentials: no delete, no write, no read; the
    COMPLIANCE-locked signature version is still there through S3 afterwards."""
    version = _locked(s3_server, locked_bucket, "models/m/v/model.sig", mode="COMPLIANCE")
    filer = f"http://127.0.0.1:{s3_server.ports['filer.port']}/buckets/{locked_bucket}/models/m/v/model.sig"
    master = f"http://127.0.0.1:{s3_server.ports['master.port']}"
    volume = f"http://127.0.0.1:{s3_server.ports['volume.port']}"
    for url in (filer, f"{filer}.versions/", f"{filer}.versions/v_{version}"):
        assert _http("DELETE", url) >= 400
        assert _http("PUT", url, b"forged signature") >= 400
        assert _http("POST", url, b"forged signature") >= 400
        assert _http("GET", url) >= 400
    assert _http("GET", f"{filer}?recursive=true") >= 400
    for path in (f"/col/delete?collection={locked_bucket}", "/dir/assign", "/vol/grow?count=1", "/dir/lookup?volumeId=1"):
        assert _http("GET", master + path) == 404  # the master's HTTP API is off
    for fid in ("1,0100000000", "2,0100000000", "3,0100000000"):
        assert _http("GET", f"{volume}/{fid}") == 401 and _http("DELETE", f"{volume}/{fid}") == 401
        assert _http("POST", f"{volume}/{fid}", b"x") == 401
    pipeline = _as(s3_server, PIPELINE)
    body = pipeline.get_object(Bucket=locked_bucket, Key="models/m/v/model.sig", VersionId=version)["Body"].read()
    assert body == b"model bytes"
    assert _refused(pipeline.delete_object, Bucket=locked_bucket, Key="models/m/v/model.sig",
                    VersionId=version) == "AccessDenied"


def test_grpc_ports_refuse_clients_without_the_per_directory_certificate(s3_server: LocalS3,
                                                                         locked_bucket: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`weed shell` (a gRPC client) without the data directory's certificate cannot list, let alone delete,
    the collection that holds a bucket."""
    import subprocess

    from mlsec.registry.seaweed import weed_binary

    _locked(s3_server, locked_bucket, "models/m/v/model.sig", mode="COMPLIANCE")
    master = f"127.0.0.1:{s3_server.ports['master.port']}.{s3_server.ports['master.port'] + 10000}"
    try:
        out = subprocess.run([weed_binary(), "shell", f"-master={master}"], input=f"lock\ncollection.delete "
                             f"-collection {locked_bucket} -apply\ncollection.list\n", capture_output=True, text=True,
                             timeout=15, cwd=tmp_path).stdout
    except subprocess.TimeoutExpired:
        out = ""  # it never got a connection
    assert locked_bucket not in out
    assert _as(s3_server, PIPELINE).get_object(Bucket=locked_bucket, Key="models/m/v/model.sig")["Body"].read()


def test_ingest_reads_s3_datasets_with_the_read_only_data_identity(s3_server: LocalS3, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest parses files an attacker may have crafted, so what it holds can only read datasets: it reads
    the allow-listed prefix with the data identity (the ambient credentials here are deliberately wrong),
    that identity can neither write nor delete, and without it an s3:// source is refused."""
    from mlsec.config import contract_path, sample_dataset
    from mlsec.ingest import stage

    bucket = f"data-{uuid.uuid4().hex[:12]}"
    admin = _as(s3_server, ADMIN)
    admin.create_bucket(Bucket=bucket)
    admin.put_object(Bucket=bucket, Key="incoming/credit.csv", Body=sample_dataset().read_bytes())
    for k, v in {"MLSEC_S3_ENDPOINT": s3_server.endpoint, "MLSEC_DATA_SOURCE_PREFIX": f"s3://{bucket}/incoming/",
                 "MLSEC_DATA_S3_CREDENTIALS_DIR": str(s3_server.credentials_dir(DATA)),
                 "AWS_ACCESS_KEY_ID": "not-a-key", "AWS_SECRET_ACCESS_KEY": "not-a-secret"}.items():
        monkeypatch.setenv(k, v)
    source = f"s3://{bucket}/incoming/credit.csv"
    result = stage.run(source, contract_path(), tmp_path / "w")
    assert result.evidence.errors == [] and result.dataset is not None
    data = _as(s3_server, DATA)
    assert _refused(data.put_object, Bucket=bucket, Key="incoming/planted.csv", Body=b"a\n1\n") == "AccessDenied"
    assert _refused(data.delete_object, Bucket=bucket, Key="incoming/credit.csv") == "AccessDenied"
    assert _refused(data.put_object, Bucket=bucket, Key="incoming/credit.csv", Body=b"a\n1\n") == "AccessDenied"
    monkeypatch.delenv("MLSEC_DATA_S3_CREDENTIALS_DIR")
    (error,) = stage.run(source, contract_path(), tmp_path / "w2").evidence.errors
    assert error.code == "source_not_allowed" and "read-only data credentials" in error.message


def test_gates_append_to_the_audit_log_with_an_identity_that_reaches_nothing_else(s3_server: LocalS3,
                                                                                  gate_keys: GateKeys) -> None:
    """Gate tasks sign decisions and append them to the shared log; what they hold of S3 is the audit
    writer's key, which appends and checkpoints under <bucket>/audit/ and reaches no model, record or alias."""
    from mlsec.gates.audit import S3AuditLog
    from mlsec.gates.decision import Decision

    (bucket,) = s3_server.bucket_names
    pipeline, audit = _as(s3_server, PIPELINE), _as(s3_server, AUDIT)
    pipeline.put_object(Bucket=bucket, Key="models/m/0123456789abcdef/model.sig", Body=b"signature")
    prefix = f"audit/t-{uuid.uuid4().hex[:12]}"
    signer = gate_keys.signer("audit")
    log = S3AuditLog(audit, bucket, prefix=prefix, retention_days=1, signer=signer, keys=[signer.public_key])
    for allow in (True, False):
        log.append(Decision(gate="data", environment="dev", allow=allow, deny=[] if allow else ["no"],
                            subject="sha256:" + "0" * 64, evidence_sha256="1" * 64, policy_sha256=None,
                            engine="opa-inprocess"))
    assert S3AuditLog(audit, bucket, prefix=prefix, keys=[signer.public_key], checkpointed=True).verify() == 2

    for key in ("models/m/0123456789abcdef/model.sig", "promotions/m/prod/x.dsse.json", "aliases/m/prod.json",
                "revocations/m/0123456789abcdef.json", "auditx/entries/1.json"):
        assert _refused(audit.put_object, Bucket=bucket, Key=key, Body=b"evil") == "AccessDenied", key
    assert _refused(audit.get_object, Bucket=bucket, Key="models/m/0123456789abcdef/model.sig") == "AccessDenied"
    assert _refused(audit.delete_object, Bucket=bucket, Key="models/m/0123456789abcdef/model.sig") == "AccessDenied"
    other = f"locked-{uuid.uuid4().hex[:12]}"
    Registry(_as(s3_server, ADMIN), other).ensure_bucket(create=True)
    assert _refused(audit.put_object, Bucket=other, Key="audit/entries/1.json", Body=b"x") == "AccessDenied"
