"""LabNotebook: tagged result sets, adding results, pending results across sets, locking."""

from __future__ import annotations

import pytest

from epyclab.errors import (
    CancelledException,
    EpyclabError,
    LabNotebookLockedException,
    PendingResultException,
    ResultSetLockedException,
    ResultsStructureException,
    UnknownResultSetError,
)
from epyclab.experiment import Experiment
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.notebooks.resultset import ResultSet


class CountingNotebook(LabNotebook):
    """An in-memory notebook that counts its commits."""

    def __init__(self, *args, **kwargs) -> None:
        self.commits = 0
        super().__init__(*args, **kwargs)

    def commit(self) -> None:
        super().commit()
        self.commits += 1


# ---- identity ---------------------------------------------------------------------------------


def test_name_and_description():
    nb = LabNotebook("study", description="what I did")
    assert nb.name() == "study"
    assert nb.description() == "what I did"
    nb.setDescription("what I really did")
    assert nb.description() == "what I really did"


def test_defaults():
    nb = LabNotebook()
    assert nb.name() == ""
    assert isinstance(nb.description(), str)
    assert not nb.isPersistent()


def test_the_default_result_set_exists_and_is_current(nb):
    assert LabNotebook.DEFAULT_RESULTSET == "epyc.resultset.default"
    assert nb.resultSets() == [LabNotebook.DEFAULT_RESULTSET]
    assert nb.currentTag() == LabNotebook.DEFAULT_RESULTSET
    assert isinstance(nb.current(), ResultSet)
    assert nb.numberOfResultSets() == len(nb) == 1


# ---- result sets ---------------------------------------------------------------------------------


def test_add_result_set_creates_and_selects_it(nb):
    rs = nb.addResultSet("a", description="set a")
    assert isinstance(rs, ResultSet)
    assert nb.currentTag() == "a" and nb.current() is rs
    assert rs.description() == "set a"
    assert nb.resultSet("a") is rs
    assert nb.resultSetTag(rs) == "a"
    assert "a" in nb and "b" not in nb
    assert nb.keys() == nb.resultSets() == [LabNotebook.DEFAULT_RESULTSET, "a"]
    assert len(nb) == 2


def test_add_result_set_refuses_an_existing_tag(nb):
    rs = nb.addResultSet("a")
    with pytest.raises(ResultsStructureException, match="already has a result set tagged 'a'"):
        nb.addResultSet("a")
    assert nb.resultSet("a") is rs


@pytest.mark.parametrize("tag", ["", None, 3])
def test_add_result_set_refuses_a_bad_tag(nb, tag):
    with pytest.raises(ValueError, match="tag"):
        nb.addResultSet(tag)


def test_select_switches_the_current_set(nb):
    nb.addResultSet("a")
    nb.addResultSet("b")
    assert nb.select("a") is nb.resultSet("a")
    assert nb.currentTag() == "a"


@pytest.mark.parametrize(
    "call",
    [
        lambda nb: nb.select("nope"),
        lambda nb: nb.resultSet("nope"),
        lambda nb: nb.deleteResultSet("nope"),
        lambda nb: nb.dataframe(tag="nope"),
        lambda nb: nb.numberOfResults("nope"),
        lambda nb: nb.addPendingResult({"x": 1}, "j", tag="nope"),
    ],
)
def test_an_unknown_tag_is_a_clear_error(nb, call):
    nb.addResultSet("known")
    with pytest.raises(UnknownResultSetError) as info:
        call(nb)
    message = str(info.value)
    assert "'nope'" in message and "'known'" in message
    # Code written for epyc catches KeyError; epyclab code can catch EpyclabError.
    assert isinstance(info.value, KeyError) and isinstance(info.value, EpyclabError)


def test_an_unknown_tag_does_not_change_the_current_set(nb):
    nb.addResultSet("a")
    with pytest.raises(UnknownResultSetError):
        nb.select("nope")
    assert nb.currentTag() == "a"


def test_result_set_tag_of_a_foreign_result_set(nb):
    with pytest.raises(KeyError, match="the result set is not in this notebook"):
        nb.resultSetTag(ResultSet())


def test_delete_result_set_by_tag_or_object(nb):
    a = nb.addResultSet("a")
    nb.addResultSet("b")
    nb.select(LabNotebook.DEFAULT_RESULTSET)
    nb.deleteResultSet("b")
    nb.deleteResultSet(a)
    assert nb.resultSets() == [LabNotebook.DEFAULT_RESULTSET]


def test_deleting_the_current_set_is_refused_and_changes_nothing(nb, make_rc):
    nb.addResultSet("a")
    nb.addResultSet("b")
    nb.addResult(make_rc({"x": 1}, {"y": 1}))
    with pytest.raises(ResultsStructureException, match="'b' is the current one.*select"):
        nb.deleteResultSet("b")
    with pytest.raises(ResultsStructureException, match="current one"):
        nb.deleteResultSet(nb.current())
    assert nb.resultSets() == [LabNotebook.DEFAULT_RESULTSET, "a", "b"]
    assert nb.currentTag() == "b" and nb.numberOfResults() == 1


def test_deleting_another_set_keeps_the_current_one(nb):
    nb.addResultSet("a")
    nb.addResultSet("b")
    nb.deleteResultSet("a")
    assert nb.currentTag() == "b"


def test_deleting_the_default_set_is_refused_even_when_not_current(nb, make_rc):
    nb.addResult(make_rc({"x": 1}, {"y": 1}))
    nb.addResultSet("a")
    with pytest.raises(ResultsStructureException, match="default result set .* cannot be deleted"):
        nb.deleteResultSet(LabNotebook.DEFAULT_RESULTSET)
    assert nb.resultSets() == [LabNotebook.DEFAULT_RESULTSET, "a"]
    assert nb.numberOfResults(LabNotebook.DEFAULT_RESULTSET) == 1


def test_already_selects_an_existing_set_or_creates_one(nb, make_rc):
    assert nb.already("a", description="first") is False
    nb.addResult(make_rc({"x": 1}, {"y": 1}))
    nb.select(LabNotebook.DEFAULT_RESULTSET)
    assert nb.already("a", description="ignored") is True
    assert nb.currentTag() == "a"
    assert nb.current().description() == "first"
    assert nb.numberOfResults() == 1


# ---- adding and reading results ----------------------------------------------------------------------


def test_add_result_goes_to_the_current_set(nb, make_rc):
    nb.addResultSet("a")
    nb.addResult(make_rc({"x": 1}, {"y": 1}))
    assert nb.numberOfResults() == 1
    assert nb.numberOfResults(LabNotebook.DEFAULT_RESULTSET) == 0


def test_add_result_with_a_tag_goes_to_that_set(nb, make_rc):
    nb.addResultSet("a")
    nb.addResult(make_rc({"x": 1}, {"y": 1}), tag=LabNotebook.DEFAULT_RESULTSET)
    assert nb.numberOfResults() == 0
    assert nb.numberOfResults(LabNotebook.DEFAULT_RESULTSET) == 1
    assert nb.currentTag() == "a"


def test_add_result_takes_a_list(nb, make_rc):
    nb.addResult([make_rc({"x": i}, {"y": i}) for i in range(3)])
    assert nb.dataframe()["x"].tolist() == [0, 1, 2]


def test_add_result_flattens_results_lists_at_any_depth(nb, make_rc):
    leaves = [make_rc({"x": 1}, {"y": i}) for i in range(4)]
    nested = make_rc({"x": 1}, [make_rc({"x": 1}, leaves[:2]), leaves[2], make_rc({"x": 1}, [leaves[3]])])
    nb.addResult([nested, [make_rc({"x": 2}, {"y": 9})]])
    assert nb.dataframe()["y"].tolist() == [0, 1, 2, 3, 9]


@pytest.mark.parametrize(
    "bad",
    [
        {"parameters": {"x": 1}, "results": {"y": 1}},
        42,
        [{"parameters": {}, "metadata": {}, "results": {"y": 1}}, "oops"],
    ],
)
def test_a_malformed_result_raises_and_stores_nothing(nb, make_rc, bad):
    with pytest.raises(ResultsStructureException, match="results dict"):
        nb.addResult([make_rc({"x": 1}, {"y": 1}), bad])
    assert nb.numberOfResults() == 0


def test_a_malformed_leaf_deep_inside_stores_nothing(nb, make_rc):
    nested = make_rc({"x": 1}, [make_rc({"x": 1}, {"y": 1}), make_rc({"x": 1}, [{"results": {}}])])
    with pytest.raises(ResultsStructureException):
        nb.addResult(nested)
    assert nb.numberOfResults() == 0


def test_dataframe_drops_failed_runs_unless_asked(nb, make_rc):
    nb.addResult([make_rc({"x": 1}, {"y": 1}), make_rc({"x": 2}, ok=False)])
    assert nb.dataframe()["x"].tolist() == [1]
    assert nb.dataframe(only_successful=False)["x"].tolist() == [1, 2]


def test_reading_a_tagged_set(nb, make_rc):
    nb.addResultSet("a")
    nb.addResult([make_rc({"x": 1}, {"y": 1}), make_rc({"x": 2}, {"y": 2})])
    nb.addResultSet("b")
    assert nb.dataframe(tag="a")["y"].tolist() == [1, 2]
    assert len(nb.results(tag="a")) == 2
    assert nb.results() == []
    assert nb.dataframeFor({"x": [2]}, tag="a")["y"].tolist() == [2]
    assert [rc[Experiment.RESULTS] for rc in nb.resultsFor({"x": 1}, tag="a")] == [{"y": 1}]


def test_dataframe_for_a_list_of_values(nb, make_rc):
    nb.addResult([make_rc({"x": x}, {"y": x * x}, ok=(x != 2)) for x in range(5)])
    assert nb.dataframeFor({"x": [1, 2, 3]})["y"].tolist() == [1, 9]
    assert nb.dataframeFor({"x": [1, 2, 3]}, only_successful=False)["x"].tolist() == [1, 2, 3]


def test_context_manager_commits_on_exit():
    with CountingNotebook() as nb:
        pass
    assert nb.commits == 1


def test_context_manager_commits_when_the_block_raises(make_rc):
    with pytest.raises(RuntimeError, match="^stop$"):
        with CountingNotebook() as nb:
            nb.addResult(make_rc({"x": 1}, {"y": 1}))
            raise RuntimeError("stop")
    assert nb.commits == 1
    assert nb.numberOfResults() == 1


# ---- pending results ------------------------------------------------------------------------------------


def test_pending_results_in_the_current_or_a_tagged_set(nb):
    nb.addResultSet("a")
    nb.addPendingResult({"x": 1}, "j1")
    nb.addPendingResult({"x": 2}, "j2", tag=LabNotebook.DEFAULT_RESULTSET)
    assert nb.pendingResults() == ["j1"]
    assert nb.pendingResults(LabNotebook.DEFAULT_RESULTSET) == ["j2"]
    assert nb.numberOfPendingResults() == 1
    assert sorted(nb.allPendingResults()) == ["j1", "j2"]
    assert nb.numberOfAllPendingResults() == 2
    assert nb.pendingResultParameters("j2") == {"x": 2}
    assert not nb.ready() and not nb.ready(LabNotebook.DEFAULT_RESULTSET)


def test_a_job_id_pending_in_another_set_is_refused(nb):
    nb.addPendingResult({"x": 1}, "j1")
    nb.addResultSet("a")
    with pytest.raises(PendingResultException, match=LabNotebook.DEFAULT_RESULTSET) as info:
        nb.addPendingResult({"x": 2}, "j1")
    assert info.value.jobid() == "j1"
    assert nb.numberOfAllPendingResults() == 1


def test_resolve_adds_the_result_to_the_set_holding_the_job(nb, make_rc):
    nb.addResultSet("a")
    nb.addPendingResult({"x": 1}, "j1")
    nb.addResultSet("b")
    nb.resolvePendingResult(make_rc({"x": 1}, {"y": 10}), "j1")
    assert nb.numberOfResults("a") == 1 and nb.numberOfResults("b") == 0
    assert nb.dataframe(tag="a")["y"].tolist() == [10]
    assert nb.ready("a") and nb.numberOfAllPendingResults() == 0


def test_resolve_flattens_a_results_list(nb, make_rc):
    nb.addPendingResult({"x": 1}, "j1")
    rc = make_rc({"x": 1}, [make_rc({"x": 1}, {"y": i}) for i in range(3)])
    nb.resolvePendingResult(rc, "j1")
    assert nb.numberOfResults() == 3 and nb.ready()


def test_resolve_an_unknown_job_raises_and_stores_nothing(nb, make_rc):
    with pytest.raises(PendingResultException, match="'ghost'"):
        nb.resolvePendingResult(make_rc({"x": 1}, {"y": 1}), "ghost")
    assert nb.numberOfResults() == 0


def test_cancel_records_a_failed_result_in_the_set_holding_the_job(nb):
    nb.addResultSet("a")
    nb.addPendingResult({"x": 3}, "j1")
    nb.select(LabNotebook.DEFAULT_RESULTSET)
    nb.cancelPendingResult("j1")
    assert nb.ready("a")
    df = nb.dataframe(tag="a", only_successful=False)
    assert df["x"].tolist() == [3]
    assert df[Experiment.STATUS].tolist() == [False]
    assert f"{CancelledException.__name__}: job j1 was cancelled" in df[Experiment.EXCEPTION].iloc[0]
    assert len(nb.dataframe(tag="a")) == 0


def test_cancel_an_unknown_job_raises(nb):
    with pytest.raises(PendingResultException):
        nb.cancelPendingResult("ghost")
    with pytest.raises(PendingResultException):
        nb.pendingResultParameters("ghost")


def test_ready_fraction(nb, make_rc):
    assert nb.readyFraction() == 1.0
    for j in range(4):
        nb.addPendingResult({"x": j}, f"j{j}")
    assert nb.readyFraction() == 0.0
    nb.resolvePendingResult(make_rc({"x": 0}, {"y": 0}), "j0")
    assert nb.readyFraction() == 0.25
    nb.cancelPendingResult("j1")
    assert nb.readyFraction() == 0.5
    nb.addResultSet("other")
    assert nb.readyFraction() == 1.0
    assert nb.readyFraction(LabNotebook.DEFAULT_RESULTSET) == 0.5


# ---- locking ------------------------------------------------------------------------------------------------


def test_finish_locks_every_set_and_the_notebook(nb, make_rc):
    nb.addResult(make_rc({"x": 1}, {"y": 1}))
    nb.addResultSet("a")
    nb.finish()
    assert nb.isLocked()
    assert all(nb.resultSet(t).isLocked() for t in nb.resultSets())
    attempts = [
        lambda: nb.addResult(make_rc({"x": 2}, {"y": 2})),
        lambda: nb.addResultSet("b"),
        lambda: nb.deleteResultSet("a"),
        lambda: nb.setDescription("no"),
        lambda: nb.addPendingResult({"x": 3}, "j"),
    ]
    for attempt in attempts:
        with pytest.raises(LabNotebookLockedException, match="locked"):
            attempt()
    assert nb.resultSets() == [LabNotebook.DEFAULT_RESULTSET, "a"]
    assert nb.dataframe(tag=LabNotebook.DEFAULT_RESULTSET)["y"].tolist() == [1]


def test_a_locked_notebook_can_still_select_and_read(nb, make_rc):
    nb.addResult(make_rc({"x": 1}, {"y": 1}))
    nb.addResultSet("a")
    nb.finish()
    nb.select(LabNotebook.DEFAULT_RESULTSET)
    assert nb.numberOfResults() == 1


def test_finish_cancels_pending_results(nb):
    nb.addPendingResult({"x": 1}, "j1")
    nb.finish()
    assert nb.numberOfAllPendingResults() == 0
    assert nb.dataframe(only_successful=False)[Experiment.STATUS].tolist() == [False]


def test_finish_commits_unless_told_not_to():
    nb = CountingNotebook()
    nb.finish(commit=False)
    assert nb.commits == 0
    nb2 = CountingNotebook()
    nb2.finish()
    assert nb2.commits == 1


def test_a_locked_result_set_in_an_unlocked_notebook_refuses_results(nb, make_rc):
    nb.addResultSet("done")
    nb.addResult(make_rc({"x": 1}, {"y": 1}))
    nb.current().finish()
    assert not nb.isLocked()
    with pytest.raises(ResultSetLockedException):
        nb.addResult(make_rc({"x": 2}, {"y": 2}))
    with pytest.raises(ResultSetLockedException):
        nb.addPendingResult({"x": 3}, "j")
    assert nb.numberOfResults() == 1
    nb.addResultSet("more")
    nb.addResult(make_rc({"x": 2}, {"y": 2}))
    assert nb.numberOfResults() == 1
