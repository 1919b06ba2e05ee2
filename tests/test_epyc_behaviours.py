"""epyc 1.7's documented behaviours that epyclab keeps (issue 18.6), each as a user relies on it.

Written from epyc's documentation and its observed behaviour, not from its tests.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab import (
    Experiment,
    FactorialDesign,
    HDF5LabNotebook,
    JSONLabNotebook,
    Lab,
    LabNotebook,
    LabNotebookLockedException,
    NotebookTakenOverError,
    ResultSet,
    ResultSetLockedException,
    ResultsStructureException,
    UnstorableValueError,
)

FORMATS = [HDF5LabNotebook, JSONLabNotebook]
S, E = Experiment.STATUS, Experiment.EXCEPTION


def rc(i: int, ok: bool = True, **results):
    return {
        Experiment.PARAMETERS: {"i": i},
        Experiment.METADATA: {S: ok, E: None if ok else ValueError("no"), Experiment.TRACEBACK: ""},
        Experiment.RESULTS: results if ok else {},
    }


def path_for(tmp_path: Path, cls: type) -> Path:
    return tmp_path / ("nb.h5" if cls is HDF5LabNotebook else "nb.json")


# ---- declared types ------------------------------------------------------------------------


def test_set_dtype_lists_every_declared_field_at_once_with_its_dtype():
    rs = ResultSet()
    rs.setDtype(np.dtype([("n", np.int32), ("x", np.float64), ("label", object)]))
    d = rs.dtype()
    assert d.names == ("n", "x", "label")
    assert d["n"] == np.int32 and d["x"] == np.float64 and d["label"] == np.dtype(object)
    assert not rs.isTypeChanged()  # a declaration adds no column
    rs.addSingleResult({Experiment.PARAMETERS: {"n": 3}, Experiment.METADATA: {}, Experiment.RESULTS: {"x": 1}})
    assert rs.dtype()["n"] == np.int32 and rs.dtype()["x"] == np.float64  # the values took the declared dtypes
    assert rs.dataframe()["x"].tolist() == [1.0] and set(rs.dtype().names) == {"n", "x", "label"}
    assert rs.isTypeChanged()  # the row created columns


def test_results_added_are_listed_by_dtype_with_their_numpy_dtypes():
    rs = ResultSet()
    rs.addSingleResult(rc(1, y=1.5, s="a", k=True))
    d = rs.dtype()
    assert set(d.names) >= {"i", "y", "s", "k", S}
    assert d["i"] == np.int64 and d["y"] == np.float64 and d["k"] == np.bool_ and d["s"] == np.dtype(object)


def test_pending_dtype_lists_declared_fields_at_once_and_every_parameter_seen():
    rs = ResultSet()
    rs.setPendingResultDtype(np.dtype([("x", np.int64)]))
    assert rs.pendingdtype().names == ("x",)
    rs.addSinglePendingResult({"x": 1, "z": "a"}, "job-1")
    d = rs.pendingdtype()
    assert set(d.names) == {"x", "z", ResultSet.JOBID} and d["x"] == np.int64 and d["z"] == np.dtype(object)
    plain = ResultSet()
    plain.addSinglePendingResult({"p": 0.5}, "job-2")
    assert set(plain.pendingdtype().names) == {"p", ResultSet.JOBID} and plain.pendingdtype()["p"] == np.float64


def test_type_changed_is_set_by_a_row_that_creates_or_widens_a_column_only():
    rs = ResultSet()
    assert not rs.isTypeChanged()
    rs.addSingleResult(rc(1, y=1))
    assert rs.isTypeChanged()
    rs.typechanged(False)
    rs.addSingleResult(rc(2, y=2))
    assert not rs.isTypeChanged()  # the same types
    rs.addSingleResult(rc(3, y=2.5))
    assert rs.isTypeChanged()  # widened int -> float
    rs.typechanged(False)
    rs.addSingleResult(rc(4, y=1.0, z="new"))
    assert rs.isTypeChanged()  # a new column


# ---- inferring a dtype registers what it inferred --------------------------------------------


def test_dtype_of_a_set_with_nothing_known_raises_naming_the_fixes():
    with pytest.raises(ResultsStructureException, match="inferDtype.*setDtype"):
        ResultSet().dtype()


def test_inferring_registers_every_field_in_its_role_and_every_standard_metadata_field():
    rs = ResultSet()
    partial = {Experiment.PARAMETERS: {"k": 1}, Experiment.METADATA: {S: True, "extra": 2.5},
               Experiment.RESULTS: {"total": 2.0, "flag": False}}
    d = rs.inferDtype(partial)
    assert rs.parameterNames() == ["k"] and rs.resultNames() == ["total", "flag"]
    assert set(rs.metadataNames()) == Experiment.StandardMetadata | {"extra"}
    for k, t in Experiment.StandardMetadataTypes.items():
        assert d[k] == ResultSet.TypeMapping[t], k  # the lacking fields too, with their types
    assert d["k"] == np.int64 and d["flag"] == np.bool_ and rs.dtype() == d
    assert rs.isTypeChanged() and not rs.isDirty() and rs.numberOfResults() == 0
    rs.typechanged(False)
    assert rs.inferDtype(partial) == d and not rs.isTypeChanged()  # nothing new
    # A later inference adds its new fields and keeps every earlier one.
    d = rs.inferDtype({Experiment.PARAMETERS: {"k": 2, "j": 0.5}, Experiment.METADATA: {S: True},
                       Experiment.RESULTS: {"total": 3.0, "extra2": "hello"}})
    assert rs.parameterNames() == ["k", "j"] and rs.resultNames() == ["total", "flag", "extra2"]
    assert d["flag"] == np.bool_ and d["extra2"] == np.dtype(object) and rs.isTypeChanged()


def test_a_failed_runs_results_register_no_result_field():
    rs = ResultSet()
    rs.inferDtype({Experiment.PARAMETERS: {"k": 1}, Experiment.METADATA: {S: False, E: "boom"},
                   Experiment.RESULTS: {"stray": 1}})
    assert rs.parameterNames() == ["k"] and rs.resultNames() == [] and rs.dtype()[E] == np.dtype(object)


def test_inferring_widens_a_column_and_rows_already_there_show_new_fields_missing():
    rs = ResultSet()
    rs.addSingleResult(rc(1, y=1))
    rs.dirty(False)
    rs.typechanged(False)
    assert rs.inferDtype(rc(2, y=2.5, z="t"))["y"] == np.float64
    assert rs.isTypeChanged() and not rs.isDirty() and rs.numberOfResults() == 1
    df = rs.dataframe()
    assert df["y"].tolist() == [1.0] and df["z"].tolist() == [""]


def test_a_refused_inference_changes_nothing():
    rs = ResultSet()
    rs.addSingleResult(rc(1, y=1))
    before = rs.dtype()
    with pytest.raises(ResultsStructureException, match="'y'"):
        rs.inferDtype({Experiment.PARAMETERS: {"y": 1}, Experiment.METADATA: {S: True}, Experiment.RESULTS: {}})
    with pytest.raises(UnstorableValueError):
        rs.inferDtype(rc(2, y=1, z={}))
    assert rs.dtype() == before and rs.names() == list(before.names)


def test_inferring_a_pending_dtype_registers_the_parameters_only():
    rs = ResultSet()
    d = rs.inferPendingResultDtype({"k": 1, "singleton": 1})
    assert d["k"] == np.int64 and rs.parameterNames() == ["k", "singleton"]
    assert rs.metadataNames() == [] and rs.resultNames() == [] and rs.numberOfPendingResults() == 0
    d = rs.inferPendingResultDtype({"k": 2, "j": 34.5, "singleton": 1})
    assert d["j"] == np.float64 and rs.parameterNames() == ["k", "singleton", "j"]


def test_inferring_changes_a_finished_set_no_more_than_adding_does():
    rs = ResultSet()
    rs.addSingleResult(rc(1, y=1))
    rs.finish()
    with pytest.raises(ResultSetLockedException):
        rs.inferDtype(rc(2, y=1, z=2))
    with pytest.raises(ResultSetLockedException):
        rs.inferPendingResultDtype({"q": 1})
    assert "z" not in rs.names() and "q" not in rs.names()


@pytest.mark.parametrize("cls", FORMATS)
def test_fields_registered_by_inferring_are_saved_and_read_back(tmp_path, cls):
    nb = cls(path_for(tmp_path, cls), create=True)
    nb.addResult(rc(1, y=1.0))
    nb.current().inferDtype({Experiment.PARAMETERS: {"i": 2, "j": 0.5}, Experiment.METADATA: {S: True},
                             Experiment.RESULTS: {"y": 1.0, "z": "a"}})
    nb.commit()
    nb.close()
    back = cls(path_for(tmp_path, cls), readonly=True).current()
    assert back.parameterNames() == ["i", "j"] and back.resultNames() == ["y", "z"]
    assert set(back.metadataNames()) >= Experiment.StandardMetadata
    assert back.numberOfResults() == 1 and back.dataframe()["z"].tolist() == [""]


@pytest.mark.parametrize("cls", FORMATS)
def test_commit_clears_type_changed_and_dirty(tmp_path, cls):
    nb = cls(path_for(tmp_path, cls), create=True)
    nb.addResult(rc(1, y=1.0))
    assert nb.current().isTypeChanged() and nb.current().isDirty()
    nb.commit()
    assert not nb.current().isTypeChanged() and not nb.current().isDirty()
    nb.addResult(rc(2, y=2.0))
    assert not nb.current().isTypeChanged() and nb.current().isDirty()
    nb.close()
    reopened = cls(path_for(tmp_path, cls), readonly=True)
    assert not reopened.current().isTypeChanged() and not reopened.current().isDirty()


# ---- lists of strings ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", FORMATS)
def test_lists_of_strings_are_stored_and_read_back(tmp_path, cls):
    path = path_for(tmp_path, cls)
    with cls(path, create=True) as nb:
        nb.addResult(rc(1, words=["hello", "abandon"]))
        nb.addResult(rc(2, words=[]))
        nb.addResult(rc(3, ok=False))
        nb.addResult(rc(4, words=[["nested", "ünïcødé"], ["x"]]))
    again = cls(path, readonly=True)
    assert again.dataframe(only_successful=False)["words"].tolist() == [
        ["hello", "abandon"], [], None, [["nested", "ünïcødé"], ["x"]]
    ]
    assert again.results()[0][Experiment.RESULTS]["words"] == ["hello", "abandon"]
    again.close()
    # Committed through the journal and read back before any fold, then added to after reopening.
    nb = cls(path)
    nb.addResult(rc(5, words=["later"]))
    nb.commit()
    assert cls(path, readonly=True).dataframe()["words"].tolist()[-1] == ["later"]
    nb.close()


def test_a_list_mixing_strings_and_numbers_is_refused_and_a_text_list_column_takes_no_numbers():
    from epyclab.errors import UnstorableValueError

    rs = ResultSet()
    with pytest.raises(UnstorableValueError, match="'w'"):
        rs.addSingleResult(rc(1, w=["a", 1]))
    rs.addSingleResult(rc(2, w=["a"]))
    with pytest.raises(UnstorableValueError, match="'w'"):
        rs.addSingleResult(rc(3, w=[1.0]))
    with pytest.raises(UnstorableValueError, match="NUL"):
        rs.addSingleResult(rc(4, w=["a\x00b"]))
    assert rs.numberOfResults() == 1


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
_text_lists = st.lists(st.one_of(_text, st.lists(_text, min_size=1, max_size=3)), min_size=1, max_size=4)


@pytest.mark.parametrize("cls", FORMATS)
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.one_of(st.none(), _text_lists), min_size=1, max_size=5))
def test_any_list_of_text_reads_back_as_given(tmp_path, cls, cells):
    path = path_for(tmp_path, cls)
    with cls(path, create=True) as nb:
        for i, words in enumerate(cells):
            nb.addResult(rc(i, words=words))
    if all(c is None for c in cells):
        return  # no column takes a kind from None alone
    got = cls(path, readonly=True).dataframe()["words"].tolist()
    assert got == cells


# ---- designs ------------------------------------------------------------------------------------


class Square(Experiment):
    def do(self, params):
        return {"y": params["a"] ** 2}


def test_an_empty_parameter_is_left_out_of_a_factorial_design():
    points = FactorialDesign().experiments(None, {"a": range(3), "b": []})
    assert [p for _, p in points] == [{"a": 0}, {"a": 1}, {"a": 2}]
    lab = Lab()
    lab["a"] = range(3)
    lab["b"] = []
    lab.runExperiment(Square())
    assert sorted(lab.dataframe()["y"].tolist()) == [0, 1, 4]


# ---- notebooks taken over in one process -----------------------------------------------------------


@pytest.mark.parametrize("cls", FORMATS)
def test_an_object_taken_over_still_answers_reads(tmp_path, cls, caplog):
    path = path_for(tmp_path, cls)
    first = cls(path, create=True)
    first.addResult([rc(1, y=1.0), rc(2, y=2.0)])
    first.addResultSet("other")
    first.addResult(rc(3, z="c"))
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        second = cls(path)
    assert first.numberOfResults(tag=LabNotebook.DEFAULT_RESULTSET) == 2
    assert first.dataframe(tag=LabNotebook.DEFAULT_RESULTSET)["y"].tolist() == [1.0, 2.0]
    assert first.results(tag="other")[0][Experiment.RESULTS] == {"z": "c"}
    assert first.resultSets() == second.resultSets()
    second.close()


@pytest.mark.parametrize("cls", FORMATS)
def test_a_finished_notebook_refuses_a_change_as_locked_through_either_object(tmp_path, cls, caplog):
    path = path_for(tmp_path, cls)
    first = cls(path, create=True)
    first.addResult(rc(1, y=1.0))
    first.finish()
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        second = cls(path)
    for nb in (second, first):
        with pytest.raises(LabNotebookLockedException):
            nb.addResult(rc(2, y=2.0))
    assert second.numberOfResults() == 1 and first.numberOfResults() == 1
    second.close()


@pytest.mark.parametrize("cls", FORMATS)
def test_recreating_a_file_leaves_the_old_object_readable_and_the_new_one_empty(tmp_path, cls, caplog):
    path = path_for(tmp_path, cls)
    with cls(path, create=True) as nb:
        nb.addResult([rc(1, y=1.0), rc(2, y=2.0)])
    old = cls(path)
    assert len(old.dataframe()) == 2
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        new = cls(path, create=True)
    assert new.numberOfResults() == 0 and new.resultSets() == [LabNotebook.DEFAULT_RESULTSET]
    assert old.numberOfResults() == 2 and old.dataframe()["y"].tolist() == [1.0, 2.0]
    new.addResult(rc(9, y=9.0))
    new.close()
    assert old.results()[1][Experiment.RESULTS] == {"y": 2.0}
    assert cls(path, readonly=True).dataframe()["y"].tolist() == [9.0]


@pytest.mark.parametrize("cls", FORMATS)
def test_committing_an_unchanged_taken_over_object_is_a_no_op_and_a_change_is_refused(tmp_path, cls, caplog):
    path = path_for(tmp_path, cls)
    first = cls(path, create=True)
    first.addResult(rc(1, y=1.0))
    first.commit()
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        emptied = cls(path, create=True, description="again")  # takes the file over, starts it empty
        reader = cls(path)  # takes it over in turn
    assert reader.numberOfResults() == 0
    first.commit()
    emptied.commit()  # nothing changed through either since: nothing to do, nothing refused
    with pytest.raises(NotebookTakenOverError, match="use that object"):
        emptied.addResult(rc(2, y=2.0))
    emptied.commit()  # the refused change left nothing to save
    reader.close()
    back = cls(path, readonly=True)
    assert back.numberOfResults() == 0 and back.description() == "again"


# ---- descriptions and metadata --------------------------------------------------------------------


@pytest.mark.parametrize("cls", FORMATS)
def test_a_description_given_when_reopening_replaces_the_stored_one(tmp_path, cls):
    path = path_for(tmp_path, cls)
    cls(path, create=True, description="first").close()
    cls(path).close()
    assert cls(path, readonly=True).description() == "first"  # none given: kept
    nb = cls(path, description="second")
    assert nb.description() == "second"
    nb.close()
    assert cls(path, readonly=True).description() == "second"


class Succeeds(Experiment):
    def do(self, params):
        return {"y": params["i"] * 1.5}


class FailsOnTwo(Experiment):
    def do(self, params):
        if params["i"] == 2:
            raise ValueError("two")
        return {"y": params["i"] * 1.5}


def test_a_successful_run_has_an_empty_exception_and_traceback():
    meta = Succeeds().set({"i": 1}).run()[Experiment.METADATA]
    assert meta[S] is True and meta[E] == "" and meta[Experiment.TRACEBACK] == ""
    failed = FailsOnTwo().set({"i": 2}).run()[Experiment.METADATA]
    assert failed[S] is False and isinstance(failed[E], ValueError) and "two" in failed[Experiment.TRACEBACK]


@pytest.mark.parametrize("cls", [*FORMATS, None])
def test_a_sweep_of_successes_has_exception_and_traceback_columns_of_empty_text(tmp_path, cls):
    nb = LabNotebook() if cls is None else cls(path_for(tmp_path, cls), create=True)
    lab = Lab(nb)
    lab["i"] = [1, 3]
    lab.runExperiment(FailsOnTwo())
    if cls is not None:
        nb.close()
        nb = cls(path_for(tmp_path, cls), readonly=True)
    df = nb.dataframe()
    assert df[E].tolist() == ["", ""] and df[Experiment.TRACEBACK].tolist() == ["", ""]
    assert df.loc[~df[S], E].empty  # selecting the failures needs no test that the column exists
    assert all(r[Experiment.METADATA][E] == "" for r in nb.results())


@pytest.mark.parametrize("cls", [*FORMATS, None])
def test_a_sweeps_successes_read_an_empty_exception_and_traceback_once_a_run_failed(tmp_path, cls):
    nb = LabNotebook() if cls is None else cls(path_for(tmp_path, cls), create=True)
    lab = Lab(nb)
    lab["i"] = [1, 2, 3]
    lab.runExperiment(FailsOnTwo())
    readers = [nb]
    if cls is not None:
        nb.close()
        readers.append(cls(path_for(tmp_path, cls), readonly=True))
    for reader in readers:  # in memory, and from the file
        df = reader.dataframe(only_successful=False)
        assert df[E].tolist() == ["", "ValueError: two", ""]
        assert df[Experiment.TRACEBACK].tolist()[::2] == ["", ""] and "two" in df[Experiment.TRACEBACK][1]
        metas = [r[Experiment.METADATA] for r in reader.results()]
        assert [m[E] for m in metas] == ["", "ValueError: two", ""]
        assert [m[Experiment.TRACEBACK] for m in metas][::2] == ["", ""]


@pytest.mark.parametrize("cls", [*FORMATS, None])
def test_a_none_metadata_value_given_reads_back_as_none(tmp_path, cls):
    nb = LabNotebook() if cls is None else cls(path_for(tmp_path, cls), create=True)
    nb.addResult([rc(1, y=1.0), rc(2, y=2.0)])  # rc gives a success's exception as None
    if cls is not None:
        nb.close()
        nb = cls(path_for(tmp_path, cls), readonly=True)
    # A missing cell, read back as given while the column holds no text.
    assert nb.dataframe()[E].tolist() == [None, None]
    assert [r[Experiment.METADATA][E] for r in nb.results()] == [None, None]


@pytest.mark.parametrize("cls", [*FORMATS, None])
def test_with_a_failed_run_the_exception_column_is_text_and_a_success_reads_as_its_zero(tmp_path, cls):
    path = path_for(tmp_path, cls) if cls is not None else None
    nb = LabNotebook() if cls is None else cls(path, create=True)
    nb.addResult(rc(1, y=1.0))
    if cls is not None:
        nb.close()  # the failure comes in a later session: the column widens from missing to text
        nb = cls(path)
    nb.addResult([rc(2, ok=False), rc(3, y=3.0)])
    if cls is not None:
        nb.close()
        nb = cls(path, readonly=True)
    # As epyc: once the column holds text, a cell without one is the text column's zero.
    assert [r[Experiment.METADATA][E] for r in nb.results()] == ["", "ValueError: no", ""]
    assert nb.dataframe(only_successful=False)[E].tolist() == ["", "ValueError: no", ""]


# ---- createWith --------------------------------------------------------------------------------


@pytest.mark.parametrize("propagate", [True, False])
def test_create_with_failing_after_deleting_the_current_set_goes_back_to_the_default_set(propagate):
    lab = Lab()
    nb = lab.notebook()
    nb.addResultSet("before")
    nb.addResult(rc(1, y=1.0))

    def deletes_then_fails(lab):
        nb.deleteResultSet("before")
        raise RuntimeError("half-way")

    if propagate:
        with pytest.raises(RuntimeError, match="half-way"):
            lab.createWith("made", deletes_then_fails)
    else:
        assert lab.createWith("made", deletes_then_fails, propagate=False) is False
    assert "made" not in nb and "before" not in nb
    assert nb.currentTag() == LabNotebook.DEFAULT_RESULTSET


# ---- job ids -------------------------------------------------------------------------------------


def test_an_int_job_id_is_kept_as_its_text_and_found_again_by_the_int():
    nb = LabNotebook()
    nb.addPendingResult({"i": 1}, 12)
    assert nb.pendingResults() == ["12"] and nb.pendingResultParameters(12) == {"i": 1}
    assert nb.current().pendingResultsFor({"i": 1}) == ["12"]
    nb.resolvePendingResult(rc(1, y=1.0), 12)
    assert nb.numberOfPendingResults() == 0 and nb.numberOfResults() == 1


@pytest.mark.parametrize("cls", FORMATS)
def test_an_int_job_id_is_saved_as_its_text(tmp_path, cls):
    path = path_for(tmp_path, cls)
    with cls(path, create=True) as nb:
        nb.addPendingResult({"i": 1}, 7)
    nb = cls(path)
    assert nb.pendingResults() == ["7"]
    nb.cancelPendingResult(7)
    assert nb.numberOfPendingResults() == 0 and nb.numberOfResults() == 1
    nb.close()
