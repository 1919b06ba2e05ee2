"""One local cluster per process, kept warm across sweeps (loky's reusable executor is the model).

Starting a local cluster costs seconds; a Jupyter user runs sweep after sweep.
So a :class:`~epyclab.labs.parallel.ParallelLab` with no ``cluster=`` or
``client=`` borrows the process's cluster for its size and profile directory
with :func:`acquire` (starting it on first use, replacing engines that died
since) and gives it back with :func:`release`. It is stopped:

- when a sweep on it ends with an error (the controller died, Ctrl-C, the
  notebook raised): an engine may still be running a point, so the next sweep
  starts afresh;
- after :data:`IDLE_SECONDS` without a sweep (a daemon timer);
- at interpreter exit (an ``atexit`` hook that stops every process by PID,
  all at once, so exiting takes a fraction of a second, not the seconds of
  ipyparallel's stop);
- by :func:`shutdown` (``ParallelLab.shutdown()``), at any time;
- at the next :func:`acquire` with no sweep on it, if the user changed a
  thread-count variable since it started (its engines would not see it).

Nothing outlives the process that started it: if it dies without stopping its
cluster (SIGTERM, SIGKILL, a crashed kernel), the cluster's reaper stops it
(see :mod:`epyclab.labs.transports.reaper`); were the reaper killed too, the next start in
the same profile directory stops it (see :mod:`epyclab.labs.transports.localcluster`). A process forked from the
owner (multiprocessing) never stops the owner's clusters.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from epyclab.labs.transports.cores import worker_thread_env
from epyclab.labs.transports.localcluster import LocalCluster, default_profile_dir
from epyclab.log import logger

__all__ = ["acquire", "release", "shutdown", "IDLE_SECONDS"]

#: Seconds a warm cluster waits for the next sweep before it is stopped.
IDLE_SECONDS = 300.0

_lock = threading.RLock()
_clusters: dict[tuple[int, str], LocalCluster] = {}
_users: dict[tuple[int, str], int] = {}
_timers: dict[tuple[int, str], threading.Timer] = {}
_owner = os.getpid()
_hooked = False


def _key(n: int, profile_dir: str | None) -> tuple[int, str]:
    return (int(n), os.path.abspath(profile_dir or default_profile_dir()))


def _usable(local: LocalCluster) -> bool:
    try:
        local.check()
    except Exception as exc:
        logger.warning("local cluster %s cannot be reused (%s); starting a new one", local.cluster_id, exc)
        return False
    return local.cluster is not None  # launched (a sweep may have ended before it was connected)


def acquire(n: int, profile_dir: str | None = None, timeout: float = 60.0) -> LocalCluster:
    """The process's local cluster of ``n`` engines in ``profile_dir``: the warm one, or a new one.

    A new one is only prepared (its reaper runs, see
    :meth:`LocalCluster.prepare`); the caller launches it
    (:meth:`LocalCluster.launch`) and connects as the engines register
    (:meth:`LocalCluster.poll`). One a sweep left still starting is returned
    as it is.
    """
    global _hooked
    key = _key(n, profile_dir)
    with _lock:
        timer = _timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        local = _clusters.get(key)
        if local is not None and not _usable(local):
            _stop(key)
            local = None
        if local is not None and _users.get(key, 0) == 0 and local.thread_env != worker_thread_env(n, n):
            # The user changed a thread-count variable since it started (OMP_NUM_THREADS=4 between two
            # cells): its engines would not see it. Fresh ones, as loky replaces its warm workers then.
            logger.info("stopping local cluster %s: thread variables changed since it started", local.cluster_id)
            _stop(key)
            local = None
        if local is None:
            local = LocalCluster(n, profile_dir, timeout)
            # Its reaper only: the sweep launches the controller and the engines, and uses them
            # as they register (see LocalCluster.launch and poll).
            local.prepare()
            _clusters[key] = local
        _users[key] = _users.get(key, 0) + 1
        if not _hooked:
            atexit.register(_at_exit)
            _hooked = True
        return local


def release(local: LocalCluster, broken: bool = False) -> None:
    """Give back a cluster from :func:`acquire`: keep it warm, or stop it if the sweep on it ``broken``."""
    with _lock:
        key = next((k for k, v in _clusters.items() if v is local), None)
        if key is None:
            return
        _users[key] = max(0, _users.get(key, 0) - 1)
        if broken:
            _stop(key)
            return
        if _users[key] == 0 and IDLE_SECONDS >= 0:
            timer = threading.Timer(IDLE_SECONDS, _idle, args=(key, local))
            timer.daemon = True
            _timers[key] = timer
            timer.start()


def _idle(key: tuple[int, str], local: LocalCluster) -> None:
    with _lock:
        if _clusters.get(key) is local and _users.get(key, 0) == 0:
            logger.info("stopping local cluster %s, idle for %.0f s", local.cluster_id, IDLE_SECONDS)
            _stop(key)


def _stop(key: tuple[int, str]) -> None:
    timer = _timers.pop(key, None)
    if timer is not None:
        timer.cancel()
    _users.pop(key, None)
    local = _clusters.pop(key, None)
    if local is not None:
        local.stop()


def running() -> list[LocalCluster]:
    """The warm clusters of this process."""
    with _lock:
        return list(_clusters.values())


def _at_exit() -> None:
    """Stop every warm cluster, each with all its processes at once (see LocalCluster.stop)."""
    if os.getpid() != _owner:
        return
    with _lock:
        for key in list(_clusters):
            timer = _timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            _users.pop(key, None)
            _clusters.pop(key).stop(at_once=True)


def shutdown(local: Any = None) -> None:
    """Stop ``local`` (one of this process's warm clusters), or all of them; a no-op in a forked child."""
    if os.getpid() != _owner:
        return
    with _lock:
        for key in [k for k, v in _clusters.items() if local is None or v is local]:
            _stop(key)
