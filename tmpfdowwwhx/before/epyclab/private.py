"""Keeping a profile private to its user: files 0600, directories 0700, written without following symlinks.

Used by the cluster set-up (:mod:`epyclab.clustersetup`) and by ParallelLab's
local cluster (its state and log directories); standard library only, so that
a lab does not import the set-up tooling for it.

A profile holds the controller's keys, the task store (``tasks.db``, whose
records carry every uncollected result in clear text), logs and state; any
local user able to read them could read results or use the cluster. So every
file epyclab writes there is created 0600 (by ``O_NOFOLLOW`` and a rename, so a
symlink planted in its place is replaced, never written through), the
processes it starts run under ``umask 077`` (see
:mod:`epyclab.clustersetup.processes`), and :func:`privateTree` tightens what
others (IPython's profile creation, an older epyclab) left readable.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["FILE_MODE", "DIRECTORY_MODE", "privateTree", "writePrivate", "privateDirectory"]

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def privateDirectory(path: Path) -> Path:
    """Make ``path`` (and missing parents below it) a directory only its owner can use; return it."""
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) != DIRECTORY_MODE:
        os.chmod(path, DIRECTORY_MODE)
    return path


def writePrivate(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) by rename, so a crash never leaves half a file behind.

    The temporary file is opened with ``O_NOFOLLOW | O_EXCL`` after removing
    any leftover, so neither it nor the final name is written through a symlink.
    """
    privateDirectory(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def privateTree(root: Path) -> None:
    """Set every directory under ``root`` (itself included) to 0700 and every file to 0600.

    Symlinks are left alone and never followed (``os.walk`` does not descend
    into them; ``chmod`` is applied only to what ``lstat`` says is a real
    file or directory).
    """
    for top, dirs, files in os.walk(root):
        _tighten(Path(top), DIRECTORY_MODE, stat.S_ISDIR)
        for name in files:
            _tighten(Path(top) / name, FILE_MODE, stat.S_ISREG)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]


def _tighten(path: Path, mode: int, kind: Callable[[int], bool]) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return  # removed meanwhile (a log rotated, a temporary file renamed)
    if kind(info.st_mode) and stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
