"""The sequential Lab's defaults and resume keys, as a user meets them.

- by default a lab commits after every 1000 results (``Lab.CommitEvery``),
  and ``commitEvery=1`` (commit every result) is allowed;
- by default what a run printed is stored with its row, and shown once (as
  it is written), not replayed a second time;
- a sweep of one point records where it ran (provenance) as a longer one does;
- resume recognises a point whatever order its parameters were given in, and
  points holding unhashable values (lists) too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from epyclab.combinators import RepeatedExperiment
from epyclab.experiment import Experiment
from epyclab.labs import lab as lab_module
from epyclab.labs.engine.capture import OUTPUT
from epyclab.labs.lab import Lab, Submitted, point_key
from epyclab.notebooks.labnotebook import LabNotebook


class Sizes(LabNotebook):
    """Notes how many results the current set held at each commit."""

    def __init__(self) -> None:
        super().__init__("sizes")
        self.at: list[int] = []

    def commit(self) -> None:
        super().commit()
        self.at.append(self.current().numberOfResults())


class Double(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": 2 * params["x"]}


class Echo(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": 0.0 if params["x"] is None else params["x"]}


class Talks(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        print(f"working on {params['x']}")
        return {"y": params["x"]}


def test_by_default_a_lab_commits_after_every_1000_results() -> None:
    nb = Sizes()
    # A long interval, so only the count decides (the default interval is 5 s of wall time).
    lab = Lab(nb, commitInterval=3600)
    lab["x"] = range(2001)
    lab.runExperiment(Double(), progress=False)
    assert nb.at[:2] == [1000, 2000] and nb.at[-1] == 2001


def test_commit_every_1_commits_every_result_and_0_is_refused() -> None:
    nb = Sizes()
    lab = Lab(nb, commitEvery=1, commitInterval=3600)
    lab["x"] = range(3)
    lab.runExperiment(Double(), progress=False)
    assert nb.at[:3] == [1, 2, 3]
    with pytest.raises(ValueError, match="commitEvery must be at least 1"):
        Lab(LabNotebook(), commitEvery=0)


def test_a_runs_output_is_stored_with_its_row_and_shown_once(capsys: pytest.CaptureFixture[str]) -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [3]
    lab.runExperiment(Talks(), progress=False)
    assert capsys.readouterr().out.count("working on 3") == 1
    assert nb.dataframe()[OUTPUT].tolist() == ["working on 3\n"]


def test_a_sweep_of_one_point_records_its_provenance() -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [1]
    lab.runExperiment(Double(), progress=False)
    rs = nb.current()
    assert rs["epyclab.provenance.experiment.class"].endswith("Double")


def test_a_point_key_ignores_the_order_of_parameters_and_takes_lists() -> None:
    assert point_key({"b": 1, "a": [1, 2]}) == point_key({"a": [1, 2], "b": 1.0})
    assert point_key({"a": [1, 2]}) != point_key({"a": [2, 1]})
    assert len({point_key({"a": [1, 2]}), point_key({"a": [1, 2]})}) == 1
    assert point_key({"a": 1, "b": 2}, names=["b"]) == (("b", 2),)


def test_resume_skips_points_with_list_values_done_before() -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [1, 2]
    lab["v"] = [[1, 2]]  # one value: the list [1, 2] (unhashable)
    lab.runExperiment(Double(), progress=False)
    lab["x"] = [1, 2, 3]
    lab.runExperiment(Double(), resume=True, progress=False)
    assert sorted(nb.dataframe()["x"].tolist()) == [1, 2, 3]


def test_every_row_of_a_point_carries_its_sweep_and_place() -> None:
    from epyclab.order import POINT, SWEEP

    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [10, 20]
    lab.runExperiment(RepeatedExperiment(Double(), 2), progress=False)  # two rows per point
    df = nb.dataframe()
    assert len(df) == 4
    assert df[SWEEP].nunique() == 1 and df[SWEEP].notna().all()
    assert sorted(zip(df["x"], df[POINT])) == [(10, 0), (10, 0), (20, 1), (20, 1)]


def test_resume_counts_a_none_parameter_done_though_it_reads_back_as_nan(tmp_path) -> None:
    from epyclab import HDF5LabNotebook

    path = str(tmp_path / "nb.h5")
    nb = HDF5LabNotebook(path, create=True)
    lab = Lab(nb)
    lab["x"] = [1.5, None]
    lab.runExperiment(Echo(), progress=False)
    nb.close()
    nb = HDF5LabNotebook(path)
    lab = Lab(nb)
    lab["x"] = [1.5, None, 2.5]
    design = lab.experiments(Echo())
    assert [design[i][1]["x"] for i in lab.unfinishedIndices(design)] == [2.5]
    nb.close()


# ---- a lab whose dispatch hands points elsewhere (as ClusterLab's does) ----------------------------------


class Submits(Lab):
    """Hands every point to a (pretend) queue: the sweep records each as pending, under its job id."""

    def _dispatch(self, points, sweep):  # noqa: ANN001, ANN202 - the hook's signature
        for i, (_, p) in enumerate(points):
            yield i, Submitted(dict(p), f"job-{i}")


def test_points_a_lab_submits_are_pending_under_their_job_ids_and_counted_done(capsys) -> None:
    nb = LabNotebook()
    lab = Submits(nb)
    lab["x"] = [1, 2]
    lab.runExperiment(Double(), progress=True)
    rs = nb.current()
    assert sorted(rs.pendingResults()) == ["job-0", "job-1"]
    assert rs.pendingResultParameters("job-1") == {"x": 2}
    bar = capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1]
    assert "2/2" in bar and "failed=0" in bar, bar
    # A submission record is a value: equal for equal contents, usable as a key, and never changed.
    a, b = Submitted({"x": 1}, "job-0"), Submitted({"x": 1}, "job-0")
    assert a == b and len({a.jobid: a, b.jobid: b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.jobid = "job-9"  # type: ignore[misc]


class Mapped(dict):
    """A results dict of a type of its own (as one that came back from another process may be)."""


class HandsBackItsOwnType(Lab):
    def _dispatch(self, points, sweep):  # noqa: ANN001, ANN202
        for i, outcome in super()._dispatch(points, sweep):
            yield i, Mapped(outcome)


def test_a_results_dict_of_another_type_is_stored_and_counted_as_a_plain_one(capsys) -> None:
    nb = LabNotebook()
    lab = HandsBackItsOwnType(nb)
    lab["x"] = [1, 2, 3]
    lab.runExperiment(Double(), progress=True)
    assert sorted(nb.dataframe()["y"].tolist()) == [2, 4, 6]
    bar = capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1]
    assert "3/3" in bar and "failed=0" in bar, bar


class RunsElsewhere(Lab):
    """A lab whose runs happen in another process (as ParallelLab's and ClusterLab's do)."""

    _runs_elsewhere = True


def test_by_default_the_output_of_runs_elsewhere_is_replayed_here(capsys) -> None:
    nb = LabNotebook()
    lab = RunsElsewhere(nb)
    lab["x"] = [3]
    lab.runExperiment(Talks(), progress=False)
    # Here the run happens in this process too, so it shows as written, then once more replayed.
    assert capsys.readouterr().out.count("working on 3") == 2
    assert nb.dataframe()[OUTPUT].tolist() == ["working on 3\n"]


# ---- when the sweep commits ---------------------------------------------------------------------------------


class Clock:
    """The lab's clock, moved on by the experiment: each run takes ``step`` seconds of it."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        return self.now


class TakesTime(Experiment):
    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        self._clock.now += self._clock.step
        return {"y": params["x"]}


def test_by_default_a_lab_commits_once_5_seconds_have_passed(monkeypatch) -> None:
    clock = Clock(5.0)  # each run takes exactly the default interval
    monkeypatch.setattr(lab_module, "monotonic", clock)
    nb = Sizes()
    lab = Lab(nb)
    lab["x"] = [1, 2, 3]
    lab.runExperiment(TakesTime(clock), progress=False)
    assert nb.at == [1, 2, 3, 3]  # after each run, and once more at the end


class FailsToCommit(LabNotebook):
    """A notebook whose disk is full: every commit fails."""

    def commit(self) -> None:
        raise OSError(28, "No space left on device")


class Interrupted(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == 2:
            raise KeyboardInterrupt
        return {"y": params["x"]}


def test_ctrl_c_reaches_the_user_though_the_last_commit_fails(caplog) -> None:
    lab = Lab(FailsToCommit(), commitInterval=3600)
    lab["x"] = [1, 2, 3]
    with pytest.raises(KeyboardInterrupt):
        lab.runExperiment(Interrupted(), progress=False)
    assert "could not commit the results that finished before KeyboardInterrupt" in caplog.text
    # A sweep that ends well reports the failed commit itself.
    lab = Lab(FailsToCommit(), commitInterval=3600)
    lab["x"] = [1]
    with pytest.raises(OSError, match="No space left"):
        lab.runExperiment(Double(), progress=False)


# ---- resume --------------------------------------------------------------------------------------------------


def test_resume_of_a_sweep_of_one_point_runs_nothing_again() -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [7]
    lab.runExperiment(Double(), progress=False)
    lab.runExperiment(Double(), resume=True, progress=False)
    assert nb.dataframe()["x"].tolist() == [7]


class Seen(Experiment):
    def __init__(self) -> None:
        super().__init__()
        self.runs: list[Any] = []

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        self.runs.append(params["s"])
        return {"y": 1}


def test_resume_counts_an_empty_and_a_missing_text_done_after_reopening(tmp_path) -> None:
    from epyclab import HDF5LabNotebook

    path = str(tmp_path / "nb.h5")
    with HDF5LabNotebook(path, create=True) as nb:
        lab = Lab(nb)
        lab["s"] = ["", "a", None]
        lab["n"] = [1]
        lab.runExperiment(Seen(), progress=False)
    # Reopened, a missing text reads as '' (the file keeps no mark of it): both count as done, and so
    # does 'a'; only the new value runs.
    with HDF5LabNotebook(path) as nb:
        lab = Lab(nb)
        lab["s"] = [None, "", "a", "b"]
        lab["n"] = [1]
        e = Seen()
        lab.runExperiment(e, resume=True, progress=False)
    assert e.runs == ["b"]


def test_resume_counts_a_nan_parameter_done() -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [1.5, float("nan")]
    lab.runExperiment(Double(), progress=False)
    lab.runExperiment(Double(), resume=True, progress=False)
    assert len(nb.dataframe()) == 2  # NaN is no value twice over: the point is done, not run again
