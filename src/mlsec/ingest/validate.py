"""Validate a dataset against its contract with great-expectations; failures name column and rule."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from mlsec.ingest.contract import Column, DataContract

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


def _describe(res: Any) -> str:
    cfg = res.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in {"column", "batch_id"}}
    where = cfg.kwargs.get("column", "table")
    detail = res.result or {}
    parts = [f"{where}: {cfg.type}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) failed"]
    if "unexpected_count" in detail:
        parts.append(f"on {detail['unexpected_count']} rows")
    if detail.get("partial_unexpected_list"):
        parts.append(f"e.g. {detail['partial_unexpected_list'][:3]}")
    if cfg.type == "expect_table_columns_to_match_set":
        expected, observed = set(cfg.kwargs["column_set"]), set(detail.get("observed_value") or [])
        missing, unexpected = sorted(expected - observed), sorted(observed - expected)
        parts = ["table: " + ", ".join([*([f"missing columns {missing}"] if missing else []),
                                        *([f"unexpected columns {unexpected}"] if unexpected else [])])]
    elif "observed_value" in detail:
        parts.append(f"observed {detail['observed_value']}")
    if res.exception_info and res.exception_info.get("raised_exception"):
        parts.append(f"error: {res.exception_info.get('exception_message')}")
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
    return [_describe(r) for r in result.results if not r.success]
