"""Who ended the engine decides what its death costs: an engine of an epyclab profile that SIGTERM ends (as a batch
system does at walltime, on preemption or scancel) leaves a marker (clustersetup/outside.py), and ClusterLab runs its
point again without counting it; an engine killed without a word (SIGKILL) costs its point a retry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cluster_local import cluster
from waiting import wait_until

from epyclab.clustersetup.outside import ENDED_DIRECTORY, endedFromOutside
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.notebooks.labnotebook import LabNotebook


class Slow(Experiment):
    """Writes its engine's PID to ``<directory>/<x>.pid`` and sleeps: the test kills that engine meanwhile."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        marker = Path(self.directory) / f"{params['x']}.pid"
        if not marker.exists():  # only the first run of the point waits to be killed
            marker.write_text(str(os.getpid()))
            time.sleep(30)
        return {"pid": os.getpid()}



@pytest.mark.parametrize("outside", [True, False], ids=["TERM-then-KILL", "KILL-alone"])
def test_a_death_from_outside_is_not_counted_against_the_point(ipdir: Path, tmp_path: Path, outside: bool) -> None:
    assert cluster(ipdir, "-q", "init", "out").exit_code == 0
    assert cluster(ipdir, "-q", "start", "out", "--local", "-n", "2").exit_code == 0
    nb = LabNotebook()
    lab = ClusterLab(nb, profile="out", ipython_dir=str(ipdir), chunkSize=1)
    lab.Retries = 0  # any death that counts fails the point at once
    try:
        lab["x"] = [1]
        lab.runExperiment(Slow(str(tmp_path)))
        wait_until(lambda: (tmp_path / "1.pid").exists(), 30, "the point to start")
        engine = int((tmp_path / "1.pid").read_text())
        if outside:
            # As a batch system ends a job: SIGTERM, then (its KillWait later) SIGKILL, the point still running.
            os.kill(engine, signal.SIGTERM)
            wait_until(lambda: any((ipdir / "profile_out" / ENDED_DIRECTORY).glob("*")), 10, "the marker")
        os.kill(engine, signal.SIGKILL)
        assert lab.wait(timeout=90, progress=False)
        df = nb.dataframe(only_successful=False)
    finally:
        lab.close()
    assert len(df) == 1
    markers = list((ipdir / "profile_out" / ENDED_DIRECTORY).glob("*"))
    if outside:
        # Run again on the other engine, and not counted: one successful row.
        assert bool(df[Experiment.STATUS].iloc[0]) and int(df["pid"].iloc[0]) != engine
        (marker,) = markers
        assert endedFromOutside(ipdir / "profile_out", marker.name).startswith("SIGTERM at ")
        assert oct(marker.stat().st_mode & 0o777) == oct(0o600)
    else:
        assert markers == []
        assert not bool(df[Experiment.STATUS].iloc[0])
        assert "died" in str(df[Experiment.EXCEPTION].iloc[0])


def test_deaths_from_outside_are_bounded_apart(ipdir: Path, tmp_path: Path) -> None:
    """A point whose engine is ended from outside every time it runs (a job preempted again and again) is
    resubmitted uncounted OutsideRetries times, then is a failed row saying so and how to raise the bound."""
    from clusterhub import WaitsToBeKilled

    assert cluster(ipdir, "-q", "init", "again").exit_code == 0
    assert cluster(ipdir, "-q", "start", "again", "--local", "-n", "3").exit_code == 0
    runs, ended = tmp_path / "runs", ipdir / "profile_again" / ENDED_DIRECTORY
    runs.mkdir()
    killed: list[int] = []

    def preempt() -> None:
        # As a batch system preempts a job: SIGTERM (the engine leaves its marker), then SIGKILL; each run.
        for n in range(2):
            wait_until(lambda n=n: (runs / f"7.{n}.pid").exists(), 120, f"run {n} of the point to start")
            engine = int((runs / f"7.{n}.pid").read_text())
            os.kill(engine, signal.SIGTERM)
            wait_until(lambda n=n: len(list(ended.glob("*"))) == n + 1, 10, "the marker")
            os.kill(engine, signal.SIGKILL)
            killed.append(engine)

    nb = LabNotebook()
    lab = ClusterLab(nb, profile="again", ipython_dir=str(ipdir), chunkSize=1)
    lab.Retries = 0  # a death counted against the point would fail it at the first kill
    lab.OutsideRetries = 1
    killer = threading.Thread(target=preempt, daemon=True)
    try:
        lab["x"] = [7]
        lab.runExperiment(WaitsToBeKilled(str(runs), 10))  # every run waits to be killed
        killer.start()
        assert lab.wait(timeout=240, progress=False)
        df = nb.dataframe(only_successful=False)
    finally:
        lab.close()
        killer.join(30)
    assert len(killed) == 2
    assert len(df) == 1 and not bool(df[Experiment.STATUS].iloc[0])
    error = str(df[Experiment.EXCEPTION].iloc[0])
    assert "ended from outside 2 times" in error and "ClusterLab.OutsideRetries is 1" in error, error
    assert "lab.OutsideRetries = 20" in error and "SIGTERM at " in error
    # Resubmitted once (not counted: Retries = 0 did not fail it), then not again.
    assert sorted(p.name for p in runs.glob("*.pid")) == ["7.0.pid", "7.1.pid"]


_WRITER = """
import sys, time
from pathlib import Path
from epyclab.clustersetup.outside import _put
directory = Path(sys.argv[1])
i = 0
while True:
    if i == 1:
        print("writing", flush=True)
    _put(directory / f"engine-{i}", f"SIGTERM {time.time():.3f} -", replace=i % 2 == 0)
    i += 1
"""


@settings(max_examples=12, deadline=None)
@given(st.floats(0.0, 0.05))
def test_a_marker_is_seen_whole_or_not_at_all_whenever_its_writer_is_killed(delay: float) -> None:
    # An engine SIGKILLed right after SIGTERM (a batch system whose KillWait is 0, or the test above) must not leave
    # a marker that says nothing: a reader sees every marker whole, or none. The writer is killed mid-stream.
    with tempfile.TemporaryDirectory() as top:
        profile = Path(top) / "profile_p"
        profile.mkdir()
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(profile / ENDED_DIRECTORY)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
            time.sleep(delay)
        finally:
            writer.kill()
            writer.wait(10)
            if writer.stdout is not None:
                writer.stdout.close()
        names = [p.name for p in (profile / ENDED_DIRECTORY).iterdir()]
        assert names
        for name in names:
            assert endedFromOutside(profile, name) is not None
            assert len((profile / ENDED_DIRECTORY / name).read_text().split()) == 3, name
        # Nothing half written is left where markers are listed.
        assert all(p.name.startswith(".epyclab-") for p in profile.iterdir() if p.is_file())


def test_a_marker_that_says_less_than_it_should_still_witnesses_a_death_from_outside(tmp_path: Path) -> None:
    # Written in place by an older epyclab and cut short, or damaged: the file exists only because the engine was
    # ended from outside, so the death is not counted against the point.
    (tmp_path / ENDED_DIRECTORY).mkdir()
    for text in ("", "SIGTERM", "SIGTERM 12.5", "garbage garbage garbage garbage"):
        (tmp_path / ENDED_DIRECTORY / "e").write_text(text)
        assert endedFromOutside(tmp_path, "e") is not None, text
    assert endedFromOutside(tmp_path, "never-ended") is None
