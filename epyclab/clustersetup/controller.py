"""Starting the controller (here or on another host), waiting until it answers, and connecting to it.

A controller in a batch job (``start --controller slurm``) is submitted by
:mod:`epyclab.clustersetup.launchers`; :func:`waitForControllerJob` waits
until it runs and answers.
"""

from __future__ import annotations

import json
import shlex
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from time import monotonic, sleep
from typing import Any

import ipyparallel

from epyclab.clustersetup import processes
from epyclab.clustersetup.errors import ClusterSetupError, RemoteCommandError
from epyclab.clustersetup.hosts import Host
from epyclab.clustersetup.launchers import batchEnded, batchNode, batchStatus, recordName
from epyclab.clustersetup.profile import CLIENT_FILE, ENGINE_FILE
from epyclab.clustersetup.ssh import Remote, shellPath
from epyclab.log import logger

__all__ = ["startController", "waitForController", "waitForControllerJob", "connect", "controllerLog"]

_LOG = "log/epyclab-controller.log"


def controllerLog(host: Host, profileDirectory: Path, remoteProfile: str) -> str:
    """Where the controller on ``host`` writes its log (a path on that host)."""
    return str(profileDirectory / _LOG) if host.isLocal else f"{remoteProfile}/{_LOG}"


def startController(remote: Remote, host: Host, profileDirectory: Path, remoteProfile: str, venv: str) -> int:
    """Start the controller of the profile on ``host`` (detached, its own process group); return its PID."""
    if host.isLocal:
        where = shlex.quote(str(profileDirectory))
        command = f"{shlex.quote(sys.executable)} -m ipyparallel.controller --profile-dir={where}"
    else:
        where = shellPath(remoteProfile)
        command = f"{shellPath(venv)}/bin/ipcontroller --profile-dir={where}"
    pids = processes.launch(remote, host, command, f"{where}/{_LOG}")
    if remote.dryRun:
        return 0
    if len(pids) != 1:
        raise ClusterSetupError(f"{host}: starting the controller printed no PID")
    logger.info("%s: controller started, PID %d", host, pids[0])
    return pids[0]


def waitForController(
    remote: Remote, host: Host, pid: int, profileDirectory: Path, remoteProfile: str, timeout: float = 60.0
) -> ipyparallel.Client:
    """Wait until the controller answers and return a client connected to it.

    A controller on another host writes its connection files there: they are
    fetched into this profile (mode 0600) so that clients here can connect.
    Raises :class:`ClusterSetupError` with the end of its log if it exits, or
    if it does not answer within ``timeout`` seconds.
    """
    deadline = monotonic() + timeout
    checks, fetched = 0, host.isLocal
    while True:
        checks += 1
        if not fetched:
            fetched = _fetch_connection_files(remote, host, profileDirectory, remoteProfile)
        # Probe the port before making a client: a client that times out
        # leaves a socket with an unsent request behind.
        if (profileDirectory / CLIENT_FILE).exists() and _listening(profileDirectory / CLIENT_FILE):
            return connect(profileDirectory, timeout=max(5.0, deadline - monotonic()))
        # Is it still there? Not at every poll: each check is a command (over ssh for a remote controller).
        if checks % 4 == 1 and not processes.alive(remote, host, [pid]):
            log = controllerLog(host, profileDirectory, remoteProfile)
            tail = _log_tail(remote, host, profileDirectory, remoteProfile)
            raise ClusterSetupError(f"{host}: the controller (PID {pid}) exited; the end of its log {log}:\n{tail}")
        if monotonic() > deadline:
            raise ClusterSetupError(
                f"{host}: the controller (PID {pid}) did not answer within {timeout:.0f} s; "
                f"see its log {controllerLog(host, profileDirectory, remoteProfile)}"
            )
        sleep(0.5)


def waitForControllerJob(
    profileDirectory: Path,
    record: dict[str, Any],
    timeout: float = 60.0,
    checkNode: Callable[[str], None] | None = None,
) -> ipyparallel.Client:
    """Wait until the controller in the batch job of ``record`` runs and answers; return a client of it.

    It runs on a node that shares the profile directory with this machine:
    its connection files appear in the profile once it has started. Raises
    :class:`ClusterSetupError` naming the job and its output file (with the
    end of that file) if the job ends first, or naming the job, its state and
    the files still missing if nothing answers within ``timeout`` seconds.
    ``checkNode`` is called with the job's node once the scheduler names it
    (and ``record["node"]`` set): it raises to refuse a node.
    """
    profile = profileDirectory.name.removeprefix("profile_")
    job, output = recordName(record), str(record.get("output", ""))
    files = [profileDirectory / CLIENT_FILE, profileDirectory / ENGINE_FILE]
    deadline = monotonic() + timeout
    checks, state = 0, "not asked yet"

    def learn_node() -> None:
        if not record.get("node"):
            record["node"] = batchNode(record)
            if record["node"] and checkNode is not None:
                checkNode(record["node"])

    while True:
        checks += 1
        if all(f.exists() for f in files) and _listening(files[0]):
            learn_node()  # it runs, so the scheduler names its node
            return connect(profileDirectory, timeout=max(5.0, deadline - monotonic()))
        # Asking the scheduler is a command: not at every poll.
        if checks % 4 == 1:
            state = batchStatus(record)
            if not batchEnded(state):
                learn_node()
            if batchEnded(state):
                raise ClusterSetupError(
                    f"the controller's {job} ended ({state}) before the controller answered; the end of its "
                    f"output {output}:\n{_file_tail(Path(output))}\n"
                    f"Fix what it says, then run `epyclab cluster start {profile}` again"
                )
        if monotonic() > deadline:
            missing = [str(f) for f in files if not f.exists()]
            what = (f"its connection files {', '.join(missing)} did not appear" if missing
                    else "it wrote its connection files but does not answer at their address")
            raise ClusterSetupError(
                f"the controller's {job} is {state} and did not answer within {timeout:.0f} s: {what}. "
                f"Its output: {output}. A job waiting in a busy queue needs a longer --timeout"
            )
        sleep(0.5)


def _file_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except FileNotFoundError:
        return "(no output file: the job did not start, or the scheduler wrote it elsewhere)"


def connect(profileDirectory: Path, timeout: float = 10.0) -> ipyparallel.Client:
    """A client of the profile's controller, or :class:`ClusterSetupError` saying how to start one."""
    path = profileDirectory / CLIENT_FILE
    profile = profileDirectory.name.removeprefix("profile_")
    if not path.exists():
        raise ClusterSetupError(
            f"no controller connection file {path}: start the cluster with `epyclab cluster start {profile}`"
        )
    try:
        # The file goes as the positional argument: ipyparallel 9.2 ignores url_file=.
        return ipyparallel.Client(str(path), timeout=timeout)
    except (TimeoutError, OSError) as error:
        raise ClusterSetupError(
            f"the controller of profile {profile!r} did not answer within {timeout:.0f} s ({error}); "
            f"is it running? `epyclab cluster status {profile}` tells, `epyclab cluster start {profile}` starts it"
        ) from error


def _listening(clientFile: Path) -> bool:
    """True if something accepts TCP connections at the controller's registration address."""
    try:
        info = json.loads(clientFile.read_text())
    except ValueError:
        return False  # the controller is writing the file (in place): not whole yet
    transport, _, address = info["interface"].partition("://")
    if transport != "tcp":
        return True
    if address in ("0.0.0.0", "*", "::"):
        address = info.get("location") or "127.0.0.1"
    try:
        with socket.create_connection((address.strip("[]"), int(info["registration"])), timeout=1.0):
            return True
    except OSError:
        return False


def _fetch_connection_files(remote: Remote, host: Host, profileDirectory: Path, remoteProfile: str) -> bool:
    """Copy the controller's connection files from ``host`` here, private; False if not written yet."""
    security = profileDirectory / "security"
    sources = [f"{remoteProfile}/{ENGINE_FILE}", f"{remoteProfile}/{CLIENT_FILE}"]
    try:
        remote.rsyncFrom(host, sources, f"{security}/", ["--times", "--chmod=Fu=rw,Fgo="])
    except RemoteCommandError as error:
        # rsync exits 23 for files that do not exist yet; anything else is a real failure.
        if error.returncode != 23:
            raise
        logger.debug("%s: connection files not written yet", host)
        return False
    for name in (ENGINE_FILE, CLIENT_FILE):
        (profileDirectory / name).chmod(stat.S_IRUSR | stat.S_IWUSR)
    return True


def _log_tail(remote: Remote, host: Host, profileDirectory: Path, remoteProfile: str) -> str:
    if host.isLocal:
        path = profileDirectory / _LOG
        return "\n".join(path.read_text(errors="replace").splitlines()[-15:]) if path.exists() else "(no log)"
    return remote.ssh(host, f"tail -n 15 {shellPath(remoteProfile)}/{_LOG} 2>&1 || true", timeout=30)
