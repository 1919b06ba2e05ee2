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

The file is not touched at all until :meth:`UndoFile.commit`: h5py's writes
go to pages kept in memory (each original page is appended to the log when it
is first changed). Committing flushes the log (and its name) to the disk, then
writes the changed pages and the new length into the file, flushes it, and
removes the log (flushing the directory): a power cut at any point leaves the
file as it was, a complete log beside a changed file, or the changed file.
A checkpoint costs three flushes, however many pages it changes.

Format version 2 of the log::

    header: b"EPYCUND2" | original size of the file (8 bytes) | CRC-32 of the original file (4)
            | CRC-32 of the 20 bytes before (4)
    record: offset (8) | length (4) | CRC-32 of offset, length and the saved bytes (4) | saved bytes

so a damaged offset, length or original size is seen, not applied, and a
restored file is known to be byte for byte the original (its CRC-32 matches)
before the log goes. Version 1
logs (``b"EPYCLABU" | size``, records checked over their bytes only) are still
undone. :func:`recover` removes a log only after the file it restored passes
the caller's check; a log that is damaged, or whose restored file fails the
check, is kept and the notebook is refused with a :class:`NotebookFormatError`
that names both files and what to do.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from typing import Any

from epyclab.errors import NotebookFormatError
from epyclab.log import logger
from epyclab.notebooks import fileio
from epyclab.notebooks.filecrc import FileCrc
from epyclab.notebooks.sidefiles import open_side, read_side

__all__ = ["GuardedFile", "UndoFile", "recover"]

_PAGE = 4096
_MAGIC = b"EPYCUND2"
_HEADER = struct.Struct("<8sQII")  # magic, original size of the file, its crc32, crc32 of the 20 bytes before
_RECORD = struct.Struct("<QII")  # offset, length, crc32 of offset, length and the saved bytes
_MAGIC1 = b"EPYCLABU"  # version 1 (read only)
_HEADER1 = struct.Struct("<8sQ")  # magic, original size of the file


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
        fileio.pwrite(self._fd, view, offset)

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
        fileio.truncate(self._fd, size)

    def flush(self) -> None:
        """Nothing is buffered here: every write went to the kernel already."""

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


class UndoFile(GuardedFile):
    """A writable file object that changes its file only on :meth:`commit`, keeping an undo log meanwhile.

    Reads see the change as made so far; the file itself keeps its original
    bytes until :meth:`commit`. A write to the log that fails (disk full) is
    noted in :attr:`failure` rather than raised (see :class:`GuardedFile`); the
    caller then calls :meth:`rollback`.
    """

    def __init__(self, path: str, undo_path: str, crc: FileCrc | None = None) -> None:
        if os.path.exists(undo_path):
            raise NotebookFormatError(
                f"{undo_path} exists: an earlier change to {path} was not finished; "
                f"recover it first (opening the notebook does)"
            )
        super().__init__(path, os.open(path, os.O_RDWR | os.O_CLOEXEC))
        fileio.track(self._fd, path)
        self._undo_path = undo_path
        self._crc = crc
        self._size0 = os.fstat(self._fd).st_size
        try:
            self._undo = open_side(undo_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except BaseException:
            fileio.close(self._fd)
            raise
        fileio.track(self._undo, undo_path)
        try:
            # The writer keeps its file's CRC-32 up to date (FileCrc): no need to read the whole file each time.
            file_crc = crc.crc(self._fd) if crc is not None else _file_crc(self._fd, self._size0)
            head = struct.pack("<8sQI", _MAGIC, self._size0, file_crc)
            fileio.write(self._undo, head + struct.pack("<I", zlib.crc32(head)))
        except BaseException:
            # Without a complete header the log means nothing: it just goes.
            fileio.close(self._undo)
            fileio.close(self._fd)
            fileio.unlink(undo_path)
            raise
        self._saved: set[int] = set()
        #: The changed pages (each _PAGE long), by page number; the file keeps its own bytes until commit.
        self._dirty: dict[int, bytearray] = {}
        #: The file's size as changed so far.
        self._vsize = self._size0
        #: From here on the file's own bytes are cut off (read as zeros where no page was written since).
        self._zero_from = self._size0
        #: From here on (the first page boundary at or past the original end) nothing is to be saved: the
        #: bytes written there (most of a checkpoint: the rows appended) are kept as one run, not in pages.
        self._tail_from = -(-self._size0 // _PAGE) * _PAGE
        #: The bytes from :attr:`_tail_from` on, as written so far (zeros past them, up to the size).
        self._tail = bytearray()

    # ---- the file as changed so far ----------------------------------------------------------

    def _size(self) -> int:
        return self._vsize

    def _page(self, p: int) -> bytes:
        """Page ``p`` as changed so far, _PAGE bytes long (zeros past the end)."""
        page = self._dirty.get(p)
        if page is not None:
            return bytes(page)
        if p * _PAGE >= self._zero_from:
            return bytes(_PAGE)
        return os.pread(self._fd, _PAGE, p * _PAGE).ljust(_PAGE, b"\0")

    def _pread(self, n: int, offset: int) -> bytes:
        n = max(0, min(n, self._vsize - offset))
        if n == 0:
            return b""
        end = offset + n
        if end <= self._tail_from:
            return self._pread_pages(n, offset)
        tail = bytes(self._tail[max(offset, self._tail_from) - self._tail_from : end - self._tail_from])
        tail = tail.ljust(end - max(offset, self._tail_from), b"\0")
        return self._pread_pages(self._tail_from - offset, offset) + tail if offset < self._tail_from else tail

    def _pread_pages(self, n: int, offset: int) -> bytes:
        """Bytes below :attr:`_tail_from`, from the changed pages and the file."""
        first, last = offset // _PAGE, (offset + n - 1) // _PAGE
        if not self._dirty and (last + 1) * _PAGE <= self._zero_from:
            return os.pread(self._fd, n, offset)  # untouched pages: straight from the file
        parts = []
        p = first
        while p <= last:
            if p in self._dirty or p * _PAGE >= self._zero_from:
                parts.append(self._page(p))
                p += 1
                continue
            q = p  # a run of pages the file holds as they were: one read
            while q < last and q + 1 not in self._dirty and (q + 1) * _PAGE < self._zero_from:
                q += 1
            parts.append(os.pread(self._fd, (q - p + 1) * _PAGE, p * _PAGE).ljust((q - p + 1) * _PAGE, b"\0"))
            p = q + 1
        data = b"".join(parts)
        skip = offset - first * _PAGE
        return data[skip : skip + n]

    def _touch(self, p: int) -> bytearray:
        """Page ``p`` made changeable (the caller saved its original bytes to the log first)."""
        page = self._dirty.get(p)
        if page is None:
            page = bytearray(self._page(p))
            self._dirty[p] = page
        return page

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        pos, end = self._pos, self._pos + len(view)
        if self.failure is None:
            try:
                self._save(pos, end)  # the original bytes this write changes, before it changes them
            except OSError as exc:
                self.failure = exc  # the caller rolls back; h5py finishes in memory meanwhile
        if end > self._tail_from:
            at = max(pos, self._tail_from)
            start = at - self._tail_from
            if len(self._tail) < start:
                self._tail.extend(bytes(start - len(self._tail)))
            self._tail[start : end - self._tail_from] = view[at - pos :]
            end = at
        while pos < end:
            p, skip = divmod(pos, _PAGE)
            take = min(_PAGE - skip, end - pos)
            self._touch(p)[skip : skip + take] = view[pos - self._pos : pos - self._pos + take]
            pos += take
        self._pos += len(view)
        self._vsize = max(self._vsize, self._pos)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if size < self._vsize:
            if self.failure is None:
                try:
                    self._save(size, self._size0)
                except OSError as exc:
                    self.failure = exc
            del self._tail[max(0, size - self._tail_from) :]
            p, skip = divmod(size, _PAGE)
            if skip and size < self._tail_from:
                page = self._touch(p)
                page[skip:] = bytes(_PAGE - skip)
            for q in [q for q in self._dirty if q * _PAGE >= size]:
                del self._dirty[q]
            self._zero_from = min(self._zero_from, size)
        self._vsize = size
        return size

    # ---- ending the change ---------------------------------------------------------

    def commit(self) -> None:
        """Make the change final: log on the disk, then the file changed and flushed, then the log removed.

        Call after h5py closed the file, and only if no write failed.

        Raises:
            OSError: writing the file failed (it is put back as it was, from the log, before this raises).
        """
        assert self.failure is None
        try:
            fileio.flush(self._undo)
            fileio.flush_dir(self._undo_path)  # the log's name too, before the file changes
            if self._zero_from < os.fstat(self._fd).st_size:
                fileio.truncate(self._fd, self._zero_from)
            pages = sorted(p for p in self._dirty if p * _PAGE < self._vsize)
            i = 0
            while i < len(pages):
                j = i
                while j + 1 < len(pages) and pages[j + 1] == pages[j] + 1:
                    j += 1  # consecutive pages in one write
                offset = pages[i] * _PAGE
                data = b"".join(self._dirty[p] for p in pages[i : j + 1])[: self._vsize - offset]
                fileio.pwrite(self._fd, data, offset)
                i = j + 1
            if self._tail:
                fileio.pwrite(self._fd, self._tail, self._tail_from)
            if os.fstat(self._fd).st_size != self._vsize:
                fileio.truncate(self._fd, self._vsize)
            fileio.flush(self._fd)
        except OSError:
            self.rollback()
            raise
        if self._crc is not None:
            cut = [(self._zero_from, self._size0)] if self._zero_from < self._size0 else []
            tail = [(self._tail_from, self._tail_from + len(self._tail))]
            self._crc.changed(self._fd, cut + tail + [(p * _PAGE, (p + 1) * _PAGE) for p in pages])
        fileio.close(self._fd)
        fileio.close(self._undo)
        fileio.unlink(self._undo_path)
        fileio.flush_dir(self._undo_path)

    def rollback(self) -> None:
        """Undo the change now (call after h5py closed, or gave up on, the file)."""
        fileio.close(self._fd)
        fileio.close(self._undo)
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
        # The file is unchanged until commit: its bytes are the original ones.
        data = os.pread(self._fd, min(len(run) * _PAGE, self._size0 - offset), offset)
        head = struct.pack("<QI", offset, len(data))
        fileio.write(self._undo, head + struct.pack("<I", zlib.crc32(data, zlib.crc32(head))) + data)
        self._saved.update(run)


def _file_crc(fd: int, size: int) -> int:
    """The CRC-32 of the first ``size`` bytes of the file ``fd``."""
    crc, pos = 0, 0
    while pos < size:
        block = os.pread(fd, min(1 << 22, size - pos), pos)
        if not block:
            break
        crc, pos = zlib.crc32(block, crc), pos + len(block)
    return crc


def _parse_log(log: bytes) -> tuple[tuple[int, int | None] | None, list[tuple[int, bytes]], tuple[int, int] | None]:
    """((original size, its CRC-32 or None), intact records as (offset, bytes), damaged byte range) of a log.

    The first is None when the header is torn (nothing was changed yet) or damaged
    (then the range says so). Records are read up to the first that is not intact:
    a torn last one (its writer killed while saving it, before the file was
    touched), or damage, which the original file's CRC-32 then reveals.
    """
    v2 = log.startswith(_MAGIC)
    header = _HEADER if v2 else _HEADER1
    if len(log) < header.size:
        return None, [], None
    original: tuple[int, int | None]
    if v2:
        _, size0, file_crc, crc = _HEADER.unpack_from(log, 0)
        if crc != zlib.crc32(log[: _HEADER.size - 4]):
            return None, [], (0, _HEADER.size)
        original = (size0, file_crc)
    else:
        original = (_HEADER1.unpack_from(log, 0)[1], None)
    records = []
    pos = header.size
    while pos + _RECORD.size <= len(log):
        offset, length, crc = _RECORD.unpack_from(log, pos)
        data = log[pos + _RECORD.size : pos + _RECORD.size + length]
        whole = zlib.crc32(data, zlib.crc32(log[pos : pos + 12])) if v2 else zlib.crc32(data)
        if whole != crc or len(data) < length:
            return original, records, (pos, len(log))
        records.append((offset, data))
        pos += _RECORD.size + length
    return original, records, None


def recover(path: str, undo_path: str, verify: Callable[[str], None] | None = None) -> bool:
    """Undo an unfinished change to ``path`` if its undo log is there; True if there was one.

    The saved pages are written back and the file cut to its original length;
    the log is removed only once the file is what it was (its CRC-32, kept in the
    log's header, matches) and passes ``verify(path)`` (which raises
    :class:`NotebookFormatError` if it does not).

    Raises:
        NotebookFormatError: the log is not an undo log, its header is damaged (the file
            is then left untouched), the file could not be restored (a damaged log), or
            the restored file fails ``verify``; the log is kept, and the message names
            both files and what to do.
    """
    try:
        log = read_side(undo_path)
    except FileNotFoundError:
        return False
    if log and not any(log[: _HEADER.size]):
        return _drop_unflushed(path, undo_path, verify)
    if len(log) >= 8 and not (log.startswith(_MAGIC) or log.startswith(_MAGIC1)):
        if min(sum(a != b for a, b in zip(log[:8], m)) for m in (_MAGIC, _MAGIC1)) > 2:
            raise NotebookFormatError(f"{undo_path} is not an epyclab undo log; move it away to open {path}")
        original, records, damaged = None, [], (0, 8)  # an undo log whose first bytes are damaged
    else:
        original, records, damaged = _parse_log(log)
    what_to_do = (
        f"Restore both files from a backup; or, to open {path} as the checkpoint left it (it may not open, "
        f"or may lack or hold in part the rows of that checkpoint; its journal still holds every commit since "
        f"the checkpoint before), move {undo_path} away"
    )
    if original is None and damaged is not None:
        raise NotebookFormatError(
            f"{path} was left in the middle of a checkpoint by a writer that was killed, and the header of its "
            f"undo log {undo_path} is damaged, so the change cannot be undone; nothing was changed. {what_to_do}"
        )
    if original is not None:
        size0, file_crc = original
        # Bytes past the file's end now were saved before they were cut off: a larger size is damage
        # (in a version 1 log, whose header has no checksum).
        ends = [offset + len(data) for offset, data in records]
        if size0 > max([os.stat(path).st_size, *ends]) or any(end > size0 for end in ends):
            raise NotebookFormatError(
                f"{path} was left in the middle of a checkpoint by a writer that was killed, and its undo log "
                f"{undo_path} is damaged (its original size, {size0} bytes, does not fit the pages it saved and "
                f"the file), so the change cannot be undone; nothing was changed. {what_to_do}"
            )
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        fileio.track(fd, path)
        try:
            for offset, data in records:
                fileio.pwrite(fd, data, offset)
            fileio.truncate(fd, size0)
            fileio.flush(fd)
            restored = file_crc is None or _file_crc(fd, size0) == file_crc
        finally:
            fileio.close(fd)
        if not restored:
            where = f" (bytes {damaged[0]}-{damaged[1]} of {len(log)} are not intact records)" if damaged else ""
            raise NotebookFormatError(
                f"{path} was left in the middle of a checkpoint by a writer that was killed, and its undo log "
                f"{undo_path} is damaged{where}: the file could not be restored to what it was; the log is "
                f"kept. {what_to_do}"
            )
        if verify is not None:
            try:
                verify(path)
            except NotebookFormatError as exc:
                raise NotebookFormatError(
                    f"{path} was restored from its undo log {undo_path} (a writer was killed in a checkpoint), "
                    f"but the restored file does not read as a notebook ({exc}); the log is kept. {what_to_do}"
                ) from None
    # Without a complete header nothing was changed yet: the log just goes.
    fileio.unlink(undo_path)
    fileio.flush_dir(undo_path)
    # Said whole: a new user read the bare "undid an unfinished change" as a loss.
    logger.warning(
        "undid an unfinished change to %s, which a stopped writer left: the file is back as it was before the "
        "change began (for a notebook, a checkpoint cut short: the commits it was folding in are still in the "
        "journal and are read from there, so nothing committed is lost)", path,
    )
    return True


def _drop_unflushed(path: str, undo_path: str, verify: Callable[[str], None] | None) -> bool:
    """Remove an undo log whose header reads as zeros: its flush never returned, so ``path`` is untouched.

    A change writes ``path`` only once its log is flushed; a power cut before that can leave the log's
    size on the disk without its bytes. Its records (if any reached the disk) are pages of a file that was
    not changed. ``verify(path)`` must pass first: the zeros alone do not make a log go.

    Raises:
        NotebookFormatError: ``path`` fails ``verify``; the log is kept.
    """
    if verify is not None:
        try:
            verify(path)
        except NotebookFormatError as exc:
            raise NotebookFormatError(
                f"{path} has an undo log {undo_path} whose header is zeros (a checkpoint cut by a power cut "
                f"before it changed the file), but the file does not read as a notebook ({exc}); the log is "
                f"kept. Restore both files from a backup"
            ) from None
    fileio.unlink(undo_path)
    fileio.flush_dir(undo_path)
    logger.warning("removed the undo log %s: its header is zeros (a checkpoint was cut, by a power cut, before "
                   "it changed %s), so there was nothing to undo", undo_path, path)
    return True
