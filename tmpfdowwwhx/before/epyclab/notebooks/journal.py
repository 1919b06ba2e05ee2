"""An append-only file of commit records beside a notebook: what makes a commit cheap and safe.

A commit appends one record (the rows, pending-result changes and state added
since the previous commit) with a single ``write``. The notebook file itself
is brought up to date less often, at a *checkpoint*; until then the records
are replayed by whoever opens the notebook.

Each record is framed as ``b"REC1" | length (8 bytes) | CRC-32 (4 bytes) |
payload``. A writer killed in the middle of a ``write`` leaves a torn last
record, which fails its length or checksum and is ignored: every commit that
returned is in a complete record before it. Payloads are pickles, read back
with an unpickler that only builds the value types a notebook stores, so a
journal cannot make its reader run code.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import weakref
import zlib
from collections.abc import Iterator
from typing import Any

from epyclab.errors import NotebookFormatError
from epyclab.notebooks.kinds import journal_globals
from epyclab.notebooks.sidefiles import open_side, read_side

__all__ = ["Journal", "has_records", "read_records", "read_file_id", "read_frames", "decode_frame", "write_aside"]

_MAGIC = b"EPYCLABJ"
_VERSION = 1
_HEADER = struct.Struct("<8sI32s")  # magic, version, file id (ascii hex uuid)
_FRAME = struct.Struct("<4sQI")  # tag, payload length, crc32
_TAG = b"REC1"

# The globals a journal's pickles may name: those the table of kinds lists for
# the values it stores, and the containers of a record.
# Pickles of protocol 2 and older name the set types; append() writes protocol 5, which builds sets by opcodes.
_SET_TYPES = {("builtins", "set"), ("builtins", "frozenset")}  # pragma: no mutate: protocol 5 never names them
_ALLOWED = journal_globals() | _SET_TYPES


class _ValuesUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a notebook journal may not refer to {module}.{name}")


def _loads(payload: bytes) -> Any:
    return _ValuesUnpickler(io.BytesIO(payload)).load()


class Journal:
    """The journal of one notebook, open for appending by its (single) writer."""

    def __init__(self, path: str, file_id: str) -> None:
        self._path = path
        # Never through a link: a planted journal link must not make a commit write elsewhere.
        self._fd = open_side(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._closer = weakref.finalize(self, os.close, self._fd)
        # Not at exit: the OS closes it then, and closing it earlier (finalizers run in an order
        # no one controls) would pull it from under the notebook's own fold at exit.
        self._closer.atexit = False
        self._file_id = file_id
        if os.fstat(self._fd).st_size < _HEADER.size:
            self.reset(file_id)
        else:
            # A writer killed mid-append left a torn record: cut it off, or the
            # records appended from now on would follow it and never be read.
            end = _valid_end(os.pread(self._fd, os.fstat(self._fd).st_size, 0))
            if end < self.size():
                os.ftruncate(self._fd, end)

    def size(self) -> int:
        """The journal's size in bytes."""
        return os.fstat(self._fd).st_size

    def empty(self) -> bool:
        """True if the journal holds no record."""
        return self.size() <= _HEADER.size

    def append(self, record: Any) -> None:
        """Append one record; when this returns, the record survives the death of this process."""
        if self.size() < _HEADER.size:
            # A reset that could not write the header (a full disk): without it no record would be read.
            self.reset(self._file_id)
        payload = pickle.dumps(record, protocol=5)
        frame = _FRAME.pack(_TAG, len(payload), zlib.crc32(payload)) + payload
        size = self.size()
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except BaseException:
            # Interrupted (Ctrl-C, disk full): take the torn record back out, or
            # the records appended after it would never be read.
            os.ftruncate(self._fd, size)
            raise

    def reset(self, file_id: str) -> None:
        """Forget every record (they are in the notebook file now) and tie the journal to ``file_id``."""
        os.ftruncate(self._fd, 0)
        os.write(self._fd, _HEADER.pack(_MAGIC, _VERSION, file_id.encode("ascii")))
        self._file_id = file_id

    def close(self, remove: bool = False) -> None:
        """Close the journal, deleting it if ``remove`` (once its records are in the notebook file)."""
        if self._fd < 0:
            return
        if remove:
            os.unlink(self._path)
        self._closer()
        self._fd = -1


def has_records(path: str) -> bool:
    """True if the journal at ``path`` holds anything past its header (read by path, never through a link).

    Raises:
        NotebookSideFileError: ``path`` is a link or not a regular file.
    """
    try:
        return len(read_side(path, _HEADER.size + 1)) > _HEADER.size
    except FileNotFoundError:
        return False


def read_file_id(path: str) -> str | None:
    """The file id a journal belongs to (None if there is no journal, or it has no header)."""
    try:
        head = read_side(path, _HEADER.size)
    except FileNotFoundError:
        return None
    if len(head) < _HEADER.size:
        return None
    magic, version, file_id = _HEADER.unpack(head)
    if magic != _MAGIC:
        raise NotebookFormatError(f"{path} is not an epyclab journal (it lies beside a notebook of that name)")
    if version != _VERSION:
        raise NotebookFormatError(f"journal {path} has version {version}; this epyclab reads version {_VERSION}")
    return file_id.decode("ascii")


def read_records(path: str) -> Iterator[Any]:
    """The complete records of a journal, in order; a torn record at the end is skipped."""
    try:
        data = read_side(path)
    except FileNotFoundError:
        return
    for start, end in _frames(data):
        yield _loads(data[start:end])


def read_frames(path: str) -> list[bytes]:
    """The complete, intact records of a journal as raw frames (framing included), in order."""
    try:
        data = read_side(path)
    except FileNotFoundError:
        return []
    return [data[start - _FRAME.size : end] for start, end in _frames(data)]


def decode_frame(frame: bytes) -> Any:
    """The record a raw frame (from :func:`read_frames`) holds.

    Raises:
        pickle.UnpicklingError: the record refers to something a journal may not hold.
    """
    return _loads(frame[_FRAME.size :])


def write_aside(path: str, file_id: str, frames: list[bytes]) -> None:
    """Write ``frames`` as a journal file of their own at ``path`` (which must not exist).

    The file reads back with :func:`read_records`, as any journal does.
    """
    fd = open_side(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        data = _HEADER.pack(_MAGIC, _VERSION, file_id.encode("ascii")) + b"".join(frames)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _frames(data: bytes) -> Iterator[tuple[int, int]]:
    """The (start, end) of the payload of each complete, intact record."""
    pos = _HEADER.size
    while pos + _FRAME.size <= len(data):
        tag, length, crc = _FRAME.unpack_from(data, pos)
        start, end = pos + _FRAME.size, pos + _FRAME.size + length
        if tag != _TAG or end > len(data) or zlib.crc32(memoryview(data)[start:end]) != crc:
            return
        yield start, end
        pos = end


def _valid_end(data: bytes) -> int:
    ends = [end for _, end in _frames(data)]
    return ends[-1] if ends else _HEADER.size
