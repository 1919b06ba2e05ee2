"""Per-point time limits: runExperiment(e, timeout=S) and the lab's Timeout, on every lab.

A point still running after S seconds is a failed row with a TimeoutError
naming the point and the limit, and the sweep goes on. A point stuck where
Python cannot interrupt it (a busy C loop compiled here, a SIGSTOPped
process) has its worker stopped and replaced, and is not retried.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab
from epyclab.labs.parallel import ParallelLab
from epyclab.notebooks.labnotebook import LabNotebook

STATUS, EXCEPTION = Experiment.STATUS, Experiment.EXCEPTION


class SleepsAt(Experiment):
    """y = x, but sleeps ``seconds`` at x == ``at``."""

    def __init__(self, at: int, seconds: float = 60.0) -> None:
        super().__init__()
        self.at = at
        self.seconds = seconds

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == self.at:
            time.sleep(self.seconds)
        return {"y": params["x"], "pid": os.getpid()}


class SpinsAt(Experiment):
    """y = x, but spins for ever in C (a compiled loop that never returns to Python) at x == ``at``."""

    def __init__(self, library: str, at: int) -> None:
        super().__init__()
        self.library = library
        self.at = at

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == self.at:
            ctypes.CDLL(self.library).spin()
        return {"y": params["x"], "pid": os.getpid()}


class StopsAt(Experiment):
    """At x == ``at``, every time, writes its pid to a file in ``where`` and stops its own process (SIGSTOP)."""

    def __init__(self, where: str, at: int) -> None:
        super().__init__()
        self.where = where
        self.at = at

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == self.at:
            Path(self.where, str(os.getpid())).touch()
            os.kill(os.getpid(), signal.SIGSTOP)
            # The stop reaches every thread of a process with several (a Dask worker) a moment later.
            time.sleep(30)
        return {"y": params["x"], "pid": os.getpid()}


def stopped_pids(where: Path) -> list[int]:
    """The processes a :class:`StopsAt` stopped."""
    return [int(p.name) for p in where.iterdir()]


def gone(pid: int, timeout: float = 30.0) -> bool:
    """True once process ``pid`` has ended (a zombie its parent has not reaped yet counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def timed_out(df: Any, x: int, limit: float) -> None:
    assert df["x"].tolist() == list(range(len(df)))
    failed = df[~df[STATUS].astype(bool)]
    assert failed["x"].tolist() == [x]
    message = failed[EXCEPTION].iloc[0]
    assert message.startswith("TimeoutError: point [x=") and f"x={x}]" in message, message
    assert f"time limit of {limit:g} s" in message, message
    ok = df[df[STATUS].astype(bool)]
    assert (ok["y"] == ok["x"]).all()


@pytest.fixture(scope="module")
def spin_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc")
    assert gcc is not None, "this test compiles a C loop: install gcc"
    where = tmp_path_factory.mktemp("spin")
    (where / "spin.c").write_text("void spin(void) { volatile unsigned long i = 0; for (;;) i++; }\n")
    subprocess.run([gcc, "-shared", "-fPIC", "-O0", "-o", str(where / "libspin.so"), str(where / "spin.c")],
                   check=True)
    return str(where / "libspin.so")


def test_a_sequential_lab_fails_a_sleeping_point_and_goes_on() -> None:
    lab = Lab(LabNotebook())
    lab["x"] = range(5)
    lab.runExperiment(SleepsAt(2), progress=False, timeout=0.5)
    timed_out(lab.notebook().dataframe(only_successful=False), 2, 0.5)


def test_the_lab_attribute_sets_the_limit_for_epyc_style_code() -> None:
    lab = Lab(LabNotebook())
    lab.Timeout = 0.5
    lab["x"] = range(3)
    lab.runExperiment(SleepsAt(1), progress=False)
    timed_out(lab.notebook().dataframe(only_successful=False), 1, 0.5)


@pytest.mark.parametrize("bad", [0, -1, "5", True])
def test_a_limit_that_is_not_a_positive_number_is_refused(bad: Any) -> None:
    lab = Lab(LabNotebook())
    lab["x"] = range(2)
    with pytest.raises(ValueError, match="positive number of seconds"):
        lab.runExperiment(SleepsAt(9), progress=False, timeout=bad)
    assert lab.notebook().numberOfResults() == 0


# A sleeping point, a busy C loop and a SIGSTOPped worker on every transport: tests/test_transport_contract.py.


def test_a_point_stuck_in_c_has_its_copy_stopped_and_replaced(spin_library: str) -> None:
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(8)
    lab.runExperiment(SpinsAt(spin_library, 4), progress=False, timeout=1.0)
    timed_out(lab.notebook().dataframe(only_successful=False), 4, 1.0)
    # Not retried: one copy was stopped, and replaced by one fresh fork.
    assert lab.lastSweep["replaced"] == 1 and lab.lastSweep["resubmitted"] == 0


def test_a_sigstopped_copy_is_stopped_and_replaced(tmp_path: Path) -> None:
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(8)
    lab.runExperiment(StopsAt(str(tmp_path), 5), progress=False, timeout=2.0)
    timed_out(lab.notebook().dataframe(only_successful=False), 5, 2.0)
    stopped = stopped_pids(tmp_path)
    assert stopped and all(gone(pid) for pid in stopped)


@pytest.mark.parametrize("backend", ["fork", "workers"])
def test_a_point_running_far_longer_than_any_other_is_named_on_the_progress_bar(
    backend: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from epyclab.labs.transports.scheduler import Sweep

    monkeypatch.setattr(Sweep, "HangSeconds", 1.0)  # 60 s, for a user
    lab = ParallelLab(LabNotebook(), cores=2, backend=backend)
    lab["x"] = range(6)
    try:
        lab.runExperiment(SleepsAt(3, seconds=5.0), progress=True)
    finally:
        lab.shutdown()
    bar = capsys.readouterr().err
    # Drawn while the point ran (a bar line of its own, not only the log record above it)...
    drawn = [line for line in bar.replace("\r", "\n").splitlines() if "ParallelLab" in line]
    assert any("point [x=3] running for" in line for line in drawn), bar
    # ...and gone from the final line, once the point is done.
    assert "running for" not in drawn[-1] and "6/6" in drawn[-1], drawn[-1]
    assert lab.notebook().dataframe()["x"].tolist() == list(range(6))


def test_the_ledger_of_a_process_killed_mid_sweep_is_removed_by_the_next_sweep() -> None:
    from epyclab.labs.transports.ledger import Ledger

    script = "import time\nfrom epyclab.labs.transports.ledger import Ledger\nprint(Ledger().path, flush=True)\n" \
             "time.sleep(60)\n"
    killed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout is not None
        path = killed.stdout.readline().strip()
    finally:
        killed.kill()
        killed.wait()
    assert os.path.isdir(path)
    Ledger().close()  # a sweep begins, and ends
    assert not os.path.exists(path)


def test_a_worker_that_cannot_write_to_the_ledger_runs_its_chunk_unwatched(tmp_path: Path) -> None:
    """Writing the ledger is the lab's convenience, never the point's failure: a worker that cannot write
    there (another user's engine on this machine; here, for root too, a directory where its file goes)
    says nothing and runs on."""
    from epyclab.labs.engine.worker import note_chunk

    (tmp_path / f"{os.getpid()}.tmp").mkdir()
    note_chunk(str(tmp_path), "c1")  # no error
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{os.getpid()}.tmp"]


SLOW_MODULE = """
import time

from epyclab.experiment import Experiment

time.sleep({seconds})  # as a module that loads a model or a large table at import


class Quick(Experiment):
    def do(self, params):
        return {{"y": params["x"]}}
"""


def test_a_module_slow_to_import_on_the_engines_does_not_count_against_the_points_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each engine imports the user's module as it unpacks its first chunk's experiment; a limit of 1 s per point
    # stops a chunk still busy 3 s after its points started. The import takes 5 s: it is not the points'.
    (tmp_path / "slowmodule.py").write_text(SLOW_MODULE.format(seconds=5))
    monkeypatch.syspath_prepend(str(tmp_path))
    import slowmodule  # type: ignore[import-not-found]

    lab = ParallelLab(LabNotebook(), cores=2, backend="ipyparallel", profile_dir=str(tmp_path / "profile"))
    try:
        lab["x"] = [100]
        lab.runExperiment(SleepsAt(-1, seconds=0.0), progress=False)  # the cluster starts...
        local = lab.localCluster
        assert local is not None
        local.launch()  # (a sweep this short may end before it launched it)
        local.wait(2)  # ... and is warm: its engines registered
        lab.notebook().addResultSet("slow")
        lab["x"] = range(4)
        lab.runExperiment(slowmodule.Quick(), progress=False, timeout=1.0)
        df = lab.dataframe(only_successful=False)
        assert df["x"].tolist() == list(range(4))
        assert df[Experiment.STATUS].all(), df[Experiment.EXCEPTION].tolist()
        assert lab.lastSweep["run_by_interim"] == 0  # (the engines ran them: they imported the module)
        assert lab.lastSweep["outside_deaths"] == lab.lastSweep["counted_deaths"] == 0
    finally:
        lab.shutdown()
