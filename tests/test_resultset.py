"""ResultSet: rows, columns and their defaults, the DataFrame cache, selection, pending results, locking."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from epyclab.errors import (
    CancelledException,
    PendingResultException,
    ResultSetLockedException,
    ResultsStructureException,
)
from epyclab.experiment import Experiment
from epyclab.notebooks.resultset import ResultSet


@pytest.fixture
def rs() -> ResultSet:
    return ResultSet("a test set")


@pytest.fixture
def filled(rs, make_rc) -> ResultSet:
    """x in 1..4, y = 10 x; the run at x == 3 failed."""
    for x in range(1, 5):
        rs.addSingleResult(make_rc({"x": x}, {"y": 10 * x}, ok=(x != 3)))
    return rs


# ---- description and attributes --------------------------------------------------------


def test_description(rs):
    assert rs.description() == "a test set"
    rs.setDescription("changed")
    assert rs.description() == "changed"


def test_default_description_is_not_empty():
    assert ResultSet().description()


def test_attributes_behave_like_a_dict(rs):
    rs["seed"] = 42
    rs.setAttribute("who", "me")
    assert rs["seed"] == 42 and rs.getAttribute("who") == "me"
    assert "seed" in rs and "nobody" not in rs
    assert sorted(rs.keys()) == ["seed", "who"]
    del rs["seed"]
    assert "seed" not in rs
    with pytest.raises(KeyError, match=r"^'seed'$"):
        rs["seed"]


def test_attribute_names_are_strings(rs):
    with pytest.raises(TypeError, match="strings"):
        rs[3] = "x"


def test_attributes_are_not_results(rs, make_rc):
    rs["note"] = "hello"
    rs.addSingleResult(make_rc({"x": 1}, {"y": 2}))
    assert "note" not in rs.names()


# ---- adding rows and naming columns ------------------------------------------------------


def test_names_by_role(rs, make_rc):
    rs.addSingleResult(make_rc({"x": 1, "n": 2}, {"y": 3}, extra="m"))
    assert rs.parameterNames() == ["x", "n"]
    assert rs.resultNames() == ["y"]
    assert "extra" in rs.metadataNames() and Experiment.STATUS in rs.metadataNames()
    assert rs.names() == ["x", "n", "y"] + rs.metadataNames()


def test_rows_appear_in_the_dataframe_in_order(filled):
    df = filled.dataframe()
    assert list(df["x"]) == [1, 2, 3, 4]
    assert len(filled) == filled.numberOfResults() == 4


def test_dataframe_includes_failed_rows_by_default_and_can_drop_them(filled):
    assert len(filled.dataframe()) == 4
    ok = filled.dataframe(only_successful=True)
    assert list(ok["x"]) == [1, 2, 4]
    assert list(ok.index) == [0, 1, 2]


def test_an_empty_result_set_has_an_empty_dataframe(rs):
    df = rs.dataframe()
    assert isinstance(df, pd.DataFrame) and len(df) == 0
    assert len(rs.dataframe(only_successful=True)) == 0
    assert rs.results() == []


@pytest.mark.parametrize(
    "rc",
    [
        None,
        {"parameters": {"x": 1}, "results": {}},
        {"parameters": {"x": 1}, "metadata": {}, "results": 5},
        {"parameters": [("x", 1)], "metadata": {}, "results": {}},
    ],
)
def test_a_malformed_results_dict_is_refused(rs, rc):
    with pytest.raises(ResultsStructureException, match="results dict"):
        rs.addSingleResult(rc)
    assert len(rs) == 0


def test_a_results_list_must_go_through_the_notebook(rs, make_rc):
    rc = make_rc({"x": 1}, [make_rc({"x": 1}, {"y": 1})])
    with pytest.raises(ResultsStructureException, match="addResult"):
        rs.addSingleResult(rc)


def test_a_key_that_is_both_parameter_and_result_in_one_row_is_refused(rs, make_rc):
    with pytest.raises(ResultsStructureException, match="'x' is both a parameter and a result"):
        rs.addSingleResult(make_rc({"x": 1}, {"x": 2}))
    assert len(rs) == 0 and rs.names() == []


def test_a_result_named_like_an_existing_parameter_column_is_refused(rs, make_rc):
    rs.addSingleResult(make_rc({"x": 1}, {"y": 2}))
    before = rs.dataframe()
    with pytest.raises(ResultsStructureException, match="'x' is a parameter column"):
        rs.addSingleResult(make_rc({"z": 1}, {"x": 2}))
    assert len(rs) == 1
    pd.testing.assert_frame_equal(rs.dataframe(), before)
    assert "z" not in rs.names()


def test_a_metadata_key_named_like_a_result_column_is_refused(rs, make_rc):
    rs.addSingleResult(make_rc({"x": 1}, {"y": 2}))
    with pytest.raises(ResultsStructureException, match="'y' is a result column"):
        rs.addSingleResult(make_rc({"x": 2}, {}, y=5))
    assert len(rs) == 1


# ---- column defaults ----------------------------------------------------------------------------


def test_a_new_result_key_half_way_gives_earlier_rows_the_default(rs, make_rc):
    for x in range(3):
        rs.addSingleResult(make_rc({"x": x}, {"y": x}))
    for x in range(3, 5):
        rs.addSingleResult(make_rc({"x": x}, {"y": x, "i": 7, "f": 0.5, "s": "hi", "b": True}))
    df = rs.dataframe()
    assert list(df["y"]) == [0, 1, 2, 3, 4]
    assert list(df["i"]) == [0, 0, 0, 7, 7]
    assert df["f"].isna().tolist() == [True, True, True, False, False]
    assert list(df["s"]) == ["", "", "", "hi", "hi"]
    assert list(df["b"]) == [False, False, False, True, True]
    assert pd.api.types.is_integer_dtype(df["i"]) and pd.api.types.is_bool_dtype(df["b"])


def test_a_key_missing_from_later_rows_gets_the_default(rs, make_rc):
    rs.addSingleResult(make_rc({"x": 1}, {"y": 1.5, "s": "a"}))
    rs.addSingleResult(make_rc({"x": 2}, {"y": 2.5}))
    df = rs.dataframe()
    assert df["s"].tolist() == ["a", ""]
    assert df["y"].tolist() == [1.5, 2.5]


def test_a_new_parameter_half_way_gives_earlier_rows_the_default(rs, make_rc):
    rs.addSingleResult(make_rc({"x": 1}, {"y": 1}))
    rs.addSingleResult(make_rc({"x": 2, "n": 5}, {"y": 2}))
    assert rs.parameterNames() == ["x", "n"]
    assert rs.dataframe()["n"].tolist() == [0, 5]


def test_failed_rows_keep_parameters_and_metadata_with_default_results(rs, make_rc):
    rs.addSingleResult(make_rc({"x": 1, "s": "p"}, {"i": 1, "f": 1.5, "t": "a", "b": True}))
    rs.addSingleResult(make_rc({"x": 2, "s": "q"}, ok=False, machine="m2"))
    row = rs.dataframe().iloc[1]
    assert row["x"] == 2 and row["s"] == "q"
    assert row[Experiment.STATUS] == False  # noqa: E712 (a numpy bool)
    assert row["machine"] == "m2"
    assert row["i"] == 0 and math.isnan(row["f"]) and row["t"] == "" and row["b"] == False  # noqa: E712


def test_a_failed_row_in_a_column_of_ints_and_floats_gets_nan(rs, make_rc):
    # A result that is sometimes an int (0) and sometimes a float is a float
    # column: a failed run there must not read as 0.
    rs.addSingleResult(make_rc({"x": 1}, {"f": 0}))
    rs.addSingleResult(make_rc({"x": 2}, ok=False))
    rs.addSingleResult(make_rc({"x": 3}, {"f": 2.5}))
    f = rs.dataframe()["f"]
    assert f.iloc[0] == 0 and math.isnan(f.iloc[1]) and f.iloc[2] == 2.5
    assert f.mean() == pytest.approx(1.25)


def test_failed_first_row_then_results_appear(rs, make_rc):
    rs.addSingleResult(make_rc({"x": 1}, ok=False))
    rs.addSingleResult(make_rc({"x": 2}, {"f": 2.5}))
    assert math.isnan(rs.dataframe()["f"].iloc[0])


def test_exceptions_are_stored_as_text(rs, make_rc):
    rs.addSingleResult(make_rc({"x": 1}, {"y": 1}))
    rs.addSingleResult(make_rc({"x": 2}, ok=False))
    assert rs.dataframe()[Experiment.EXCEPTION].tolist() == ["", "ValueError: it failed"]


def test_list_and_array_results_stay_whole_in_their_cells(rs, make_rc):
    rs.addSingleResult(make_rc({"x": 1}, {"path": [1.0, 2.0], "arr": np.arange(2)}))
    rs.addSingleResult(make_rc({"x": 2}, {"path": [3.0, 4.0], "arr": np.arange(2) + 5}))
    df = rs.dataframe()
    assert len(df) == 2
    assert df["path"].iloc[1] == [3.0, 4.0]
    assert list(df["arr"].iloc[1]) == [5, 6]


# ---- the DataFrame cache ------------------------------------------------------------------------


def test_dataframe_is_rebuilt_after_a_new_row(filled, make_rc):
    first = filled.dataframe()
    filled.addSingleResult(make_rc({"x": 5}, {"y": 50}))
    second = filled.dataframe()
    assert len(first) == 4 and len(second) == 5
    assert second["y"].iloc[-1] == 50


def test_dataframe_is_rebuilt_after_a_new_column(filled, make_rc):
    filled.dataframe()
    filled.addSingleResult(make_rc({"x": 5}, {"y": 50, "z": 1.0}))
    assert "z" in filled.dataframe().columns


def test_mutating_a_returned_frame_does_not_change_the_result_set(filled):
    df = filled.dataframe()
    df.loc[0, "y"] = -1
    df["new"] = 1
    again = filled.dataframe()
    assert again["y"].iloc[0] == 10
    assert "new" not in again.columns


def test_mutating_a_filtered_frame_does_not_change_the_result_set(filled):
    df = filled.dataframe(only_successful=True)
    df.loc[0, "y"] = -1
    sel = filled.dataframeFor({"x": 2})
    sel.loc[0, "y"] = -2
    assert filled.dataframe()["y"].tolist() == [10, 20, 0, 40]  # the failed run's int default is 0


def test_repeated_calls_give_equal_but_distinct_frames(filled):
    first, second = filled.dataframe(), filled.dataframe()
    assert first is not second
    pd.testing.assert_frame_equal(first, second)


# ---- selecting rows ------------------------------------------------------------------------------


def test_dataframe_for_a_single_value(filled):
    df = filled.dataframeFor({"x": 2})
    assert df["y"].tolist() == [20]


def test_dataframe_for_a_list_of_values_selects_any(filled):
    assert filled.dataframeFor({"x": [1, 4]})["y"].tolist() == [10, 40]
    assert filled.dataframeFor({"x": (2, 4)})["x"].tolist() == [2, 4]
    assert filled.dataframeFor({"x": range(1, 3)})["x"].tolist() == [1, 2]


def test_dataframe_for_a_numpy_array_of_values_selects_any(rs, make_rc):
    for p in np.linspace(0.0, 1.0, 5):
        rs.addSingleResult(make_rc({"p": p}, {"y": 1}))
    assert rs.dataframeFor({"p": np.array([0.25, 1.0])})["p"].tolist() == [0.25, 1.0]
    rs.addSinglePendingResult({"p": 2.0}, "j")
    assert rs.pendingResultsFor({"p": np.array([2.0, 3.0])}) == ["j"]


def test_dataframe_for_several_parameters_is_a_conjunction(rs, make_rc):
    for a in range(3):
        for b in range(3):
            rs.addSingleResult(make_rc({"a": a, "b": b}, {"s": a + b}))
    df = rs.dataframeFor({"a": [0, 2], "b": 1})
    assert sorted(zip(df["a"], df["b"])) == [(0, 1), (2, 1)]


def test_dataframe_for_compares_only_the_named_column(rs, make_rc):
    # The result 'y' and the other parameter 'n' hold the values asked of 'x':
    # a filter that looked at every column would select the wrong rows.
    rs.addSingleResult(make_rc({"x": 1, "n": 2}, {"y": 2}))
    rs.addSingleResult(make_rc({"x": 2, "n": 1}, {"y": 1}))
    rs.addSingleResult(make_rc({"x": 3, "n": 3}, {"y": 3}))
    assert rs.dataframeFor({"x": 1})["n"].tolist() == [2]
    assert rs.dataframeFor({"x": [1, 2]})["x"].tolist() == [1, 2]
    assert rs.dataframeFor({"x": [2]})["y"].tolist() == [1]


def test_dataframe_for_can_drop_failed_rows(filled):
    assert filled.dataframeFor({"x": [2, 3]})["x"].tolist() == [2, 3]
    assert filled.dataframeFor({"x": [2, 3]}, only_successful=True)["x"].tolist() == [2]


def test_dataframe_for_no_match_is_empty(filled):
    assert len(filled.dataframeFor({"x": 99})) == 0


def test_dataframe_for_an_unknown_parameter_names_it(filled):
    with pytest.raises(KeyError, match="'nope' is not a column"):
        filled.dataframeFor({"nope": 1})


def test_results_round_trip_as_results_dicts(filled):
    rcs = filled.results()
    assert len(rcs) == 4
    assert rcs[0][Experiment.PARAMETERS] == {"x": 1}
    assert rcs[0][Experiment.RESULTS] == {"y": 10}
    assert rcs[2][Experiment.RESULTS] == {}
    assert rcs[2][Experiment.METADATA][Experiment.STATUS] == False  # noqa: E712


def test_results_for_selects_like_dataframe_for(filled):
    rcs = filled.resultsFor({"x": [2, 4]})
    assert [rc[Experiment.RESULTS]["y"] for rc in rcs] == [20, 40]


def test_parameter_range_space_and_combinations(rs, make_rc):
    for a in (1, 2):
        for b in ("u", "v"):
            rs.addSingleResult(make_rc({"a": a, "b": b}, {"y": 0}))
    rs.addSingleResult(make_rc({"a": 1, "b": "u"}, {"y": 1}))
    assert rs.parameterRange("a") == {1, 2}
    assert rs.parameterSpace() == {"a": {1, 2}, "b": {"u", "v"}}
    combos = rs.parameterCombinations()
    assert len(combos) == 4
    assert {"a": 1, "b": "u"} in combos


def test_parameter_range_includes_pending_points(rs, make_rc):
    rs.addSingleResult(make_rc({"a": 1}, {"y": 0}))
    rs.addSinglePendingResult({"a": 5}, "j1")
    assert rs.parameterRange("a") == {1, 5}
    assert rs.parameterRange("unknown") == set()


def test_no_combinations_without_results(rs):
    assert rs.parameterCombinations() == []


# ---- pending results ---------------------------------------------------------------------------------


def test_pending_results_are_tracked_until_resolved(rs, make_rc):
    assert rs.ready()
    rs.addSinglePendingResult({"x": 1}, "j1")
    rs.addSinglePendingResult({"x": 2}, "j2")
    assert not rs.ready()
    assert rs.pendingResults() == ["j1", "j2"]
    assert rs.numberOfPendingResults() == 2
    assert rs.pendingResultParameters("j2") == {"x": 2}
    assert len(rs) == 0
    rs.addSingleResult(make_rc({"x": 1}, {"y": 1}))
    rs.resolveSinglePendingResult("j1")
    rs.resolveSinglePendingResult("j2")
    assert rs.ready() and rs.pendingResults() == []


def test_pending_parameters_count_as_parameter_names(rs):
    rs.addSinglePendingResult({"x": 1, "n": 3}, "j1")
    assert rs.parameterNames() == ["x", "n"]


def test_pending_results_for_a_point(rs):
    rs.addSinglePendingResult({"x": 1, "n": 1}, "a")
    rs.addSinglePendingResult({"x": 2, "n": 1}, "b")
    rs.addSinglePendingResult({"x": 3, "n": 2}, "c")
    assert rs.pendingResultsFor({"x": 2}) == ["b"]
    assert rs.pendingResultsFor({"x": [1, 3]}) == ["a", "c"]
    assert rs.pendingResultsFor({"n": 1, "x": [2, 3]}) == ["b"]
    assert rs.pendingResultsFor({"x": 9}) == []


def test_a_duplicate_job_id_is_refused(rs):
    rs.addSinglePendingResult({"x": 1}, "j1")
    with pytest.raises(PendingResultException) as info:
        rs.addSinglePendingResult({"x": 2}, "j1")
    assert info.value.jobid() == "j1"
    assert rs.pendingResultParameters("j1") == {"x": 1}


@pytest.mark.parametrize("call", ["resolveSinglePendingResult", "cancelSinglePendingResult", "pendingResultParameters"])
def test_an_unknown_job_id_is_a_pending_result_exception(rs, call):
    with pytest.raises(PendingResultException, match="'nope'") as info:
        getattr(rs, call)("nope")
    assert info.value.jobid() == "nope"


def test_cancelling_records_a_failed_result_with_a_cancelled_exception(rs):
    rs.addSinglePendingResult({"x": 7, "s": "a"}, "j1")
    rs.cancelSinglePendingResult("j1")
    assert rs.ready()
    df = rs.dataframe()
    assert len(df) == 1
    assert df["x"].iloc[0] == 7 and df["s"].iloc[0] == "a"
    assert df[Experiment.STATUS].iloc[0] == False  # noqa: E712
    assert CancelledException.__name__ in df[Experiment.EXCEPTION].iloc[0]
    assert "j1" in df[Experiment.EXCEPTION].iloc[0]


# ---- locking -------------------------------------------------------------------------------------------


def test_finish_locks_the_result_set(filled, make_rc):
    filled.addSinglePendingResult({"x": 9}, "j1")
    filled.finish()
    assert filled.isLocked()
    attempts = [
        lambda: filled.addSingleResult(make_rc({"x": 5}, {"y": 5})),
        lambda: filled.setDescription("no"),
        lambda: filled.setAttribute("a", 1),
        lambda: filled.__setitem__("a", 1),
        lambda: filled.addSinglePendingResult({"x": 6}, "j2"),
    ]
    for attempt in attempts:
        with pytest.raises(ResultSetLockedException, match="locked"):
            attempt()
    assert len(filled) == 5
    assert filled.dataframe()["x"].tolist() == [1, 2, 3, 4, 9]


def test_finish_cancels_outstanding_pending_results(rs):
    rs.addSinglePendingResult({"x": 9}, "j1")
    rs.finish()
    assert rs.ready()
    assert rs.dataframe()[Experiment.STATUS].tolist() == [False]


def test_a_locked_result_set_refuses_deleting_attributes(rs):
    rs["a"] = 1
    rs.finish()
    with pytest.raises(ResultSetLockedException):
        del rs["a"]
    assert rs["a"] == 1


def test_finish_twice_is_harmless(rs):
    rs.finish()
    rs.finish()
    assert rs.isLocked()
