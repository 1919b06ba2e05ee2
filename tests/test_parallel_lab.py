"""ParallelLab sweeps on real engines: results, failures, commits, resume, chunking, progress.

One local cluster (2 engines, its own profile directory) serves every test
here, given to the labs as a client; the fixture stops it and checks that its
processes are gone. Start/stop and crash behaviour is in test_parallel_processes.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_parallel import EscapesAt, Logged, RecordingNotebook, Sleepy, Square, still_running

from epyclab.combinators import RepeatedExperiment
from epyclab.errors import ClusterConnectionError, ExperimentSerializationError
from epyclab.experiment import Experiment
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.ipyparallelclient import ClientTransport
from epyclab.labs.transports.localcluster import LocalCluster, process_alive
from epyclab.labs.transports.scheduler import ChunkSizer
from epyclab.notebooks.labnotebook import LabNotebook

# Commit only when the count says so: a slow moment on a busy machine must not add commits.
NEVER = 3600.0
STATUS = Experiment.STATUS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(2, str(tmp_path_factory.mktemp("profile")))
    local.start()
    procs = local.processes()
    yield local
    local.stop()
    assert still_running(procs) == []


def lab_on(cluster: LocalCluster, nb: LabNotebook | None = None, **kwargs: Any) -> ParallelLab:
    return ParallelLab(nb if nb is not None else LabNotebook(), client=cluster.client, **kwargs)


def test_every_point_gets_exactly_one_result(cluster: LocalCluster) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(300)
    lab.runExperiment(Square(fail_at=(3, 150)), progress=False)
    df = lab.dataframe(only_successful=False)
    assert sorted(df["x"]) == list(range(300))
    ok = df[df[STATUS]]
    assert (ok["y"] == ok["x"] ** 2).all()
    failed = df[~df[STATUS]].set_index("x")
    assert sorted(failed.index) == [3, 150]
    assert failed.loc[3, Experiment.EXCEPTION] == "ValueError: x=3 is bad"
    assert "x=3 is bad" in failed.loc[3, Experiment.TRACEBACK]
    # The runs happened on the engines, not here.
    assert set(df[Experiment.PID]) <= {int(p) for p in cluster.client[:].apply_sync(os.getpid)}


def test_a_failing_point_is_run_once_and_never_retried(cluster: LocalCluster, tmp_path: Path) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(40)
    lab.runExperiment(Logged(str(tmp_path), fail_at=tuple(range(0, 40, 3))), progress=False)
    runs = {int(f.name): len(f.read_text().splitlines()) for f in tmp_path.iterdir()}
    assert runs == {x: 1 for x in range(40)}
    df = lab.dataframe(only_successful=False)
    assert len(df) == 40
    assert sorted(df[~df[STATUS]]["x"]) == list(range(0, 40, 3))


def test_a_sweep_where_everything_fails_ends(cluster: LocalCluster) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(25)
    lab.runExperiment(Square(fail_at=tuple(range(25))), progress=False)
    df = lab.dataframe(only_successful=False)
    assert len(df) == 25
    assert not df[STATUS].any()


def test_results_are_committed_as_they_arrive(cluster: LocalCluster) -> None:
    nb = RecordingNotebook()
    lab = lab_on(cluster, nb, commitEvery=10, commitInterval=NEVER)
    lab["x"] = range(100)
    lab.runExperiment(Square(), progress=False)
    assert nb.commits[-1] == 100
    # A commit every 10 results while the sweep ran, not one at the end.
    assert [c for c in nb.commits if c < 100] == list(range(10, 100, 10))


def test_resume_runs_only_the_points_without_a_result(cluster: LocalCluster, tmp_path: Path) -> None:
    nb = LabNotebook()
    lab = lab_on(cluster, nb)
    lab["x"] = range(10)
    lab.runExperiment(Logged(str(tmp_path), fail_at=(4,)), progress=False)
    lab["x"] = range(20)
    lab.runExperiment(Logged(str(tmp_path)), resume=True, progress=False)
    runs = {int(f.name): len(f.read_text().splitlines()) for f in tmp_path.iterdir()}
    # The failed point 4 is run again; the successful ones are not.
    assert runs == {x: 2 if x == 4 else 1 for x in range(20)}
    df = nb.dataframe(only_successful=True)
    assert sorted(df["x"]) == list(range(20))


def test_cheap_points_are_batched(cluster: LocalCluster) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(400)
    lab.runExperiment(Square(), progress=False)
    assert lab.lastSweep["largest_chunk"] == 400 // (4 * 2)
    assert lab.lastSweep["most_run_by_a_task"] > 1
    assert len(lab.dataframe()) == 400


def test_expensive_points_are_not_held_back_in_chunks(cluster: LocalCluster) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(24)
    lab.runExperiment(Sleepy(0.65), progress=False)
    # The first chunks hold 3 points (24 // (4 * 2)), but a task on engines starts no point after 1.2 s (120
    # times an engine's 10 ms a task: see ChunkSizer.expect_overhead), so it runs two of these at most.
    assert ChunkSizer.OverheadRatio * ClientTransport.task_seconds == pytest.approx(1.2)
    assert lab.lastSweep["largest_chunk"] == 3
    assert lab.lastSweep["most_run_by_a_task"] <= 2
    df = lab.dataframe()
    assert sorted(df["y"]) == list(range(24))
    assert df[Experiment.PID].nunique() == 2


def test_progress_bar_shows_done_and_failed(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(20)
    lab.runExperiment(Square(fail_at=(5,)), progress=True)
    err = capsys.readouterr().err
    assert "ParallelLab" in err
    assert "20/20" in err
    assert "failed=1" in err


def test_no_progress_bar_when_turned_off(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(20)
    lab.runExperiment(Square(), progress=False)
    assert "ParallelLab" not in capsys.readouterr().err


def test_experiment_defined_interactively_works_on_engines(cluster: LocalCluster) -> None:
    # As in Jupyter: the class, its helper and its constant live in a namespace no engine can import.
    namespace: dict[str, Any] = {"__name__": "an_interactive_session"}
    exec(
        "from epyclab.experiment import Experiment\n"
        "OFFSET = 1000\n"
        "def shifted(x):\n"
        "    return x + OFFSET\n"
        "class Shift(Experiment):\n"
        "    def do(self, params):\n"
        "        return {'y': shifted(params['x'])}\n",
        namespace,
    )
    lab = lab_on(cluster)
    lab["x"] = range(10)
    lab.runExperiment(namespace["Shift"](), progress=False)
    df = lab.dataframe(only_successful=False)
    assert df[STATUS].all()
    assert sorted(df["y"]) == list(range(1000, 1010))


def test_unserializable_experiment_is_refused_before_anything_is_submitted(cluster: LocalCluster) -> None:
    class HoldsGenerator(Experiment):
        def __init__(self) -> None:
            super().__init__()
            self.source = (i for i in range(5))

        def do(self, params: dict[str, Any]) -> dict[str, Any]:
            return {"y": next(self.source)}

    submitted = len(cluster.client.history)
    lab = lab_on(cluster)
    lab["x"] = range(5)
    with pytest.raises(ExperimentSerializationError, match=r"HoldsGenerator.*self\.source"):
        lab.runExperiment(HoldsGenerator(), progress=False)
    assert lab.notebook().numberOfResults() == 0
    assert len(cluster.client.history) == submitted


def test_a_borrowed_client_is_left_running(cluster: LocalCluster) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(10)
    lab.runExperiment(Square(), progress=False)
    assert lab.numberOfCores() == 2
    assert all(process_alive(p) for p in cluster.processes())
    assert len(set(cluster.client[:].apply_sync(os.getpid))) == 2


def test_a_task_failing_outside_the_experiment_fails_only_its_points(cluster: LocalCluster) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(80)
    # x=70 fails its whole task (late, once other tasks have worked): its chunk's points fail, once.
    lab.runExperiment(EscapesAt(at=(70,), delay=0.5), progress=False)
    df = lab.dataframe(only_successful=False)
    assert sorted(df["x"]) == list(range(80))
    failed = df[~df[STATUS]]
    assert 70 in set(failed["x"])
    assert failed[Experiment.EXCEPTION].str.contains("Escape").all()
    assert len(failed) <= 80 // (4 * 2)  # at most the points of that one chunk
    assert df[df[STATUS]]["y"].tolist() == df[df[STATUS]]["x"].tolist()


def test_when_no_task_works_the_sweep_stops_with_a_clear_error(cluster: LocalCluster) -> None:
    nb = RecordingNotebook()
    lab = lab_on(cluster, nb)
    lab["x"] = range(40)
    with pytest.raises(ClusterConnectionError, match="engines could not run epyclab's worker.*Escape"):
        lab.runExperiment(EscapesAt(at=tuple(range(40))), progress=False)
    # Nothing recorded as failed, so a later run with resume=True runs every point.
    assert nb.numberOfResults() == 0
    assert nb.commits == [0]


def test_repeated_experiments_give_a_row_per_repetition(cluster: LocalCluster) -> None:
    lab = lab_on(cluster)
    lab["x"] = range(5)
    lab.runExperiment(RepeatedExperiment(Square(), 3), progress=False)
    df = lab.dataframe()
    assert len(df) == 15
    assert sorted(df.groupby("x")[RepeatedExperiment.I].apply(sorted).tolist()) == [[0, 1, 2]] * 5
    assert (df["y"] == df["x"] ** 2).all()


def test_an_empty_sweep_commits_and_returns(cluster: LocalCluster) -> None:
    nb = RecordingNotebook()
    lab = lab_on(cluster, nb)
    lab["x"] = []
    lab.runExperiment(Square(), progress=False)
    assert nb.numberOfResults() == 0
    assert nb.commits == [0]
