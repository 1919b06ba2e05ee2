"""Starting engines on workers and waiting until they have registered with the controller.

Each engine is started with ``EPYCLAB_WORKER`` set to the worker it was
started for, so that once it registers, asking it (``os.getenv``) tells which
worker it is on, even when several workers share a machine name.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from time import monotonic, sleep
from typing import Any

import ipyparallel

from epyclab.clustersetup import processes
from epyclab.clustersetup.errors import ClusterSetupError
from epyclab.clustersetup.hosts import Host
from epyclab.clustersetup.profile import ENGINE_FILE
from epyclab.clustersetup.ssh import Remote, shellPath
from epyclab.log import logger

__all__ = ["WORKER_VARIABLE", "Registered", "startEngines", "engineCount", "waitForEngines", "pushEngineFile"]

#: The environment variable naming, on each engine, the worker it was started for.
WORKER_VARIABLE = "EPYCLAB_WORKER"
_LOG = "log/epyclab-engine-$i.log"
# Seconds before an engine that has not answered is asked again.
_ASK_AGAIN = 3.0


@dataclass(frozen=True)
class Registered:
    """An engine that answered: the worker it was started for, and its process and parent PIDs there."""

    host: str
    pids: tuple[int, ...] = ()


def whereAmI() -> tuple[str, int, int]:
    """Run on an engine: the worker it was started for, its PID and its parent's (a nanny or launcher)."""
    return os.getenv(WORKER_VARIABLE, ""), os.getpid(), os.getppid()


def engineCount(enginesPerWorker: int | None, leaveFree: int = 1) -> str:
    """The shell arithmetic giving the number of engines on a worker: N, or its cores minus ``leaveFree``."""
    if enginesPerWorker is not None:
        if enginesPerWorker < 1:
            raise ClusterSetupError(f"--engines-per-worker must be at least 1, not {enginesPerWorker}")
        return str(int(enginesPerWorker))
    if leaveFree < 0:
        raise ClusterSetupError(f"--leave-free must be 0 or more, not {leaveFree}")
    return f"$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN) - {int(leaveFree)}"


def pushEngineFile(remote: Remote, host: Host, profileDirectory: Path, remoteProfile: str) -> None:
    """Copy the engine connection file to the worker, private to its user (it holds the key)."""
    if host.isLocal:
        return
    source = f"{profileDirectory}/./{ENGINE_FILE}"
    remote.rsyncTo(host, [source], remoteProfile + "/", ["--relative", "--times", "--chmod=Du=rwx,Dgo=,Fu=rw,Fgo="])


def startEngines(
    remote: Remote, host: Host, count: str, profileDirectory: Path, remoteProfile: str, venv: str
) -> list[int]:
    """Start ``count`` engines (a shell arithmetic expression, see :func:`engineCount`) on ``host``; return PIDs."""
    if host.isLocal:
        where = shlex.quote(str(profileDirectory))
        program = f"{shlex.quote(sys.executable)} -m ipyparallel.engine"
    else:
        where = shellPath(remoteProfile)
        program = f"{shellPath(venv)}/bin/ipengine"
    command = f"{program} --profile-dir={where} --file={where}/{ENGINE_FILE}"
    pids = processes.launch(remote, host, command, f"{where}/{_LOG}", count, {WORKER_VARIABLE: str(host)})
    if not remote.dryRun:
        logger.info("%s: started %d engine(s), PIDs %s", host, len(pids), " ".join(map(str, pids)))
    return pids


def waitForEngines(
    client: ipyparallel.Client, expected: Mapping[str, int], timeout: float = 60.0, logHint: str = ""
) -> dict[int, Registered]:
    """Wait until every worker in ``expected`` (spec -> engines) has that many engines answering.

    Only engines that answer count: the records a restarted controller
    restores for engines that are gone never do. Returns engine id ->
    :class:`Registered` (worker spec and PIDs). Raises :class:`ClusterSetupError` naming
    the workers whose engines did not come within ``timeout`` seconds.
    """
    deadline = monotonic() + timeout
    asked: dict[int, tuple[Any, float]] = {}
    hosts: dict[int, Registered] = {}
    while True:
        for eid in client.ids:
            # Ask again if unanswered for a while: right after a controller
            # restart, a request that reaches the controller before the
            # engine has reconnected is dropped without a word.
            if eid not in asked or (not asked[eid][0].ready() and monotonic() - asked[eid][1] > _ASK_AGAIN):
                asked[eid] = (client[eid].apply_async(whereAmI), monotonic())
        for eid, (result, _) in list(asked.items()):
            if eid in hosts or not result.ready():
                continue
            try:
                spec, pid, parent = result.get(0)
                hosts[eid] = Registered(spec or "(unknown)", (int(pid), int(parent)))
            except ipyparallel.error.RemoteError as error:
                logger.warning("engine %d did not say where it runs: %s", eid, error)
                del asked[eid]
            except ipyparallel.error.EngineError as error:
                logger.warning("engine %d died while registering: %s", eid, error)
                hosts[eid] = Registered("(dead)")
        counts = Counter(r.host for r in hosts.values())
        missing = {spec: n for spec, n in expected.items() if counts[spec] < n}
        if not missing:
            return {eid: r for eid, r in hosts.items() if r.host != "(dead)"}
        if monotonic() > deadline:
            which = ", ".join(f"{spec} ({counts[spec]} of {n})" for spec, n in missing.items())
            raise ClusterSetupError(f"engines did not register within {timeout:.0f} s on: {which}. {logHint}".strip())
        sleep(0.2)
