"""boto3 clients for the registry: path-style addressing, bounded retries with backoff."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlsec.config import Settings


def client(endpoint: str | None, region: str = "us-east-1", *, max_attempts: int = 5,
           credentials: tuple[str, str] | None = None, credentials_dir: str | None = None) -> Any:
    """An S3 client; credentials (access key, secret key) given here win over the mounted ones
    (credentials_dir, else MLSEC_S3_CREDENTIALS_DIR), which win over the ambient AWS ones."""
    import boto3
    from botocore.config import Config

    cfg = Config(
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": max_attempts},  # exponential backoff with jitter
        connect_timeout=3,
        read_timeout=30,
    )
    # Credentials come from a mounted Secret (files) or the standard AWS environment, never from code.
    creds = {}
    if cred_dir := credentials_dir or os.environ.get("MLSEC_S3_CREDENTIALS_DIR"):
        d = Path(cred_dir)
        creds = {"aws_access_key_id": (d / "AWS_ACCESS_KEY_ID").read_text().strip(),
                 "aws_secret_access_key": (d / "AWS_SECRET_ACCESS_KEY").read_text().strip()}
    if credentials is not None:
        creds = {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]}
    # A session of its own: boto3's default session resolves credentials once per process, so a process
    # that moves to another server (a new local registry, a rotated Secret) would keep sending stale ones.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=cfg, **creds)


def client_from_env(credentials_dir: str | None = None) -> Any:
    s = Settings()
    return client(s.s3_endpoint, s.s3_region, max_attempts=int(os.environ.get("MLSEC_S3_MAX_ATTEMPTS", "5")),
                  credentials_dir=credentials_dir)
