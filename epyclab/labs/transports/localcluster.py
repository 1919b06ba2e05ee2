"""A local ipyparallel cluster that epyclab starts, stops, and cleans up after a crash.

:class:`LocalCluster` starts a controller and ``n`` engines (without nannies)
on 127.0.0.1, all at once, with the hub's heartbeat at 250 ms so that engines
register in 1-3 s instead of 6-7 s. It stops the engines first and then the
controller, then checks that every process it started (recorded with psutil,
children included) is gone, killing by PID any that is not (at interpreter
exit all at once, so that exiting costs only the slowest process's stop).

If the process that started a cluster is killed (SIGTERM, SIGKILL, a crashed
kernel), nothing it runs stops the ~13 processes of a 2-engine cluster. So each
cluster starts a reaper (:mod:`epyclab.labs.transports.reaper`), a small process that
stops the cluster when its owner dies, however it dies. And each cluster records
itself in a small state file, ``<profile_dir>/epyclab/local-<cluster id>.json``
(the owner's PID and the PIDs it started, each with its start time so that a
reused PID is never mistaken for ours). The next :meth:`LocalCluster.start` in
the same profile directory stops every cluster whose owner is gone; clusters
of live owners (another sweep running at the same time) are left alone, and
the files of those stopped (cluster and connection files, logs) are removed.
By hand: ``ipcluster stop --profile-dir=DIR --cluster-id=ID``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from epyclab.errors import ClusterConnectionError
from epyclab.labs.transports.cores import worker_thread_env
from epyclab.labs.transports.forkserver import ENGINE_NAME, ForkServer, register, unregister
from epyclab.labs.transports.localclusterlog import cluster_log_path, cluster_logger, keep_outputs, release_logger
from epyclab.labs.transports.ownerpipes import keep_from_children
from epyclab.log import logger
from epyclab.private import privateDirectory

if TYPE_CHECKING:
    # Imported where a cluster is started (about 0.4 s): the reaper and a warm sweep need none of it.
    import ipyparallel as ipp

__all__ = ["LocalCluster", "cleanup_orphans", "default_profile_dir", "process_alive"]

# The name of the IPython profile epyclab's local clusters use by default, so
# that they never mix with the user's own profiles and clusters.
PROFILE_NAME = "epyclab-parallel"


def default_profile_dir() -> str:
    """``$IPYTHONDIR/profile_epyclab-parallel`` (``~/.ipython/...`` by default)."""
    from IPython.paths import get_ipython_dir

    return os.path.join(get_ipython_dir(), f"profile_{PROFILE_NAME}")


def _state_dir(profile_dir: str) -> Path:
    return Path(profile_dir) / "epyclab"


def _identity(pid: int) -> dict[str, Any] | None:
    """A PID with its start time, which together name one process for ever."""
    try:
        return {"pid": pid, "created": psutil.Process(pid).create_time()}
    except psutil.Error:
        return None


def process_alive(ident: dict[str, Any]) -> bool:
    """True if the process recorded as ``{'pid', 'created'}`` still runs (a zombie does not).

    With ``created`` None (only the PID is known: see :func:`read_state`), any
    process with that PID counts: a cluster is never stopped under a live owner.
    """
    try:
        p = psutil.Process(int(ident["pid"]))
        if ident.get("created") is not None and abs(p.create_time() - float(ident["created"])) > 0.01:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _with_descendants(pids: list[int]) -> list[dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for pid in pids:
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except psutil.Error:
            continue
        for p in procs:
            ident = _identity(p.pid)
            if ident is not None:
                found[p.pid] = ident
    return list(found.values())


#: Linux lists each thread's children in ``/proc/PID/task/TID/children`` (CONFIG_PROC_CHILDREN).
_PROC_CHILDREN = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants, from the kernel's per-thread children lists (a few small reads).

    psutil's ``children()`` reads the parent of every process on the machine
    (measured: 20 ms a call with ~130 processes, the client's largest CPU cost
    during a warm sweep, which on 2 cores the engines lose); these lists cost
    a read per thread of the cluster's processes. A list read while a child
    starts or ends may miss it: fine for the periodic record (the next one
    sees it), not for a stop, which uses :func:`_with_descendants`.
    """
    tree, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # gone
        tree.append(parent)
        for tid in threads:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
            except OSError:
                continue  # the thread ended
    return tree


def _recorded_tree(pids: list[int]) -> list[dict[str, Any]]:
    """What :func:`_with_descendants` finds, cheaply where the kernel lists children (see :func:`_tree_pids`)."""
    if not _PROC_CHILDREN:
        return _with_descendants(pids)
    found: dict[int, dict[str, Any]] = {}
    for pid in pids:
        for member in _tree_pids(pid):
            if member not in found:
                ident = _identity(member)
                if ident is not None:
                    found[member] = ident
    return list(found.values())


def _merged(known: list[dict[str, Any]], found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``known`` and ``found`` together: a process once recorded stays recorded, even after its parent died.

    (A dead controller's schedulers live on, re-parented; a stop must still find them. PIDs are
    checked with their start times, so a reused PID is never mistaken for one of ours.)
    """
    out = {int(i["pid"]): i for i in known}
    for ident in found:
        out[int(ident["pid"])] = ident
    return list(out.values())


def _terminate(idents: list[dict[str, Any]], timeout: float, first: int = signal.SIGTERM) -> list[int]:
    """Stop the recorded processes still alive (``first``, then KILL after ``timeout``); return those killed."""
    alive = [i for i in idents if process_alive(i)]
    if not alive:
        return []
    for ident in alive:
        _signal(ident, first)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [i for i in alive if process_alive(i)]
        if not alive:
            return []
        time.sleep(0.05)
    for ident in alive:
        _signal(ident, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(process_alive(i) for i in alive):
        time.sleep(0.05)
    return [int(i["pid"]) for i in alive]


def _freeze(idents: list[dict[str, Any]], timeout: float = 2.0) -> None:
    """SIGSTOP the recorded processes and wait until each is stopped (or gone): none of them forks any more."""
    for ident in idents:
        _signal(ident, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    for ident in idents:
        while time.monotonic() < deadline and process_alive(ident):
            try:
                if psutil.Process(int(ident["pid"])).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
                    break
            except psutil.Error:
                break
            time.sleep(0.005)


def _kill_tree(idents: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """SIGKILL the recorded processes and every descendant, however far their start got; return them all.

    A controller that is still starting forks its schedulers: a stop that lists
    its children and then signals it could miss one forked in between, left
    running for ever. So each process is frozen first (SIGSTOP: it forks no
    more), then the whole tree is listed, frozen, and killed. Nothing is lost:
    the controller keeps its state in memory, and its files are removed by the caller.
    """
    tree = [i for i in idents if process_alive(i)]
    for _ in range(3):  # the roots, their children, grandchildren (schedulers fork no further)
        _freeze(tree)
        found = _merged(tree, _with_descendants([int(i["pid"]) for i in tree if process_alive(i)]))
        if len(found) == len(tree):
            break
        tree = found
    _terminate(tree, timeout, first=signal.SIGKILL)
    return _merged(idents, tree)


def _signal(ident: dict[str, Any], sig: int) -> None:
    # Re-check identity right before signalling: the PID must still be ours.
    if process_alive(ident):
        try:
            os.kill(int(ident["pid"]), sig)
        except ProcessLookupError:
            # It exited between the check and the signal: it is stopped, which is what we wanted.
            pass


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) during the block and raise KeyboardInterrupt after it, if one came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _start_reaper(state_file: Path) -> subprocess.Popen[bytes]:
    """Start the process that stops this cluster when this process dies (see :mod:`epyclab.labs.transports.reaper`)."""
    import epyclab

    env = dict(os.environ)
    # The reaper imports epyclab from where this process did, installed or not.
    root = str(Path(epyclab.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    reaper = subprocess.Popen(
        [sys.executable, "-m", "epyclab.labs.transports.reaper", str(state_file)],
        # The pipe's write end is not inheritable (PEP 446) and close_fds is on: this process holds the only one.
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        close_fds=True, env=env,
        # Its own session: a Ctrl-C (or SIGHUP) sent to the user's process group does not reach it.
        start_new_session=True,
    )
    # A child forked from this process closes its copy, so that the owner's death still closes every write end.
    keep_from_children(reaper.stdin)
    return reaper


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` by ``data`` at once: a reader (the reaper, another process) sees the old file or the new.

    Each write has a temporary file of its own (made with O_EXCL, 0600): the
    launch thread and the sweep both record processes, and with one shared
    temporary name one write could move the other's half-written file into place.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data))
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: A state file's name: ``local-<cluster id>.json``, the id being ``epyclab-<owner's PID>-<hex>``.
_STATE_NAME = re.compile(r"local-(epyclab-(\d+)-[0-9a-f]+)\.json")


def read_state(path: Path) -> dict[str, Any] | None:
    """The cluster state recorded in ``path``; for a damaged file, what its name says; None if not even that.

    A damaged file (empty, cut short by a full disk or a crash, not a state)
    must not leave its cluster running for good: its name still gives the
    cluster's id and the owner's PID, and every process ipyparallel started
    for the cluster carries that id in its environment, which is all
    :func:`stop_recorded_state` needs.

    Raises:
        FileNotFoundError: ``path`` is gone (the cluster was stopped).
    """
    try:
        state = json.loads(path.read_text())
        problem = "" if isinstance(state, dict) and {"cluster_id", "owner"} <= state.keys() else "not a cluster state"
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        state, problem = None, str(exc) or type(exc).__name__
    if not problem:
        return state
    match = _STATE_NAME.fullmatch(path.name)
    if match is None:
        logger.warning("ignoring cluster state file %s: %s, and its name names no cluster", path, problem)
        return None
    logger.warning("cluster state file %s is damaged (%s): cluster %s is known by its name alone",
                   path, problem, match.group(1))
    return {"cluster_id": match.group(1), "profile_dir": str(path.parent.parent),
            "owner": {"pid": int(match.group(2)), "created": None}, "controller": [], "engines": [], "helpers": []}


def cleanup_orphans(profile_dir: str | None = None, timeout: float = 5.0) -> list[str]:
    """Stop the clusters in ``profile_dir`` whose starting process is gone; return their ids.

    A cluster whose owner still runs is left alone.
    """
    profile_dir = os.path.abspath(profile_dir or default_profile_dir())
    cleaned = []
    for path in sorted(_state_dir(profile_dir).glob("local-*.json")):
        try:
            state = read_state(path)
        except FileNotFoundError:
            continue  # stopped meanwhile
        if state is None or process_alive(state["owner"]):
            continue
        cluster_id = state["cluster_id"]
        logger.warning(
            "stopping cluster %s in %s, left running by process %s that is gone",
            cluster_id, profile_dir, state["owner"]["pid"],
        )
        stop_recorded_state(path, state, timeout)
        cleaned.append(cluster_id)
    return cleaned


def stop_recorded_state(path: Path, state: dict[str, Any], timeout: float = 5.0) -> None:
    """Stop the cluster recorded as ``state`` in the file ``path`` (its processes, their children); remove its files.

    Children started since the last record (an engine's nanny, say) are found
    from the recorded processes still running.
    """
    engines = _with_live_descendants(state.get("helpers", []) + state.get("engines", []))
    controller = _with_live_descendants(state.get("controller", []))
    profile_dir = str(state.get("profile_dir") or path.parent.parent)
    _stop_recorded(profile_dir, state["cluster_id"], engines, controller, timeout)
    # Its owner may have died between ipyparallel starting a process and the record of it: every
    # process ipyparallel starts carries the cluster's id in its environment.
    unrecorded = _started_for(state["cluster_id"], profile_dir)
    if unrecorded:
        logger.warning("stopping processes %s of cluster %s that were never recorded",
                       [int(i["pid"]) for i in unrecorded], state["cluster_id"])
        _kill_tree(unrecorded, timeout)
    path.unlink(missing_ok=True)


def _started_for(cluster_id: str, profile_dir: str) -> list[dict[str, Any]]:
    """The running processes ipyparallel started for this cluster (``IPP_CLUSTER_ID`` in their environment)."""
    found = []
    for proc in psutil.process_iter(["environ"]):
        try:
            env = proc.info["environ"] or {}
        except psutil.Error:
            continue
        if env.get("IPP_CLUSTER_ID") == cluster_id and os.path.abspath(env.get("IPP_PROFILE_DIR", "")) == profile_dir:
            ident = _identity(proc.pid)
            if ident is not None and proc.pid != os.getpid():
                found.append(ident)
    return found


def _is_engine(pid: int) -> bool:
    """True if process ``pid`` runs an ipyparallel engine (see ENGINE_CMD, transports.forkserver)."""
    try:
        process = psutil.Process(pid)
        # An engine forked from the fork server has the server's command line, and names itself.
        return process.name() == ENGINE_NAME or "ipyparallel.engine" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _with_live_descendants(idents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Only processes that are still the recorded ones: a reused PID's children are not ours.
    return _merged(idents, _with_descendants([int(i["pid"]) for i in idents if process_alive(i)]))


def _stop_recorded(
    profile_dir: str, cluster_id: str, engines: list[dict[str, Any]], controller: list[dict[str, Any]], timeout: float
) -> None:
    """Stop an orphaned cluster by PID (engines first, then the controller) and remove its files."""
    # ``ipcluster stop`` would do, but it polls processes that are not its children
    # and takes ~6 s for a 2-engine cluster; TERM by PID takes milliseconds.
    killed = _terminate(engines, timeout)
    _kill_tree(controller, timeout)
    if killed:
        logger.warning("killed processes %s of orphaned cluster %s that did not stop on TERM", killed, cluster_id)
    if not controller:
        # Killed after ipyparallel started the controller but before its PIDs were
        # recorded: ipyparallel's own cluster file (if written) still knows them.
        import ipyparallel as ipp
        from traitlets import TraitError

        log = cluster_logger(profile_dir, cluster_id)
        try:
            try:
                cluster = ipp.Cluster.from_file(profile_dir=profile_dir, cluster_id=cluster_id, log=log)
            except FileNotFoundError:
                cluster = None
            except (ValueError, ImportError, TraitError) as exc:
                # ipyparallel writes its cluster file in place: an owner killed as it wrote it leaves
                # it empty or cut short; and one written by another version may name a launcher class this
                # one cannot import. Its processes are still found by their environment (below).
                logger.warning("the cluster file of orphaned cluster %s cannot be read (%s)", cluster_id, exc)
                cluster = None
            if cluster is not None:
                try:
                    cluster.stop_engines_sync()
                except Exception as exc:
                    logger.warning("stopping orphaned cluster %s: stopping its engines failed: %s", cluster_id, exc)
                pid = cluster.controller.pid if cluster.controller is not None else None
                ident = _identity(pid) if pid else None
                if ident is not None:
                    # By PID with its whole tree, not ipyparallel's stop: that would miss the
                    # schedulers of a controller killed as it started them.
                    _kill_tree([ident], timeout)
        finally:
            release_logger(log)
    _remove_files(profile_dir, cluster_id)


def _remove_files(profile_dir: str, cluster_id: str) -> None:
    """Remove what ipyparallel wrote for a stopped cluster (cluster and connection files, logs).

    What its processes wrote (their log files) is kept in the clusters' log first (:func:`keep_outputs`).
    """
    outputs = sorted(Path(profile_dir, "log").glob(f"*{cluster_id}*.log"))
    try:
        keep_outputs(profile_dir, cluster_id, outputs)
    except OSError as exc:
        logger.warning("could not keep the output of cluster %s's processes in %s: %s",
                       cluster_id, cluster_log_path(profile_dir), exc)
    for sub in ("security", "log", "pid"):
        for path in Path(profile_dir, sub).glob(f"*{cluster_id}*"):
            path.unlink(missing_ok=True)


#: The engines' command: ipyparallel's engine, without the debugger's library. ipykernel loads
#: debugpy (and its pydevd) whenever it can import it, 0.1-0.2 CPU-s per engine; an engine of a
#: sweep is never debugged, and on 2 cores every CPU-second spent starting processes costs a
#: cold sweep half a second. A None entry in sys.modules makes ``import debugpy`` raise
#: ImportError, which ipykernel takes as "no debugger".
#:
#: Both the engines and the controller import with the cyclic garbage collector off, then freeze what
#: they imported (``gc.freeze``: later collections skip it) and turn the collector back on: their
#: imports (IPython, ipykernel, zmq, numpy; 500+ modules) build objects that all live as long as the
#: process, so the collections that run meanwhile find nothing to free. Measured here: the engine's
#: imports 0.46 -> 0.44 CPU-s, the controller's 0.44 -> 0.39, about 0.1 CPU-s per cold start of 2
#: engines, which on 2 cores is time the forked copies run points in instead.
ENGINE_CMD = [
    sys.executable, "-c",
    "import gc, sys; gc.disable(); sys.modules.setdefault('debugpy', None); "
    "from ipyparallel.engine.app import main; gc.freeze(); gc.enable(); main()",
]
#: The controller's command: ipyparallel's (``python -m ipyparallel.controller``), importing as the engines do,
#: without numpy. Its task scheduler imports numpy if it can (``try: import numpy``) for one scheme only,
#: ``"weighted"``, which this cluster never configures (it runs ipyparallel's default, ``"leastload"``); the
#: import (and OpenBLAS's start) is a third of the controller's start-up: 0.30-0.34 -> 0.20-0.21 CPU-s here,
#: which on 2 cores a cold sweep's copies spend running points instead.
CONTROLLER_CMD = [
    sys.executable, "-c",
    "import gc, sys; gc.disable(); sys.modules.setdefault('numpy', None); "
    "from ipyparallel.controller.app import main; gc.freeze(); gc.enable(); main()",
]


class LocalCluster:
    """A controller and ``n`` engines on this machine, started by :meth:`start` and stopped by :meth:`stop`.

    ``profile_dir`` defaults to :func:`default_profile_dir`; tests give each
    run its own. ``timeout`` bounds the wait for the controller and the
    engines. Use it as a context manager, which yields the connected ``Client``.

    Starting comes in two steps, so that a sweep can do useful work meanwhile:
    :meth:`launch` starts the reaper and the fork server, has the controller
    and the engines forked from it at once (see :mod:`epyclab.labs.transports.forkserver`)
    and returns (about 0.3 s: the server's imports); :meth:`poll` connects the client once the
    controller is up and says how many engines registered, without waiting.
    :meth:`start` does both and waits.
    """

    #: Heartbeat period of the hub in ms. Engines register on a heartbeat, so ipyparallel's default
    #: (3000) makes start-up take ~6.6 s, 500 about 3 s and 250 about 2.5 s on a busy 2-core machine.
    #: An engine is declared dead after 10 missed beats; the beats are answered by a zmq thread
    #: that runs even while the engine's Python is busy.
    PingMs = 250
    #: Seconds a process may take to stop on TERM before it is killed.
    StopTimeout = 5.0
    #: Engines started over a cluster's life to replace engines that died.
    MaxReplacements = 64
    #: Seconds between looks for processes the cluster started since the last look.
    RecordSeconds = 1.0

    def __init__(self, n: int, profile_dir: str | None = None, timeout: float = 60.0) -> None:
        if n < 1:
            raise ValueError(f"a local cluster needs at least one engine, not {n}")
        self.n = int(n)
        self.profile_dir = os.path.abspath(profile_dir or default_profile_dir())
        self.timeout = float(timeout)
        self.cluster_id = f"epyclab-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.cluster: ipp.Cluster | None = None
        self.client: ipp.Client | None = None
        self._controller: list[dict[str, Any]] = []
        self._engines: list[dict[str, Any]] = []
        # Processes of the lab's that run points for this cluster (see epyclab.labs.transports.forkedcopy).
        self._helpers: list[dict[str, Any]] = []
        #: Engines started so far to replace engines that died.
        self.replaced = 0
        self._next_record = 0.0
        self._launched_at: float | None = None
        self._connected_at: float | None = None
        self._state_file = _state_dir(self.profile_dir) / f"local-{self.cluster_id}.json"
        self._log: logging.Logger | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._forkserver: ForkServer | None = None
        #: The thread-count variables its engines start with (and engines started to replace dead ones):
        #: each engine's share of the lab's cores, or what the user set when it was made (see transports.cores).
        self.thread_env = worker_thread_env(self.n, self.n)

    # ---- the state file ----------------------------------------------------------------

    def _save_state(self) -> None:
        owner = _identity(os.getpid())
        _write_json(self._state_file, {
            "cluster_id": self.cluster_id,
            "profile_dir": self.profile_dir,
            "owner": owner,
            "controller": self._controller,
            "engines": self._engines,
            "helpers": self._helpers,
            "reaper": _identity(self._reaper.pid) if self._reaper is not None else None,
        })

    def _record(self) -> None:
        """Record the controller's and engines' processes, children included."""
        cluster = self.cluster
        if cluster is None:
            return
        if cluster.controller is not None and cluster.controller.pid:
            controller = _merged(self._controller, _recorded_tree([cluster.controller.pid]))
        else:
            controller = self._controller
        engines = _merged(self._engines, _recorded_tree(self.engine_pids()))
        if controller != self._controller or engines != self._engines:
            self._controller, self._engines = controller, engines
            self._save_state()

    def adopt(self, pid: int) -> None:
        """Record process ``pid`` (started by this process to run points) as one to stop with this cluster.

        It is stopped with the engines, by :meth:`stop` or, if this process
        dies, by the reaper. Call it before :meth:`launch` returns control to
        anything that may fail, so that no window leaves it unrecorded.
        """
        ident = _identity(pid)
        if ident is not None:
            self._helpers = _merged(self._helpers, [ident])
            if self._state_file.exists():
                self._save_state()

    def log_file(self, name: str) -> str:
        """The path of log file ``name`` of this cluster (in the profile's log directory; removed by :meth:`stop`)."""
        directory = Path(self.profile_dir, "log")
        privateDirectory(directory)
        return str(directory / f"{name}-{self.cluster_id}.log")

    def pids(self) -> list[int]:
        """The PIDs of every process this cluster started (controller, schedulers, engines, helpers)."""
        return [int(i["pid"]) for i in self.processes()]

    def processes(self) -> list[dict[str, Any]]:
        """The recorded processes as ``{'pid', 'created'}`` (see :func:`process_alive`)."""
        return list(self._controller + self._engines + self._helpers)

    # ---- start and stop -------------------------------------------------------------------

    def prepare(self) -> None:
        """Clean up orphaned clusters, write this cluster's state file and start its reaper (milliseconds).

        From here on nothing this cluster records can outlive this process.
        """
        if self._reaper is not None:
            return
        cleanup_orphans(self.profile_dir, self.StopTimeout)
        # Private before ipyparallel writes its connection files and its processes' logs there (those
        # files it makes readable by all; the directories keep everyone else out).
        for sub in ("security", "log"):
            privateDirectory(Path(self.profile_dir, sub))
        privateDirectory(self._state_file.parent)
        self._save_state()
        # Started before the controller, so that from its first process on this cluster cannot outlive us.
        self._reaper = _start_reaper(self._state_file)
        self._save_state()

    def launch(self) -> None:
        """Start the controller and the engines, at once, and return without waiting for them.

        Engines wait for the controller's connection file themselves, so their
        start-up (imports) overlaps the controller's. Call :meth:`poll` (or
        :meth:`start`) to connect.
        """
        if self.cluster is not None:
            return
        import ipyparallel as ipp
        from traitlets.config import Config

        from epyclab.labs.transports.forkedlaunchers import ForkedControllerLauncher, ForkedEngineSetLauncher

        self.prepare()
        self._start_forkserver()
        config = Config()
        # ipyparallel sleeps 0.1 s between engines (to give them ids in order, which nothing here needs):
        # this thread would wait, and the last engine register, that much later.
        config.LocalEngineSetLauncher.delay = 0.0
        config.LocalControllerLauncher.controller_cmd = CONTROLLER_CMD
        # Each engine's native thread pools sized for its share of the cores, as joblib sizes its workers'
        # (see transports.cores); restarted engines get the same.
        config.LocalEngineSetLauncher.environment = dict(self.thread_env)
        self._log = cluster_logger(self.profile_dir, self.cluster_id)
        self._launched_at = time.monotonic()
        self.cluster = ipp.Cluster(
            n=self.n,
            profile_dir=self.profile_dir,
            cluster_id=self.cluster_id,
            controller_ip="127.0.0.1",
            controller_args=[f"--ping={self.PingMs}"],
            engine_timeout=int(self.timeout),
            # Its messages (and, on stop, the engines' output) go to a file, never to the user's cell.
            log=self._log,
            # Engines are started with the controller, not after it: they wait for its connection
            # file themselves (see _engine_args), so their start-up (imports) overlaps the controller's.
            send_engines_connection_env=False,
            # This class stops what it started (by PID, at once); ipyparallel's own exit hook would
            # stop it again, slowly.
            shutdown_atexit=False,
            # The controller and the engines forked from the fork server (plain processes without one).
            controller_launcher_class=ForkedControllerLauncher,
            engine_launcher_class=ForkedEngineSetLauncher,
            config=config,
        )
        try:
            self.cluster.start_controller_sync()
            self.cluster.start_engines_sync(engine_cmd=ENGINE_CMD, engine_args=self._engine_args())
            self._record()
        except BaseException:
            self.stop()
            raise

    def _start_forkserver(self) -> None:
        """Start the fork server the controller and the engines are forked from (see transports.forkserver).

        With the engines' environment (their thread pools sized), and the cluster's id in it as ipyparallel puts
        it in every process it starts, so that the server and its children are found as this cluster's by
        their environment too. It is stopped with the engines, by :meth:`stop` or by the reaper.

        Linux only: macOS's system libraries are not safe to fork once loaded (which is why multiprocessing
        spawns there), and Windows cannot fork. Elsewhere the processes are started plain, as ipyparallel does.
        """
        if not sys.platform.startswith("linux"):
            return
        env = {**os.environ, **self.thread_env, "IPP_CLUSTER_ID": self.cluster_id, "IPP_PROFILE_DIR": self.profile_dir}
        try:
            server = ForkServer(env, stderr=self.log_file("forkserver"))
        except OSError as exc:
            logger.warning("no fork server for local cluster %s (%s): starting plain processes", self.cluster_id, exc)
            return
        self._forkserver = server
        self.adopt(server.pid)
        register(self.cluster_id, server)

    def _stop_forkserver(self) -> None:
        server, self._forkserver = self._forkserver, None
        unregister(self.cluster_id)
        if server is not None:
            server.close(self.StopTimeout)

    def _connection_file(self) -> Path:
        # The controller writes the client's file, then the engines': once the latter exists, the former is whole.
        return Path(self.profile_dir, "security", f"ipcontroller-{self.cluster_id}-engine.json")

    def poll(self) -> int:
        """Connect the client once the controller is up; return how many engines have registered (0 before).

        Never waits (but for connecting, a few milliseconds once the controller is up).

        Raises:
            ClusterConnectionError: the controller did not come up, or no engine registered, within
                ``timeout`` seconds of :meth:`launch`; or the cluster was not launched.
        """
        if self.cluster is None or self._launched_at is None:
            raise ClusterConnectionError(f"local cluster {self.cluster_id} is not running")
        if self.client is None:
            if not self._connection_file().exists():
                if time.monotonic() - self._launched_at > self.timeout:
                    raise ClusterConnectionError(
                        f"the controller of local cluster {self.cluster_id} did not start within "
                        f"{self.timeout:.0f} s; its log is in {self.profile_dir}/log"
                    )
                return 0
            self.client = self.cluster.connect_client_sync()
            self._connected_at = time.monotonic()
        registered = len(self.client.ids)
        if not registered and time.monotonic() - self._launched_at > self.timeout:
            raise ClusterConnectionError(
                f"no engine of local cluster {self.cluster_id} registered within {self.timeout:.0f} s; "
                f"their logs are in {self.profile_dir}/log"
            )
        return registered

    def ready(self) -> bool:
        """True once the client is connected and every engine has registered."""
        return self.client is not None and len(self.client.ids) >= self.n

    def start(self, wait_for: int | None = None) -> ipp.Client:
        """Clean up orphaned clusters, start this one, and return a client once engines registered.

        ``wait_for`` engines (all by default) must have registered; the others
        join while the client already uses the first ones.

        Raises:
            ClusterConnectionError: not that many engines registered within ``timeout`` seconds.
        """
        wait_for = self.n if wait_for is None else max(1, min(self.n, int(wait_for)))
        if self.cluster is not None:
            raise RuntimeError(f"local cluster {self.cluster_id} is already started")
        self.launch()
        try:
            self.wait(wait_for)
        except BaseException:
            self.stop()
            raise
        logger.info("started local cluster %s with %d engines", self.cluster_id, self.n)
        assert self.client is not None
        return self.client

    def wait(self, engines: int) -> None:
        """Wait until ``engines`` engines have registered.

        Raises:
            ClusterConnectionError: they did not within ``timeout`` seconds of :meth:`launch`.
        """
        assert self._launched_at is not None
        while self.poll() < engines:
            if time.monotonic() - self._launched_at > self.timeout:
                raise ClusterConnectionError(
                    f"only {self.poll()} of {engines} engines of local cluster {self.cluster_id} "
                    f"registered within {self.timeout:.0f} s; their logs are in {self.profile_dir}/log"
                )
            time.sleep(0.02)
        # The engines' children exist by now: record them too.
        self._record()

    def check(self) -> None:
        """Raise ClusterConnectionError if a process of the controller has died; replace dead engines.

        The hub and the schedulers are separate processes: tasks may still flow
        without the hub, but then nobody notices an engine's death, and a task
        on a dead scheduler never returns. Either way the cluster is broken.
        An engine that died (a point that crashed its process) is replaced, so
        that a point that kills engines cannot take the whole cluster with it.
        """
        dead = [int(p["pid"]) for p in self._controller if not process_alive(p)]
        if dead:
            # Its schedulers outlive a controller killed alone (SIGKILL, the OOM killer), holding its ports
            # and running tasks nobody collects: stop them now, recorded or not.
            self._stop_controller_tree()
            raise ClusterConnectionError(
                f"the controller of local cluster {self.cluster_id} has died (process(es) {dead} gone); "
                f"the results so far are kept: run the sweep again with resume=True"
            )
        if not self.replace_dead_engines() and self.cluster is not None and time.monotonic() >= self._next_record:
            # Processes started since the last look (schedulers, engines still registering),
            # so that a crash of this process leaves nothing the next start cannot find. Not at every
            # check: listing a process's children reads the whole process table.
            self._record()
            self._next_record = time.monotonic() + self.RecordSeconds

    def _stop_controller_tree(self) -> None:
        """Kill what is left of the controller: its recorded processes, and every process of its tree.

        A scheduler forked after the last record is in no record, and once its
        controller died it is no one's descendant either: it is found by the
        cluster's id, which every process ipyparallel starts for the cluster
        carries in its environment. Engines (which carry it too) are left to :meth:`stop`.
        """
        engines = {int(i["pid"]) for i in self._engines + self._helpers} | set(self.engine_pids())
        marked = [i for i in _started_for(self.cluster_id, self.profile_dir) if int(i["pid"]) not in engines
                  and not _is_engine(int(i["pid"]))]
        self._controller = _kill_tree(_merged(self._controller, marked), self.StopTimeout)

    def _engine_args(self) -> list[str]:
        wait = max(5, int(self.timeout))
        return [
            # An engine started with the controller waits this long for its connection file, and then
            # for the controller's answer to its registration: ipyparallel's 5 s is too short on a loaded
            # machine, and an engine that gives up exits (then counted dead, and replaced).
            f"--IPEngine.wait_for_url_file={wait}", f"--IPEngine.timeout={wait}",
            # No nanny: it is one more process per engine (0.2 CPU-s to start, which on 2 cores is
            # 0.1 s of every cold sweep) and delays registration by 0.3-0.6 s; this class stops
            # engines by PID, and the hub's heartbeat notices one that died.
            "--IPEngine.enable_nanny=False",
            # What an engine writes below Python goes straight to its output file, not through a
            # pipe and a thread that die with it (see epyclab.labs.transports.enginestream).
            "--IPEngine.out_stream_factory=epyclab.labs.transports.enginestream.UnwatchedOutStream",
        ]

    def engine_pids(self) -> list[int]:
        """The PIDs of the engines ipyparallel started for this cluster (replacements included; some may have ended)."""
        cluster = self.cluster
        if cluster is None:
            return []
        return [
            launcher.pid
            for engine_set in cluster.engines.values()
            for launcher in getattr(engine_set, "launchers", {}).values()
            if launcher.pid
        ]

    def engine_exit_code(self, pid: int) -> int | None:
        """How engine process ``pid`` of this cluster ended (``-N``: signal N), or None if it runs or is unknown."""
        from epyclab.labs.transports.deaths import child_exit_code

        cluster = self.cluster
        for engine_set in (cluster.engines.values() if cluster is not None else ()):
            for launcher in getattr(engine_set, "launchers", {}).values():
                process = getattr(launcher, "process", None)  # ipyparallel's launcher's psutil.Process
                if launcher.pid == pid and process is not None:
                    # psutil keeps the exit status of the process it waited for (-N for signal N), and the
                    # launcher's thread waits for it as it exits.
                    try:
                        code = process.wait(0)
                    except psutil.TimeoutExpired:
                        return None  # still running
                    return int(code) if code is not None else None
        return child_exit_code(pid)

    def replace_dead_engines(self) -> int:
        """Start an engine for each of this cluster's engines whose process has died; return how many.

        At most :attr:`MaxReplacements` engines are started over the cluster's
        life, so engines that die as they start (a broken environment) are not
        restarted for ever.
        """
        if self.cluster is None:
            return 0
        alive = 0
        for pid in self.engine_pids():
            try:
                alive += psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                continue
        missing = min(self.n - alive, self.MaxReplacements - self.replaced)
        if missing <= 0:
            return 0
        logger.warning("%d engine(s) of local cluster %s died; starting %d new one(s)",
                       self.n - alive, self.cluster_id, missing)
        self.replaced += missing
        self.cluster.start_engines_sync(n=missing, engine_cmd=ENGINE_CMD, engine_args=self._engine_args())
        self._record()
        return missing

    def stop(self, at_once: bool = False) -> None:
        """Stop the engines, then the controller; make sure every recorded process is gone.

        With ``at_once`` (at interpreter exit) the engines are sent SIGKILL, not
        SIGTERM (they hold nothing to save): exiting takes milliseconds, not
        the engines' Python shutdown. The controller is always frozen and
        killed with every process it started (see :func:`_kill_tree`), even
        mid-start.
        A Ctrl-C while stopping is held until the stop is complete, so that a
        second Ctrl-C cannot leave half a cluster running.
        """
        with _sigint_deferred():
            self._stop(at_once)

    def _stop(self, at_once: bool = False) -> None:
        if self.cluster is not None:
            try:
                self._record()  # engines started to replace dead ones, and their children
            except psutil.Error as exc:
                logger.debug("could not record the processes of cluster %s: %s", self.cluster_id, exc)
        if self.client is not None:
            self.client.close()
            self.client = None
        self.cluster = None
        # By PID, not through ipyparallel (whose stop polls and takes seconds): TERM the engines
        # (and the lab's helpers), then the controller and its schedulers, and wait until each is gone.
        # (At exit, all at once: the engines and helpers hold nothing to save, so SIGKILL.)
        # The fork server last (below), so that it reaps the engines and the controller it forked as they end.
        server = self._forkserver.pid if self._forkserver is not None else None
        killed = _terminate([i for i in self._helpers if int(i["pid"]) != server] + self._engines, self.StopTimeout,
                            signal.SIGKILL if at_once else signal.SIGTERM)
        # The controller and its schedulers, however far its start got (see _kill_tree).
        self._controller = _kill_tree(self._controller, self.StopTimeout)
        self._stop_forkserver()
        # Whatever no record names (schedulers of a controller killed before they were recorded, an
        # engine started as the owner stopped): every process of the cluster carries its id.
        unrecorded = _started_for(self.cluster_id, self.profile_dir)
        if unrecorded:
            logger.warning("stopping processes %s of cluster %s that were never recorded",
                           [int(i["pid"]) for i in unrecorded], self.cluster_id)
            _kill_tree(unrecorded, self.StopTimeout)
        if killed:
            logger.warning("killed processes %s of cluster %s that did not stop on TERM", killed, self.cluster_id)
        _remove_files(self.profile_dir, self.cluster_id)
        self._state_file.unlink(missing_ok=True)
        self._stop_reaper()
        if self._log is not None:
            release_logger(self._log)
            self._log = None
        logger.info("stopped local cluster %s", self.cluster_id)

    def _stop_reaper(self) -> None:
        """Close the reaper's pipe; with the state file gone it exits at once."""
        reaper, self._reaper = self._reaper, None
        if reaper is None:
            return
        assert reaper.stdin is not None
        reaper.stdin.close()
        try:
            reaper.wait(timeout=self.StopTimeout)
        except subprocess.TimeoutExpired:
            logger.warning("the reaper %d of cluster %s did not exit; killing it", reaper.pid, self.cluster_id)
            reaper.kill()
            reaper.wait()

    def reaper_pid(self) -> int | None:
        """The PID of the process that stops this cluster if this process dies (None when stopped)."""
        return self._reaper.pid if self._reaper is not None else None

    def __enter__(self) -> ipp.Client:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
