"""The lab contract over every transport: generated from the registry, and over each executor.

Modelled on CPython's ``test_concurrent_futures`` ``create_executor_tests``: a
test class is made here for every transport registered in
:mod:`epyclab.labs.transports.contract` (none is named by hand: a transport registered
later is tested too) and for the executor transport over a spawn and a
forkserver process pool and a real Dask cluster. Each runs the whole
:class:`LabContract` of ``test_lab_contract`` (every point once in the
design's order, failures as rows, resume, commits, a real Ctrl-C, the progress
bar) and what transports add: a point that kills its worker is one failed row,
output is captured and stored with its point, a design that alternates
experiment objects gets one row per point from the right experiment, no
process the lab started is left once it is shut down, a point past its time
limit (sleeping, spinning in C, or SIGSTOPped) is a failed row with a
TimeoutError and its worker is stopped, a worker SIGKILLed from outside costs
its point nothing, and a point that crashes its worker (SIGABRT) counts.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, ProcessPoolExecutor
from typing import Any

import psutil
import pytest
from conftest_parallel import Announces, ExitsAt, wait_for_file
from test_lab_contract import LabContract
from test_outside_deaths import WaitsToBeKilled
from test_time_limits import SleepsAt, SpinsAt, StopsAt, gone, stopped_pids, timed_out
from test_time_limits import spin_library as spin_library  # a fixture

from epyclab.designs import Design, FactorialDesign
from epyclab.errors import ClusterConnectionError
from epyclab.experiment import Experiment
from epyclab.labs.engine.capture import OUTPUT
from epyclab.labs.lab import Lab
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.contract import transportNames
from epyclab.labs.transports.daskexecutor import DaskExecutor
from epyclab.labs.transports.deaths import RETRIES
from epyclab.labs.transports.executors import ExecutorTransport, executor_of
from epyclab.notebooks.labnotebook import LabNotebook

STATUS, EXCEPTION = Experiment.STATUS, Experiment.EXCEPTION


class Scaled(Experiment):
    """y = k * x; prints the point it ran."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        print(f"k={self.k} x={params['x']}")
        return {"y": self.k * params["x"], "k": self.k}


class AbortsAt(Experiment):
    """y = x, but the process running x == ``at`` aborts (SIGABRT, as a failed assertion in C would), every time."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == self.at:
            faulthandler.disable()  # pytest's, inherited by a forked copy: no traceback in the test's output
            os.abort()
        return {"y": params["x"]}


class Alternating(Design):
    """The factorial points, each even-numbered one with one experiment object and each odd one with another."""

    def __init__(self, other: Experiment) -> None:
        self.other = other

    def experiments(self, e: Experiment | None, params: dict[str, list[Any]]) -> Any:
        points = FactorialDesign().experiments(e, params)
        return [(e if i % 2 == 0 else self.other, p) for i, (_, p) in enumerate(points)]



#: multiprocessing's own forkserver and resource tracker, and loky's tracker (their command lines), which serve
#: every pool for the life of the interpreter.
_MULTIPROCESSING_SERVERS = (
    "from multiprocessing.forkserver import main",
    "from multiprocessing.resource_tracker import main",
    "from loky.backend.resource_tracker import main",
)

def _lab_processes(before: set[int]) -> list[psutil.Process]:
    """Children of this process started since ``before`` (multiprocessing's own forkserver and tracker aside)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            command = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if p.pid not in before and not any(mp in command for mp in _MULTIPROCESSING_SERVERS):
            out.append(p)
    return out


class TransportContract(LabContract):
    """The lab contract and what every transport adds; subclasses are generated below."""

    labs: list[ParallelLab]

    @pytest.fixture(autouse=True)
    def _track(self, tmp_path: Any) -> Iterator[None]:
        self.labs = []
        self.profile = str(tmp_path / "profile")
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        yield
        for lab in self.labs:
            lab.shutdown()
        self.stop_executor()
        if self.owns_processes:
            # Nothing the labs started is left (a warm cluster, warm workers, copies).
            _, alive = psutil.wait_procs(_lab_processes(before), timeout=30)
            assert not alive, alive

    owns_processes = True

    def lab_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def stop_executor(self) -> None:
        """Shut down the executor the test gave its labs (none for a registered transport)."""

    def make(self, nb: LabNotebook, **kwargs: Any) -> Lab:
        lab = ParallelLab(nb, **self.lab_kwargs(), **kwargs)
        self.labs.append(lab)
        return lab

    def test_every_point_gives_exactly_one_row_and_failures_are_rows(self) -> None:
        self.check_every_point_once(30, {0, 7, 29})

    def test_a_point_that_kills_its_worker_is_one_failed_row(self) -> None:
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(10)
        self.sweep(lab, ExitsAt(4))
        df = nb.dataframe(only_successful=False)
        assert df["x"].tolist() == list(range(10))
        assert df.loc[~df[STATUS].astype(bool), "x"].tolist() == [4]
        assert "died" in df.loc[df["x"] == 4, EXCEPTION].iloc[0]

    def test_a_point_that_crashes_its_worker_is_one_failed_row(self) -> None:
        # SIGABRT is the point's doing (a crash), unlike a SIGKILL or SIGTERM from outside: it counts.
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(6)
        self.sweep(lab, AbortsAt(2))
        df = nb.dataframe(only_successful=False)
        assert df["x"].tolist() == list(range(6))
        assert df.loc[~df[STATUS].astype(bool), "x"].tolist() == [2]
        assert "died" in df.loc[df["x"] == 2, EXCEPTION].iloc[0]
        assert lab.lastSweep["counted_deaths"] == RETRIES + 1, lab.lastSweep

    def test_output_is_captured_and_stored_with_its_point(self) -> None:
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(6)
        self.sweep(lab, Scaled(3))
        df = nb.dataframe()
        assert [o.strip() for o in df[OUTPUT]] == [f"k=3 x={x}" for x in range(6)]

    def test_a_design_that_alternates_experiments_gives_each_point_its_own(self) -> None:
        n = 40  # enough points for chunks of several points, were the experiments the same
        nb = LabNotebook()
        lab = self.make(nb, design=Alternating(Scaled(5)))
        lab["x"] = range(n)
        self.sweep(lab, Scaled(2))
        df = nb.dataframe()
        assert df["x"].tolist() == list(range(n))
        assert df["k"].tolist() == [2 if x % 2 == 0 else 5 for x in range(n)]
        assert (df["y"] == df["k"] * df["x"]).all()


    # ---- deaths: who ended the worker decides what it costs -----------------------------------------

    #: The transport sees its workers' deaths (Dask reschedules a task whose worker died by itself).
    sees_deaths = True
    #: The transport learns how its workers ended (a forkserver's children are reaped by the forkserver).
    tells_outside = True

    def test_a_worker_killed_from_outside_costs_its_point_nothing(self, tmp_path: Any) -> None:
        where = tmp_path / "killed"
        where.mkdir()
        # Had these deaths counted, the point would be a failed row; where how a worker ended is not known, a
        # death counts (see epyclab.labs.transports.deaths), and one is all the point can afford.
        times = RETRIES + 1 if self.tells_outside else RETRIES
        killed: list[int] = []

        def kill() -> None:
            for n in range(times):
                pid = int(wait_for_file(where / str(n), timeout=120))
                killed.append(pid)
                # Not in the very moment it starts: a worker is watched from the sweep's next look at the ledger
                # (0.25 s; see epyclab.labs.transports.deaths.watch_child).
                time.sleep(1.0)
                os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(10)
        self.sweep(lab, WaitsToBeKilled(str(where), 4, times))
        killer.join(30)
        df = nb.dataframe(only_successful=False)
        assert len(killed) == times
        assert df["x"].tolist() == list(range(10)) and df[STATUS].astype(bool).all(), df[EXCEPTION].tolist()
        assert int(df.loc[df["x"] == 4, "pid"].iloc[0]) not in killed
        if self.sees_deaths and self.tells_outside:
            assert lab.lastSweep["outside_deaths"] >= times and lab.lastSweep["counted_deaths"] == 0, lab.lastSweep

    # ---- time limits: every transport stops a worker stuck past the limit ---------------------------

    def limited(self, experiment: Experiment, n: int = 8, limit: float = 1.0) -> tuple[Any, float]:
        """Run ``experiment`` over x in range(n) with a time limit; the rows and the seconds the sweep took."""
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(n)
        t0 = time.monotonic()
        lab.runExperiment(experiment, progress=False, timeout=limit)
        return nb.dataframe(only_successful=False), time.monotonic() - t0

    def test_a_sleeping_point_past_its_limit_is_a_failed_row(self) -> None:
        df, took = self.limited(SleepsAt(3, seconds=120.0))
        timed_out(df, 3, 1.0)
        assert took < 60, f"the sweep waited {took:.0f} s for a point limited to 1 s"

    def test_a_point_stuck_in_c_has_its_worker_stopped(self, spin_library: str) -> None:
        df, took = self.limited(SpinsAt(spin_library, 4))
        timed_out(df, 4, 1.0)
        assert took < 60, f"the sweep waited {took:.0f} s for a point limited to 1 s"

    def test_a_sigstopped_worker_is_stopped(self, tmp_path: Any) -> None:
        where = tmp_path / "stopped"
        where.mkdir()
        df, took = self.limited(StopsAt(str(where), 5), limit=2.0)
        timed_out(df, 5, 2.0)
        assert took < 60, f"the sweep waited {took:.0f} s for a point limited to 2 s"
        # Each stopped worker is gone (SIGKILL reaches a stopped process).
        stopped = stopped_pids(where)
        assert stopped and all(gone(pid) for pid in stopped)


def _registered(name: str) -> type:
    def lab_kwargs(self: TransportContract) -> dict[str, Any]:
        return {"cores": 2, "backend": name, "profile_dir": self.profile}

    return type(f"TestTransport_{name}", (TransportContract,), {"lab_kwargs": lab_kwargs, "__doc__":
                f"The lab contract on the registered transport {name!r}."})


for _name in transportNames():
    _cls = _registered(_name)
    globals()[_cls.__name__] = _cls


def _pool(method: str) -> type:
    class Pool(TransportContract):
        __doc__ = f"The lab contract on a {method} ProcessPoolExecutor."

        ex: ProcessPoolExecutor | None = None

        def lab_kwargs(self) -> dict[str, Any]:
            if self.ex is None:
                self.ex = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method))
            return {"executor": self.ex}

        def stop_executor(self) -> None:
            if self.ex is not None:
                self.ex.shutdown(cancel_futures=True)
                self.ex = None

    Pool.__name__ = Pool.__qualname__ = f"TestExecutor_{method}"
    return Pool


TestExecutor_spawn = _pool("spawn")
TestExecutor_forkserver = _pool("forkserver")
TestExecutor_forkserver.tells_outside = False


def _unreadable(pid: int) -> str:
    if os.getpid() != pid:
        raise RuntimeError("this object can only be read in the process that made it")
    return "read"


class Unreadable:
    """Pickles in the process that made it, and cannot be unpickled in any other (a Dask worker's result)."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return _unreadable, (self.pid,)


def _make_unreadable() -> Unreadable:
    return Unreadable()


class TestExecutor_dask(TransportContract):
    """The lab contract on a real Dask cluster of two worker processes (its client)."""

    owns_processes = False  # the cluster's processes are the module fixture's
    sees_deaths = False  # Dask runs the task again by itself (up to its allowed-failures)
    # Not run on Dask, for the reason given in test_a_point_that_kills_its_worker_is_one_failed_row below.
    test_a_point_that_crashes_its_worker_is_one_failed_row = None  # type: ignore[assignment]

    @pytest.fixture(autouse=True)
    def _client(self, dask_client: Any) -> None:
        # Each test starts on two workers, as a user's sweep would (earlier tests kill workers, and one scales
        # the cluster to none).
        dask_client.cluster.scale(2)
        self.client = dask_client
        self.wait_for_workers(2)

    def wait_for_workers(self, n: int, timeout: float = 120.0) -> None:
        """Wait until the scheduler has ``n`` running workers (asks it through the client, not the cluster).

        Not ``client.wait_for_workers``: that hands over to the LocalCluster's, which replaces the cluster's
        list of workers by the scheduler's answer; a worker that registered meanwhile is lost from it, and its
        next death raises KeyError in the cluster's status stream (re-raised by ``cluster.close()``, a teardown
        error in 1 of 10 loop runs here, after workers were killed and restarted in quick succession).
        """
        deadline = time.monotonic() + timeout
        while True:
            workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
            running = sum(w.get("status") == "running" for w in workers)
            if running >= n:
                return
            assert time.monotonic() < deadline, f"only {running} of {n} Dask workers after {timeout:g} s"
            time.sleep(0.1)

    def lab_kwargs(self) -> dict[str, Any]:
        return {"executor": self.client}

    def test_a_point_that_kills_its_worker_is_one_failed_row(self, tmp_path: Any) -> None:
        # Dask runs a task whose worker died again on other workers, and loses results the dead worker
        # held; a point that kills every worker also fails tasks queued beside it (KilledWorker) and can
        # leave the cluster without workers (the sweep then stops: see the test after this one). What Dask
        # users get instead: a worker killed from outside mid-sweep is a point run again, never a hang.
        marker = tmp_path / "pid"
        killed: list[int] = []

        def kill() -> None:
            pid = int(wait_for_file(marker, timeout=120))
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
        self._finishes_despite(marker, killer)
        assert killed

    def test_a_cluster_left_without_workers_stops_the_sweep_and_resume_finishes_it(
            self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        # The state the long runs reached: the LocalCluster has closed its workers for good (here all at once,
        # by scaling it to none mid-sweep). The sweep stops with an error that says so, keeps what finished,
        # and runs the rest once the cluster has workers again.
        monkeypatch.setattr(ExecutorTransport, "NoWorkersSeconds", 5.0)
        marker = tmp_path / "pid"
        cluster = self.client.cluster

        def empty() -> None:
            wait_for_file(marker, timeout=120)
            cluster.scale(0)

        emptier = threading.Thread(target=empty, daemon=True)
        emptier.start()
        lab, nb, e, took = self._sweep_that_stops(marker, "has had no worker for .* resume=True")
        emptier.join(30)
        assert took < 90, f"the sweep waited {took:.0f} s on a cluster without workers (limit 5 s)"
        self._resumed_after_the_stop(lab, nb, e)

    def _finishes_despite(self, marker: Any, killer: threading.Thread) -> None:
        """A 12-point sweep whose point x=5 writes ``marker`` for ``killer`` (started) to act on: every point is
        a successful row, in order."""
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(12)
        self.sweep(lab, Announces(str(marker), at=5))
        killer.join(30)
        df = nb.dataframe(only_successful=False)
        assert df["x"].tolist() == list(range(12)) and df[STATUS].astype(bool).all(), df[EXCEPTION].tolist()

    def _sweep_that_stops(self, marker: Any, match: str) -> tuple[Any, LabNotebook, Any, float]:
        """A 12-point sweep whose point x=5 writes ``marker``, which must stop with a ClusterConnectionError
        matching ``match``: its lab, notebook, experiment, and the seconds it ran."""
        nb = LabNotebook()
        lab = self.make(nb)
        lab["x"] = range(12)
        e = Announces(str(marker), at=5)
        t0 = time.monotonic()
        with pytest.raises(ClusterConnectionError, match=match):
            lab.runExperiment(e, progress=False)
        return lab, nb, e, time.monotonic() - t0

    def _resumed_after_the_stop(self, lab: Any, nb: LabNotebook, e: Any) -> None:
        """After a 12-point sweep stopped for want of workers: the rows it kept are sound, and with two workers
        back ``resume=True`` finishes it, each point once."""
        first = nb.dataframe(only_successful=False)
        assert len(first) < 12 and first[STATUS].astype(bool).all()
        self.client.cluster.scale(2)
        self.wait_for_workers(2)
        lab.runExperiment(e, progress=False, resume=True)
        df = nb.dataframe(only_successful=False)
        assert sorted(df["x"].tolist()) == list(range(12)) and df[STATUS].astype(bool).all()

    def _kill_every_worker_when(self, marker: Any) -> threading.Thread:
        """A thread that SIGKILLs every worker process of the cluster (by PID) once ``marker`` is written."""

        def kill() -> None:
            wait_for_file(marker, timeout=120)
            # Asked of each worker now (its event loop answers while its thread runs the point).
            for pid in self.client.run(os.getpid).values():
                os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
        return killer

    def test_workers_killed_while_their_nannies_replace_them_do_not_stop_the_sweep(
            self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        # Every worker SIGKILLed at once mid-sweep: the cluster may have none for a moment, but each nanny is
        # starting a new one. Those count as workers to come: the sweep waits for them and finishes (had they
        # not counted, a GoneSeconds of 0 would stop the sweep at its first look with no worker: 3 runs of 3).
        monkeypatch.setattr(ExecutorTransport, "GoneSeconds", 0.0)
        monkeypatch.setattr(ExecutorTransport, "AskSeconds", 0.0)  # at every look (0.25 s), not once a second
        marker = tmp_path / "pid"
        self._finishes_despite(marker, self._kill_every_worker_when(marker))

    def test_a_cluster_that_closed_its_workers_for_good_stops_the_sweep_at_once(self, tmp_path: Any) -> None:
        # A LocalCluster closes for good a worker still restarting distributed.deploy.lost-worker-timeout after
        # it died (0 s here: at once). With every worker SIGKILLed, none will come: the sweep stops with an
        # error saying so within GoneSeconds (5 s), not NoWorkersSeconds (120 s), and resume finishes it.
        import dask

        marker = tmp_path / "pid"
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}):
            killer = self._kill_every_worker_when(marker)
            lab, nb, e, took = self._sweep_that_stops(marker, "has had no worker for .* none left.* resume=True")
            killer.join(30)
        assert took < 60, f"the sweep waited {took:.0f} s on a cluster that closed its workers for good"
        self._resumed_after_the_stop(lab, nb, e)

    def test_a_chunk_stopped_past_its_limit_is_let_go_by_the_scheduler_before_its_worker_is_killed(
            self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        # Dask runs the tasks of a dead worker again on another. A cancellation is only a message on its way to
        # the scheduler: a worker killed right after it was seen dead first, and the stopped point ran again on
        # the other worker and stopped it too, unwatched, with the sweep's next chunks queued behind it (a
        # sweep of seconds took two minutes, 1 run in 8 here). The scheduler (in this process: a LocalCluster)
        # is looked at the moment the worker is killed: it must run nothing there any more.
        from epyclab.labs.transports import executors

        scheduler = self.client.cluster.scheduler
        running_when_killed: list[list[str]] = []
        real_kill = executors.kill

        def kill(pid: int) -> None:
            workers = [w for w in list(scheduler.workers.values()) if w.pid == pid]
            assert workers, f"worker process {pid} is not the cluster's"
            running_when_killed.append([str(t.key) for w in workers for t in list(w.processing)])
            real_kill(pid)

        monkeypatch.setattr(executors, "kill", kill)
        # Two sweeps: without the fix the kill won that race in the first sweep in 2 runs of 3, in the second in
        # the third (each sweep costs a worker restart: 6 s, 10 s under load).
        for attempt in range(2):
            where = tmp_path / f"stopped{attempt}"
            where.mkdir()
            df, took = self.limited(StopsAt(str(where), 0), n=1)
            assert df["x"].tolist() == [0] and not df[STATUS].astype(bool).any()
            assert df[EXCEPTION].iloc[0].startswith("TimeoutError: point [x=0]"), df[EXCEPTION].iloc[0]
            assert running_when_killed == [[]] * (attempt + 1), running_when_killed
            # Once its nanny has replaced the killed worker, the point has still run on that one worker alone.
            self.wait_for_workers(2)
            time.sleep(0.5)
            stopped = stopped_pids(where)
            assert len(stopped) == 1 and all(gone(pid) for pid in stopped), stopped
            assert took < 60, f"the sweep waited {took:.0f} s for a point limited to 1 s"

    @pytest.mark.parametrize("given", ["client", "get_executor"])
    def test_a_task_whose_result_cannot_be_read_here_ends_its_future(self, given: str) -> None:
        # distributed's own executor gathers a result before setting its future; when the gather raises, the
        # future was never set (a sweep waiting on it waited for ever). The executor a sweep runs on ends it.
        executor = executor_of(self.client if given == "client" else self.client.get_executor())
        assert isinstance(executor, DaskExecutor)
        future = executor.submit(_make_unreadable)
        error = future.exception(timeout=60)
        assert isinstance(error, RuntimeError) and "only be read in the process" in str(error)
        assert executor.submit(pow, 2, 10).result(timeout=60) == 1024

    def test_a_task_cancelled_in_dask_ends_its_future_cancelled(self) -> None:
        # Cancelled by the user's own client (or a restart), not through the future: the future ends too.
        import distributed

        executor = executor_of(self.client)
        before = set(self.client.futures)
        future = executor.submit(time.sleep, 60)
        (key,) = set(self.client.futures) - before
        distributed.Future(key, client=self.client).cancel()
        with pytest.raises(CancelledError):
            future.result(timeout=30)
        assert future.cancelled()
