"""Why ingest could not produce a dataset; each becomes an entry in the data evidence's errors."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "source_not_allowed", "source_missing", "source_unreadable", "source_too_large", "empty", "not_utf8",
    "not_csv", "cell_too_long", "contract_invalid", "internal",
    "format_not_allowed", "not_parquet", "too_many_rows", "too_many_columns", "formula_cells", "token_key_missing",
]


class IngestFailure(Exception):
    """Raised inside ingest, turned into evidence by the stage; message is safe to record (no data)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
