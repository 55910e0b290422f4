"""Validate a dataset against its contract with great-expectations; failures name column and rule.

great-expectations reports sample unexpected values; they pass through the redactor first: a failure
carries the row count and redacted examples (mlsec.ingest.redact), none at all for a PII column, and
headers the contract does not name appear only as their position.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mlsec.ingest.contract import Column, DataContract
from mlsec.ingest.redact import column_label, describe_value, safe_message

# pandas dtypes accepted for each contract type (an integer column is a valid float column).
_DTYPES = {
    "int": ["int64", "int32", "Int64"],
    "float": ["float64", "float32", "int64", "int32"],
    "str": ["object", "str", "string"],
}


def _expectations(contract: DataContract, present: set[str]) -> list[Any]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [gxe.ExpectTableColumnsToMatchSet(column_set=list(contract.columns), exact_match=True)]
    for name, col in contract.columns.items():
        if name in present:  # a missing column is reported once, by the table expectation
            exps += _column_expectations(gxe, name, col)
    return exps


def _column_expectations(gxe: Any, name: str, col: Column) -> list[Any]:
    exps: list[Any] = [gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=_DTYPES[col.type])]
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


def validate(df: pd.DataFrame, contract: DataContract) -> list[str]:
    """Returns the contract failures; an empty list means the dataset passed."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # never phone home from a pipeline
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("mlsec")
        .add_dataframe_asset("dataset")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    suite = gx.ExpectationSuite(name=f"{contract.name}-{contract.version}", expectations=_expectations(contract, set(df.columns)))
    result = batch.validate(suite)
    return [_describe(r, contract, [str(c) for c in df.columns]) for r in result.results if not r.success]
