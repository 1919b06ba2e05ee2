"""The files beside a notebook, and how every notebook file is written.

Side files (``.journal``, ``.undo``, ``.lock``) belong to the notebook *file*,
not to the name it was opened by: they lie beside the file's resolved path
(:func:`notebook_key`), so opening a notebook through a symbolic link finds the
same journal and lock as opening it by its own name. (A hard link is a second
name for the same inode; the writer lock also locks the inode itself, see
:mod:`epyclab.notebooks.locks`.)

epyclab never writes through a link it finds beside a notebook: side files are
opened with ``O_NOFOLLOW`` and must be regular files with one name
(:func:`open_side`), so a notebook unpacked from an archive with a planted
``results.h5.undo -> ~/.bashrc`` cannot make epyclab overwrite the user's file.

:func:`safe_write` is the one way a whole file is (re)written: into a
temporary file beside it, flushed to the disk, renamed over it only once
complete, and the directory flushed, so a reader, a crash or a power cut sees
the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from typing import IO, Any

from epyclab.errors import NotebookIOError, NotebookReadOnlyError, NotebookSideFileError
from epyclab.notebooks import fileio
from epyclab.notebooks.paths import file_kind, refuse_special_path

__all__ = [
    "notebook_key", "side_path", "open_side", "read_side", "safe_write", "check_writable_file", "io_error",
    "new_file_mode",
]


def notebook_key(path: str) -> str:
    """The resolved path of a notebook: the name its side files are derived from."""
    return os.path.realpath(path)


def side_path(path: str, suffix: str) -> str:
    """The side file ``suffix`` (``'journal'``, ``'undo'``, ``'lock'``...) of the notebook at ``path``."""
    return f"{notebook_key(path)}.{suffix}"


def open_side(path: str, flags: int, mode: int = 0o644) -> int:
    """Open a side file without following a symbolic link, and without ever blocking; return its descriptor.

    Raises:
        NotebookSideFileError: ``path`` is a symbolic link, not a regular file (a directory, FIFO, socket or
            device: never opened, so never waited on), or a file with more than one name (a hard link to
            something else).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass  # made by O_CREAT, or FileNotFoundError from the open below
    else:
        # Opening a FIFO waits for a writer, opening a device may act on it: look before opening.
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            raise _not_regular(path, st.st_mode)
    try:
        # O_NONBLOCK: should a FIFO take the file's place after the look above, the open does not wait.
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotebookSideFileError(
                f"{path} is a symbolic link; epyclab never writes through a link beside a notebook "
                f"(it could overwrite another file). Remove the link and open the notebook again"
            ) from None
        if exc.errno in (errno.ENXIO, errno.EISDIR, errno.ENODEV):
            raise _not_regular(path, os.lstat(path).st_mode) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        raise NotebookSideFileError(
            f"{path} is a hard link to another file; epyclab writes only its own files beside a notebook. "
            f"Move it away and open the notebook again"
        )
    os.set_blocking(fd, True)
    return fd


def _not_regular(path: str, mode: int) -> NotebookSideFileError:
    return NotebookSideFileError(
        f"{path} is {file_kind(mode)}, not a regular file; epyclab writes only its own files beside a "
        f"notebook, and never reads, waits on or writes anything else there. Move it away and open the "
        f"notebook again"
    )


def read_side(path: str, size: int = -1) -> bytes:
    """The content of a side file (its first ``size`` bytes if ``size >= 0``), never read through a link.

    Raises:
        FileNotFoundError: there is no such file.
        NotebookSideFileError: as :func:`open_side`.
    """
    fd = open_side(path, os.O_RDONLY)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(size)
    finally:
        os.close(fd)


def is_read_only_file(path: str) -> bool:
    """True if ``path`` exists and is read-only (its owner's write bit is off, or no write access).

    Root may write any file, so the permission bits are read, not only ``os.access``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return not (st.st_mode & stat.S_IWUSR) or not os.access(path, os.W_OK)


def check_writable_file(path: str) -> None:
    """Refuse to write a notebook file that is read-only (its owner's write bit is off, or no access).

    Root may write any file, so the permission bits are read, not only ``os.access``.

    Raises:
        NotebookReadOnlyError: the file exists and is read-only.
    """
    if is_read_only_file(path):
        raise NotebookReadOnlyError(
            f"notebook {path} is a read-only file; open it with readonly=True to read it, or make it "
            f"writable first (chmod u+w {path}) to change it"
        )


def new_file_mode(like: str) -> int:
    """The mode a rewritten file gets: that of the file it replaces, else the usual default."""
    try:
        return stat.S_IMODE(os.stat(like).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def safe_write(path: str, write: Callable[[IO[Any]], None], binary: bool = False, what: str = "") -> None:
    """Write the whole file ``path`` through ``write(f)``: into a temporary file beside it, then renamed over it.

    The temporary file is created exclusively (never through a link); if
    ``write`` raises, it is removed and ``path`` is left exactly as it was.
    Only a regular file (or no file) at ``path`` is ever replaced: a FIFO, device, socket or
    directory there is refused before anything is written, whoever calls (CSV, netCDF and Parquet
    exports, reports, JSON notebooks).

    Raises:
        NotebookPathError: ``path`` names something that is not a regular file.
        NotebookIOError: the disk is full, or another I/O error (naming ``path``).
    """
    refuse_special_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            fileio.flush(f.fileno())  # on the disk before its name replaces the old file's
        fileio.replace(tmp, path)
        fileio.flush_dir(path)
    except OSError as exc:
        _remove(tmp)
        raise io_error(path, exc, what or "writing it") from exc
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return


def io_error(path: str, exc: OSError, doing: str, kept: str = "the file is as it was before") -> NotebookIOError:
    """A :class:`NotebookIOError` naming the file, what failed and what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
        fix = f"Free some space on the disk holding {path}, then try again"
    else:
        reason = exc.strerror or str(exc)
        fix = "Check the disk and the file's permissions, then try again"
    return NotebookIOError(f"{path}: {reason} while {doing}; {kept}. {fix}", exc.errno)
