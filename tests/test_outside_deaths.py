"""Who ended the worker decides what its death costs the point: the one rule, and fork copies.

A copy ended from outside (SIGTERM or SIGKILL sent to it by someone else, as
an admin, the OOM killer or a batch system would) has its point run again
without counting that death; a point that ends its own process (os._exit)
still fails after Retries + 1 deaths (tests/test_parallel_fork.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest_parallel import wait_for_file
from hypothesis import given
from hypothesis import strategies as st

from epyclab.experiment import Experiment
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.deaths import (
    OUTSIDE_SIGNALS,
    RETRIES,
    child_exit_code,
    ended_from_outside,
    oom_kills,
    watch_child,
)
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


# ---- the one rule (epyclab.labs.transports.deaths), on real exit statuses ---------------------------


@given(code=st.integers(min_value=0, max_value=255))
def test_an_exit_code_is_the_points_doing(code: int) -> None:
    assert not ended_from_outside(code)


@pytest.mark.parametrize("sig", sorted(OUTSIDE_SIGNALS))
def test_a_signal_sent_from_outside_is_not_the_points_doing(sig: int) -> None:
    assert ended_from_outside(-sig)


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL])
def test_a_crash_is_the_points_doing(sig: int) -> None:
    assert not ended_from_outside(-sig)


def test_an_unknown_end_counts() -> None:
    assert not ended_from_outside(None)


def test_a_sigkill_while_the_oom_killer_ran_is_the_points_doing() -> None:
    now = oom_kills()
    assert now is not None, "this test reads the kernel's oom_kill counter in /proc/vmstat"
    assert not ended_from_outside(-signal.SIGKILL, oom_before=now - 1)  # the OOM killer killed since
    assert ended_from_outside(-signal.SIGKILL, oom_before=now)  # it did not
    assert ended_from_outside(-signal.SIGTERM, oom_before=now - 1)  # the OOM killer sends only SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_watched_child_tells_how_it_ended_after_its_owner_reaped_it(sig: int) -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        watch_child(child.pid)
        time.sleep(1.0)  # the watcher waits for the child's end (it sees it even reaped by another)
        os.kill(child.pid, sig)
        # Reaped by its owner as an executor reaps its workers: once it has seen the death (it polls).
        while child.poll() is None:
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10
    while child_exit_code(child.pid) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child_exit_code(child.pid) == -sig
