"""Who may write a notebook, and when its file may be read.

Two kinds of lock, both ``flock`` locks, which the kernel drops when their
holder dies (SIGKILL included), so a dead holder never blocks anyone:

* the *writer lock*, on a small file ``<notebook>.lock`` beside the notebook's
  resolved path (so a symbolic link leads to the same lock), held for as long
  as a notebook is open for writing. A second writer fails at once with a
  :class:`~epyclab.errors.NotebookInUseError` naming the holder (its process
  id, host and program, written in the lock file). The writer also holds an
  open-file-description (``F_OFD_SETLK``) write lock on a byte far past the end
  of the notebook file itself: that lock is on the inode, so a second writer
  coming through a hard link (another name for the same file) is refused too.
* the *data lock*, on the notebook file itself: shared while a reader (or a
  writer opening the notebook) reads it, exclusive while a writer changes it
  (a checkpoint, or undoing a killed writer's unfinished one). HDF5 takes the
  same kind of lock when it opens a file, and holds it until the file is
  closed, so plain h5py readers are kept out of a change too, and a change
  waits for them: it says so at once, naming them (:func:`describe_holders`).

A forked child is another process: both kinds of lock belong to the process
that took them. A child made by ``fork`` (ParallelLab's fork backend,
``multiprocessing``, ``os.fork``) closes its copies of their descriptors at
once, so it never keeps a lock alive after its parent let go, and never
releases (or removes the lock file of) a lock it did not take; a lock it
inherited does not count as held (:meth:`WriterLock.held`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import struct
import sys
import time
import weakref
from datetime import datetime

from epyclab.errors import NotebookInUseError, NotebookReadOnlyError
from epyclab.log import logger
from epyclab.notebooks.paths import open_regular
from epyclab.notebooks.sidefiles import notebook_key, open_side, side_path

__all__ = ["WriterLock", "DataLock", "holders", "describe_holders", "READER_FIX"]


class WriterLock:
    """The exclusive right to write the notebook at ``path``."""

    def __init__(self, path: str) -> None:
        self._notebook = path
        self._path = side_path(path, "lock")
        self._fd = None  # (int) the lock file's descriptor while the lock is held
        self._inode_fd = None  # (int) the notebook file's, while its inode is locked
        self._pid = 0  # the process that took the lock (a forked child did not)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`NotebookInUseError` naming the process that has it."""
        self._path = side_path(self._notebook, "lock")
        while True:
            fd = open_side(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if self._path in _HELD_HERE:
                    raise NotebookInUseError(
                        f"notebook {self._notebook} is already open for writing in this process (by "
                        f"another notebook object); use that one, or close() it before opening it again"
                    ) from None
                raise NotebookInUseError(
                    f"notebook {self._notebook} is open for writing by {holder}; close it there "
                    f"(close() or end that program), or open it here with readonly=True to read it"
                ) from None
            # The previous holder may have deleted the lock file after we opened
            # it: then our lock is on a file nobody else will look at. Start over.
            try:
                current = os.stat(self._path)
            except FileNotFoundError:
                os.close(fd)
                continue
            mine = os.fstat(fd)
            if (mine.st_dev, mine.st_ino) != (current.st_dev, current.st_ino):
                os.close(fd)
                continue
            break
        self._fd = fd
        self._pid = os.getpid()
        _LIVE.add(self)
        held = self._path
        _HELD_HERE.add(held)
        # A notebook dropped without close() must not keep its lock for the life of the process.
        self._finalizer = weakref.finalize(self, _drop, fd, held)
        # Not at exit (the OS releases it then): the fold of a notebook left open releases it itself.
        self._finalizer.atexit = False
        try:
            self.lock_file()
        except BaseException:
            self.release()
            raise
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "program": " ".join(sys.argv)[:200],
            "since": datetime.now().isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        except OSError as exc:
            # The lock holds without the note (a full disk); a refused writer then reads "another process".
            logger.warning("could not note the writer of %s in %s: %s", self._notebook, self._path, exc)

    def lock_file(self) -> None:
        """Lock the notebook file itself (its inode), if it exists; again after the file was replaced.

        Raises:
            NotebookInUseError: another writer holds the file under another name (a hard link).
        """
        self._unlock_file()
        try:
            fd = open_regular(notebook_key(self._notebook), os.O_RDWR)
        except FileNotFoundError:
            return  # not created yet: the lock file alone keeps others out until it is
        except PermissionError:
            raise NotebookReadOnlyError(
                f"notebook {self._notebook} is a read-only file; open it with readonly=True to read it, "
                f"or make it writable first (chmod u+w {self._notebook}) to change it"
            ) from None
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK))
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise NotebookInUseError(
                f"notebook {self._notebook} is open for writing by another process under another name "
                f"(a hard link to the same file); close it there, or open it here with readonly=True"
            ) from None
        self._inode_fd = fd
        self._inode_finalizer = weakref.finalize(self, os.close, fd)
        self._inode_finalizer.atexit = False

    def _unlock_file(self) -> None:
        if self._inode_fd is not None:
            self._inode_finalizer()
            self._inode_fd = None

    def holder_pid(self) -> int:
        """The process that took the lock (0 if it never was)."""
        return self._pid

    def held(self) -> bool:
        """True while this process holds the lock (a lock a forked child inherited is its parent's)."""
        return self._fd is not None and self._pid == os.getpid()

    def release(self) -> None:
        """Give the lock up (and remove the lock file, which only the holder may do).

        In a process that did not take the lock (a forked child), only this process's
        descriptors are closed: the lock and its file stay the holder's.
        """
        if not self.held():
            self._let_go()
            return
        self._unlock_file()
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            logger.debug("%s was removed already", self._path)
        self._finalizer()
        self._fd = None

    def _let_go(self) -> None:
        """Close this process's descriptors of a lock it did not take, leaving the lock file alone."""
        self._unlock_file()
        if self._fd is not None:
            self._finalizer()
            self._fd = None


#: The byte the writer locks: far past any notebook's end, so it never meets HDF5's own locking.
_WRITER_BYTE = 2**62


def _flock(kind: int) -> bytes:
    """A ``struct flock`` for ``fcntl``: one byte at :data:`_WRITER_BYTE` (pid 0, as OFD locks require)."""
    return struct.pack("hh4xqqi4x", kind, os.SEEK_SET, _WRITER_BYTE, 1, 0)


#: The lock files this process holds (real paths), to tell a second writer in this process why it failed.
_HELD_HERE: set[str] = set()


#: The locks of this process holding a descriptor: a forked child closes its copies of them.
_LIVE: weakref.WeakSet[WriterLock | DataLock] = weakref.WeakSet()


def _let_go_in_child() -> None:
    """In a forked child: no lock of the parent is this process's; close the descriptors it inherited.

    Were they kept, a lock would stay taken (a descriptor keeps an open file description, and its
    locks, alive) after the parent released it, and refuse the parent's next writer.
    """
    _HELD_HERE.clear()
    for lock in list(_LIVE):
        lock._let_go()
    _LIVE.clear()


os.register_at_fork(after_in_child=_let_go_in_child)


def _drop(fd: int, held: str) -> None:
    _HELD_HERE.discard(held)
    os.close(fd)


def _read_holder(fd: int) -> str:
    # An empty note (its writer was killed before writing it, or the disk was full) is no JSON either.
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        return "another process"
    if not isinstance(info, dict) or not info:
        return "another process"
    program = f" ({info['program']})" if info.get("program") else ""
    return f"process {info.get('pid')} on host {info.get('host')}{program} since {info.get('since')}"


class DataLock:
    """A shared or exclusive lock on the notebook file itself, taken for a read or a change.

    It is the same ``flock`` lock HDF5 takes when it opens a file (shared for reading), so a
    plain ``h5py.File(name, "r")`` left open holds the file for reading as long as it is open.
    Whoever waits for the lock says so at once, naming the processes that hold it.
    """

    #: How long a reader waits for a change to finish, or a checkpoint for readers, before giving up.
    Timeout = 60.0
    #: How long a waiting reader says so at INFO before it says so at WARNING (changes are short).
    QuietWait = 1.0

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = None  # (int) the notebook file's descriptor while the lock is held

    def acquire(self, exclusive: bool, wait: float | None = None, doing: str = "") -> bool:
        """Take the lock, waiting up to ``wait`` seconds (``Timeout`` if None); False if not taken.

        ``doing`` (e.g. "to fold its journal in") says why, in the message logged when it must wait:
        at WARNING at once when it waits for readers, naming them; at INFO, then WARNING after
        :attr:`QuietWait`, when it waits for a writer's change.
        """
        wait = self.Timeout if wait is None else wait
        fd = open_regular(self._path)
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        start = time.monotonic()
        deadline = start + wait
        delay = 0.002
        told = 0
        while True:
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    os.close(fd)
                    return False
                if told == 0 or (told == 1 and not exclusive and now - start >= self.QuietWait):
                    told += 1
                    level = logging.WARNING if exclusive or told == 2 else logging.INFO
                    self._say_waiting(level, exclusive, wait, doing, start)
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            self._fd = fd
            _LIVE.add(self)
            return True

    def _say_waiting(self, level: int, exclusive: bool, wait: float, doing: str, start: float) -> None:
        if not logger.isEnabledFor(level):
            return
        who = describe_holders(self._path)
        if exclusive:
            logger.log(
                level, "waiting up to %.0f s%s for the readers of notebook %s to let go of it: %s holds it "
                "open for reading; %s", wait, f" {doing}" if doing else "", self._path, who, READER_FIX,
            )
        else:
            logger.log(
                level, "waiting (%.1f s so far, up to %.0f s) for the writer of notebook %s (%s) to finish "
                "changing it", time.monotonic() - start, wait, self._path, who,
            )

    def acquire_or_fail(self, exclusive: bool, wait: float | None = None, doing: str = "") -> None:
        """Take the lock or raise :class:`NotebookInUseError` after waiting.

        Raises:
            NotebookInUseError: the lock was held all along; the message names the processes that
                hold it and what to do.
        """
        wait = self.Timeout if wait is None else wait
        if self.acquire(exclusive, wait, doing):
            return
        who = describe_holders(self._path)
        if exclusive:
            raise NotebookInUseError(
                f"notebook {self._path} has been held open for reading by {who} for more than {wait:.0f} s; "
                f"{READER_FIX}, then try again"
            )
        raise NotebookInUseError(
            f"notebook {self._path} has been changed by its writer ({who}) for more than {wait:.0f} s; "
            f"try again later"
        )

    def share(self) -> None:
        """Turn an exclusive lock into a shared one (HDF5 takes a shared lock of its own to read)."""
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        """Release the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _let_go(self) -> None:
        # A forked child's copy: closing it releases nothing while the parent's descriptor stays open.
        self.release()


#: What a user does about a process that holds a notebook open for reading.
READER_FIX = (
    "close the h5py.File in the process that opened it, or open the notebook there with epyclab's "
    "readonly=True, which lets go of the file once it is read"
)


def holders(path: str) -> list[int]:
    """The process ids holding a whole-file lock (``flock``, as HDF5 and :class:`DataLock` take) on ``path``.

    Read from ``/proc/locks`` (Linux); empty where it cannot be read. A process id of this
    process means a lock of its own, such as an ``h5py.File`` it left open.
    """
    try:
        st = os.stat(path)
        with open("/proc/locks", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}".encode("ascii")
    pids: list[int] = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  READ 25681 fe:00:2289249 0 EOF" (8 fields); "1: -> FLOCK ..." is a waiter,
        # not a holder; OFDLCK and POSIX lines are byte locks (the writer's own, or another program's).
        if len(fields) < 8 or fields[1] != b"FLOCK" or fields[5] != inode:
            continue
        try:
            pid = int(fields[4])
        except ValueError:
            continue
        # -1: an OFD lock (never on a FLOCK line); 0 is kept out as the kernel's "no process".
        if pid > 0 and pid not in pids:
            pids.append(pid)
    return pids


def describe_holders(path: str) -> str:
    """Who holds ``path`` locked, in words: "process 123 (python reader.py)", ..., or "another process"."""
    pids = holders(path)
    if not pids:
        return "another process"
    return ", ".join(_describe_process(pid) for pid in pids)


def _describe_process(pid: int) -> str:
    if pid == os.getpid():
        return f"this process ({pid})"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:  # it ended since /proc/locks was read
        return f"process {pid}"
    return f"process {pid} ({command[:120]})" if command else f"process {pid}"
