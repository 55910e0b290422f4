"""Where things live. Local and cluster runs differ only in these settings, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else default


def _env(var: str, default: str) -> str:
    """Empty counts as unset: the cluster ConfigMap carries every key, some of them blank."""
    return os.environ.get(var) or default


def policy_dir() -> Path:
    """The Rego policies; the container image sets MLSEC_POLICY_DIR, a checkout finds its own."""
    return _path("MLSEC_POLICY_DIR", _REPO_ROOT / "policies")


def contract_path() -> Path:
    return _path("MLSEC_CONTRACT", _REPO_ROOT / "data" / "credit_contract.yaml")


def sample_dataset() -> Path:
    return _path("MLSEC_SAMPLE_DATA", _REPO_ROOT / "data" / "credit_sample.csv")


def chart_dir() -> Path:
    return _path("MLSEC_CHART_DIR", _REPO_ROOT / "helm" / "mlsec")


@dataclass(frozen=True)
class Settings:
    environment: str = field(default_factory=lambda: _env("MLSEC_ENV", "dev"))
    home: Path = field(default_factory=lambda: _path("MLSEC_HOME", Path.cwd() / ".mlsec"))
    opa_url: str | None = field(default_factory=lambda: os.environ.get("MLSEC_OPA_URL") or None)
    opa_timeout_s: float = field(
        default_factory=lambda: float(_env("MLSEC_OPA_TIMEOUT", "2.0"))
    )
    s3_endpoint: str | None = field(default_factory=lambda: os.environ.get("MLSEC_S3_ENDPOINT") or None)
    s3_bucket: str = field(default_factory=lambda: _env("MLSEC_S3_BUCKET", "mlsec-models"))
    s3_region: str = field(default_factory=lambda: _env("AWS_REGION", "us-east-1"))
    deploy_target: str = field(default_factory=lambda: _env("MLSEC_DEPLOY_TARGET", "local"))

    @property
    def key_dir(self) -> Path:
        return _path("MLSEC_KEY_DIR", self.home / "keys")

    @property
    def api_keys_file(self) -> Path:
        """Hashed API keys of the model server's clients (`mlsec keys api-key`)."""
        return _path("MLSEC_API_KEYS_FILE", self.home / "serve" / "api-keys.json")

    @property
    def audit_log(self) -> Path:
        return _path("MLSEC_AUDIT_LOG", self.home / "audit" / "decisions.jsonl")
