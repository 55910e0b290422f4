"""Where a dataset may come from, checked before a byte is read, and how much of it may be read.

In a cluster (MLSEC_DEPLOY_TARGET=cluster) only s3:// objects under MLSEC_DATA_SOURCE_PREFIX; locally,
regular files under MLSEC_DATA_DIRS (os.pathsep-separated; default: the bundled sample's directory and
the current directory), never inside a hidden directory (.mlsec, .git, ...), the mlsec home or key
directory, or a system directory, judged on the path with every symlink resolved; s3:// locally only
under MLSEC_DATA_SOURCE_PREFIX too. The bundled sample (an empty source) is always allowed.

Then what the bytes are: CSV or Parquet (by magic bytes, as the contract allows), within the contract's
row and column limits, and which text cells would run as spreadsheet formulas.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from mlsec.config import Settings, sample_dataset
from mlsec.ingest.contract import MAX_SOURCE_BYTES, DataContract
from mlsec.ingest.errors import IngestFailure
from mlsec.ingest.redact import safe_message

Format = Literal["csv", "parquet"]

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


def _too_large(uri: str, size: int | None, limit: int) -> IngestFailure:
    size_text = "" if size is None else f"{size} bytes, "
    return IngestFailure("source_too_large", f"{uri} is {size_text}over the {limit}-byte limit (contract source.max_bytes)")


def _read_local(uri: str, path: Path, limit: int) -> bytes:
    try:
        before = os.stat(path)  # no read yet: a path that is not a regular file is never opened
    except FileNotFoundError:
        raise IngestFailure("source_missing", f"dataset not found: {uri}") from None
    except OSError as e:
        raise IngestFailure("source_unreadable", f"cannot stat {uri}: {e.strerror}") from None
    if not stat.S_ISREG(before.st_mode):
        raise IngestFailure("source_not_allowed", f"source {uri} is not allowed: it is not a regular file")
    if before.st_size > limit:
        raise _too_large(uri, before.st_size, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise IngestFailure("source_unreadable", f"cannot open {uri}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        now = os.fstat(f.fileno())
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise IngestFailure("source_not_allowed", f"source {uri} is not allowed: it changed while being checked")
        return f.read(limit + 1)


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


def _read_s3(uri: str, bucket: str, key: str, limit: int) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        obj = _s3_client().get_object(Bucket=bucket, Key=key)
        if (size := int(obj.get("ContentLength") or 0)) > limit:
            raise _too_large(uri, size, limit)
        data: bytes = obj["Body"].read(limit + 1)
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


def read_source(uri: str, max_bytes: int = MAX_SOURCE_BYTES) -> bytes:
    """The source's bytes once it is allowed and within max_bytes (the contract's source.max_bytes);
    IngestFailure (a recordable reason) otherwise. Never more than max_bytes + 1 bytes are read."""
    uri = uri or str(sample_dataset())
    limit = min(max_bytes, MAX_SOURCE_BYTES)
    if uri.startswith("s3://"):
        data = _read_s3(uri, *_check_s3(uri), limit)
    elif "://" in uri:
        raise _refuse(uri, "only local paths and s3:// URIs are read")
    else:
        data = _read_local(uri, _check_local(uri, Settings()), limit)
    if len(data) > limit:  # a file that grew, or an S3 object whose length header undersold it
        raise _too_large(uri, None, limit)
    return data


# -- what the bytes are --------------------------------------------------------------------------------
PARQUET_MAGIC = b"PAR1"


def detect_format(raw: bytes, uri: str, contract: DataContract) -> Format:
    """Parquet by its magic bytes (at both ends), anything else is read as CSV; the name must agree, and
    the contract must allow the format."""
    parquet = len(raw) >= 12 and raw[:4] == PARQUET_MAGIC and raw[-4:] == PARQUET_MAGIC
    if uri.lower().endswith(".parquet") and not parquet:
        raise IngestFailure("not_parquet", f"{uri} is named .parquet but does not start and end with the Parquet "
                                           "magic bytes PAR1")
    fmt: Format = "parquet" if parquet else "csv"
    if fmt not in contract.source.formats:
        raise IngestFailure("format_not_allowed", f"the source is {fmt}; the contract allows only "
                                                  f"{', '.join(contract.source.formats)} (source.formats)")
    return fmt


def check_shape(rows: int, columns: int, contract: DataContract) -> None:
    limits = contract.source
    if columns > limits.max_columns:
        raise IngestFailure("too_many_columns", f"the source has {columns} columns, over the contract's "
                                                f"{limits.max_columns} (source.max_columns)")
    if rows > limits.max_rows:
        raise IngestFailure("too_many_rows", f"the source has {rows} rows, over the contract's {limits.max_rows} "
                                             "(source.max_rows)")


def _decoded_bytes(table: Any) -> int:
    """What the table takes once every dictionary-encoded column is expanded (a 1 kB value repeated on
    ten million rows is 10 GB), counted from the dictionary's lengths without expanding it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for chunk in (c for col in table.columns for c in col.chunks):
        if pa.types.is_dictionary(chunk.type):
            total += int(pc.sum(pc.take(pc.binary_length(chunk.dictionary), chunk.indices)).as_py() or 0)
        else:
            total += chunk.nbytes
    return total


def parse_parquet(raw: bytes, contract: DataContract) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(typed frame, every cell as text) of a Parquet file, within the contract's limits. The footer is
    judged first (row and column counts, uncompressed size) before a page is decompressed; text columns
    are then read as dictionaries and their expanded size judged before they are expanded. (The footer's
    sizes are the writer's claims: a crafted file can understate them, but no page decompresses past the
    size its own header declares.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    limit = contract.source.max_bytes
    try:
        file = pq.ParquetFile(pa.BufferReader(raw), read_dictionary=[f.name for f in pq.read_schema(pa.BufferReader(raw))])
        meta = file.metadata
        check_shape(meta.num_rows, meta.num_columns, contract)
        expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if expanded > limit:
            raise IngestFailure("source_too_large", f"the Parquet pages expand to {expanded} bytes, over the "
                                                    f"{limit}-byte limit (contract source.max_bytes)")
        table = file.read()
        if (decoded := _decoded_bytes(table)) > limit:
            raise IngestFailure("source_too_large", f"the Parquet data decodes to {decoded} bytes, over the "
                                                    f"{limit}-byte limit (contract source.max_bytes)")
        typed = table.to_pandas()
        for col in typed.columns:
            if isinstance(typed[col].dtype, pd.CategoricalDtype):  # a dictionary column, now known to fit
                typed[col] = typed[col].astype(object)
    except IngestFailure:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        raise IngestFailure("not_parquet", f"the source is not a readable Parquet file: {safe_message(str(e))}") from None
    typed.columns = [str(c) for c in typed.columns]
    # The text a cell would have had in a CSV export: what PII patterns and formula checks read.
    cells = typed.astype(object).where(typed.notna(), "").astype(str)
    return typed, cells


# -- formula injection ---------------------------------------------------------------------------------
# Spreadsheets run a cell starting with = + - @ (and, after a tab or CR, whatever follows); a number
# written with its sign (-3.5, +1e3) is not a formula and stays as it is.
_FORMULA_START = r"^[=+\-@\t\r]"
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"


def formula_mask(cells: pd.Series) -> pd.Series:
    """True where a cell would run as a spreadsheet formula (vectorised in pyarrow)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    try:  # text cells go to Arrow as they are: no Python str() per cell
        arr = pa.array(cells.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        arr = pa.array(cells.astype(str).to_numpy(dtype=object), type=pa.large_string())
    hit = pc.fill_null(pc.match_substring_regex(arr, _FORMULA_START), False).to_numpy(zero_copy_only=False)
    if hit.any():  # the number test only where a formula could start: few cells, if any
        at = np.flatnonzero(hit)
        hit[at] = ~pc.match_substring_regex(arr.take(pa.array(at)), _NUMBER).to_numpy(zero_copy_only=False)
    return pd.Series(hit, index=cells.index)


def formula_cells(cells: pd.DataFrame, contract: DataContract) -> dict[str, pd.Series]:
    """Column -> mask of its formula cells, for the columns written out as they are (declared PII
    columns are dropped, masked or tokenized, so none of their text reaches the output)."""
    out = {}
    for col in cells.columns:
        if col in contract.pii_columns:
            continue
        mask = formula_mask(cells[col])
        if mask.any():
            out[str(col)] = mask
    return out
