"""A point that kills engines fails alone; an expensive point survives its engine's death (12.4, 14.2).

Each test runs a ParallelLab on a local cluster of its own (the lab started it,
so the lab replaces engines that die) and checks by PID that every process it
started is gone at the end.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest_parallel import Announces, ExitsAt, RecordingNotebook, still_running, wait_for_file

from epyclab.experiment import Experiment
from epyclab.labs.parallel import ParallelLab

STATUS = Experiment.STATUS


def own_lab(profile: Path) -> tuple[ParallelLab, RecordingNotebook, list[dict[str, Any]]]:
    """A 2-engine ParallelLab on a cluster it starts; ``seen`` gathers every process that cluster started."""
    seen: dict[int, dict[str, Any]] = {}
    lab: ParallelLab

    def look() -> None:
        if lab.localCluster is not None:
            for p in lab.localCluster.processes():
                seen[int(p["pid"])] = p

    nb = RecordingNotebook(on_add=look)
    lab = ParallelLab(nb, cores=2, profile_dir=str(profile), backend="ipyparallel")
    return lab, nb, seen  # type: ignore[return-value]


@pytest.mark.parametrize("at", [0, 19, 39], ids=["first", "middle", "last"])
def test_a_poison_point_anywhere_in_40_on_2_engines_is_one_failed_row(tmp_path: Path, at: int) -> None:
    lab, nb, seen = own_lab(tmp_path / "profile")
    lab["x"] = range(40)
    try:
        lab.runExperiment(ExitsAt(at), progress=False)
        df = nb.dataframe(only_successful=False)
        assert df["x"].tolist() == list(range(40))
        failed = df[~df[STATUS].astype(bool)]
        assert failed["x"].tolist() == [at]
        assert "EngineError" in failed[Experiment.EXCEPTION].iloc[0]
        ok = df[df[STATUS].astype(bool)]
        assert len(ok) == 39 and (ok["y"] == ok["x"]).all()
    finally:
        lab.shutdown()
    assert still_running(list(seen.values())) == []


def test_an_expensive_point_alone_in_its_task_survives_its_engines_death(tmp_path: Path) -> None:
    marker = tmp_path / "engine-pid"
    killed: list[int] = []

    def kill_the_engine() -> None:
        pid = int(wait_for_file(marker))
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_engine, daemon=True)
    killer.start()
    lab, nb, seen = own_lab(tmp_path / "profile")
    lab["x"] = range(12)
    try:
        # 0.3 s points: one point per task from the first task on.
        lab.runExperiment(Announces(str(marker), at=5, seconds=0.3), progress=False)
        killer.join(timeout=60)
        assert killed
        assert lab.lastSweep["most_run_by_a_task"] == 1
        df = nb.dataframe(only_successful=False)
        assert df["x"].tolist() == list(range(12))
        assert df[STATUS].all()
        # Point 5 was running on the engine that was killed: it was run again, elsewhere.
        assert df.set_index("x").loc[5, "pid"] != killed[0]
        assert lab.lastSweep["resubmitted"] >= 1
    finally:
        lab.shutdown()
    assert still_running(list(seen.values())) == []


def test_an_engine_stopped_from_outside_with_sigterm_costs_the_points_queued_on_it_nothing(tmp_path: Path) -> None:
    # As an admin's kill or a batch system's stop does: the engine finishes the point it runs, then exits, and
    # the tasks queued on it (a window of several per engine) fail with it though they never started.
    marker = tmp_path / "engine-pid"
    stopped: list[int] = []

    def stop_the_engine() -> None:
        pid = int(wait_for_file(marker))
        os.kill(pid, signal.SIGTERM)
        stopped.append(pid)

    lab, nb, seen = own_lab(tmp_path / "profile")
    try:
        nb.addResultSet("warm-up")
        lab["x"] = [100, 101]
        lab.runExperiment(Announces(str(tmp_path / "unused"), at=-1), progress=False)  # the cluster starts
        nb.addResultSet("sweep")
        lab["x"] = range(16)
        stopper = threading.Thread(target=stop_the_engine, daemon=True)
        stopper.start()
        lab.runExperiment(Announces(str(marker), at=4, seconds=0.3, wait=1.0), progress=False)
        stopper.join(timeout=60)
        assert stopped
        df = nb.dataframe(only_successful=False)
        assert df["x"].tolist() == list(range(16)) and df[STATUS].all()
        assert lab.lastSweep["outside_deaths"] >= 1, lab.lastSweep  # the queued tasks' deaths were seen...
        assert lab.lastSweep["counted_deaths"] == 0, lab.lastSweep  # ... and none was put on their points
    finally:
        lab.shutdown()
    assert still_running(list(seen.values())) == []
