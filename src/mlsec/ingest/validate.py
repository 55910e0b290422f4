"""Validate a dataset against its contract with great-expectations; failures name column and rule.

great-expectations reports sample unexpected values; they pass through the redactor first: a failure
carries the row count and redacted examples (mlsec.ingest.redact), none at all for a PII column, and
headers the contract does not name appear only as their position.

Cost (benchmarks/bench_ingest.py): one suite is run in two passes. The first asks only pass/fail
(result_format BOOLEAN_ONLY: no unexpected-value lists or counts are built) over a frame whose text
columns, where every non-null value is a str, are pandas' string dtype: great-expectations then checks
their type once per column instead of calling Python per cell. Only when something fails does a second
pass run the failed expectations over the frame as it was, with the SUMMARY details the messages use.
Both passes run every expectation on every row: nothing is sampled. great-expectations' batch fingerprint
(a hash of every cell, metadata only) is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Any, Literal

import pandas as pd

from mlsec.ingest.contract import Column, DataContract
from mlsec.ingest.redact import column_label, describe_value, safe_message

# pandas dtypes accepted for each contract type (an integer column is a valid float column).
_DTYPES = {
    "int": ["int64", "int32", "Int64"],
    "float": ["float64", "float32", "int64", "int32"],
    "str": ["object", "str", "string"],
}


# The string dtype _as_text gives text columns for the first pass (great-expectations resolves the name
# to pd.StringDtype() and compares the column's dtype with it).
_TEXT_DTYPE = "StringDtype"


def _expectations(contract: DataContract, present: set[str], text: Collection[str] = ()) -> list[Any]:
    """text: the columns _as_text made string dtype (their type list also admits it)."""
    import great_expectations.expectations as gxe

    exps: list[Any] = [gxe.ExpectTableColumnsToMatchSet(column_set=list(contract.columns), exact_match=True)]
    for name, col in contract.columns.items():
        if name in present:  # a missing column is reported once, by the table expectation
            exps += _column_expectations(gxe, name, col, name in text)
    return exps


def _column_expectations(gxe: Any, name: str, col: Column, text: bool = False) -> list[Any]:
    types = [*_DTYPES[col.type], _TEXT_DTYPE] if text else _DTYPES[col.type]
    exps: list[Any] = [gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=types)]
    if not col.nullable:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
    if col.unique:
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=name))
    if col.min is not None or col.max is not None:
        exps.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=col.min, max_value=col.max))
    if col.allowed is not None:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=col.allowed))
    return exps


def _table(detail: dict[str, Any], contract: DataContract, columns: Sequence[str]) -> str:
    expected, observed = list(contract.columns), list(columns)
    missing = [c for c in expected if c not in observed]
    unexpected = [column_label(c, i, contract.columns) for i, c in enumerate(observed) if c not in contract.columns]
    return "table: " + ", ".join([*([f"missing columns {missing}"] if missing else []),
                                  *([f"unexpected columns {unexpected}"] if unexpected else [])])


def _describe(res: Any, contract: DataContract, columns: Sequence[str]) -> str:
    cfg = res.expectation_config
    detail = res.result or {}
    if cfg.type == "expect_table_columns_to_match_set":
        return _table(detail, contract, columns)
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in {"column", "batch_id"}}  # from the contract
    where = cfg.kwargs.get("column", "table")
    parts = [f"{where}: {cfg.type}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) failed"]
    if "unexpected_count" in detail:
        parts.append(f"on {detail['unexpected_count']} rows")
    samples = detail.get("partial_unexpected_list") or []
    if samples and where not in contract.pii_columns:  # never a value from a PII column, even redacted
        parts.append(f"e.g. [{', '.join(describe_value(v) for v in samples[:3])}]")
    observed = detail.get("observed_value")
    if cfg.type == "expect_column_values_to_be_in_type_list" and isinstance(observed, str) and observed.isidentifier():
        parts.append(f"observed {observed}")  # a dtype name, not data
    if res.exception_info and res.exception_info.get("raised_exception"):
        parts.append(f"error: {safe_message(str(res.exception_info.get('exception_message')))}")
    return " ".join(parts)


def _as_text(df: pd.DataFrame, contract: DataContract) -> tuple[pd.DataFrame, set[str]]:
    """df with each contract text column whose non-null values are all str (one C pass, pandas'
    infer_dtype) as pandas' string dtype, and those columns' names; a column holding anything else stays
    as it is, so the per-value type check still finds it."""
    text = {name for name, col in contract.columns.items()
            if col.type == "str" and name in df.columns and df[name].dtype == object
            and pd.api.types.infer_dtype(df[name], skipna=True) == "string"}
    return (df.astype({name: "string" for name in text}) if text else df), text


def _run(df: pd.DataFrame, expectations: list[Any], name: str,
         result_format: Literal["BOOLEAN_ONLY", "SUMMARY"]) -> list[Any]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # great-expectations fingerprints every frame under 1 GB (hash_pandas_object over every cell) for a
    # batch marker that nothing here reads (the evidence carries the dataset's SHA-256); it skips that
    # itself above the threshold. It was half the cost of validating 1M rows: skipped for every size.
    pandas_execution_engine.HASH_THRESHOLD = 0

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("mlsec")
        .add_dataframe_asset("dataset")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    return list(batch.validate(gx.ExpectationSuite(name=name, expectations=expectations),
                               result_format=result_format).results)


def validate(df: pd.DataFrame, contract: DataContract) -> list[str]:
    """Returns the contract failures; an empty list means the dataset passed."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # never phone home from a pipeline
    name, columns, present = f"{contract.name}-{contract.version}", [str(c) for c in df.columns], set(df.columns)
    fast, text = _as_text(df, contract)
    verdicts = _run(fast, _expectations(contract, present, text), name, "BOOLEAN_ONLY")
    failed = [i for i, r in enumerate(verdicts) if not r.success]
    if not failed:
        return []
    # The details, for what failed only, from the frame as it was (its own dtypes, the contract's type lists).
    chosen = [e for i, e in enumerate(_expectations(contract, present)) if i in failed]
    return [_describe(r, contract, columns) for r in _run(df, chosen, name, "SUMMARY") if not r.success] or [
        _describe(verdicts[i], contract, columns) for i in failed]  # a failure the second pass did not repeat
