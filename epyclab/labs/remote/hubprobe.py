"""Is anything listening where a controller's connection file says it is? Asked before waiting patiently.

A controller that stops leaves its connection file behind. Connecting to it
with ``ipyparallel.Client`` then takes the whole timeout per attempt (about
a minute with ClusterLab's reconnections) before anyone says so.
:func:`controller_absent` asks the operating system instead: it opens a TCP
connection to the controller's registration port, which the kernel refuses
at once when no process listens there. Only that answer (connection refused,
host or network unreachable) counts as "not running"; a controller that is
alive but slow (busy, paused, far away) still accepts the connection, and a
probe that merely times out proves nothing, so both get the usual patience.

A port that accepts proves little, though: an ipyparallel controller's
schedulers inherit its listening sockets, and when the controller alone is
killed (SIGKILL, the OOM killer) they keep its ports open. So first, if
``epyclab cluster start`` recorded the controller of this connection file as
a process on this machine (PID and start time, see
:func:`epyclab.clustersetup.controllertree.controllerExited`), a recorded
controller that has exited means "not running" at once, whatever still
listens; one that runs (even stopped by SIGSTOP) gets the port probe and the
patience. A controller elsewhere, or started by other means, gets only the port probe.

Connections tunnelled over ssh, and transports other than TCP, are not
probed (their ports are not reachable from here as written in the file).
Nor are reconnections of a lab that has talked to its controller before
(see :class:`epyclab.labs.remote.hub.Connection`): a controller being restarted is
briefly absent, and the lab waits for it as it always did.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["controller_absent", "ProbeSeconds"]

#: Seconds a refused port is probed again before the controller is declared absent; also the
#: longest wait for one TCP connection (a probe that times out proves nothing).
ProbeSeconds = 2.0

# Answers that mean nothing is there to answer: refused (no listener), no route to the host.
_ABSENT = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}


def _address(info: dict[str, object]) -> tuple[str, int] | None:
    """The (host, port) a client registers at, from a client connection file's contents; None if not TCP."""
    interface = str(info.get("interface") or "")
    port = info.get("registration")
    if not interface.startswith("tcp://") or not isinstance(port, int):
        return None
    host = urlsplit(interface).hostname or ""
    if host in ("", "*", "0.0.0.0"):
        # Bound to every interface: clients connect to the controller's location.
        host = str(info.get("location") or "127.0.0.1")
    return host, port


def controller_absent(path: Path, sshserver: str | None = None, patience: float | None = None) -> str | None:
    """Why no controller can be behind connection file ``path``, or None if one may be (or we cannot tell).

    The reason reads like ``its process, PID 4242 on this machine as recorded
    by `epyclab cluster start` in PROFILE/pid, has exited`` (at once, see above)
    or ``nothing listens on 127.0.0.1:52061 (its registration
    port): Connection refused``; the latter is given only if the port refused every
    probe for ``patience`` seconds (default :data:`ProbeSeconds`; the file is
    read again each time, so a controller that is just starting is found).
    Never raises: a file it cannot read or understand, an ssh tunnel, or a
    probe that times out give None, and the caller connects as usual.
    """
    # Imported here: the cluster set-up package is not needed to import a lab.
    from epyclab.clustersetup.controllertree import controllerExited

    exited = controllerExited(path)
    if exited is not None:
        return exited
    deadline = time.monotonic() + (ProbeSeconds if patience is None else patience)
    while True:
        reason = _probe(Path(path), sshserver)
        if reason is None or time.monotonic() >= deadline:
            return reason
        time.sleep(0.25)


def _probe(path: Path, sshserver: str | None) -> str | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or sshserver or info.get("ssh"):
        return None
    address = _address(info)
    if address is None:
        return None
    host, port = address
    try:
        with socket.create_connection(address, timeout=ProbeSeconds):
            return None
    except OSError as exc:
        if exc.errno in _ABSENT:
            return f"nothing listens on {host}:{port} (its registration port): {exc.strerror or exc}"
        return None
