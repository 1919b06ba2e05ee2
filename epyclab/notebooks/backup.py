"""A consistent copy of a notebook, taken while its writer keeps writing: :func:`backupNotebook`.

Copying a notebook's files by hand (``results.h5``, ``.journal``, ``.undo``)
while it is written is not safe: a checkpoint can fold the journal into the
file and empty it between copying the one and the other, and the copy then
lacks every commit that was in the journal. A backup reads the notebook as a
reader does (:class:`~epyclab.HDF5LabNotebook` with ``readonly=True``: the file
under a shared lock, which keeps a checkpoint out for as long as the read
lasts, and the journal beside it replayed in memory), so it holds every row
committed before it started; then it writes what it read as a new notebook of
the same format, under a temporary name beside the destination, and gives it
the destination's name only once it is whole (one file, no journal beside it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from epyclab.errors import NotebookError
from epyclab.experiment import Experiment
from epyclab.log import logger
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.notebooks.paths import refuse_special_path
from epyclab.notebooks.registry import notebookClass
from epyclab.notebooks.resultset import ResultSet
from epyclab.notebooks.sidefiles import new_file_mode, side_path

__all__ = ["backupNotebook", "typedRows", "pendingItems", "attributeItems", "copyResultSet"]


def typedRows(rs: ResultSet) -> list[dict[str, Any]]:
    """Every row of ``rs`` as a results dict whose values keep their column's type (an int8 stays an int8).

    A missing cell is given as None (pandas' NA) or NaT (in a datetime column), so a copy has it missing too.
    """
    import pandas as pd  # here: the command line starts without pandas

    # Every stored row in stored order (as missingMask is): rows a rerun replaced are copied too, with the
    # set's rerun records, so the copy shows the same rows; the marks put them in the design's order again.
    df = rs.storedFrame()
    roles = [(Experiment.PARAMETERS, rs.parameterNames()), (Experiment.RESULTS, rs.resultNames()),
             (Experiment.METADATA, rs.metadataNames())]
    arrays = {k: df[k].array for _, names in roles for k in names if k in df.columns}
    # A missing int, str or bool cell reads as its column's fill (0, '', False): the mask says which.
    missing = {k: rs.missingMask(k) for k in arrays}
    out = []
    for i in range(len(df)):
        rc: dict[str, Any] = {}
        for part, names in roles:
            cells = {}
            for k in names:
                if k in arrays:
                    v = arrays[k][i]
                    # NaT stays NaT: a datetime column of NaT only is a datetime column in the copy too.
                    cells[k] = None if ((missing[k][i] and v is not pd.NaT) or v is pd.NA) else v
            rc[part] = cells
        out.append(rc)
    return out


def pendingItems(rs: ResultSet) -> Iterator[tuple[str, dict[str, Any]]]:
    """The pending results of ``rs``: (job id, parameters), in the order they were added."""
    for jobid in rs.pendingResults():
        yield jobid, rs.pendingResultParameters(jobid)


def attributeItems(rs: ResultSet) -> dict[str, Any]:
    """The attributes of ``rs``, by name."""
    return {k: rs[k] for k in rs.keys()}


def copyResultSet(src: ResultSet, dest: LabNotebook, tag: str) -> ResultSet:
    """Copy ``src`` (rows, pending results, description, attributes, lock) into ``dest`` as set ``tag``.

    An empty default set of ``dest`` is filled; any other tag already in ``dest`` is an error.

    Raises:
        EpyclabError: a row, pending result or attribute cannot be added (``dest`` is left unsaved).
    """
    if tag in dest:
        rs = dest.select(tag)
        rs.setDescription(src.description())
    else:
        rs = dest.addResultSet(tag, src.description())
    for rc in typedRows(src):
        rs.addSingleResult(rc)
    for jobid, params in pendingItems(src):
        # Through the notebook: a job id is pending in one set of a notebook at most.
        dest.addPendingResult(params, jobid, tag=tag)
    for k, v in attributeItems(src).items():
        rs[k] = v
    if src.isLocked():
        rs.finish()
    return rs


def backupNotebook(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> int:
    """Write a consistent copy of notebook ``src`` to the new file ``dest``; the number of rows copied.

    Safe while another process writes ``src``: the copy holds every row committed before the
    backup started (and perhaps some committed while it ran), each exactly once, in one
    self-contained file of ``src``'s format (HDF5 or JSON) with no journal beside it. The writer
    goes on meanwhile: a checkpoint waits for the read to end (a few seconds for a large
    notebook), commits do not wait at all. Result sets, their rows with their types, pending
    results, descriptions, attributes, locks and the current set are kept.

    Copying ``src``'s files by hand instead is not safe while it is written (see
    :mod:`epyclab.notebooks.backup`).

    Raises:
        FileNotFoundError: there is no notebook ``src``.
        FileExistsError (:class:`~epyclab.errors.NotebookError`): ``dest`` exists; nothing is overwritten.
        FileNotFoundError (:class:`~epyclab.errors.NotebookError`): ``dest``'s directory does not exist.
        NotebookPathError: ``src`` or ``dest`` names something that is not a regular file.
        NotebookFormatError: ``src`` is not a notebook, or is damaged.
        NotebookIOError: ``dest`` cannot be written (a full disk); nothing is left behind.
    """
    source, target = os.fspath(src), os.fspath(dest)
    refuse_special_path(source)
    refuse_special_path(target)
    if not os.path.exists(source):
        raise FileNotFoundError(f"no notebook {source} to back up: check the path")
    if os.path.lexists(target):
        raise _Exists(f"{target} exists: a backup is written to a new file only; name another file, or "
                      f"remove {target} first")
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise _NoDirectory(f"the directory {directory} of the backup {target} does not exist: make it first "
                           f"(mkdir -p {directory}), or name a file in a directory that exists")
    cls = notebookClass(source)
    reader = cls(source, readonly=True)
    try:
        rows = sum(reader.resultSet(t).numberOfResults() for t in reader.resultSets())
        tmp = _write_copy(cls, reader, target)
    finally:
        reader.close()
    try:
        try:
            os.link(tmp, target)  # never over a file that appeared meanwhile
        except FileExistsError:
            raise _Exists(f"{target} was created by someone else during the backup; nothing was written "
                          f"to it") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    logger.info("backed up notebook %s to %s (%d row(s) in %d result set(s))",
                source, target, rows, len(reader.resultSets()))
    return rows


class _Exists(NotebookError, FileExistsError):
    """The destination of a backup exists."""


class _NoDirectory(NotebookError, FileNotFoundError):
    """The directory the backup would be written in does not exist."""


def _write_copy(cls: type, reader: LabNotebook, target: str) -> str:
    """Write ``reader``'s content as a new notebook beside ``target``; its temporary name."""
    directory = os.path.dirname(os.path.abspath(target))
    suffix = os.path.splitext(target)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=f".backup{suffix}", dir=directory)
    try:
        # mkstemp makes it 0600; the backup is a new file like any other (kept, shared): the umask's mode.
        os.fchmod(fd, new_file_mode(target))
    finally:
        os.close(fd)  # an empty file: the notebook class makes a notebook in it
    try:
        copy = cls(tmp, create=True, description=reader.description())
        try:
            for tag in reader.resultSets():
                copyResultSet(reader.resultSet(tag), copy, tag)
            copy.select(reader.currentTag())
            if reader.isLocked():
                copy.finish(commit=False)
        except BaseException:
            copy.abandon()
            raise
        copy.close()  # an HDF5 notebook folds its journal in: the file alone holds the copy
        for suffix in ("journal", "undo"):
            if os.path.exists(side_path(tmp, suffix)):
                raise NotebookError(f"the backup {target} could not be made whole (its {suffix} is left "
                                    f"beside it); try again")
    except BaseException:
        for leftover in (tmp, side_path(tmp, "journal"), side_path(tmp, "undo")):
            Path(leftover).unlink(missing_ok=True)
        raise
    return tmp
