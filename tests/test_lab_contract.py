"""The lab contract, checked once for every lab (Lab, ParallelLab, ClusterLab).

Modelled on CPython's ``test_concurrent_futures`` (``create_executor_tests``):
the behaviour every lab shares is written once, in :class:`LabContract`, and a
test class per lab supplies how to make one (``make``) and how to wait for its
results (``finish``: ClusterLab's runExperiment only submits). ParallelLab runs
on a real local cluster and ClusterLab on a real controller and engines, each
started once for the module and stopped (by PID) at its end.

What is checked: every point of a sweep gives exactly one row; an experiment's
failure is a failed row, never a stopped sweep; resume runs only what is
missing; commits come at the promised cadence and when the sweep ends; a real
SIGINT mid-sweep keeps (commits) what finished; the progress bar counts every
point; rows come in the design's order whatever order the points finished in.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterhub import HubProcesses, running_hub
from conftest_parallel import Logged, RecordingNotebook, Square, still_running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab.designs import PointwiseDesign
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.lab import Lab
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.localcluster import LocalCluster
from epyclab.notebooks.labnotebook import LabNotebook

# Sweeps on engines cost a fraction of a second each: fewer examples there.
SLOW = settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


class LateFirst(Experiment):
    """y = x; point x sleeps longer the earlier it is, so on engines later points finish first."""

    def __init__(self, n: int, step: float = 0.004) -> None:
        super().__init__()
        self.n = n
        self.step = step

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        import time

        time.sleep((self.n - params["x"]) * self.step)
        return {"y": params["x"]}


class Counting(RecordingNotebook):
    """A recording notebook that also counts pending results, and can send this process a real SIGINT."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.interrupt_at = interrupt_at
        self.held_at_commit: list[int] = []
        super().__init__()

    def held(self) -> int:
        return self.numberOfResults() + self.numberOfPendingResults()

    def _maybe_interrupt(self) -> None:
        if self.interrupt_at is not None and self.held() >= self.interrupt_at:
            self.interrupt_at = None
            # A real Ctrl-C: the signal handler raises KeyboardInterrupt in the main thread.
            os.kill(os.getpid(), signal.SIGINT)

    def addResult(self, rc: Any, tag: str | None = None) -> None:
        super().addResult(rc, tag)
        self._maybe_interrupt()

    def addPendingResult(self, params: Any, jobid: str, tag: str | None = None) -> None:
        super().addPendingResult(params, jobid, tag)
        self._maybe_interrupt()

    def commit(self) -> None:
        super().commit()
        self.held_at_commit.append(self.held())


# ---- the labs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(2, str(tmp_path_factory.mktemp("parallel-profile")))
    local.start()
    procs = local.processes()
    yield local
    local.stop()
    assert still_running(procs) == []


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcesses]:
    with running_hub(tmp_path_factory.mktemp("cluster-profile")) as procs:
        yield procs


class LabContract:
    """The shared behaviour; subclasses say how to make their lab and wait for it."""

    @pytest.fixture(autouse=True)
    def _setup(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request = request
        self.tmp = tmp_path

    def make(self, nb: LabNotebook, **kwargs: Any) -> Lab:
        raise NotImplementedError

    def finish(self, lab: Lab) -> None:
        """Wait until every submitted point has its result (only ClusterLab has any to wait for)."""

    def sweep(self, lab: Lab, e: Experiment, **kwargs: Any) -> None:
        lab.runExperiment(e, progress=False, **kwargs)
        self.finish(lab)

    # ---- every point exactly once, failures as data, design order ----------------------

    def check_every_point_once(self, n: int, failing: set[int]) -> None:
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(n)
        self.sweep(lab, Square(fail_at=tuple(failing)))
        df = nb.dataframe(only_successful=False)
        if n == 0:
            assert len(df) == 0 and nb.numberOfPendingResults() == 0
            return
        assert df["x"].tolist() == list(range(n))  # every point once, in the design's order
        ok = df[Experiment.STATUS].astype(bool).tolist()
        assert ok == [x not in failing for x in range(n)]
        good = df[df[Experiment.STATUS].astype(bool)]
        if len(good):
            assert (good["y"] == good["x"] ** 2).all()
        for text in df.loc[~df[Experiment.STATUS].astype(bool), Experiment.EXCEPTION]:
            assert text.startswith("ValueError: x=") and text.endswith(" is bad")
        assert nb.numberOfPendingResults() == 0

    def test_no_points_run_nothing(self) -> None:
        nb = Counting()
        lab = self.make(nb)
        lab["x"] = []
        self.sweep(lab, Square())
        assert nb.numberOfResults() == 0 and nb.numberOfPendingResults() == 0

    def test_rows_come_in_the_design_order_whatever_order_points_finish_in(self) -> None:
        n = 24
        nb = LabNotebook()
        lab = self.make(nb, design=PointwiseDesign())
        lab["x"] = list(range(n))
        lab["label"] = [f"p{x}" for x in range(n)]
        self.sweep(lab, LateFirst(n))
        df = nb.dataframe()
        assert df["x"].tolist() == list(range(n))
        assert df["label"].tolist() == [f"p{x}" for x in range(n)]

    # ---- resume -------------------------------------------------------------------------

    def test_resume_runs_only_the_points_without_a_successful_result(self) -> None:
        logdir = self.tmp / "runs"
        logdir.mkdir()
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(12)
        self.sweep(lab, Logged(str(logdir), fail_at=(3, 7)))
        for f in logdir.iterdir():
            f.unlink()
        self.sweep(lab, Logged(str(logdir)), resume=True)
        assert sorted(int(f.name) for f in logdir.iterdir()) == [3, 7]
        df = nb.dataframe(only_successful=True)
        assert sorted(df["x"]) == list(range(12))
        assert len(nb.dataframe(only_successful=False)) == 14  # the two failures are kept as rows

    # ---- commits ------------------------------------------------------------------------

    def test_commits_come_every_commitEvery_points_and_at_the_end(self) -> None:
        n, every = 30, 7
        nb = Counting()
        lab = self.make(nb, commitEvery=every, commitInterval=3600.0)
        lab["x"] = range(n)
        lab.runExperiment(Square(), progress=False)
        commits = nb.held_at_commit
        assert commits[-1] == n
        steps = [b - a for a, b in zip([0] + commits, commits)]
        # Never more than commitEvery points wait for a commit; every full batch is committed.
        assert all(0 <= s <= every for s in steps), commits
        assert len([s for s in steps if s > 0]) >= -(-n // every)
        self.finish(lab)

    # ---- Ctrl-C -----------------------------------------------------------------------

    def test_a_real_sigint_mid_sweep_keeps_what_finished(self) -> None:
        n, at = 40, 10
        nb = Counting(interrupt_at=at)
        lab = self.make(nb, commitEvery=1000, commitInterval=3600.0)
        lab["x"] = range(n)
        with pytest.raises(KeyboardInterrupt):
            lab.runExperiment(LateFirst(n, step=0.002), progress=False)
        held = nb.held()
        assert at <= held <= n
        # What finished (or was submitted) was committed on the way out.
        assert nb.held_at_commit[-1] == held
        self.finish(lab)
        df = nb.dataframe()
        xs = df["x"].tolist()
        assert len(xs) == len(set(xs)) == held
        # The rest runs on resume, each point once.
        lab.runExperiment(LateFirst(n, step=0.0), resume=True, progress=False)
        self.finish(lab)
        xs = nb.dataframe()["x"].tolist()
        assert sorted(xs) == list(range(n))
        # Each sweep's rows in its design's order: the interrupted one, then the resumed one.
        assert xs[:held] == sorted(xs[:held]) and xs[held:] == sorted(xs[held:])

    # ---- progress ------------------------------------------------------------------------

    def test_the_progress_bar_counts_every_point(self, capsys: pytest.CaptureFixture[str]) -> None:
        n = 25
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(n)
        lab.runExperiment(Square(fail_at=(2,)), progress=True)
        err = capsys.readouterr().err
        assert f"{n}/{n}" in err
        self.finish(lab)


def _sizes_and_failures() -> st.SearchStrategy[tuple[int, set[int]]]:
    return st.integers(min_value=0, max_value=60).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(min_value=0, max_value=max(0, n - 1)), max_size=n)
                            if n else st.just(set()))
    )


class TestLab(LabContract):
    def make(self, nb: LabNotebook, **kwargs: Any) -> Lab:
        return Lab(nb, **kwargs)

    @FAST
    @given(_sizes_and_failures())
    def test_every_point_gives_exactly_one_row_and_failures_are_rows(self, case: tuple[int, set[int]]) -> None:
        self.check_every_point_once(*case)


class TestParallelLab(LabContract):
    @pytest.fixture(autouse=True)
    def _cluster(self, local_cluster: LocalCluster) -> None:
        self.client = local_cluster.client

    def make(self, nb: LabNotebook, **kwargs: Any) -> Lab:
        return ParallelLab(nb, client=self.client, **kwargs)

    @SLOW
    @given(_sizes_and_failures())
    def test_every_point_gives_exactly_one_row_and_failures_are_rows(self, case: tuple[int, set[int]]) -> None:
        self.check_every_point_once(*case)


# ParallelLab on each registered transport and on executors: tests/test_transport_contract.py (generated).


class TestClusterLab(LabContract):
    @pytest.fixture(autouse=True)
    def _hub(self, hub: HubProcesses) -> None:
        self.hub = hub
        self.labs: list[ClusterLab] = []
        yield
        for lab in self.labs:
            lab.close()

    def make(self, nb: LabNotebook, **kwargs: Any) -> Lab:
        lab = ClusterLab(nb, profile_dir=str(self.hub.profile_dir), **kwargs)
        self.labs.append(lab)
        return lab

    def finish(self, lab: Lab) -> None:
        assert isinstance(lab, ClusterLab)
        assert lab.wait(timeout=120, progress=False)

    @SLOW
    @given(_sizes_and_failures())
    def test_every_point_gives_exactly_one_row_and_failures_are_rows(self, case: tuple[int, set[int]]) -> None:
        self.check_every_point_once(*case)


# ---- a value no format can store (Lab and ParallelLab; ClusterLab collects through its collector) ----


class Unstorable(Experiment):
    """y = x, except a None at x == 5 and a dict (which no format stores) at x == 17."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        x = params["x"]
        if x == 5:
            return {"y": None}
        if x == 17:
            return {"y": {"a": 1}}
        return {"y": float(x)}


@pytest.mark.parametrize("kind", ["Lab", "ParallelLab"])
def test_an_unstorable_value_is_a_failed_row_and_the_sweep_goes_on(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from epyclab.notebooks.hdf5 import HDF5LabNotebook

    nb = HDF5LabNotebook(str(tmp_path / "values.h5"), create=True)
    if kind == "Lab":
        lab: Lab = Lab(nb)
    else:
        lab = ParallelLab(nb, client=request.getfixturevalue("local_cluster").client)
    lab["x"] = range(40)
    lab.runExperiment(Unstorable(), progress=False)
    nb.commit()
    df = nb.dataframe(only_successful=False)
    assert df["x"].tolist() == list(range(40))
    status = df[Experiment.STATUS].astype(bool)
    bad = df[df["x"] == 17].iloc[0]
    assert not bad[Experiment.STATUS]
    assert "UnstorableValueError" in bad[Experiment.EXCEPTION]
    assert "'y'" in bad[Experiment.EXCEPTION] and "dict" in bad[Experiment.EXCEPTION]
    # Its metadata is kept (which experiment, how long it ran), not replaced.
    assert bad[Experiment.EXPERIMENT].endswith("Unstorable")
    assert bad[Experiment.ELAPSED_TIME] > 0
    others = df[~df["x"].isin([5, 17])]
    assert status[others.index].all()
    assert (others["y"] == others["x"]).all()
    none_row = df[df["x"] == 5].iloc[0]
    # None is a missing cell where the table of kinds says so, otherwise a failed row naming the key.
    assert none_row[Experiment.STATUS] or "'y'" in none_row[Experiment.EXCEPTION]
    nb.close()
