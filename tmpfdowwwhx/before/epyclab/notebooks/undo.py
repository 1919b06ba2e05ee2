"""Changing an HDF5 file so that a killed process leaves it as it was before, or as it is after.

HDF5 updates a file in place, in many writes; a process killed between two of
them leaves a file HDF5 may not open again. :class:`UndoFile` is the file
object h5py writes through (``h5py.File(UndoFile(...), 'r+')``): before it
overwrites, or cuts off, any byte the file held when the change began, it
appends the original page to an *undo log* beside the file. Bytes beyond the
original end need no saving. When the change is complete, :meth:`UndoFile.commit`
deletes the log: that deletion is the moment the change takes effect.

If the process dies before, the log is still there, and :func:`recover` (run
by whoever opens the notebook next) writes the saved pages back and cuts the
file to its original length: the file is again byte for byte what it was.

A page is saved by a ``write`` that returns before the file is touched, so the
order holds when the process is killed (the kernel keeps what was written).
Surviving a power cut would also need ``fsync`` calls, which cost milliseconds
each; this protects against process death only (see docs/hdf5-layout.md).
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any

from epyclab.errors import NotebookFormatError
from epyclab.log import logger
from epyclab.notebooks.sidefiles import open_side, read_side

__all__ = ["GuardedFile", "UndoFile", "recover"]

_PAGE = 4096
_MAGIC = b"EPYCLABU"
_HEADER = struct.Struct("<8sQ")  # magic, original size of the file
_RECORD = struct.Struct("<QII")  # offset, length, crc32 of the saved bytes


class GuardedFile:
    """A file object for h5py that never raises from a write: a failed write is noted, not thrown.

    h5py is left in a broken state (and can crash in ``File.close``) when a write
    fails under it, as on a full disk. So from the first failed write on, this
    object keeps the file's content in memory and goes on there, h5py finishes
    normally, and the caller then finds :attr:`failure` set and undoes the change.
    """

    def __init__(self, path: str, fd: int) -> None:
        self._path = path
        self._fd = fd
        self._pos = 0
        #: The first error a write met (None while every write went to the file).
        self.failure: OSError | None = None
        self._memory: bytearray | None = None

    # ---- the file object h5py uses ---------------------------------------------

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = self._size() + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _size(self) -> int:
        return len(self._memory) if self._memory is not None else os.fstat(self._fd).st_size

    def _pread(self, n: int, offset: int) -> bytes:
        if self._memory is not None:
            return bytes(self._memory[offset : offset + n])
        return os.pread(self._fd, n, offset)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(0, self._size() - self._pos)
        data = self._pread(n, self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._pread(len(view), self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self._memory is None:
            try:
                self._write_file(view, self._pos)
            except OSError as exc:
                self._fail(exc)
        if self._memory is not None:
            end = self._pos + len(view)
            if end > len(self._memory):
                self._memory.extend(bytes(end - len(self._memory)))
            self._memory[self._pos : end] = view
        self._pos += len(view)
        return len(view)

    def _write_file(self, view: memoryview, offset: int) -> None:
        _pwrite_all(self._fd, view, offset)

    def _fail(self, exc: OSError) -> None:
        """Go on in memory from now on (reading what the file holds so far)."""
        self.failure = exc
        size = os.fstat(self._fd).st_size
        self._memory = bytearray(os.pread(self._fd, size, 0)) if size else bytearray()

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self._memory is None:
            try:
                self._truncate_file(size)
            except OSError as exc:
                self._fail(exc)
        if self._memory is not None:
            if size < len(self._memory):
                del self._memory[size:]
            else:
                self._memory.extend(bytes(size - len(self._memory)))
        return size

    def _truncate_file(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def flush(self) -> None:
        """Nothing is buffered here: every write went to the kernel already."""

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


class UndoFile(GuardedFile):
    """A writable file object that keeps an undo log of every original byte it changes.

    A write that fails (disk full) is noted in :attr:`failure` rather than raised
    (see :class:`GuardedFile`); the caller then calls :meth:`rollback`.
    """

    def __init__(self, path: str, undo_path: str) -> None:
        if os.path.exists(undo_path):
            raise NotebookFormatError(
                f"{undo_path} exists: an earlier change to {path} was not finished; "
                f"recover it first (opening the notebook does)"
            )
        super().__init__(path, os.open(path, os.O_RDWR))
        self._undo_path = undo_path
        self._size0 = os.fstat(self._fd).st_size
        try:
            self._undo = open_side(undo_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except BaseException:
            os.close(self._fd)
            raise
        try:
            _write_all(self._undo, _HEADER.pack(_MAGIC, self._size0))
        except BaseException:
            # Without a complete header the log means nothing: it just goes.
            os.close(self._undo)
            os.close(self._fd)
            os.unlink(undo_path)
            raise
        self._saved: set[int] = set()

    def _write_file(self, view: memoryview, offset: int) -> None:
        # The original bytes are saved before they are overwritten; if saving fails, the file is untouched.
        self._save(offset, offset + len(view))
        super()._write_file(view, offset)

    def _truncate_file(self, size: int) -> None:
        self._save(size, self._size0)
        super()._truncate_file(size)

    # ---- ending the change ---------------------------------------------------------

    def commit(self) -> None:
        """Make the change final (call after h5py closed the file, and only if no write failed)."""
        assert self.failure is None
        os.close(self._fd)
        os.close(self._undo)
        os.unlink(self._undo_path)

    def rollback(self) -> None:
        """Undo the change now (call after h5py closed, or gave up on, the file)."""
        os.close(self._fd)
        os.close(self._undo)
        recover(self._path, self._undo_path)

    def _save(self, start: int, end: int) -> None:
        """Append to the undo log the original pages of [start, end) not saved yet."""
        end = min(end, self._size0)
        if start >= end:
            return
        first, last = start // _PAGE, (end - 1) // _PAGE
        pages = [p for p in range(first, last + 1) if p not in self._saved]
        # Consecutive pages go in one record: fewer system calls.
        run: list[int] = []
        for p in pages:
            if run and p != run[-1] + 1:
                self._save_run(run)
                run = []
            run.append(p)
        if run:
            self._save_run(run)

    def _save_run(self, run: list[int]) -> None:
        offset = run[0] * _PAGE
        data = os.pread(self._fd, min(len(run) * _PAGE, self._size0 - offset), offset)
        _write_all(self._undo, _RECORD.pack(offset, len(data), zlib.crc32(data)) + data)
        self._saved.update(run)


def recover(path: str, undo_path: str) -> bool:
    """Undo an unfinished change to ``path`` if its undo log is there; True if there was one."""
    try:
        log = read_side(undo_path)
    except FileNotFoundError:
        return False
    if len(log) >= _HEADER.size:
        magic, size0 = _HEADER.unpack_from(log, 0)
        if magic != _MAGIC:
            raise NotebookFormatError(f"{undo_path} is not an epyclab undo log; move it away to open {path}")
        fd = os.open(path, os.O_RDWR)
        try:
            pos = _HEADER.size
            while pos + _RECORD.size <= len(log):
                offset, length, crc = _RECORD.unpack_from(log, pos)
                data = log[pos + _RECORD.size : pos + _RECORD.size + length]
                if len(data) < length or zlib.crc32(data) != crc:
                    # A torn record: the write it was to protect never happened.
                    break
                _pwrite_all(fd, data, offset)
                pos += _RECORD.size + length
            os.ftruncate(fd, size0)
        finally:
            os.close(fd)
    # Without a complete header nothing was changed yet: the log just goes.
    os.unlink(undo_path)
    logger.warning("undid an unfinished change to %s", path)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
