"""The processes of a controller started by ``epyclab cluster start``: recorded, checked, stopped as one tree.

An ipyparallel controller forks about eight schedulers, which inherit its
listening sockets. Killed alone (SIGKILL, the OOM killer), the controller
leaves them running: its ports still accept connections, so a restarted
controller cannot bind them (``Address already in use``) and a client
cannot tell from the ports that it is gone. So the controller's record in
the profile (:class:`epyclab.clustersetup.state.Processes`) holds, besides
its host and PID:

- ``started``: its start time, so that a reused PID is never taken for it;
- ``tree``: the identities (PID and start time) of it and its descendants,
  listed once it answers, so that its schedulers are found after it died;
- ``machine`` (a controller on this machine): the host name it runs on, so
  that a lab on another machine sharing the profile does not read our PIDs;
- ``client``: the time its client connection file was last written
  (``st_mtime_ns``), so that a controller started later by other means (which
  writes that file again) is not judged by this record.

:func:`stopControllerTree` stops all of it, also when the controller itself
has already exited; :func:`controllerExited` tells a ClusterLab at once that
the recorded controller of a connection file is not running.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from epyclab.clustersetup import processes
from epyclab.clustersetup.errors import ClusterSetupError
from epyclab.clustersetup.hosts import LOCAL, Host
from epyclab.clustersetup.profile import CLIENT_FILE
from epyclab.clustersetup.ssh import Remote
from epyclab.clustersetup.state import loadProcesses

__all__ = [
    "controllerRecord",
    "recordControllerTree",
    "controllerRunning",
    "controllerNotStarted",
    "controllerLeftovers",
    "stopControllerTree",
    "controllerExited",
]


def controllerRecord(remote: Remote, host: Host, pid: int) -> dict[str, Any]:
    """The record of the controller just started as ``pid`` on ``host``: host, PID, start time (and machine)."""
    record: dict[str, Any] = {"host": str(host), "pid": pid}
    if remote.dryRun:
        return record
    found = {p: start for p, start in processes.identify(remote, host, pid)}
    record["started"] = found.get(pid, "")
    if host.isLocal:
        record["machine"] = socket.gethostname()
    return record


def recordControllerTree(remote: Remote, host: Host, record: dict[str, Any], directory: Path) -> None:
    """Add to ``record`` the controller's process tree (it answers, so its schedulers run) and its file's time."""
    tree = processes.identify(remote, host, int(record["pid"]), str(record.get("started", "")))
    record["tree"] = _merged(record.get("tree", []), tree)
    try:
        record["client"] = (directory / CLIENT_FILE).stat().st_mtime_ns
    except FileNotFoundError:
        record.pop("client", None)


def controllerRunning(remote: Remote, host: Host, record: dict[str, Any]) -> bool:
    """True if the recorded controller still runs on ``host`` (the same process: PID and start time).

    A record without a start time (written before they were kept) counts a
    PID that runs an ipyparallel program, as :func:`processes.alive` does.
    """
    pid, started = int(record["pid"]), str(record.get("started", ""))
    if started:
        return bool(processes.identified(remote, host, [[pid, started]]))
    return bool(processes.alive(remote, host, [pid]))


def controllerLeftovers(remote: Remote, host: Host, record: dict[str, Any]) -> list[int]:
    """The PIDs of the recorded controller's tree still running on ``host``, the controller itself excluded."""
    pid, started = int(record["pid"]), str(record.get("started", ""))
    tree = _merged(record.get("tree", []), processes.identify(remote, host, pid, started))
    return [p for p in processes.identified(remote, host, tree) if p != pid]


def stopControllerTree(remote: Remote, host: Host, record: dict[str, Any], grace: float = 10.0) -> tuple[bool, int]:
    """Stop the recorded controller and every process of its tree still running; also after it died.

    Returns whether the controller itself was running, and how many other
    processes of its tree it had left running (schedulers of a controller
    killed alone) were stopped. A running controller is stopped with its
    process group, as :func:`processes.stop` does (a scheduler it forked a
    moment ago is in it too); what is left of its recorded tree is stopped
    by identity (PID and start time, :func:`processes.stopIdentified`),
    never by name.
    """
    pid, started = int(record["pid"]), str(record.get("started", ""))
    tree = _merged(record.get("tree", []), processes.identify(remote, host, pid, started))
    leader = controllerRunning(remote, host, record) and bool(processes.stop(remote, host, [pid], grace))
    stopped = processes.stopIdentified(remote, host, tree, grace)
    return leader or pid in stopped, len([p for p in stopped if p != pid])


def controllerExited(clientFile: str | Path) -> str | None:
    """Why the controller that ``epyclab cluster start`` recorded for ``clientFile`` is not running, or None.

    None unless the profile's record names a controller on this machine,
    with its start time, whose connection file is ``clientFile`` as that
    controller last wrote it: a controller elsewhere, in a batch job, or
    started by other means is not judged here (the caller probes its port).
    Never raises: a record it cannot read gives None.
    """
    path = Path(clientFile)
    directory = path.parent.parent
    try:
        if path.resolve() != (directory / CLIENT_FILE).resolve():
            return None
        record = loadProcesses(directory).controller
        if record is None or not _judged_here(record, path):
            return None
        pid = int(record["pid"])
        if controllerRunning(Remote(), LOCAL, record):
            return None
    except (OSError, ValueError, TypeError, KeyError, ClusterSetupError):
        return None
    return (
        f"its process, PID {pid} on this machine as recorded by `epyclab cluster start` in "
        f"{directory / 'pid'}, has exited"
    )


def controllerNotStarted(clientFile: str | Path) -> str | None:
    """Why no controller will write ``clientFile`` of an epyclab profile that has none running, or None.

    For a profile ``epyclab cluster init`` made whose connection file is
    missing: its record (``pid/epyclab-processes.json``) names no controller
    (never started, or stopped), or names one on this machine that has
    exited. None otherwise (a controller recorded elsewhere or in a batch job,
    a profile made by other means, a record it cannot read): the caller
    waits for the file as usual. Never raises.
    """
    path = Path(clientFile)
    directory = path.parent.parent
    try:
        if path.exists() or not (directory / "epyclab-profile.json").is_file():
            return None
        if path.resolve() != (directory / CLIENT_FILE).resolve():
            return None
        record = loadProcesses(directory).controller
        if record is None:
            return (f"no controller is recorded as started for it in {directory / 'pid'} (none was started "
                    "since `epyclab cluster init`, or `epyclab cluster stop` stopped it)")
        if record.get("host") != str(LOCAL) or record.get("machine") != socket.gethostname():
            return None
        pid = int(record["pid"])
        if controllerRunning(Remote(), LOCAL, record):
            return None
    except (OSError, ValueError, TypeError, KeyError, ClusterSetupError):
        return None
    return (f"its controller, PID {pid} on this machine as recorded by `epyclab cluster start` in "
            f"{directory / 'pid'}, has exited")


def _judged_here(record: dict[str, Any], path: Path) -> bool:
    """True if ``record`` names a controller on this machine that wrote ``path`` last."""
    return (
        record.get("host") == str(LOCAL)
        and record.get("machine") == socket.gethostname()
        and bool(record.get("started"))
        and record.get("client") == path.stat().st_mtime_ns
    )


def _merged(known: list[list[Any]], found: list[list[Any]]) -> list[list[Any]]:
    """The identities of ``known`` and ``found``, each once (a process once recorded stays recorded)."""
    out = {(int(p), str(s)): [int(p), str(s)] for p, s in known}
    for p, s in found:
        out[(int(p), str(s))] = [int(p), str(s)]
    return list(out.values())
