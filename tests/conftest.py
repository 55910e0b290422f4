"""Shared fixtures: the real OPA engine, a real SeaweedFS S3 server on 127.0.0.1, keys, a trained model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from securesystemslib.signer import CryptoSigner

from mlsec.config import contract_path, policy_dir, sample_dataset
from mlsec.gates.attest import GateTrust, SignedDecision, create_key, load_signer, sign_decision
from mlsec.gates.decision import Decision
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.ingest import provenance as dataset_provenance
from mlsec.ingest import stage as ingest
from mlsec.ingest.contract import DataContract, load_contract
from mlsec.ingest.evidence import DataEvidence
from mlsec.ingest.profile import ReferenceProfile
from mlsec.registry.seaweed import LocalS3
from mlsec.registry.stages import governing_environments
from mlsec.registry.store import Registry
from mlsec.sign import keys
from mlsec.sign import stage as signing
from mlsec.sign.attestation import Materials
from mlsec.train import stage as train
from mlsec.train.evidence import TrainingEvidence

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def engine() -> Iterator[InProcessEngine]:
    e = InProcessEngine(policy_dir())
    yield e
    e.close()


@pytest.fixture(scope="session")
def contract() -> DataContract:
    return load_contract(contract_path())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    with LocalS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@dataclass(frozen=True)
class GateKeys:
    dir: Path  # <env>.key / <env>.pub for dev, staging, prod and audit
    trust: GateTrust

    def signer(self, env: str) -> CryptoSigner:
        return load_signer(self.dir / f"{env}.key")


@pytest.fixture(scope="session")
def gate_keys(tmp_path_factory: pytest.TempPathFactory) -> GateKeys:
    d = tmp_path_factory.mktemp("gate-keys")
    for env in ("dev", "staging", "prod", "audit"):
        create_key(d / f"{env}.key")
    return GateKeys(d, GateTrust.from_dir(d))


@pytest.fixture
def registry(s3_server: LocalS3, gate_keys: GateKeys) -> Registry:
    reg = Registry(_authenticated(s3_server), f"test-{uuid.uuid4().hex[:12]}", retention_days=1,
                   gates=gate_keys.trust, stage_envs=governing_environments(policy_dir()))
    reg.ensure_bucket()
    return reg


def bucket_env(server: LocalS3, bucket: str) -> dict[str, str]:
    """A task's S3 settings for one of the tests' fresh buckets. Those lie outside the audit identity's scope
    (the buckets the server was started with), so there the audit log writes with the pipeline's key, as it
    would on a user's own S3; test_s3_identities plays the audit identity itself."""
    env = {**server.env, "MLSEC_S3_BUCKET": bucket}
    del env["MLSEC_AUDIT_S3_CREDENTIALS_DIR"]
    return env


def _authenticated(server: LocalS3, max_attempts: int = 2, role: str = "admin"):  # type: ignore[no-untyped-def]
    """A client with one of this server's identities (full rights unless told), without touching the
    process environment."""
    import boto3
    from botocore.config import Config

    creds = server.identities[role]
    return boto3.client(
        "s3", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": max_attempts},
                      connect_timeout=2, read_timeout=10),
    )


@pytest.fixture(scope="session")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> keys.KeyPair:
    return keys.create(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def other_key_pair(tmp_path_factory: pytest.TempPathFactory) -> keys.KeyPair:
    return keys.create(tmp_path_factory.mktemp("other-keys"))


@dataclass(frozen=True)
class Trained:
    dataset: Path
    data_evidence: DataEvidence
    model_dir: Path
    training_evidence: TrainingEvidence
    profile: ReferenceProfile | None = None  # the dataset's own, as ingest writes it beside the evidence


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, contract: DataContract) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    data = ingest.run(str(sample_dataset()), contract_path(), root / "data")
    result = train.run(data.dataset, contract, root / "model", "credit", train.TrainParams(epochs=8))
    return Trained(data.dataset, data.evidence, result.model_dir, result.evidence, data.profile)


@dataclass(frozen=True)
class Signed:
    bundle: Path
    decisions: list[Decision]  # data, training (attested) and signing
    trained: Trained
    attested: list[SignedDecision]  # the same decisions as VSAs signed with the dev gate key

    def register(self, registry: Registry, trust: keys.KeyPair | Path, name: str = "credit", author: str = "alice") -> str:
        pub = trust.public_key if isinstance(trust, keys.KeyPair) else trust
        return registry.register(name, self.bundle, pub, evidence={
            "data": self.trained.data_evidence, "training": self.trained.training_evidence},
            decisions=self.attested, author=author).version


@pytest.fixture(scope="session")
def signed(tmp_path_factory: pytest.TempPathFactory, trained: Trained, key_pair: keys.KeyPair,
           engine: InProcessEngine, gate_keys: GateKeys) -> Signed:
    """The real chain up to the signing gate, every decision from the real engine."""
    data_d = evaluate("data", trained.data_evidence, environment="dev", engine=engine)
    train_d = evaluate("training", trained.training_evidence, environment="dev", engine=engine, decisions=[data_d])
    assert data_d.allow and train_d.allow, (data_d.deny, train_d.deny)
    materials = Materials(dataset_uri="data/credit_sample.csv", dataset_digest=trained.data_evidence.subject.digest,
                          decision_digests={f"{d.gate}:{d.id}": d.digest for d in (data_d, train_d)},
                          code_commit="test", image="local",
                          dataset_statement=dataset_provenance.statement(trained.data_evidence))  # as the sign task
    bundle = signing.sign(trained.model_dir, tmp_path_factory.mktemp("signed"), key_pair, materials, "test-run")
    ev = signing.evidence(bundle, "credit", key_pair.public_key)
    sign_d = evaluate("signing", ev, environment="dev", engine=engine, decisions=[data_d, train_d])
    assert sign_d.allow, sign_d.deny
    dev = gate_keys.signer("dev")
    attested = [sign_decision(d, n, dev) for d, n in ((data_d, trained.data_evidence.subject.name),
                                                      (train_d, "credit"), (sign_d, "credit"))]
    return Signed(bundle, [data_d, train_d, sign_d], trained, attested)


@pytest.fixture
def locked_bucket(s3_server: LocalS3) -> str:
    """A fresh bucket with object lock, set up by the admin identity as the bucket-setup Job does."""
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    Registry(_authenticated(s3_server), bucket).ensure_bucket(create=True)
    return bucket


# The sample's text columns: read as strings so that zip codes and phone numbers keep their leading zeros.
SAMPLE_TEXT = {c: str for c in ("name", "email", "ssn", "phone", "zip", "gender")}


@pytest.fixture(scope="session")
def sample_frame() -> pd.DataFrame:
    """The bundled sample as the ingest tests edit it (copy before changing)."""
    return pd.read_csv(sample_dataset(), dtype=SAMPLE_TEXT)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The only directory ingest may read (tmp_path/in), with no source, deployment, PII-key or home
    settings leaking in from the caller's shell; the rest of tmp_path is outside it."""
    for var in ("MLSEC_DATA_SOURCE_PREFIX", "MLSEC_DEPLOY_TARGET", "MLSEC_HOME", "MLSEC_KEY_DIR",
                "MLSEC_PII_TOKEN_KEY", "MLSEC_PII_TOKEN_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "in"
    path.mkdir()
    monkeypatch.setenv("MLSEC_DATA_DIRS", str(path))
    return path
