"""Helpers for the ParallelLab tests: experiments engines can import, notebooks that record, process checks.

Not a pytest conftest (pytest does not load it by itself): the parallel test
modules import it. The experiments live here, in an importable module, so
that they also work when pickled by reference.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

from epyclab.experiment import Experiment
from epyclab.labs.transports.localcluster import process_alive
from epyclab.notebooks.labnotebook import LabNotebook


class Square(Experiment):
    """y = x * x; raises ValueError at the points whose x is in ``fail_at``."""

    def __init__(self, fail_at: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.fail_at = set(fail_at)

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] in self.fail_at:
            raise ValueError(f"x={params['x']} is bad")
        return {"y": params["x"] * params["x"]}


class Sleepy(Experiment):
    """Sleeps ``seconds`` at each point (an expensive point that costs no CPU)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.seconds)
        return {"y": params["x"]}


class Logged(Experiment):
    """Appends one line per run to ``runs/<x>`` (so a test can count runs across engines); fails at ``fail_at``."""

    def __init__(self, logdir: str, fail_at: tuple[int, ...] = (), seconds: float = 0.0) -> None:
        super().__init__()
        self.logdir = logdir
        self.fail_at = set(fail_at)
        self.seconds = seconds

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        with open(os.path.join(self.logdir, str(params["x"])), "a") as f:
            f.write(f"{os.getpid()}\n")
        if self.seconds:
            time.sleep(self.seconds)
        if params["x"] in self.fail_at:
            raise RuntimeError(f"failing at x={params['x']}")
        return {"y": params["x"], "pid": os.getpid()}


class Announces(Experiment):
    """At x == ``at`` (the first time only), writes its engine's pid to ``marker`` and waits to be killed.

    ``wait``: the seconds it waits there (then it goes on, as a point does whose engine was asked to stop).
    """

    def __init__(self, marker: str, at: int, seconds: float = 0.02, wait: float = 60.0) -> None:
        super().__init__()
        self.marker = marker
        self.at = at
        self.seconds = seconds
        self.wait = wait

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == self.at and not os.path.exists(self.marker):
            tmp = self.marker + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(os.getpid()))
            os.replace(tmp, self.marker)
            time.sleep(self.wait)  # the test kills this engine long before (by default)
        time.sleep(self.seconds)
        return {"y": params["x"], "pid": os.getpid()}


class KillsItsEngine(Experiment):
    """Ends the engine it runs on at x == ``at``, every time (a point that crashes its process).

    By ``os._exit``: a SIGKILL would be taken for a death from outside (see epyclab.labs.transports.deaths).
    """

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == self.at:
            os._exit(70)
        return {"y": params["x"]}


class RecordingNotebook(LabNotebook):
    """An in-memory notebook that records the number of results at each commit.

    With ``fail_after=n``, adding a result once ``n`` are held raises OSError
    (as a full disk would). ``on_add`` is called before each add (tests use it
    to look at the lab while the sweep runs).
    """

    def __init__(self, fail_after: int | None = None, on_add: Any = None) -> None:
        self.commits: list[int] = []
        self.fail_after = fail_after
        self.on_add = on_add
        super().__init__("recording")

    def addResult(self, rc: Any, tag: str | None = None) -> None:
        if self.on_add is not None:
            self.on_add()
        if self.fail_after is not None and self.numberOfResults() >= self.fail_after:
            raise OSError("no space left on device (simulated by the test notebook)")
        super().addResult(rc, tag)

    def commit(self) -> None:
        super().commit()
        self.commits.append(self.numberOfResults())


def still_running(procs: list[dict[str, Any]], grace: float = 10.0) -> list[int]:
    """The PIDs among ``procs`` ({'pid', 'created'}) still running after at most ``grace`` seconds."""
    deadline = time.monotonic() + grace
    alive = [p for p in procs if process_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if process_alive(p)]
    return [int(p["pid"]) for p in alive]


def descendants(pid: int) -> list[dict[str, Any]]:
    """Every running descendant of ``pid`` as {'pid', 'created'}."""
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            out.append({"pid": p.pid, "created": p.create_time()})
        except psutil.Error:
            continue
    return out


def wait_for_file(path: Path, timeout: float = 60.0) -> str:
    """The content of ``path`` once it exists (fails the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)
    return path.read_text()


class Escape(BaseException):
    """Not an Exception: Experiment.run does not catch it, so it fails the engine's whole task."""


class EscapesAt(Experiment):
    """Raises :class:`Escape` at the points whose x is in ``at`` (after ``delay`` seconds); else y = x."""

    def __init__(self, at: tuple[int, ...], delay: float = 0.0) -> None:
        super().__init__()
        self.at = set(at)
        self.delay = delay

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] in self.at:
            time.sleep(self.delay)
            raise Escape(f"escaping at x={params['x']}")
        return {"y": params["x"]}


class ExitsAt(Experiment):
    """y = x, but the process running x == ``at`` exits on the spot (``os._exit(1)``), every time."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == self.at:
            os._exit(1)
        return {"y": params["x"], "pid": os.getpid()}


def processes_of_profile(profile: Path, grace: float = 10.0) -> list[int]:
    """PIDs of processes still running, after ``grace`` seconds, that ipyparallel started for ``profile``.

    Found by the ``IPP_PROFILE_DIR`` each controller, scheduler and engine
    inherits, so this sees what no record names (a scheduler forked by a
    controller as it was stopped, say). A leftover found is SIGKILLed, so
    that a failing test leaves nothing behind on the shared machine.
    """
    want = str(Path(profile).resolve())

    def find() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["environ"]):
            try:
                env = proc.info["environ"] or {}
            except psutil.Error:
                continue
            if env.get("IPP_PROFILE_DIR") and str(Path(env["IPP_PROFILE_DIR"]).resolve()) == want:
                try:
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        found.append(proc)
                except psutil.Error:
                    continue
        return found

    deadline = time.monotonic() + grace
    left = find()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = find()
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            continue
    return [p.pid for p in left]


# A sweep of slow points into a notebook that records what was committed; the test sends SIGINT once 5
# results (or, for a ClusterLab that only submits, 5 pending results) are in, and the script writes how many
# were added and committed before it re-raises. Arguments: RUNNING, OUT, the lab's keyword arguments as JSON,
# and optionally, as JSON: "lab" (its class; ParallelLab with cores=2 unless told), "notebook" (an HDF5 file;
# in memory unless given), "points" (100,000 unless told), "wait" (true: a ClusterLab's wait() follows).
CTRL_C_SCRIPT = """
import json, os, sys, time
import epyclab
from epyclab import Experiment, HDF5LabNotebook, LabNotebook

RUNNING, OUT, LAB = sys.argv[1:4]   # LAB: more keyword arguments of the lab, as JSON
HOW = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
KIND, FILE = HOW.get("lab", "ParallelLab"), HOW.get("notebook", "")

class Slow(Experiment):
    def do(self, params):
        time.sleep(0.05)
        return {"y": params["x"]}

class Notebook(HDF5LabNotebook if FILE else LabNotebook):
    committed = 0
    def addResult(self, rc, tag=None):
        super().addResult(rc, tag)
        if self.numberOfResults() == 5:
            open(RUNNING, "w").close()   # tell the test that results are arriving
    def resolvePendingResult(self, rc, jobid):
        super().resolvePendingResult(rc, jobid)
        if self.numberOfResults() == 5:
            open(RUNNING, "w").close()   # tell the test that results are being collected
    def addPendingResult(self, params, jobid, tag=None):
        super().addPendingResult(params, jobid, tag)
        if self.numberOfPendingResults() == 5 and not HOW.get("wait"):
            open(RUNNING, "w").close()   # tell the test that points are being submitted
    def commit(self):
        super().commit()
        self.committed = self.numberOfResults() + self.numberOfPendingResults()

nb = Notebook(FILE, create=True) if FILE else Notebook()
kwargs = {"cores": 2} if KIND == "ParallelLab" else {}
kwargs.update(json.loads(LAB))
lab = getattr(epyclab, KIND)(nb, commitEvery=10**9, commitInterval=3600, **kwargs)
lab["x"] = range(HOW.get("points", 100000))
try:
    lab.runExperiment(Slow(), progress=False)
    if HOW.get("wait"):
        lab.wait(progress=False)
except KeyboardInterrupt:
    with open(OUT, "w") as f:
        json.dump({"added": nb.numberOfResults() + nb.numberOfPendingResults(), "committed": nb.committed,
                   "results": nb.numberOfResults()}, f)
    raise
"""
