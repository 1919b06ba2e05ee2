"""Data locality: points that must run on a given host, and a cap on how many run there at once.

The LOFAR pattern: input files live on the nodes' own disks, and a *mapfile*
says which file is on which host. :func:`readMapfile` reads one; the points
of a sweep then carry a ``host`` parameter (by default; see
``ClusterLab(hostParameter=...)``), for example with a pointwise design::

    files = readMapfile("inputs.map")          # {'node01': ['/data/a.MS', ...], ...}
    hosts, paths = mapfilePoints(files)
    lab = ClusterLab(nb, profile="lofar", design=PointwiseDesign(), maxPerNode=2)
    lab["host"], lab["file"] = hosts, paths

A :class:`~epyclab.labs.clusterlab.ClusterLab` sends each such point only to the
engines on its host (ipyparallel ``targets``), and to at most ``maxPerNode``
of them, so no host runs more than ``maxPerNode`` points at once (an engine
runs one task at a time, and a task's points one after another). An engine is
on host H when it was started for worker H by ``epyclab cluster start`` (its
``EPYCLAB_WORKER``), or when H is its machine's host name (full or short).
"""

from __future__ import annotations

import ast
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from epyclab.errors import EpyclabError

__all__ = ["PlacementError", "readMapfile", "mapfilePoints", "engineHost", "Placement"]


class PlacementError(EpyclabError, ValueError):
    """A mapfile that cannot be read, or a point whose host no engine runs on."""


def readMapfile(path: str | Path) -> dict[str, list[str]]:
    """Read a mapfile: host -> the input files on it, in file order.

    Two forms are read (neither is ever executed):

    - text, one ``HOST FILE`` per line (blank lines and ``#`` comments ignored);
    - a LOFAR-style mapfile, a Python literal list of dicts with ``host`` and
      ``file`` keys (entries with a true ``skip`` are left out), read with
      :func:`ast.literal_eval`.

    Raises :class:`PlacementError` naming the file and line of a malformed entry.
    """
    path = Path(path)
    text = path.read_text()
    mapping: dict[str, list[str]] = {}
    if text.lstrip().startswith("["):
        try:
            entries = ast.literal_eval(text)
        except (ValueError, SyntaxError) as error:
            raise PlacementError(f"mapfile {path} is not a literal list of dicts: {error}") from error
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "host" not in entry or "file" not in entry:
                raise PlacementError(f"mapfile {path}, entry {i}: expected a dict with 'host' and 'file', "
                                     f"got {entry!r}")
            if not entry.get("skip", False):
                mapping.setdefault(str(entry["host"]), []).append(str(entry["file"]))
        return mapping
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split(None, 1)
        if len(fields) != 2:
            raise PlacementError(f"mapfile {path}, line {number}: expected 'HOST FILE', got {line!r}")
        mapping.setdefault(fields[0], []).append(fields[1].strip())
    return mapping


def mapfilePoints(mapping: Mapping[str, Iterable[str]]) -> tuple[list[str], list[str]]:
    """Two equal-length lists, hosts and files, one entry per file: the ranges of a pointwise design."""
    hosts: list[str] = []
    files: list[str] = []
    for host, paths in mapping.items():
        for file in paths:
            hosts.append(host)
            files.append(file)
    return hosts, files


def engineHost() -> tuple[str, str]:
    """Run on an engine: the worker it was started for (``EPYCLAB_WORKER``, or '') and its host name."""
    return os.environ.get("EPYCLAB_WORKER", ""), socket.gethostname()


class Placement:
    """Which engines may run a point of a given host: at most ``maxPerNode`` of those on that host.

    :param engines: engine id -> (worker spec, host name), as :func:`engineHost` answers
    :param maxPerNode: the cap of points running at once on one host (None: every engine there)
    """

    def __init__(self, engines: Mapping[int, tuple[str, str]], maxPerNode: int | None = None) -> None:
        if maxPerNode is not None and (isinstance(maxPerNode, bool) or int(maxPerNode) < 1):
            raise ValueError(f"maxPerNode must be a positive int or None, not {maxPerNode!r}")
        self._engines = dict(engines)
        self._cap = None if maxPerNode is None else int(maxPerNode)

    def targets(self, host: str) -> list[int]:
        """The engines a point of ``host`` may go to; :class:`PlacementError` if none runs there."""
        host = str(host)
        found = sorted(
            eid for eid, (worker, name) in self._engines.items()
            if host in (worker, name, name.split(".")[0])
        )
        if not found:
            known = sorted({w or n for w, n in self._engines.values()})
            raise PlacementError(
                f"no engine runs on host {host!r}, named by a point's host parameter; engines run on: "
                f"{', '.join(known) or 'none yet'}. Start engines there (`epyclab cluster start`) or fix the mapfile"
            )
        return found if self._cap is None else found[: self._cap]
