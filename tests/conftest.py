"""Shared fixtures: the real OPA engine, a real SeaweedFS S3 server on 127.0.0.1, keys, a trained model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlsec.config import contract_path, policy_dir, sample_dataset
from mlsec.gates.decision import Decision
from mlsec.gates.engine import InProcessEngine
from mlsec.gates.gate import evaluate
from mlsec.ingest import stage as ingest
from mlsec.ingest.contract import DataContract, load_contract
from mlsec.ingest.evidence import DataEvidence
from mlsec.registry.seaweed import LocalS3
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


@pytest.fixture
def registry(s3_server: LocalS3) -> Registry:
    reg = Registry(_authenticated(s3_server), f"test-{uuid.uuid4().hex[:12]}", retention_days=1)
    reg.ensure_bucket()
    return reg


def _authenticated(server: LocalS3, max_attempts: int = 2):  # type: ignore[no-untyped-def]
    """A client with this server's credentials, without touching the process environment."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id=server.credentials.access_key, aws_secret_access_key=server.credentials.secret_key,
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


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, contract: DataContract) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    data = ingest.run(str(sample_dataset()), contract_path(), root / "data")
    result = train.run(data.dataset, contract, root / "model", "credit", train.TrainParams(epochs=8))
    return Trained(data.dataset, data.evidence, result.model_dir, result.evidence)


@dataclass(frozen=True)
class Signed:
    bundle: Path
    decisions: list[Decision]  # data, training (attested) and signing
    trained: Trained


@pytest.fixture(scope="session")
def signed(tmp_path_factory: pytest.TempPathFactory, trained: Trained, key_pair: keys.KeyPair,
           engine: InProcessEngine) -> Signed:
    """The real chain up to the signing gate, every decision from the real engine."""
    data_d = evaluate("data", trained.data_evidence, environment="dev", engine=engine)
    train_d = evaluate("training", trained.training_evidence, environment="dev", engine=engine, decisions=[data_d])
    assert data_d.allow and train_d.allow, (data_d.deny, train_d.deny)
    materials = Materials(dataset_uri="data/credit_sample.csv", dataset_digest=trained.data_evidence.subject.digest,
                          decision_digests={f"{d.gate}:{d.id}": d.digest for d in (data_d, train_d)},
                          code_commit="test", image="local")
    bundle = signing.sign(trained.model_dir, tmp_path_factory.mktemp("signed"), key_pair, materials, "test-run")
    ev = signing.evidence(bundle, "credit", key_pair.public_key)
    sign_d = evaluate("signing", ev, environment="dev", engine=engine, decisions=[data_d, train_d])
    assert sign_d.allow, sign_d.deny
    return Signed(bundle, [data_d, train_d, sign_d], trained)
