"""Who ended the worker decides what its death costs the point (fork copies).

A copy ended from outside (SIGTERM or SIGKILL sent to it by someone else, as
an admin, the OOM killer or a batch system would) has its point run again
without counting that death; a point that ends its own process (os._exit)
still fails after Retries + 1 deaths (tests/test_parallel_fork.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from conftest_parallel import wait_for_file

from epyclab.experiment import Experiment
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.deaths import RETRIES
from epyclab.notebooks.labnotebook import LabNotebook

STATUS = Experiment.STATUS


class WaitsToBeKilled(Experiment):
    """At x == ``at``, the first ``times`` runs write their pid to ``<where>/<n>`` and wait; then y = x."""

    def __init__(self, where: str, at: int, times: int) -> None:
        super().__init__()
        self.where = where
        self.at = at
        self.times = times

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == self.at:
            n = len(os.listdir(self.where))
            if n < self.times:
                path = os.path.join(self.where, str(n))
                with open(path + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(path + ".tmp", path)
                time.sleep(60)  # the test ends this process long before
        return {"y": params["x"], "pid": os.getpid()}


def test_a_copy_killed_from_outside_again_and_again_costs_its_point_nothing(tmp_path: Path) -> None:
    times = RETRIES + 2  # more deaths than the point could afford had they counted
    signals = [signal.SIGTERM, signal.SIGKILL, signal.SIGTERM][:times]
    killed: list[int] = []

    def kill() -> None:
        for n, sig in enumerate(signals):
            pid = int(wait_for_file(tmp_path / str(n), timeout=120))
            killed.append(pid)
            os.kill(pid, sig)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(10)
    lab.runExperiment(WaitsToBeKilled(str(tmp_path), 4, times), progress=False)
    killer.join(30)
    df = lab.notebook().dataframe(only_successful=False)
    assert len(killed) == times
    assert df["x"].tolist() == list(range(10)) and df[STATUS].astype(bool).all()
    assert int(df.loc[df["x"] == 4, "pid"].iloc[0]) not in killed
    # Each killed copy was replaced by a fresh fork.
    assert lab.lastSweep["replaced"] == times
