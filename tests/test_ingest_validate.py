"""The two-pass validation (mlsec.ingest.validate): a pass/fail pass over text columns as pandas' string
dtype, then the details of what failed from the frame as it was. Neither may hide a failure."""

from __future__ import annotations

import pandas as pd
import pytest

from mlsec.ingest.contract import DataContract
from mlsec.ingest.validate import _as_text, validate



@pytest.fixture
def frame(sample_frame: pd.DataFrame) -> pd.DataFrame:
    return sample_frame.head(400).copy()


def test_the_clean_sample_passes_and_its_text_columns_take_the_fast_type_check(frame: pd.DataFrame,
                                                                               contract: DataContract) -> None:
    assert validate(frame, contract) == []
    fast, text = _as_text(frame, contract)
    assert text == {n for n, c in contract.columns.items() if c.type == "str"}
    assert all(str(fast[n].dtype) == "string" for n in text) and frame["email"].dtype == object  # a copy


def test_a_non_text_value_in_a_text_column_is_still_a_type_failure(frame: pd.DataFrame,
                                                                   contract: DataContract) -> None:
    """A Parquet column can hold numbers where the contract says str: that column is not cast, so the
    per-value type check still sees the number, and the message says on how many rows."""
    frame["gender"] = frame["gender"].astype(object)
    frame.loc[3, "gender"] = 7
    assert "gender" not in _as_text(frame, contract)[1]
    failures = validate(frame, contract)
    typed = [f for f in failures if f.startswith("gender: expect_column_values_to_be_in_type_list(type_list=['object', "
                                                 "'str', 'string'])")]
    assert len(typed) == 1 and "on 1 rows" in typed[0], failures


def test_failures_in_cast_columns_carry_the_second_pass_details(frame: pd.DataFrame, contract: DataContract) -> None:
    """A null in a non-nullable text column and a value outside a text column's set: found by the fast pass
    on the string-dtype frame, described (row counts, redacted examples) by the second."""
    gender = next(n for n, c in contract.columns.items() if c.type == "str" and c.allowed)
    nonnull = next(n for n, c in contract.columns.items() if c.type == "str" and not c.nullable and n != gender)
    frame.loc[[1, 2], nonnull] = None
    frame.loc[5, gender] = "Q"
    failures = validate(frame, contract)
    assert any(f.startswith(f"{nonnull}: expect_column_values_to_not_be_null") and "on 2 rows" in f for f in failures), failures
    assert any(f.startswith(f"{gender}: expect_column_values_to_be_in_set") and "on 1 rows" in f for f in failures), failures
    assert len(failures) == 2, failures
