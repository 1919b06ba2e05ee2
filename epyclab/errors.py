"""The exceptions epyclab raises.

Every exception derives from :class:`EpyclabError`, so ``except EpyclabError``
catches anything the framework itself signals. epyc's exception names are kept
(as subclasses) so that code written for epyc catches the same conditions.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EpyclabError",
    "DesignException",
    "ResultsStructureException",
    "NotebookError",
    "NotebookVersionException",
    "NotebookFormatError",
    "NotebookInUseError",
    "NotebookReadOnlyError",
    "NotebookOverwriteError",
    "NotebookIOError",
    "NotebookSideFileError",
    "NotebookPathError",
    "NotebookTakenOverError",
    "NotebookClosedError",
    "UnstorableValueError",
    "LabNotebookLockedException",
    "ResultSetLockedException",
    "PendingResultException",
    "CancelledException",
    "UnknownResultSetError",
    "ExperimentSerializationError",
    "ModuleSourceImportError",
    "ClusterConnectionError",
    "EngineDied",
    "SummaryError",
    "OptionalDependencyError",
    "ExportError",
]


class EpyclabError(Exception):
    """Root of every error raised by epyclab."""


class DesignException(EpyclabError):
    """A parameter space cannot be turned into points by the chosen design."""


class ResultsStructureException(EpyclabError):
    """A results dict is malformed, or an experiment returned something that is not one.

    ``rc`` is the offending value, when there is one (epyc's :meth:`resultsdict`);
    ``ResultsStructureException(rc)``, epyc's form, gives it alone.
    """

    def __init__(self, message: Any = "", rc: Any = None) -> None:
        if not isinstance(message, str):
            # epyc's form: ResultsStructureException(rc), the offending value alone.
            message, rc = f"not a well-formed results dict: {message!r:.200}", message
        super().__init__(message)
        self._rc = rc

    def resultsdict(self) -> Any:
        """The malformed results dict (or other value) that was refused; None if not known."""
        return self._rc


class NotebookError(EpyclabError):
    """Root of the errors about notebooks and their files."""


class NotebookVersionException(NotebookError):
    """A notebook file carries a format version this release cannot read."""

    def __init__(self, expected: str, actual: str, path: str = "") -> None:
        where = f" in {path}" if path else ""
        super().__init__(
            f"notebook format version {actual!r}{where} is not supported "
            f"(this epyclab reads {expected}); upgrade epyclab to read it"
        )
        self._expected = expected
        self._actual = actual

    def expectedVersion(self) -> str:
        """The format version(s) this release reads (a method, as in epyc)."""
        return self._expected

    def actualVersion(self) -> str:
        """The format version the file carries (a method, as in epyc)."""
        return self._actual


class NotebookFormatError(NotebookError):
    """A file is not an epyclab (or epyc) notebook, or is damaged."""


class NotebookInUseError(NotebookError):
    """Another process holds the notebook open for writing."""


class NotebookReadOnlyError(NotebookError):
    """A change cannot be saved: the notebook was opened read-only, or has been closed."""


class NotebookOverwriteError(NotebookError, FileExistsError):
    """Creating a notebook would overwrite one that holds work not yet collected (pending results)."""


class NotebookIOError(NotebookError, OSError):
    """A notebook file could not be read or written (disk full, I/O error); the message names it and says what to do.

    ``errno`` is that of the underlying :class:`OSError` (``errno.ENOSPC`` for a full disk).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return str(self.strerror)


class NotebookSideFileError(NotebookError):
    """A file beside a notebook (journal, undo log, lock) is a link or not epyclab's: it is never written through."""


class NotebookPathError(NotebookError):
    """A notebook's path names no regular file (a directory, FIFO, socket, device, a link to one, or ``""``).

    Refused at once, before anything is opened or written: such a file is never
    read as a notebook, blocked on, or replaced by one.
    """


class NotebookTakenOverError(NotebookReadOnlyError):
    """The notebook object was closed because another object in this process opened its file for writing."""


class NotebookClosedError(NotebookReadOnlyError):
    """A change was attempted on a notebook after close(): call open() first (a lab's sweep reopens it itself)."""


class UnstorableValueError(NotebookError, TypeError):
    """A value in a results dict has a type the notebook cannot store."""


class LabNotebookLockedException(NotebookError):
    """A change was attempted on a notebook that has been finished (locked)."""


class ResultSetLockedException(NotebookError):
    """A change was attempted on a result set that has been finished (locked)."""


class PendingResultException(NotebookError):
    """A job id is unknown, or already pending, in the result sets searched."""

    def __init__(self, jobid: str, message: str | None = None) -> None:
        super().__init__(message or f"no pending result with job id {jobid!r}")
        self._jobid = jobid

    def jobid(self) -> str:
        """Return the job id this exception is about."""
        return self._jobid


class CancelledException(EpyclabError):
    """Recorded as the exception of a pending result that was cancelled."""


class UnknownResultSetError(NotebookError, KeyError):
    """A result set tag is not in the notebook."""

    def __init__(self, tag: str, known: list[str]) -> None:
        super().__init__(tag)
        self.tag = tag
        self.known = known

    def __str__(self) -> str:
        known = ", ".join(repr(k) for k in self.known) or "none"
        return f"no result set tagged {self.tag!r} (the notebook has: {known})"


class ExperimentSerializationError(EpyclabError):
    """An experiment cannot be serialized to be sent to engines."""


class ModuleSourceImportError(ExperimentSerializationError, ImportError):
    """One of the user's modules, sent to a worker as source, failed there while it was imported.

    Raised on the worker; the message names the module, its file and the
    cause (a shared library or data file it loads at import that the worker
    lacks, say), and the lab reports it as an experiment that could not be loaded.
    """


class ClusterConnectionError(EpyclabError):
    """No ipyparallel controller answered, or the connection was lost."""


class EngineDied(ClusterConnectionError):
    """A process running points died (a forked copy of ParallelLab's ``"fork"`` backend).

    Recorded as the exception of a point whose workers died under it more than
    the lab's ``Retries`` times (see :mod:`epyclab.labs.transports.deaths`; on ipyparallel
    engines, ipyparallel's ``EngineError`` is recorded instead).
    """


class SummaryError(EpyclabError):
    """Every run underlying a summary failed, so there is nothing to summarise."""


class OptionalDependencyError(EpyclabError, ImportError):
    """A feature needs an optional package that is not installed; the message names the pip extra."""


class ExportError(NotebookError):
    """A result set cannot be written to an exchange format (netCDF, Parquet) so that it reads back the same."""
