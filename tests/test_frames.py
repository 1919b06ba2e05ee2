"""frames: DataFrames built from a RowBuffer, failed rows counted without one, rows selected by parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from epyclab.experiment import Experiment
from epyclab.notebooks.frames import build_frame, count_failed, is_value_list, select_rows
from epyclab.notebooks.rowbuffer import RowBuffer
from epyclab.notebooks.stored import StoredRows

S = Experiment.STATUS


@pytest.fixture
def rows() -> RowBuffer:
    rows = RowBuffer()
    for a in range(4):
        rows.add({"a": a}, {"x": a * 1.5} if a != 2 else {}, {S: a != 2})
    return rows


def test_the_frame_has_every_row_in_the_order_added_typed_by_kind(rows):
    df = build_frame(rows)
    assert list(df.columns) == ["a", "x", S]
    assert df["a"].tolist() == [0, 1, 2, 3] and df["a"].dtype == np.int64
    assert df["x"].dtype == np.float64 and math.isnan(df["x"][2])
    assert df[S].tolist() == [True, True, False, True]


def test_failed_rows_are_counted_from_the_status_column_with_or_without_a_frame(rows):
    assert count_failed(rows, None) == 1
    assert count_failed(rows, build_frame(rows)) == 1
    assert count_failed(RowBuffer(), None) == 0
    no_status = RowBuffer()
    no_status.add({"a": 1}, {}, {})
    assert count_failed(no_status, None) == 0


def test_a_frame_of_loaded_and_added_rows_casts_the_loaded_ones_when_a_column_widened():
    rows = RowBuffer()
    rows.add({"a": 0}, {"n": 1}, {S: True})
    rows.load(StoredRows(2, {"a": np.array([0, 1]), "n": np.array([1, 2]), S: np.array([True, False])}),
              {"parameter": ["a"], "result": ["n"], "metadata": [S]}, {})
    assert build_frame(rows)["n"].tolist() == [1, 2]
    rows.add({"a": 2}, {"n": 2.5}, {S: True})
    df = build_frame(rows)
    assert df["n"].dtype == np.float64 and df["n"].tolist() == [1.0, 2.0, 2.5]
    assert count_failed(rows, None) == 1


def test_rows_are_selected_by_the_named_parameters_only(rows):
    stored = build_frame(rows)
    assert select_rows(rows, stored, {"a": 1}, only_successful=False)["x"].tolist() == [1.5]
    assert select_rows(rows, stored, {"a": [0, 2, 3]}, only_successful=False)["a"].tolist() == [0, 2, 3]
    assert select_rows(rows, stored, {"a": range(4)}, only_successful=True)["a"].tolist() == [0, 1, 3]


def test_none_selects_the_missing_cells_not_the_fill():
    rows = RowBuffer()
    rows.add({"v": 0}, {}, {})
    rows.add({"v": None}, {}, {})
    rows.add({"v": 5}, {}, {})
    stored = build_frame(rows)
    assert stored["v"].tolist() == [0, 0, 5]  # a missing int cell reads as the fill
    assert len(select_rows(rows, stored, {"v": 0}, only_successful=False)) == 1
    assert len(select_rows(rows, stored, {"v": None}, only_successful=False)) == 1
    assert len(select_rows(rows, stored, {"v": [None, 5]}, only_successful=False)) == 2


def test_value_lists():
    assert all(is_value_list(v) for v in ([1], (1,), {1}, frozenset(), range(2), np.arange(3)))
    assert not any(is_value_list(v) for v in ("ab", 1, np.zeros((2, 2)), None))
