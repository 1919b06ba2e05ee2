"""ParallelLab's retry after an engine dies, counted: a point that kills its engine costs exactly 2 engines.

Each test runs a ParallelLab on a 2-engine local cluster of its own (the lab
replaces engines that die) and an experiment whose chosen points end their
engine every time (``os._exit``: a SIGKILL would be a death from outside),
writing the engine's pid to ``<logdir>/<x>`` first,
so the test counts how many engines each point took down. The death policy
(Retries = 1, see epyclab.labs.transports.deaths) is the promise: such a point is run on a second engine once (alone in
its task), then recorded as a failed row whose exception says how many times
its engines died, with no traceback (there is none: the process vanished);
every other point gets its result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest_parallel import RecordingNotebook, still_running

from epyclab.experiment import Experiment
from epyclab.labs.parallel import ParallelLab

STATUS = Experiment.STATUS


class DiesAt(Experiment):
    """y = x, but the engine running a point in ``at`` dies on the spot (after noting its pid)."""

    def __init__(self, logdir: str, at: tuple[int, ...]) -> None:
        super().__init__()
        self.logdir = logdir
        self.at = set(at)

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] in self.at:
            with open(os.path.join(self.logdir, str(params["x"])), "a") as f:
                f.write(f"{os.getpid()}\n")
            os._exit(70)
        return {"y": params["x"]}


@pytest.fixture(autouse=True)
def engines_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # The points must die on engines (an EngineError): no forked copy of this process runs them while the
    # engines register (the test session may well be judged safe to fork: see cleanworkers.fork_safe).
    monkeypatch.setattr(ParallelLab, "UseInterim", False)


def sweep(tmp_path: Path, points: int, at: tuple[int, ...]) -> tuple[Any, dict[str, int]]:
    logdir = tmp_path / "deaths"
    logdir.mkdir()
    seen: dict[int, dict[str, Any]] = {}
    lab: ParallelLab

    def look() -> None:
        if lab.localCluster is not None:
            for p in lab.localCluster.processes():
                seen[int(p["pid"])] = p

    nb = RecordingNotebook(on_add=look)
    lab = ParallelLab(nb, cores=2, profile_dir=str(tmp_path / "profile"), backend="ipyparallel")
    lab["x"] = range(points)
    try:
        lab.runExperiment(DiesAt(str(logdir), at), progress=False)
        df = nb.dataframe(only_successful=False)
        stats = dict(lab.lastSweep)
    finally:
        lab.shutdown()
    assert still_running(list(seen.values())) == []
    deaths = {x: len(set((logdir / str(x)).read_text().split())) for x in at}
    return df, {"deaths": deaths, **stats}


def check(df: Any, points: int, at: tuple[int, ...]) -> None:
    assert df["x"].tolist() == list(range(points))
    failed = df[~df[STATUS].astype(bool)]
    assert failed["x"].tolist() == sorted(at)
    for message in failed[Experiment.EXCEPTION]:
        # The stored form of the exception: "<type>: <message>", the message saying how many engines died.
        kind, text = message.split(": ", 1)
        assert kind.endswith("EngineError"), message
        assert text.startswith("the engines running this point died 2 times (last: "), message
    assert (failed[Experiment.TRACEBACK] == "").all()
    ok = df[df[STATUS].astype(bool)]
    assert (ok["y"] == ok["x"]).all()


def test_points_alone_in_their_tasks_each_cost_two_engines_then_fail(tmp_path: Path) -> None:
    # 4 points on 2 engines: one point per task from the start.
    points = 4
    df, stats = sweep(tmp_path, points, at=(1, 2))
    check(df, points, (1, 2))
    assert stats["deaths"] == {1: 2, 2: 2}
    assert stats["resubmitted"] == 2  # each point resubmitted once, after its first engine died
    assert stats["most_run_by_a_task"] == 1


def test_a_point_in_a_chunk_costs_two_engines_counting_its_chunks_death(tmp_path: Path) -> None:
    # 40 cheap points on 2 engines: the first chunks hold several points, x=0 among them.
    df, stats = sweep(tmp_path, 40, at=(0,))
    check(df, 40, (0,))
    assert stats["deaths"] == {0: 2}
    assert stats["resubmitted"] >= 1
