"""Downloading exactly what was signed, into a private directory, with every path kept inside it.

The file list comes from the model signature (model.sig names every file it covers), never from the
manifest or a listing: a name with '..' or an absolute path is refused before anything is written, and
files are created O_EXCL|O_NOFOLLOW so nothing planted in the directory is followed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlsec.fsutil import copy_private
from mlsec.registry import names
from mlsec.sign import stage as signing

FIXED = (signing.SIGNATURE, signing.ATTESTATION)


class FetchError(RuntimeError):
    pass


def signed_files(signature: bytes) -> list[str]:
    """The model files a model-signing signature covers (read before it is verified: only to know what to
    download; verification afterwards proves the set is exactly the signed one)."""
    try:
        bundle = json.loads(signature)
        stmt = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        files = [str(r["name"]) for r in stmt["predicate"]["resources"]]
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # RecursionError: a JSON nesting bomb
        raise FetchError(f"{signing.SIGNATURE} is not a model-signing signature: {str(e)[:200]}") from e
    if not files or len(files) > names.MAX_FILES:
        raise FetchError(f"{signing.SIGNATURE} lists {len(files)} files")
    try:
        return [names.relative_file(f) for f in files]
    except ValueError as e:
        raise FetchError(f"{signing.SIGNATURE}: {e}") from e


def private_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))  # mode 0700, a fresh name nobody else can predict


def _inside(root: Path, rel: str) -> Path:
    target = root / rel
    # Parents are made here, inside a directory only we can write, so none of them can be a planted link.
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not target.resolve().is_relative_to(root.resolve()):
        raise FetchError(f"{rel} would be written outside {root}")
    return target


def _create(root: Path, rel: str) -> int:
    return os.open(_inside(root, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def download(s3: Any, bucket: str, prefix: str, root: Path, signature_prefix: str | None = None) -> list[str]:
    """model.sig and provenance first (from signature_prefix: a re-signed set, else the version's own), then
    only the files model.sig names, under root/model/."""
    for rel in FIXED:
        with os.fdopen(_create(root, rel), "wb") as f:
            s3.download_fileobj(bucket, (signature_prefix or prefix) + rel, f)
    files = signed_files((root / signing.SIGNATURE).read_bytes())
    for rel in files:
        with os.fdopen(_create(root, f"{signing.MODEL}/{rel}"), "wb") as f:
            s3.download_fileobj(bucket, f"{prefix}{signing.MODEL}/{rel}", f)
    return [*FIXED, *(f"{signing.MODEL}/{rel}" for rel in files)]


def install(src: Path, files: list[str], dest: Path) -> None:
    """Copies the verified files to dest as a whole: built beside it, then renamed into place."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise FetchError(f"{dest} is not a directory this command may replace")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for rel in files:
            copy_private(src / rel, _inside(staging, rel))
        staging.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
