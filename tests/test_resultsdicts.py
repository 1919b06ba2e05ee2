"""resultsdicts: results dicts in and out of a RowBuffer, and the checks a lab makes before adding."""

from __future__ import annotations

import pytest

from epyclab.errors import CancelledException, ResultsStructureException, UnstorableValueError
from epyclab.experiment import Experiment
from epyclab.notebooks.frames import build_frame
from epyclab.notebooks.resultsdicts import check_points, describe, failed_in_place, rows_to_results, with_results
from epyclab.notebooks.rowbuffer import RowBuffer

P, M, R, S, E = Experiment.PARAMETERS, Experiment.METADATA, Experiment.RESULTS, Experiment.STATUS, Experiment.EXCEPTION


def test_a_failed_dict_without_results_gets_empty_results_and_nothing_else_changes():
    failed = {P: {"a": 1}, M: {S: False}}
    assert with_results(failed) == {**failed, R: {}} and R not in failed
    ok = {P: {"a": 1}, M: {S: True}}
    assert with_results(ok) is ok and with_results([1]) == [1]


def test_describe_names_what_was_given():
    assert describe({"b": 1, "a": 2}) == "a dict with keys ['a', 'b']" and describe(3) == "a int"


def test_rows_come_back_as_results_dicts_failed_ones_with_empty_results():
    rows = RowBuffer()
    rows.add({"a": 1}, {"x": 1.5}, {S: True, E: ""})
    rows.add({"a": 2}, {}, {S: False, E: "CancelledException: job j was cancelled"})
    exc = CancelledException("job j was cancelled")
    out = rows_to_results(rows, build_frame(rows), {"CancelledException: job j was cancelled": exc})
    assert out[0] == {P: {"a": 1}, M: {S: True, E: ""}, R: {"x": 1.5}}
    assert out[1][R] == {} and out[1][M][E] is exc


def test_a_dict_that_can_be_added_gives_none_and_nothing_is_added():
    rows = RowBuffer()
    assert failed_in_place(rows, {P: {"a": 1}, M: {S: True}, R: {"x": 1.0}}) is None
    assert len(rows) == 0 and rows.names() == []


def test_an_unstorable_value_gives_a_failed_dict_keeping_the_parameters_and_storable_metadata():
    rows = RowBuffer()
    failed = failed_in_place(rows, {P: {"a": 1}, M: {S: True, "host": "h", "bad": {1: 2}}, R: {"x": {"d": 1}}})
    assert failed is not None and failed[P] == {"a": 1} and failed[M][S] is False
    assert failed[M]["host"] == "h" and "bad" not in failed[M]
    assert isinstance(failed[M][E], UnstorableValueError) and "'x'" in str(failed[M][E])


def test_a_result_named_like_a_metadata_column_gives_a_failed_dict():
    rows = RowBuffer()
    rows.add({"a": 1}, {}, {"m": 1})
    failed = failed_in_place(rows, {P: {"a": 2}, M: {}, R: {"m": 2}})
    assert failed is not None and isinstance(failed[M][E], ResultsStructureException)


def test_points_with_unstorable_parameters_are_refused_naming_the_point_and_set():
    rows = RowBuffer()
    check_points(rows, [{"a": 1}, {"a": 2}], "set 's'")
    with pytest.raises(UnstorableValueError, match=r"set 's': point 2 of 2 \(\{'a': \{\}\}\)"):
        check_points(rows, [{"a": 1}, {"a": {}}], "set 's'")
    rows.add({}, {"r": 1}, {})
    with pytest.raises(ResultsStructureException, match="point 1 of 1"):
        check_points(rows, [{"r": 1}], "set 's'")
    assert len(rows) == 1 and rows.names() == ["r"]
