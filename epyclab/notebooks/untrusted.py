"""Reading a notebook file without trusting it.

A notebook may come from anywhere (a colleague, an archive, a damaged disk), so
nothing read from it is believed before it is checked against what the file
really holds: a count of rows against the length of the columns that hold
them, a dataset's length against the bytes the file keeps for it, a dtype
against the dtypes a notebook writes. Nothing is allocated on the word of a
count alone, so a file that says ``rows = 2**40`` costs nothing to refuse.

And every failure while reading (h5py's errors, JSON's, a value of the wrong
type, a missing key) becomes a :class:`~epyclab.errors.NotebookFormatError`
naming the file and the group, dataset or key being read (:func:`reading`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from epyclab.errors import NotebookError, NotebookFormatError
from epyclab.notebooks.kinds import NUMERIC_DTYPES

__all__ = ["READ_ERRORS", "reading", "damaged", "checked_later", "file_dtype", "check_rows",
           "check_count", "check_version", "check_bare_rows", "check_storage", "check_roles", "ROLES"]

#: What reading a damaged or crafted file raises, besides epyclab's own errors. (Not MemoryError: a
#: notebook too large for this machine is not damaged, and the checks here keep a crafted file from it.)
READ_ERRORS = (
    KeyError, IndexError, ValueError, TypeError, AttributeError, OSError, RuntimeError, RecursionError,
    OverflowError, UnicodeError, AssertionError, SystemError,
)

#: What to do about a damaged notebook, said in every such error.
FIX = (
    "restore it from a copy (epyclab backup makes a consistent one), or read what can be read with plain "
    "h5py or json (docs/hdf5-layout.md)"
)


def damaged(path: str, where: str, why: str) -> NotebookFormatError:
    """The error for a notebook whose ``where`` (a group, dataset or key) is wrong in the way ``why`` says."""
    return NotebookFormatError(f"{path} is damaged or not an epyclab notebook: {where}: {why}; {FIX}")


@contextmanager
def reading(path: str, where: str) -> Iterator[None]:
    """Turn any failure while reading ``where`` of the file ``path`` into a :class:`NotebookFormatError`.

    epyclab's own notebook errors pass as they are (an inner ``reading`` already named its place).

    Raises:
        NotebookFormatError: naming ``path``, ``where`` and the failure.
    """
    try:
        yield
    except NotebookError:
        raise
    except FileNotFoundError:
        raise
    except READ_ERRORS as exc:
        raise damaged(path, where, f"{type(exc).__name__}: {str(exc)[:300]}") from None


def checked_later(path: str, where: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, whose failures (when it makes typed cells later, for the DataFrame) name ``path`` and ``where``."""

    def make(*args: Any) -> Any:
        with reading(path, where):
            return function(*args)

    return make


def check_version(path: str, where: str, version: Any) -> str:
    """``version`` if it reads as a format version ("2", "1.1"); damaged text is no newer version."""
    if not isinstance(version, str) or not re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,4}){0,3}", version):
        raise damaged(path, where, f"{version!r:.40} is not a format version")
    return version


def check_count(path: str, where: str, value: Any) -> int:
    """``value`` as a count (an int >= 0), or a :class:`NotebookFormatError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise damaged(path, where, f"{value!r:.60} is not a count of rows")
    return int(value)


def check_rows(path: str, where: str, rows: int, held: int, what: str) -> None:
    """Refuse a count of ``rows`` other than the ``held`` cells of ``what`` (a column: it holds one per row)."""
    if rows != held:
        raise damaged(path, where, f"it says it has {rows} row(s), but {what} holds {held}")


def check_bare_rows(path: str, where: str, rows: int, file_size: int) -> None:
    """Refuse more rows than the file has bytes, for a result set without columns (nothing backs them)."""
    if rows > file_size:
        raise damaged(path, where, f"it says it has {rows} row(s) and no column, in a file of {file_size} bytes")


def check_storage(path: str, ds: Any, cells: int) -> None:
    """Refuse to read ``cells`` cells of the h5py dataset ``ds`` unless the file keeps bytes for them all.

    A dataset's length is a number in the file: a chunked one may say 2**40 with no chunk
    written, and reading it would make HDF5 fill terabytes.
    """
    needed = cells * ds.id.get_type().get_size()
    kept = ds.id.get_storage_size()
    if needed > kept:
        raise damaged(path, f"dataset {ds.name}", f"{cells} cell(s) need {needed} bytes, but the file keeps "
                                                  f"{kept} for it")


#: The roles of a result set's columns, as a file names them.
ROLES = ("parameter", "result", "metadata")


def check_roles(path: str, where: str, roles: Any, columns: Any = None) -> dict[str, list[str]]:
    """``roles`` (role -> column names) if it is well formed (and, given ``columns``, names only those)."""
    if not isinstance(roles, dict) or sorted(roles) != sorted(ROLES) or not all(
            isinstance(v, list) for v in roles.values()):
        raise damaged(path, where, f"its roles are not lists of names for {list(ROLES)}")
    names = [n for role in ROLES for n in roles[role]]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise damaged(path, where, "its roles name a column twice, or by something other than text")
    if columns is not None and not set(names) <= set(columns):
        raise damaged(path, where, f"its roles name column(s) it lacks: {sorted(set(names) - set(columns))[:5]}")
    return roles


def file_dtype(path: str, where: str, text: Any, cells: bool = False) -> np.dtype:
    """The dtype a file names, if it is one a notebook writes (for ``cells``: of an array cell's elements).

    A dtype read from a file is never trusted as such: ``"V99999999999"`` would make numpy
    allocate gigabytes for three values.
    """
    with reading(path, where):
        dtype = np.dtype(text)
    if dtype in NUMERIC_DTYPES or (dtype.kind in "biufc" and dtype.itemsize <= 32):
        return dtype
    if not cells and (dtype == np.dtype(object) or (dtype.kind == "M" and dtype.itemsize == 8)):
        return dtype
    raise damaged(path, where, f"dtype {dtype.str!r} is not one a notebook stores")
