"""The ports a restarted controller takes again, and whether another process took one while it was down.

A profile's controller keeps its connection files over restarts (``reuse_files``),
so engines still running find it again on the same ports. Those ports were
picked from the ephemeral range, from which the system also hands out the
local ports of outgoing connections: while the controller is down, any
process's connection may take one. The restarted controller then cannot bind
it, and ipyparallel carries on without that part: with the task port taken, the
hub and the engines answer, but no task is ever run (measured with ipyparallel 9.2).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import psutil

from epyclab.clustersetup.profile import CLIENT_FILE, ENGINE_FILE
from epyclab.log import logger

__all__ = ["takenPorts", "describeTaken"]

#: Connection file fields that are not ports.
_NOT_PORTS = {"key", "location", "pack", "unpack", "signature_scheme", "ssh", "interface", "curve_serverkey",
              "task_scheme"}


def _ports(directory: Path) -> dict[int, str]:
    """The ports named in the profile's connection files -> the channel each serves."""
    found: dict[int, str] = {}
    for name in (CLIENT_FILE, ENGINE_FILE):
        try:
            data = json.loads((directory / name).read_text())
        except (OSError, ValueError):
            continue  # no file (a fresh start picks new ports), or a damaged one (dropped elsewhere)
        if not isinstance(data, dict):
            continue
        for key, value in data.items():
            if key in _NOT_PORTS:
                continue
            for port in value if isinstance(value, list) else [value]:
                if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
                    found.setdefault(port, key)
    return found


def takenPorts(directory: Path, ip: str) -> dict[int, str]:
    """The ports of the profile's connection files that the controller could not bind on ``ip`` now -> channel.

    Tried as the controller binds (``SO_REUSEADDR``, as zmq does), so a port
    left in TIME_WAIT by the stopped controller counts as free and one used
    by another process's socket (listening, or the local end of a connection) as taken.
    """
    address = "0.0.0.0" if ip in ("*", "", "0.0.0.0") else ip
    taken: dict[int, str] = {}
    for port, channel in sorted(_ports(directory).items()):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                taken[port] = channel
    return taken


def describeTaken(taken: dict[int, str]) -> str:
    """``taken`` for a message: each port, its channel, and the process that holds it where this user can see it."""
    holders: dict[int, set[int]] = {}
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port in taken and conn.pid:
                holders.setdefault(conn.laddr.port, set()).add(conn.pid)
    except (psutil.Error, OSError) as exc:
        # Not allowed to list other users' sockets: the ports alone must do.
        logger.debug("could not list the processes holding ports %s: %s", sorted(taken), exc)
    parts = []
    for port, channel in sorted(taken.items()):
        pids = sorted(holders.get(port, ()))
        held = f", held by PID {', '.join(map(str, pids))}" if pids else ""
        parts.append(f"{port} ({channel}{held})")
    return ", ".join(parts)
