"""ParallelLab's default transport: forked copies when forking is known to be safe, else clean local workers.

Forking the user's process copies its state, threads' locks included. A
process that used GNU OpenMP (numba, scikit-learn, PyTorch, any extension
built with ``-fopenmp``), or that runs other threads (a BLAS pool, a web
client, CUDA), can leave a forked child blocked for ever in its first
parallel region or on a lock some thread held at the fork. So the default,
``"auto"``, looks at the process when each sweep begins (:func:`fork_safe`):

- one thread (an OpenBLAS's own pool aside) and no OpenMP or CUDA runtime
  loaded: the sweep forks copies of this
  process (``"fork"``, see :mod:`epyclab.labs.transports.copies`; the first point starts
  within milliseconds);
- otherwise: clean workers, ``"workers"``: processes started afresh
  (loky's reusable executor, as joblib's default), which import what the
  experiment needs, kept warm across sweeps (for :data:`IdleSeconds`), so that
  only the first sweep pays their start. The experiment travels to them as
  the bytes every transport gets (see :mod:`epyclab.labs.engine.wire`).

``backend="fork"`` forks whatever the process holds (the hazard above is
then the user's); ``backend="workers"`` always uses clean workers.
"""

from __future__ import annotations

import os
from typing import Any

from epyclab.labs.transports.contract import ChunkFuture, Settings, Transport
from epyclab.labs.transports.copies import ForkTransport
from epyclab.labs.transports.cores import worker_thread_env
from epyclab.labs.transports.executors import ExecutorTransport
from epyclab.labs.transports.forkedcopy import fork_allowed
from epyclab.labs.transports.kernelshutdown import stop_at_kernel_shutdown
from epyclab.log import logger

__all__ = ["AutoTransport", "WorkersTransport", "fork_safe", "openmp_loaded", "IdleSeconds"]

#: Seconds clean workers wait, idle, for the next sweep before they exit.
IdleSeconds = 300

# Shared libraries of the OpenMP runtimes: GNU, LLVM, Intel.
_OPENMP = ("libgomp", "libomp.so", "libiomp5")


def _maps() -> str | None:
    try:
        with open("/proc/self/maps") as f:
            return f.read()
    except OSError:
        return None


def openmp_loaded() -> bool:
    """True if an OpenMP runtime (or CUDA's driver) is mapped into this process (read from ``/proc/self/maps``)."""
    maps = _maps()
    if maps is None:
        return True  # cannot tell: assume the worst
    return any(lib in maps for lib in (*_OPENMP, "libcuda.so"))


# The functions that say how many threads an OpenBLAS runs (numpy's and scipy's builds rename them).
_OPENBLAS_THREADS = ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads64_",
                     "scipy_openblas_get_num_threads")


def _openblas_pool() -> int:
    """The worker threads of the OpenBLAS libraries loaded here that are running now.

    numpy's OpenBLAS starts its pool at import; it is fork-safe: OpenBLAS shuts
    the pool down before every fork (``pthread_atfork``) and starts it again at
    its next parallel call. So after the first sweep forked its copies the pool
    is gone until numpy next multiplies matrices: then it counts for nothing,
    or the process's other thread count would be misjudged (and the next sweep
    would not fork).
    """
    import ctypes

    maps = _maps() or ""
    paths = {line.split()[-1] for line in maps.splitlines() if "openblas" in line.split()[-1].lower()}
    pool = 0
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # loaded already: the same handle
        except OSError:
            continue
        if not _openblas_running(lib):
            continue
        for name in _OPENBLAS_THREADS:
            get = getattr(lib, name, None)
            if get is not None:
                pool += max(0, int(get()) - 1)  # the calling thread is one of its n
                break
    return pool


def _openblas_running(lib: Any) -> bool:
    """True unless ``lib`` says its thread pool is shut down (OpenBLAS's ``blas_server_avail``, 0 then).

    A build that does not export it is taken to run its pool, as it does from its load.
    """
    import ctypes

    try:
        return bool(ctypes.c_int.in_dll(lib, "blas_server_avail").value)
    except ValueError:  # not exported by this build
        return True


def thread_count() -> int:
    """The threads of this process (``/proc/self/task``; what Python started and what C libraries did)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2  # cannot tell: assume more than one


#: Seconds :func:`fork_safe` waits for threads whose Python code has ended to leave the process.
SettleSeconds = 0.05


def _other_threads() -> int:
    """The threads of this process besides the calling one and OpenBLAS's running pool.

    A thread whose Python code has returned (the readers of the last sweep's
    copies, joined when it ended) is still listed in ``/proc`` for a moment
    while it exits: when Python runs no other thread, the count is read again
    for up to :data:`SettleSeconds`, so that a sweep right after another one is
    not judged by threads that are going. A thread a C library started stays,
    and is counted.
    """
    import threading
    import time

    def count() -> int:
        return thread_count() - _openblas_pool() - _named_safe_threads() - 1

    others = count()
    deadline = time.monotonic() + SettleSeconds
    while others > 0 and threading.active_count() == 1 and time.monotonic() < deadline:
        time.sleep(0.002)
        others = count()
    return others


#: Threads known by name (``/proc/self/task/*/comm``) to be safe across a fork: jemalloc's background thread,
#: which pyarrow's jemalloc starts when pandas imports it (jemalloc takes its locks around a fork with its own
#: ``pthread_atfork`` handlers, and the child starts its own thread when it needs one).
_SAFE_THREAD_NAMES = frozenset({"jemalloc_bg_thd"})


def _named_safe_threads() -> int:
    """How many of this process's threads are named in :data:`_SAFE_THREAD_NAMES`."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    n = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                n += f.read().strip() in _SAFE_THREAD_NAMES
        except OSError:
            continue  # it has just ended
    return n


def fork_safe() -> bool:
    """True if forking this process now cannot hang the child: Linux, no OpenMP (or CUDA) runtime, one thread.

    One thread besides those known to be safe across a fork: the running pool of an OpenBLAS (numpy's) and
    jemalloc's background thread (pyarrow's, started when pandas is imported: after a first
    ``lab.dataframe()``).
    """
    return fork_allowed() and not openmp_loaded() and _other_threads() == 0


class _Reusable:
    """loky's reusable executor of ``n`` workers, got afresh when a worker's death broke it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.executor = self.fresh()

    def fresh(self) -> Any:
        from loky import get_reusable_executor

        # Each worker's native thread pools sized for its share of the lab's cores (see transports.cores). The
        # warm workers are reused only if they were started so ("auto": the same arguments, these thread
        # variables included): a variable the user changed between sweeps starts fresh workers with it.
        self.executor = get_reusable_executor(max_workers=self.n, timeout=IdleSeconds, reuse="auto",
                                              env=worker_thread_env(self.n, self.n))
        stop_at_kernel_shutdown(self.executor)  # in a Jupyter kernel: so that it exits on its own
        return self.executor

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return self.executor.submit(*args, **kwargs)


class WorkersTransport:
    """``"workers"``: clean local worker processes (loky's reusable executor), kept warm across sweeps."""

    window = ExecutorTransport.window

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._reusable: _Reusable | None = None
        self._sweep: ExecutorTransport | None = None

    def begin(self, payloads: dict[str, Any]) -> None:
        if self._reusable is None:
            self._reusable = _Reusable(self._settings.n)
        else:
            self._reusable.fresh()  # the same warm workers, unless they idled out or broke
        self._sweep = ExecutorTransport(self._reusable)
        self._sweep.begin(payloads)

    def _live(self) -> ExecutorTransport:
        if self._sweep is None:
            raise RuntimeError("the workers transport has no sweep: call begin() first")
        return self._sweep

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None, ship: bool = False,
               limit: float | None = None) -> ChunkFuture:
        return self._live().submit(key, points, budget, ship, limit)

    def capacity(self) -> int:
        return self._live().capacity()

    def engines(self) -> tuple[int, int]:
        return self._settings.n, self._settings.n

    def started(self, future: Any) -> float | None:
        """When ``future``'s chunk started on its worker."""
        return self._live().started(future)

    def stop(self, future: Any) -> bool:
        """SIGKILL the worker running ``future``'s chunk; loky's executor is then broken, and a fresh one is got."""
        return self._live().stop(future)

    def check(self) -> None:
        self._live().check()

    def end(self, abandon: bool) -> None:
        sweep, self._sweep = self._sweep, None
        if sweep is not None:
            sweep.end(abandon)
        if abandon and self._reusable is not None:
            # A point may still be running: those workers are not kept.
            self.close()

    def close(self) -> None:
        """Stop the warm workers."""
        reusable, self._reusable = self._reusable, None
        if reusable is not None:
            reusable.executor.shutdown(wait=True, kill_workers=True)

    def pids(self) -> list[int]:
        """The PIDs of the warm workers (none once stopped)."""
        if self._reusable is None:
            return []
        processes = getattr(self._reusable.executor, "_processes", None) or {}
        return list(processes)


class AutoTransport:
    """``"auto"``, the default: ``"fork"`` for a sweep when :func:`fork_safe`, else ``"workers"``."""

    window = 1

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._fork: Transport | None = ForkTransport(settings) if fork_allowed() else None
        self._workers: WorkersTransport | None = None
        self._now: Any = None
        #: The transport the last sweep ran on: "fork" or "workers".
        self.chosen: str | None = None

    def begin(self, payloads: dict[str, Any]) -> None:
        if self._fork is not None and fork_safe():
            self._now, self.chosen = self._fork, "fork"
        else:
            if self._workers is None:
                self._workers = WorkersTransport(self._settings)
            self._now, self.chosen = self._workers, "workers"
            logger.debug("this process runs %d threads%s: the sweep runs on clean workers, not forked copies",
                         thread_count(), " and has loaded OpenMP" if openmp_loaded() else "")
        self._now.begin(payloads)

    def submit(self, key: str, points: list[dict[str, Any]], budget: float | None, ship: bool = False,
               limit: float | None = None) -> Any:
        return self._now.submit(key, points, budget, ship, limit)

    def capacity(self) -> int:
        return self._now.capacity()  # type: ignore[no-any-return]

    def engines(self) -> tuple[int, int]:
        return self._now.engines() if self._now is not None else (0, self._settings.n)  # type: ignore[no-any-return]

    def check(self) -> None:
        self._now.check()

    def started(self, future: Any) -> float | None:
        """When ``future``'s chunk started on its worker (a forked copy or a clean worker)."""
        return self._now.started(future)  # type: ignore[no-any-return]

    def stop(self, future: Any) -> bool:
        """Stop the worker running ``future``'s chunk (stuck past its time limit)."""
        return self._now.stop(future)  # type: ignore[no-any-return]

    def end(self, abandon: bool) -> None:
        if self._now is not None:
            self._now.end(abandon)

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()

    def pids(self) -> list[int]:
        """The PIDs of the last sweep's forked copies (none on clean workers)."""
        return self._fork.pids() if self.chosen == "fork" else []  # type: ignore[union-attr]

    def forks(self) -> tuple[int, int]:
        """Copies the last sweep forked, and how many replaced one that died."""
        return self._fork.forks() if self.chosen == "fork" else (0, 0)  # type: ignore[union-attr]
