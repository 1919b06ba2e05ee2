"""Helpers for the ClusterLab tests: a real controller and engines, and experiments engines can import.

Not a test module: the cluster tests import it. :class:`HubProcesses` starts
``ipcontroller`` and ``ipengine`` as subprocesses on 127.0.0.1, each in its own
session (process group), in a profile directory of the test's own, records
every process it started (children included, with their start times), and
stops them by PID and process group, never by name. The experiments live here,
in an importable module, so engines load them by reference.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ipyparallel as ipp
import psutil

from epyclab.experiment import Experiment
from epyclab.labs.transports.localcluster import process_alive

TASKSTORE = "epyclab.clustersetup.taskstore.TaskStore"


class Square(Experiment):
    """y = x * x, after sleeping ``seconds``."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.seconds:
            time.sleep(self.seconds)
        return {"y": params["x"] * params["x"], "pid": os.getpid()}


class AlwaysRaises(Experiment):
    """Every run raises."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        raise ArithmeticError(f"no result at x={params['x']}")


class Killer(Experiment):
    """y = x * x, but the process running x == ``fatal`` dies on the spot."""

    def __init__(self, fatal: int) -> None:
        super().__init__()
        self.fatal = fatal

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == self.fatal:
            os._exit(3)
        return {"y": params["x"] * params["x"]}


class WaitsToBeKilled(Experiment):
    """Its first ``times`` runs of each point write their engine's PID to ``<directory>/<x>.<n>.pid`` and
    wait to be killed (the test kills that engine); a later run returns y = x * x and its PID."""

    def __init__(self, directory: str, times: int = 1) -> None:
        super().__init__()
        self.directory = directory
        self.times = times

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        runs = sorted(Path(self.directory).glob(f"{params['x']}.*.pid"))
        if len(runs) < self.times:
            path = Path(self.directory) / f"{params['x']}.{len(runs)}.pid"
            path.with_suffix(".tmp").write_text(str(os.getpid()))
            path.with_suffix(".tmp").replace(path)
            time.sleep(120)  # the test ends this engine long before
        return {"y": params["x"] * params["x"], "pid": os.getpid()}


class WaitsForFile(Experiment):
    """y = x * x once the file ``path`` exists (a test creates it to let the points finish; at most 120 s)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while not os.path.exists(self.path) and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"y": params["x"] * params["x"], "pid": os.getpid()}


def _identity(pid: int) -> dict[str, Any] | None:
    try:
        return {"pid": pid, "created": psutil.Process(pid).create_time()}
    except psutil.Error:
        return None


class HubProcesses:
    """A controller and engines for one test (see the module docstring).

    ``durable=True`` gives the controller epyclab's SQLite task store;
    otherwise it keeps ipyparallel's default in-memory store (1024 records,
    or ``record_limit``).
    """

    def __init__(self, profile_dir: Path, engines: int = 2, durable: bool = True,
                 record_limit: int | None = None) -> None:
        self.profile_dir = Path(profile_dir)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.n = engines
        self.durable = durable
        self.record_limit = record_limit
        self.controller: subprocess.Popen | None = None
        self.engines: list[subprocess.Popen] = []
        self.started: list[dict[str, Any]] = []
        self._logs: list[Any] = []

    @property
    def client_file(self) -> Path:
        return self.profile_dir / "security" / "ipcontroller-client.json"

    def _log(self, name: str) -> Any:
        f = open(self.profile_dir / f"{name}.log", "ab")
        self._logs.append(f)
        return f

    # ---- starting ---------------------------------------------------------------------------

    def start(self) -> "HubProcesses":
        self.start_controller()
        for _ in range(self.n):
            self.start_engine()
        self.wait_for_engines(self.n)
        return self

    def start_controller(self) -> None:
        args = [
            sys.executable, "-m", "ipyparallel.controller", f"--profile-dir={self.profile_dir}",
            "--ip=127.0.0.1", "--ping=500", "--reuse", "--restore", "--log-level=INFO",
        ]
        if self.durable:
            args.append(f"--IPController.db_class={TASKSTORE}")
        if self.record_limit is not None:
            args.append(f"--DictDB.record_limit={self.record_limit}")
        self.controller = subprocess.Popen(args, start_new_session=True, cwd=self.profile_dir,
                                           stdout=self._log("controller"), stderr=subprocess.STDOUT)
        self._record(self.controller.pid)
        self.connect(timeout=30).close()
        self._record_children(self.controller.pid)

    def start_engine(self) -> int:
        p = subprocess.Popen(
            [sys.executable, "-m", "ipyparallel.engine", f"--profile-dir={self.profile_dir}"],
            start_new_session=True, cwd=self.profile_dir,
            stdout=self._log(f"engine-{len(self.engines)}"), stderr=subprocess.STDOUT,
        )
        self.engines.append(p)
        self._record(p.pid)
        return p.pid

    def connect(self, timeout: float = 30) -> ipp.Client:
        """A client, once the controller answers (it may be starting)."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.client_file.exists():
                try:
                    return ipp.Client(str(self.client_file), timeout=2)
                except (TimeoutError, OSError, ValueError) as exc:  # ValueError: the file half-written
                    last = exc
            time.sleep(0.2)
        raise RuntimeError(f"controller in {self.profile_dir} did not answer within {timeout} s: {last}")

    def wait_for_engines(self, n: int, timeout: float = 60) -> None:
        client = self.connect()
        try:
            client.wait_for_engines(n, timeout=timeout)
        finally:
            client.close()
        for p in self.engines:
            self._record_children(p.pid)

    def _record(self, pid: int) -> None:
        ident = _identity(pid)
        if ident is not None and ident not in self.started:
            self.started.append(ident)

    def _record_children(self, pid: int) -> None:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return
        for c in children:
            self._record(c.pid)

    # ---- killing ----------------------------------------------------------------------------

    def engine_pids(self) -> list[int]:
        """The engine processes (the kernels that run tasks) still alive."""
        return [p.pid for p in self.engines if p.poll() is None]

    def kill_engine(self, pid: int) -> None:
        """SIGKILL one engine's kernel process (its nanny reports the death and exits)."""
        os.kill(pid, signal.SIGKILL)
        for p in self.engines:
            if p.pid == pid:
                p.wait(10)

    def kill_controller(self) -> None:
        """SIGKILL the controller's whole process group (its schedulers hold the ports otherwise)."""
        assert self.controller is not None
        self._record_children(self.controller.pid)
        group = [i for i in self.started if _in_group(i, self.controller.pid)]
        os.killpg(self.controller.pid, signal.SIGKILL)
        self.controller.wait(10)
        _wait_gone(group, 10)
        self.controller = None

    def alive(self) -> list[int]:
        """The PIDs of processes this object started that still run."""
        return [int(i["pid"]) for i in self.started if process_alive(i)]

    def stop(self) -> None:
        """Stop the engines (TERM), then the controller's group; KILL what lingers; wait until all are gone."""
        for p in self.engines:
            if p.poll() is None:
                p.terminate()
        for p in self.engines:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self.controller is not None and self.controller.poll() is None:
            try:
                os.killpg(self.controller.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.controller.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.controller.pid, signal.SIGKILL)
                self.controller.wait(5)
        _wait_gone(self.started, 10)
        for ident in self.started:
            if process_alive(ident):
                os.kill(int(ident["pid"]), signal.SIGKILL)
        _wait_gone(self.started, 5)
        for f in self._logs:
            f.close()


def _in_group(ident: dict[str, Any], pgid: int) -> bool:
    try:
        return os.getpgid(int(ident["pid"])) == pgid
    except ProcessLookupError:
        return False


def _wait_gone(idents: list[dict[str, Any]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(process_alive(i) for i in idents):
        time.sleep(0.05)


@contextmanager
def running_hub(profile_dir: Path, engines: int = 2, durable: bool = True, **kwargs: Any) -> Iterator[HubProcesses]:
    """A started controller and ``engines`` engines; on leaving, every process is stopped (and checked gone)."""
    procs = HubProcesses(profile_dir, engines=engines, durable=durable, **kwargs)
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()
    assert procs.alive() == []
