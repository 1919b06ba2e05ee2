"""The one way an HDF5 notebook's files are written and flushed: a small layer a test can watch.

Every write, cut, flush, creation, rename and removal of a notebook file, its
journal and its undo log goes through these functions. In normal use they are
the ``os`` calls they name. A test may install a *recorder*
(:func:`recording`) that sees each operation, with the file's path and the
offset written, in the order they happened; from that sequence it rebuilds the
files as a power cut at any point would leave them (only what was flushed is
sure to be there) and checks that every commit that returned is in them.

Flushing: :func:`flush` (``fdatasync``) makes a file's data and size durable;
:func:`flush_dir` makes the names in a directory (files created, renamed or
removed) durable. A power cut keeps only what was flushed.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "Recorder", "recording", "open_file", "close", "write", "pwrite", "truncate", "allocate", "flush",
    "flush_dir", "replace", "unlink", "link",
]

#: A recorder gets (operation, path, details): "open" (flags), "write" (offset, bytes), "truncate" (size),
#: "allocate" (offset, length), "flush" (), "flush_dir" (), "replace" (destination), "unlink" (),
#: "link" (destination).
Recorder = Callable[[str, str, tuple[Any, ...]], None]

_recorder: Recorder | None = None
#: The path each descriptor opened here was opened by (only kept while recording).
_paths: dict[int, str] = {}


@contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """Have ``recorder`` see every operation of this layer while the ``with`` block runs (tests only)."""
    global _recorder
    _recorder = recorder
    try:
        yield
    finally:
        _recorder = None
        _paths.clear()


def _note(op: str, path: str, *details: Any) -> None:
    if _recorder is not None:
        _recorder(op, path, details)


def track(fd: int, path: str) -> None:
    """Note that ``fd`` (opened elsewhere, e.g. by ``tempfile.mkstemp``) is the file ``path``."""
    if _recorder is not None:
        _paths[fd] = os.path.abspath(path)
        _note("open", _paths[fd], os.O_CREAT)


def open_file(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open``, noted."""
    fd = os.open(path, flags, mode)
    track(fd, path)
    return fd


def close(fd: int) -> None:
    """``os.close``."""
    _paths.pop(fd, None)
    os.close(fd)


def _path(fd: int) -> str:
    return _paths.get(fd, f"<fd {fd}>")


def write(fd: int, data: Any) -> None:
    """Write all of ``data`` at the end of ``fd`` (opened with ``O_APPEND``), or at its position."""
    view = memoryview(data).cast("B")
    if _recorder is not None:
        _note("write", _path(fd), _append_offset(fd), bytes(view))
    while view:
        view = view[os.write(fd, view) :]


def _append_offset(fd: int) -> int:
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
        return os.fstat(fd).st_size
    return os.lseek(fd, 0, os.SEEK_CUR)


def pwrite(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` at ``offset``."""
    view = memoryview(data).cast("B")
    if _recorder is not None:  # a copy only for a recorder: a checkpoint writes megabytes through here
        _note("write", _path(fd), offset, bytes(view))
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def truncate(fd: int, size: int) -> None:
    """``os.ftruncate``, noted."""
    _note("truncate", _path(fd), size)
    os.ftruncate(fd, size)


#: The errors by which a file system says it cannot allocate space without writing it (the caller writes zeros).
_NO_ALLOCATE = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


def allocate(fd: int, offset: int, length: int) -> bool:
    """Grow ``fd`` to at least ``offset + length`` bytes, the new bytes reading as zeros, without writing them.

    ``posix_fallocate``: the file system reserves the blocks (on ext4, as extents marked unwritten)
    and sets the size, so a later write there cannot fail for want of space. Like a write, the new
    size is durable only after a :func:`flush`: a power cut before it leaves the file as it was.

    Returns:
        False if this file system cannot allocate without writing (nothing was changed): the
        caller writes zeros instead.

    Raises:
        OSError: the disk is full (``ENOSPC``), or another error of the system call; the file may
            have grown by part of ``length`` (the caller cuts it back).
    """
    _note("allocate", _path(fd), offset, length)
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno in _NO_ALLOCATE:
            return False
        raise
    return True


def flush(fd: int) -> None:
    """Make the data and size of ``fd`` durable (``fdatasync``)."""
    _note("flush", _path(fd))
    os.fdatasync(fd)


def flush_dir(path: str) -> None:
    """Make the names in the directory holding ``path`` durable."""
    directory = os.path.dirname(os.path.abspath(path))
    _note("flush_dir", directory)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(src: str, dst: str) -> None:
    """``os.replace``, noted."""
    _note("replace", os.path.abspath(src), os.path.abspath(dst))
    os.replace(src, dst)


def link(src: str, dst: str) -> None:
    """``os.link``, noted."""
    _note("link", os.path.abspath(src), os.path.abspath(dst))
    os.link(src, dst)


def unlink(path: str) -> None:
    """``os.unlink``, noted."""
    _note("unlink", os.path.abspath(path))
    os.unlink(path)
