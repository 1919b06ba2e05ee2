"""The sequential Lab: parameter space, sweeps, resuming, committing, createWith."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from epyclab.designs import FactorialDesign, PointwiseDesign
from epyclab.errors import ResultSetLockedException
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab
from epyclab.notebooks.labnotebook import LabNotebook

# Commit only when the count says so: a slow moment on a busy machine must not add commits.
NEVER = 3600.0


class CountingNotebook(LabNotebook):
    """An in-memory notebook that records how many results it held at each commit."""

    def __init__(self, *args, **kwargs) -> None:
        self.commits: list[int] = []
        super().__init__(*args, **kwargs)

    def commit(self) -> None:
        super().commit()
        self.commits.append(self.numberOfResults())


class Square(Experiment):
    def __init__(self) -> None:
        super().__init__()
        self.runs: list[dict] = []

    def do(self, params):
        self.runs.append(dict(params))
        return {"y": params["x"] ** 2}


class FailsAt(Square):
    """Fails at the points where x is in ``bad``."""

    def __init__(self, bad) -> None:
        super().__init__()
        self.bad = set(bad)

    def do(self, params):
        res = super().do(params)
        if params["x"] in self.bad:
            raise ValueError(f"x={params['x']} is bad")
        return res


class InterruptedAt(Square):
    """Raises KeyboardInterrupt (as Ctrl-C would) at x == ``at``."""

    def __init__(self, at) -> None:
        super().__init__()
        self.at = at

    def do(self, params):
        if params["x"] == self.at:
            raise KeyboardInterrupt
        return super().do(params)


# ---- construction ------------------------------------------------------------------------------


def test_defaults_to_an_in_memory_notebook_and_a_factorial_design():
    lab = Lab()
    assert type(lab.notebook()) is LabNotebook
    assert isinstance(lab.design(), FactorialDesign)


def test_takes_a_notebook_and_a_design():
    nb, design = LabNotebook("mine"), PointwiseDesign()
    lab = Lab(nb, design=design)
    assert lab.notebook() is nb and lab.design() is design


@pytest.mark.parametrize("kwargs", [{"commitEvery": 0}, {"commitInterval": -1.0}])
def test_refuses_bad_commit_settings(kwargs):
    with pytest.raises(ValueError, match="commitEvery"):
        Lab(**kwargs)


def test_recreate_names_a_class_that_rebuilds_the_lab():
    design = PointwiseDesign()
    classname, kwargs = Lab(design=design).recreate()
    module, _, name = classname.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert type(again) is Lab
    assert again.design() is design


def test_close_commits_the_notebook():
    nb = CountingNotebook()
    lab = Lab(nb)
    lab.open()
    lab.close()
    assert nb.commits == [0]


# ---- the parameter space ------------------------------------------------------------------------------


def test_a_range_is_expanded_to_a_list():
    lab = Lab()
    lab["x"] = range(3)
    assert lab["x"] == [0, 1, 2]


@pytest.mark.parametrize("value", ["abc", b"abc", 5, 2.5, None, True])
def test_a_string_or_non_iterable_is_a_single_value(value):
    lab = Lab()
    lab["x"] = value
    assert lab["x"] == [value]
    assert len(lab) == 1


@pytest.mark.parametrize("value", [(1, 2), [1, 2], {1, 2}, (v for v in (1, 2)), np.array([1, 2])])
def test_any_other_iterable_is_expanded(value):
    lab = Lab()
    lab["x"] = value
    assert sorted(lab["x"]) == [1, 2]
    assert isinstance(lab["x"], list)
    assert len(lab) == 2


def test_a_numpy_range_sweeps_its_values():
    lab = Lab()
    lab["p"] = np.linspace(0.0, 1.0, 5)
    lab["x"] = 2
    lab.runExperiment(Square(), progress=False)
    df = lab.dataframe()
    assert df["p"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert (df["y"] == 4).all()


def test_the_stored_range_does_not_follow_the_original():
    values = [1, 2]
    lab = Lab()
    lab["x"] = values
    values.append(3)
    assert lab["x"] == [1, 2]


def test_add_parameter_is_the_same_as_setting_an_item():
    lab = Lab()
    lab.addParameter("x", range(2))
    assert lab["x"] == [0, 1]


def test_parameter_names_must_be_strings():
    with pytest.raises(TypeError, match="strings"):
        Lab()[1] = [1, 2]


def test_parameters_membership_and_deletion():
    lab = Lab()
    lab["x"] = range(3)
    lab["n"] = [10, 20]
    assert lab.parameters() == ["x", "n"]
    assert "x" in lab and "z" not in lab
    del lab["x"]
    assert lab.parameters() == ["n"]
    lab.deleteParameter("n")
    assert lab.parameters() == []


def test_deleting_an_absent_parameter_does_nothing():
    lab = Lab()
    lab["x"] = [1]
    del lab["absent"]
    lab.deleteParameter("absent")
    assert lab.parameters() == ["x"]


def test_delete_all_parameters():
    lab = Lab()
    lab["x"] = [1]
    lab["n"] = [2]
    lab.deleteAllParameters()
    assert lab.parameters() == [] and "x" not in lab


def test_reading_an_absent_parameter_is_a_key_error():
    with pytest.raises(KeyError, match=r"^'x'$"):
        Lab()["x"]


def test_len_is_the_number_of_points():
    lab = Lab()
    lab["x"] = range(4)
    lab["n"] = [1, 2, 3]
    lab["s"] = "fixed"
    assert len(lab) == 12


def test_experiments_pairs_the_experiment_with_every_point():
    lab = Lab()
    lab["x"] = [1, 2]
    lab["n"] = "a"
    e = Square()
    config = lab.experiments(e)
    assert all(ex is e for ex, _ in config)
    assert sorted(p["x"] for _, p in config) == [1, 2]
    assert all(p["n"] == "a" for _, p in config)


# ---- running -------------------------------------------------------------------------------------------


def test_run_experiment_runs_every_point_once():
    lab = Lab()
    lab["x"] = range(4)
    lab["n"] = [1, 2]
    e = Square()
    lab.runExperiment(e, progress=False)
    assert len(e.runs) == 8
    df = lab.dataframe()
    assert len(df) == 8
    assert (df["y"] == df["x"] ** 2).all()
    assert sorted(zip(df["x"], df["n"])) == [(x, n) for x in range(4) for n in (1, 2)]


def test_results_go_to_the_current_result_set():
    lab = Lab()
    lab.notebook().addResultSet("sweep")
    lab["x"] = range(3)
    lab.runExperiment(Square(), progress=False)
    assert lab.notebook().numberOfResults("sweep") == 3
    assert lab.notebook().numberOfResults(LabNotebook.DEFAULT_RESULTSET) == 0


def test_a_failing_point_is_recorded_and_the_sweep_goes_on():
    lab = Lab()
    lab["x"] = range(5)
    lab.runExperiment(FailsAt({1, 3}), progress=False)
    assert lab.dataframe()["x"].tolist() == [0, 2, 4]
    everything = lab.dataframe(only_successful=False)
    assert everything["x"].tolist() == [0, 1, 2, 3, 4]
    failed = everything[~everything[Experiment.STATUS]]
    assert failed["x"].tolist() == [1, 3]
    assert failed[Experiment.EXCEPTION].tolist() == ["ValueError: x=1 is bad", "ValueError: x=3 is bad"]


class ReturnsBadly(Experiment):
    """do() returns something no notebook can store, at x == 1 only."""

    def __init__(self, bad) -> None:
        super().__init__()
        self.bad = bad

    def do(self, params):
        return self.bad if params["x"] == 1 else {"y": params["x"]}


@pytest.mark.parametrize(
    "bad",
    [7, {2: "non-string name"}, [{"parameters": {}, "metadata": {}, "results": ["not a results dict"]}]],
)
def test_a_point_returning_a_bad_structure_is_a_failed_row_and_the_sweep_goes_on(bad):
    lab = Lab()
    lab["x"] = range(3)
    lab.runExperiment(ReturnsBadly(bad), progress=False)
    df = lab.dataframe(only_successful=False)
    assert df["x"].tolist() == [0, 1, 2]
    assert df[Experiment.STATUS].tolist() == [True, False, True]
    assert "ReturnsBadly.do()" in df[Experiment.EXCEPTION].iloc[1]
    assert "ResultsStructureException" in df[Experiment.EXCEPTION].iloc[1]


def test_results_are_the_results_dicts_of_the_current_set():
    lab = Lab()
    lab["x"] = [2, 3]
    lab.runExperiment(Square(), progress=False)
    assert [rc[Experiment.RESULTS] for rc in lab.results()] == [{"y": 4}, {"y": 9}]


def test_a_lab_without_parameters_runs_nothing():
    # As in epyc: an empty parameter space has no points.
    ran = []

    class Constant(Experiment):
        def do(self, params):
            ran.append(params)
            return {"y": 1}

    lab = Lab()
    assert len(lab) == 0
    lab.runExperiment(Constant(), progress=False)
    assert ran == []
    assert lab.notebook().numberOfResults() == 0


def test_a_sweep_into_a_locked_result_set_is_refused():
    lab = Lab()
    lab["x"] = range(3)
    lab.notebook().current().finish()
    with pytest.raises(ResultSetLockedException):
        lab.runExperiment(Square(), progress=False)
    assert lab.notebook().numberOfResults() == 0


def test_ready_and_update_results_of_a_sequential_lab():
    lab = Lab()
    lab["x"] = range(3)
    lab.runExperiment(Square(), progress=False)
    assert lab.updateResults() == 0
    assert lab.ready() and lab.readyFraction() == 1.0


def test_ready_fraction_counts_pending_results():
    lab = Lab()
    lab["x"] = range(3)
    lab.runExperiment(Square(), progress=False)
    lab.notebook().addPendingResult({"x": 9}, "j1")
    assert not lab.ready()
    assert lab.readyFraction() == 0.75
    assert lab.ready(LabNotebook.DEFAULT_RESULTSET) is False


# ---- resuming ----------------------------------------------------------------------------------------------


def test_resume_reruns_only_the_failed_points():
    lab = Lab()
    lab["x"] = range(5)
    lab.runExperiment(FailsAt({1, 3}), progress=False)
    again = Square()
    lab.runExperiment(again, resume=True, progress=False)
    assert sorted(p["x"] for p in again.runs) == [1, 3]
    assert sorted(lab.dataframe()["x"]) == [0, 1, 2, 3, 4]


def test_resume_skips_pending_points():
    lab = Lab()
    lab["x"] = range(4)
    lab.notebook().addPendingResult({"x": 2}, "job-2")
    e = Square()
    lab.runExperiment(e, resume=True, progress=False)
    assert sorted(p["x"] for p in e.runs) == [0, 1, 3]


def test_resume_of_a_complete_sweep_runs_nothing():
    lab = Lab()
    lab["x"] = np.arange(3)
    lab["s"] = ["a", "b"]
    lab.runExperiment(Square(), progress=False)
    e = Square()
    lab.runExperiment(e, resume=True, progress=False)
    assert e.runs == []
    assert lab.notebook().numberOfResults() == 6


def test_resume_runs_points_added_to_the_space():
    lab = Lab()
    lab["x"] = range(3)
    lab.runExperiment(Square(), progress=False)
    lab["x"] = range(5)
    e = Square()
    lab.runExperiment(e, resume=True, progress=False)
    assert sorted(p["x"] for p in e.runs) == [3, 4]


def test_resume_looks_only_at_the_current_result_set():
    lab = Lab()
    lab["x"] = range(3)
    lab.runExperiment(Square(), progress=False)
    lab.notebook().addResultSet("fresh")
    e = Square()
    lab.runExperiment(e, resume=True, progress=False)
    assert len(e.runs) == 3


def test_without_resume_every_point_runs_again():
    lab = Lab()
    lab["x"] = range(3)
    lab.runExperiment(Square(), progress=False)
    e = Square()
    lab.runExperiment(e, progress=False)
    assert len(e.runs) == 3
    assert lab.notebook().numberOfResults() == 6


# ---- committing ---------------------------------------------------------------------------------------------


def test_commits_every_n_results_and_at_the_end():
    nb = CountingNotebook()
    lab = Lab(nb, commitEvery=3, commitInterval=NEVER)
    lab["x"] = range(10)
    lab.runExperiment(Square(), progress=False)
    assert nb.commits == [3, 6, 9, 10]


def test_commit_interval_zero_commits_after_every_result():
    nb = CountingNotebook()
    lab = Lab(nb, commitEvery=1000, commitInterval=0.0)
    lab["x"] = range(3)
    lab.runExperiment(Square(), progress=False)
    assert nb.commits[:3] == [1, 2, 3]


def test_a_small_sweep_commits_once_at_the_end():
    nb = CountingNotebook()
    lab = Lab(nb, commitInterval=NEVER)
    lab["x"] = range(5)
    lab.runExperiment(Square(), progress=False)
    assert nb.commits == [5]


def test_keyboard_interrupt_commits_what_finished_and_propagates():
    nb = CountingNotebook()
    lab = Lab(nb, commitEvery=3, commitInterval=NEVER)
    lab["x"] = range(10)
    with pytest.raises(KeyboardInterrupt):
        lab.runExperiment(InterruptedAt(4), progress=False)
    assert nb.commits == [3, 4]
    assert lab.dataframe()["x"].tolist() == [0, 1, 2, 3]


def test_a_sweep_interrupted_then_resumed_completes():
    lab = Lab(commitInterval=NEVER)
    lab["x"] = range(6)
    with pytest.raises(KeyboardInterrupt):
        lab.runExperiment(InterruptedAt(3), progress=False)
    e = Square()
    lab.runExperiment(e, resume=True, progress=False)
    assert [p["x"] for p in e.runs] == [3, 4, 5]
    assert sorted(lab.dataframe()["x"]) == list(range(6))


# ---- createWith -----------------------------------------------------------------------------------------------


def _sweep(lab: Lab) -> None:
    lab["x"] = range(3)
    lab.runExperiment(Square(), progress=False)


def test_create_with_creates_selects_and_fills_a_new_set():
    nb = CountingNotebook()
    lab = Lab(nb)
    assert lab.createWith("squares", _sweep, description="some squares") is True
    assert nb.currentTag() == "squares"
    assert nb.current().description() == "some squares"
    assert nb.numberOfResults("squares") == 3
    assert nb.commits[-1] == 3


def test_create_with_an_existing_set_selects_it_without_calling_f():
    lab = Lab()
    lab.createWith("squares", _sweep)
    lab.notebook().select(LabNotebook.DEFAULT_RESULTSET)
    called = []
    assert lab.createWith("squares", called.append) is True
    assert called == []
    assert lab.notebook().currentTag() == "squares"
    assert lab.notebook().numberOfResults() == 3


def test_create_with_clears_the_parameters_first():
    lab = Lab()
    lab["stale"] = [1, 2]
    seen = []
    lab.createWith("s", lambda lab: seen.append(lab.parameters()))
    assert seen == [[]]


def test_create_with_can_keep_the_parameters():
    lab = Lab()
    lab["x"] = [5, 6]

    def run(lab):
        lab.runExperiment(Square(), progress=False)

    lab.createWith("s", run, deleteAllParameters=False)
    assert lab.dataframe()["y"].tolist() == [25, 36]


def _fail_half_way(lab: Lab) -> None:
    _sweep(lab)
    raise RuntimeError("analysis crashed")


def test_create_with_rolls_back_a_failed_creation():
    nb = CountingNotebook()
    lab = Lab(nb)
    nb.addResultSet("before")
    with pytest.raises(RuntimeError, match="analysis crashed"):
        lab.createWith("broken", _fail_half_way)
    assert "broken" not in nb
    assert nb.currentTag() == "before"
    assert nb.commits


def test_create_with_does_not_propagate_when_told_not_to():
    lab = Lab()
    assert lab.createWith("broken", _fail_half_way, propagate=False) is False
    assert "broken" not in lab.notebook()
    assert lab.notebook().currentTag() == LabNotebook.DEFAULT_RESULTSET


def test_create_with_can_keep_the_partial_set():
    lab = Lab()
    with pytest.raises(RuntimeError, match="^analysis crashed$"):
        lab.createWith("partial", _fail_half_way, delete=False)
    assert "partial" in lab.notebook()
    assert lab.notebook().numberOfResults("partial") == 3


def test_create_with_a_failure_can_be_retried():
    lab = Lab()
    lab.createWith("s", _fail_half_way, propagate=False)
    assert lab.createWith("s", _sweep) is True
    assert lab.notebook().numberOfResults("s") == 3


def test_create_with_finish_locks_the_set_after_success():
    lab = Lab()
    lab.createWith("done", _sweep, finish=True)
    assert lab.notebook().resultSet("done").isLocked()
    assert not lab.notebook().isLocked()
    with pytest.raises(ResultSetLockedException):
        _sweep(lab)


def test_create_with_without_finish_leaves_the_set_open():
    lab = Lab()
    lab.createWith("open", _sweep)
    assert not lab.notebook().resultSet("open").isLocked()
