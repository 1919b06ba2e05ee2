"""Only regular files are notebooks: a path naming anything else is refused before it is opened.

A directory, a FIFO (named pipe), a socket, a character or block device, a
symbolic link to one of those, or the empty path ``""`` is never read as a
notebook, waited on (opening a FIFO blocks until a writer comes), or replaced
by one (a commit renames a new file over the notebook's name: over
``/dev/null`` that would replace the machine's ``/dev/null``). The check is a
``stat``, which never blocks; where a file is then opened, :func:`open_regular`
opens it without blocking and checks again what it opened, so a file swapped
for a FIFO in between is refused too.
"""

from __future__ import annotations

import errno
import os
import stat

from epyclab.errors import NotebookPathError

__all__ = ["refuse_special_path", "open_regular", "file_kind"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words ("a regular file", "a FIFO (named pipe)", ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _refusal(path: str, mode: int, output: bool = False) -> NotebookPathError:
    what = file_kind(mode)
    if os.path.islink(path):
        what = f"a symbolic link to {os.path.realpath(path)}, which is {what}"
    if output:
        return NotebookPathError(
            f"{path} is {what}, not a regular file: epyclab writes a file it makes (a CSV, netCDF, Parquet or "
            f"HTML file) only as a regular file, and never waits on or replaces anything else there. Name "
            f"another file"
        )
    return NotebookPathError(
        f"{path} is {what}, not a regular file: a notebook is kept in a regular file, and epyclab never "
        f"reads, waits on or replaces anything else there. Give the name of a notebook file, or a new file name"
    )


def refuse_special_path(path: str, output: bool = False) -> None:
    """Refuse ``path`` unless it is a regular file (through any symbolic links) or names no file yet.

    ``output``: ``path`` is a file the command line writes (an export, a report), not a notebook; the
    message says so.

    Raises:
        NotebookPathError: ``path`` is empty, or names a directory, FIFO, socket or device (or a link
            to one), or cannot be a file's name (a part of it is a file, or links loop); the message
            names the path and what it is.
    """
    if path == "":
        raise NotebookPathError(
            "the output file name is empty (''): name the file to write" if output else
            "the notebook path is empty (''): give the name of a notebook file, or a new file name"
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return  # a new notebook (through a dangling link: made where the link points)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
            raise NotebookPathError(
                f"{path} cannot name a notebook file: {exc.strerror}. Give the name of a notebook file, "
                f"or a new file name"
            ) from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise _refusal(path, st.st_mode, output)


def open_regular(path: str, flags: int = os.O_RDONLY) -> int:
    """Open the regular file ``path`` without ever blocking on it; its descriptor (close-on-exec).

    Raises:
        NotebookPathError: ``path`` is not a regular file (it was replaced by one that is not since
            :func:`refuse_special_path`, say).
        OSError: as :func:`os.open` (``FileNotFoundError`` if there is no such file).
    """
    # O_NONBLOCK: opening a FIFO for reading would wait for a writer. On a regular file it changes nothing.
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _refusal(path, mode)
    return fd
