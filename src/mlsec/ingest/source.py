"""Where a dataset may come from, checked before a byte is read.

In a cluster (MLSEC_DEPLOY_TARGET=cluster) only s3:// objects under MLSEC_DATA_SOURCE_PREFIX; locally,
regular files under MLSEC_DATA_DIRS (os.pathsep-separated; default: the bundled sample's directory and
the current directory), never inside a hidden directory (.mlsec, .git, ...), the mlsec home or key
directory, or a system directory, judged on the path with every symlink resolved; s3:// locally only
under MLSEC_DATA_SOURCE_PREFIX too. The bundled sample (an empty source) is always allowed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from mlsec.config import Settings, sample_dataset
from mlsec.ingest.errors import IngestFailure

MAX_SOURCE_BYTES = 1 << 30
_SYSTEM_DIRS = [Path(p) for p in ("/proc", "/sys", "/dev", "/etc", "/run", "/boot", "/var/run")]


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def allowed_dirs() -> list[Path]:
    configured = os.environ.get("MLSEC_DATA_DIRS")
    dirs = [Path(d).expanduser() for d in configured.split(os.pathsep) if d] if configured else \
        [sample_dataset().parent, Path.cwd()]
    return [d.resolve() for d in dirs]


def _refuse(uri: str, why: str) -> IngestFailure:
    return IngestFailure("source_not_allowed", f"source {uri} is not allowed: {why}")


def _check_local(uri: str, settings: Settings) -> Path:
    path = Path(uri).expanduser().resolve()  # symlinks resolved before anything is judged
    if path == sample_dataset().resolve():
        return path
    if settings.deploy_target == "cluster":
        raise _refuse(uri, "a cluster run reads only s3:// objects under MLSEC_DATA_SOURCE_PREFIX")
    shown = uri if str(path) == uri else f"{uri} (resolves to {path})"
    if any(_within(path, d) for d in _SYSTEM_DIRS):
        raise _refuse(shown, "it is in a system directory")
    for private in (settings.home, settings.key_dir):
        if _within(path, private.expanduser().resolve()):
            raise _refuse(shown, f"it is inside the mlsec directory {private}, which holds keys and logs")
    roots = [d for d in allowed_dirs() if _within(path, d)]
    if not roots:
        dirs = ", ".join(str(d) for d in allowed_dirs())
        raise _refuse(shown, f"it is outside the data directories ({dirs}); set MLSEC_DATA_DIRS to add one")
    if all(any(p.startswith(".") for p in path.relative_to(r).parts) for r in roots):
        raise _refuse(shown, "hidden files and directories (.mlsec, .git, .env, ...) are never data")
    return path


def _read_local(uri: str, path: Path) -> bytes:
    try:
        before = os.stat(path)  # no read yet: a path that is not a regular file is never opened
    except FileNotFoundError:
        raise IngestFailure("source_missing", f"dataset not found: {uri}") from None
    except OSError as e:
        raise IngestFailure("source_unreadable", f"cannot stat {uri}: {e.strerror}") from None
    if not stat.S_ISREG(before.st_mode):
        raise IngestFailure("source_not_allowed", f"source {uri} is not allowed: it is not a regular file")
    if before.st_size > MAX_SOURCE_BYTES:
        raise IngestFailure("source_too_large", f"{uri} is {before.st_size} bytes, over the {MAX_SOURCE_BYTES} limit")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise IngestFailure("source_unreadable", f"cannot open {uri}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        now = os.fstat(f.fileno())
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise IngestFailure("source_not_allowed", f"source {uri} is not allowed: it changed while being checked")
        return f.read(MAX_SOURCE_BYTES + 1)


def _s3_client() -> Any:
    """A client with the read-only data identity (MLSEC_DATA_S3_CREDENTIALS_DIR: a mounted Secret in a
    cluster, LocalS3's "data" role locally); never the pipeline's writer credentials."""
    from mlsec.registry.s3 import client

    creds = os.environ.get("MLSEC_DATA_S3_CREDENTIALS_DIR")
    if not creds:
        raise IngestFailure("source_not_allowed", "s3:// datasets are read with the read-only data credentials, "
                                                  "and none are configured (MLSEC_DATA_S3_CREDENTIALS_DIR)")
    s = Settings()
    return client(s.s3_endpoint, s.s3_region, credentials_dir=creds)


def _check_s3(uri: str) -> tuple[str, str]:
    prefix = os.environ.get("MLSEC_DATA_SOURCE_PREFIX", "")
    if not prefix.startswith("s3://"):
        raise _refuse(uri, "no s3:// data source is configured (MLSEC_DATA_SOURCE_PREFIX=s3://bucket/prefix/)")
    prefix = prefix.rstrip("/") + "/"
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise _refuse(uri, "not an s3://bucket/key URI")
    if not uri.startswith(prefix) or any(part in {"", ".", ".."} for part in key.split("/")):
        raise _refuse(uri, f"datasets are read only from under {prefix}")
    return bucket, key


def _read_s3(uri: str, bucket: str, key: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        obj = _s3_client().get_object(Bucket=bucket, Key=key)
        if int(obj.get("ContentLength") or 0) > MAX_SOURCE_BYTES:
            raise IngestFailure("source_too_large", f"{uri} is over the {MAX_SOURCE_BYTES}-byte limit")
        data: bytes = obj["Body"].read(MAX_SOURCE_BYTES + 1)
        return data
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", "unknown"))
        if code in {"NoSuchKey", "404", "NotFound"}:
            raise IngestFailure("source_missing", f"s3 object not found: {uri}") from None
        if code == "NoSuchBucket":
            raise IngestFailure("source_missing", f"s3 bucket {bucket} does not exist ({uri})") from None
        raise IngestFailure("source_unreadable", f"cannot read {uri}: S3 error {code}") from None
    except BotoCoreError as e:
        raise IngestFailure("source_unreadable", f"cannot read {uri}: {type(e).__name__}") from None


def read_source(uri: str) -> bytes:
    """The source's bytes once it is allowed; IngestFailure (a recordable reason) otherwise."""
    uri = uri or str(sample_dataset())
    if uri.startswith("s3://"):
        data = _read_s3(uri, *_check_s3(uri))
    elif "://" in uri:
        raise _refuse(uri, "only local paths and s3:// URIs are read")
    else:
        data = _read_local(uri, _check_local(uri, Settings()))
    if len(data) > MAX_SOURCE_BYTES:
        raise IngestFailure("source_too_large", f"{uri} is over the {MAX_SOURCE_BYTES}-byte limit")
    return data
