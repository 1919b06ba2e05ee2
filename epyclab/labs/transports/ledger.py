"""The sweep's ledger: which worker process runs which chunk, and since when.

A transport that hands chunks to processes it cannot see into (loky's
workers, a process pool, ipyparallel engines, Dask workers) makes a
:class:`Ledger` for each sweep: a private directory on this machine, passed
with every chunk. The worker writes there, in a file named by its PID, the
tag of the chunk it runs and when it started it
(:func:`epyclab.labs.engine.worker.note_chunk`). So the transport learns, with
no access to the executor's internals, when a chunk started and which
process to stop when it runs past its time limit. A worker on another
machine finds no directory and writes nothing: its chunks have no known
start, and the transport says it cannot stop them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import tempfile
import threading
from dataclasses import dataclass
from time import monotonic, time
from typing import Any

from epyclab.labs.engine.worker import LOADING
from epyclab.labs.transports.deaths import watch_child
from epyclab.log import logger

__all__ = ["Ledger", "Entry", "kill"]


_PREFIX = "epyclab-ledger-"


def _remove_orphans() -> None:
    """Remove the ledgers of processes that ended without removing theirs (killed mid-sweep)."""
    base = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(base) if n.startswith(_PREFIX)]
    except OSError as exc:
        logger.debug("cannot list %s for old ledgers: %s", base, exc)
        return
    for name in names:
        owner = name[len(_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not _running(int(owner)):
            shutil.rmtree(os.path.join(base, name),
                          onerror=lambda *a: logger.debug("could not remove an old ledger: %s", a[2]))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


@dataclass(frozen=True)
class Entry:
    """A worker's line in the ledger: its ``pid`` runs chunk ``tag`` since ``start`` (``time.monotonic()``).

    ``loading``: the worker is still unpacking the chunk's experiment (its first chunk of the sweep): the chunk
    is this worker's, and none of its points has started.
    """

    pid: int
    tag: str
    start: float
    loading: bool = False


class Ledger:
    """A private directory where this sweep's workers on this machine say what they run (see the module docstring)."""

    #: Seconds a read of the directory is reused (the sweep asks for every chunk in flight at once).
    FreshSeconds = 0.05

    def __init__(self) -> None:
        _remove_orphans()
        self.path = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._read_at = -1.0
        self._entries: dict[str, Entry] = {}
        self._host = socket.gethostname()
        self._tags: dict[Any, str] = {}
        self._pids: set[int] = set()

    def tag(self, future: Any) -> tuple[str, str]:
        """A new ``(directory, tag)`` to send with the chunk whose future (the transport's) is ``future``."""
        tag = f"c{next(self._counter)}"
        with self._lock:
            self._tags[future] = tag
        return self.path, tag

    def forget(self, future: Any) -> None:
        """``future``'s chunk is over."""
        with self._lock:
            self._tags.pop(future, None)

    def running(self, future: Any, fresh: bool = False) -> Entry | None:
        """The worker running ``future``'s chunk now, or None (not started, over, or on another machine).

        ``fresh``: read the directory now (a death is being looked into), not what was read moments ago.
        """
        with self._lock:
            tag = self._tags.get(future)
            if fresh:
                self._read_at = -1.0
        return None if tag is None else self.entry(tag)

    def started(self, future: Any) -> float | None:
        """When ``future``'s chunk started its points on its worker (``time.monotonic()``), or None if not known.

        None too while the worker unpacks the experiment: a user's module that takes long to import (a model
        loaded at import) does not count against the points' time limit.
        """
        entry = self.running(future)
        return None if entry is None or entry.loading else entry.start

    def kill(self, future: Any) -> int | None:
        """SIGKILL the process running ``future``'s chunk (even a stopped one); its PID, or None if none is known."""
        entry = self.running(future)
        if entry is None:
            return None
        kill(entry.pid)
        return entry.pid

    def entry(self, tag: str) -> Entry | None:
        """The worker running chunk ``tag`` now, or None (not started yet, finished, or on another machine)."""
        with self._lock:
            if monotonic() - self._read_at > self.FreshSeconds:
                self._entries = self._read()
                self._read_at = monotonic()
            return self._entries.get(tag)

    def workers(self) -> int:
        """How many processes on this machine have started a chunk's points so far (running one or not)."""
        with self._lock:
            if monotonic() - self._read_at > self.FreshSeconds:
                self._entries = self._read()
                self._read_at = monotonic()
            return len(self._pids)

    def _read(self) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return entries
        now_wall, now = time(), monotonic()
        for name in names:
            if not name.isdigit():
                continue  # a worker's file being replaced
            try:
                with open(os.path.join(self.path, name)) as f:
                    tag, started, host = f.read().split(" ", 2)
            except (OSError, ValueError):
                continue  # gone, or written by something else
            if host == self._host:
                pid = int(name)
                loading = tag.endswith(LOADING)
                tag = tag.removesuffix(LOADING)
                entries[tag] = Entry(pid, tag, now - max(0.0, now_wall - float(started)), loading)
                if not loading and pid not in self._pids:
                    # To tell, if it dies, how it ended (see epyclab.labs.transports.deaths).
                    self._pids.add(pid)
                    watch_child(pid)
        return entries

    def close(self) -> None:
        """Remove the directory (the sweep is over)."""
        shutil.rmtree(self.path, onerror=lambda *a: logger.debug("could not remove ledger %s: %s", self.path, a[2]))


def kill(pid: int) -> None:
    """SIGKILL worker ``pid`` (the kernel delivers it to a stopped process too)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        logger.debug("worker %d had ended already", pid)
