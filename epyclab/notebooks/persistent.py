"""What file-backed notebooks share: opening, locking, loading, and refusing what cannot be saved."""

from __future__ import annotations

import os
import traceback
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from epyclab.errors import (
    LabNotebookLockedException,
    NotebookClosedError,
    NotebookFormatError,
    NotebookInUseError,
    NotebookIOError,
    NotebookOverwriteError,
    NotebookReadOnlyError,
    NotebookTakenOverError,
)
from epyclab.log import logger
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.notebooks.locks import WriterLock
from epyclab.notebooks.paths import refuse_special_path
from epyclab.notebooks.registry import otherFormat, refuseOtherFormat
from epyclab.notebooks.resultset import ResultSet
from epyclab.notebooks.rowcheck import RowCheck
from epyclab.notebooks.sidefiles import check_writable_file, is_read_only_file, notebook_key
from epyclab.notebooks.stored import StoredNotebook, StoredResults

__all__ = ["PersistentLabNotebook", "forget_writer", "is_empty_file"]


def is_empty_file(path: str) -> bool:
    """True if ``path`` is an existing file of 0 bytes (made by ``touch`` or ``mkstemp``): no notebook yet."""
    try:
        return os.stat(path).st_size == 0
    except FileNotFoundError:
        return False

@dataclass
class SetRecord:
    """What a persistent notebook keeps for one of its result sets."""

    check: RowCheck
    #: The result set's identity in the file (a deleted and re-created tag is another set).
    uid: str


#: The notebook object of this process that holds each file open for writing, by resolved path.
_WRITERS: dict[str, weakref.ref[PersistentLabNotebook]] = {}
#: The process those objects are of: a forked child inherits the dict, not the notebooks.
_WRITERS_PID = os.getpid()


def _forget_writers_in_child() -> None:
    """In a forked child: the parent's open notebooks are not this process's to take over."""
    global _WRITERS_PID
    _WRITERS.clear()
    _WRITERS_PID = os.getpid()


os.register_at_fork(after_in_child=_forget_writers_in_child)


class PersistentLabNotebook(LabNotebook):
    """A notebook kept in a file; subclasses say how the file is read and written.

    The file is opened (and, for writing, locked against other writers) when
    the notebook is made; :meth:`close` commits and releases it, :meth:`open`
    takes it again. ``readonly=True`` reads a notebook without locking it, so
    it works while another process writes; such a notebook cannot be saved.
    ``create=True`` starts an empty notebook even if the file exists, but
    refuses (:class:`~epyclab.errors.NotebookOverwriteError`) if that would
    drop pending results, unless ``force=True``. A path naming anything but a
    regular file (a directory, FIFO, socket, device, a link to one, ``""``) is
    refused at once (:class:`~epyclab.errors.NotebookPathError`), never replaced.

    A description given when opening an existing notebook replaces the stored
    one (as in epyc), saved at the next commit.

    A second notebook object opening the same file for writing in the same
    process (a re-run Jupyter cell) takes the file over: the first object is
    committed and closed. It still answers reads (as of the take-over); any
    later change through it raises
    :class:`~epyclab.errors.NotebookTakenOverError` naming the new holder, or
    :class:`~epyclab.errors.LabNotebookLockedException` if the notebook is finished.
    Another *process* is refused (:class:`~epyclab.errors.NotebookInUseError`).
    A child forked from this process is another process: a notebook object it
    inherited open for writing is not its own, and refuses changes
    (:class:`~epyclab.errors.NotebookInUseError`); closing it there writes,
    folds and removes nothing (the parent's object does that).
    A read-only file is refused for writing
    (:class:`~epyclab.errors.NotebookReadOnlyError`).
    """

    def __init__(
        self,
        name: str | os.PathLike[str],
        create: bool = False,
        description: str | None = None,
        readonly: bool = False,
        force: bool = False,
    ) -> None:
        path = os.fspath(name)
        self._path = path
        self._readonly = readonly
        # Opened read-only because the file is (not asked for): a change says so, and how to allow it.
        self._file_readonly = False
        self._is_open = False
        self._taken_over_by: str | None = None
        # What the file holds, as a cheap signature of the notebook's state (see _state_signature).
        self._saved: Any = None
        self._opened_at = ""
        self._lock = WriterLock(path)
        # One record per result set (by id): its row check, its identity in the file, and what
        # the backend tracks of it. Dropped when the set is deleted.
        self._records: dict[int, SetRecord] = {}
        # True while the notebook is made what its file holds: that is no change to refuse.
        self._loading = True
        super().__init__(path, description)
        self._loading = False
        if readonly and create:
            raise ValueError("a notebook cannot be both created and opened read-only")
        self._open_file(create, force, description)

    # ---- the notebook's life -------------------------------------------------------------

    def isPersistent(self) -> bool:
        """True: the notebook is saved in a file."""
        return True

    def isOpen(self) -> bool:
        """True between opening (or :meth:`open`) and :meth:`close`."""
        return self._is_open

    def isReadOnly(self) -> bool:
        """True if the notebook was opened with ``readonly=True``."""
        return self._readonly

    def open(self) -> PersistentLabNotebook:
        """Open the file again after :meth:`close` (reading what it holds now); no-op if open.

        Returns the notebook, so ``with HDF5LabNotebook(fn, create=True).open() as nb:`` works.
        """
        if not self._is_open:
            self._taken_over_by = None
            self._open_file(False, False, None)
        return self

    def close(self) -> None:
        """Commit, then release the file (other processes may now write it).

        In a forked child, for an object it inherited open for writing: nothing is written,
        the child only lets go of its copy (the parent's object commits and closes).
        """
        if not self._is_open:
            return
        if self._forked_copy():
            self.abandon()
            return
        if not self._readonly:
            try:
                self.commit()
            except NotebookIOError as exc:
                # Closing now would drop the changes: the notebook stays open to be closed again.
                raise NotebookIOError(f"{exc}. The notebook stays open: close() it again then", exc.errno) from exc
        try:
            if not self._readonly:
                self._close_file()
        finally:
            self._is_open = False
            self._lock.release()
            self._forget_writer()

    def commit(self) -> None:
        """Save what changed since the last commit; nothing to do (and nothing refused) if nothing did.

        So a commit through an object another one took the file over from is a no-op, as in epyc:
        everything it held was committed at the take-over, and it refuses changes since.

        Raises:
            NotebookReadOnlyError: the notebook was opened read-only, or is closed, and something changed.
            NotebookTakenOverError: another object of this process took the file over, and something changed.
            NotebookInUseError: this process is a forked copy of the one that opened the notebook.
            NotebookIOError: the disk is full or failed; the changes stay in memory, commit again later.
            UnstorableValueError: an attribute or pending parameter cannot be stored.
        """
        self._refuse_forked_copy()
        signature = self._state_signature()
        if signature != self._saved:
            self._check_writable()
            self._save()
            self._saved = signature
            self._saved_hook()
        # Everything is saved: as in epyc, no set is dirty or type-changed any more.
        self._clear_flags()

    def abandon(self) -> None:
        """Release the file without saving what changed since the last commit (those changes are dropped).

        For a command that found a problem half-way: the file stays as its last commit left it.
        """
        if not self._is_open:
            return
        try:
            if not self._readonly:
                # In a forked copy too: it closes this process's descriptors, and writes nothing.
                self._drop_file()
        finally:
            self._is_open = False
            self._lock.release()
            self._forget_writer()

    def _forked_copy(self) -> bool:
        """True for an object open for writing in another process (this one is a forked child of it)."""
        return self._is_open and not self._readonly and self._lock.holder_pid() not in (0, os.getpid())

    def _refuse_forked_copy(self) -> None:
        if self._forked_copy():
            raise NotebookInUseError(
                f"notebook {self._path} is open for writing in process {self._lock.holder_pid()}, and this process "
                f"({os.getpid()}) is a copy of it made by fork: a forked copy never writes its parent's "
                f"notebooks. Return results to the parent to be added there, or open the notebook here with "
                f"readonly=True to read it"
            )

    def _forget_writer(self) -> None:
        key = notebook_key(self._path)
        holder = _WRITERS.get(key)
        if holder is not None and holder() is self:
            del _WRITERS[key]

    def _hand_over(self, to: str) -> None:
        """Commit and close because another object of this process opens the file for writing."""
        logger.warning(
            "notebook %s was open for writing in this process by another notebook object (%s); "
            "that object is committed and closed, and %s takes the file over",
            self._path, self._opened_at, to,
        )
        self.close()
        self._taken_over_by = to

    def _open_file(self, create: bool, force: bool, description: str | None) -> None:
        # Before anything else touches the path: a FIFO would block the reads below, a device be replaced.
        refuse_special_path(self._path)
        # Another format's file gets an error saying what it is, not the reader's confusion
        # (unless it is to be replaced: create=True, force=True).
        foreign = create and force and otherFormat(self._path, type(self)) is not None
        if not foreign:
            refuseOtherFormat(self._path, type(self))
        if not create and is_empty_file(self._path):
            what = "open it with create=True" if not self._readonly else "open it for writing with create=True"
            raise NotebookFormatError(
                f"{self._path} is an empty file (0 bytes): it holds no notebook. To make a notebook in it, "
                f"{what} (nothing is lost: the file holds nothing)"
            )
        if not self._readonly and not create and is_read_only_file(self._path):
            # As epyc: an archived (read-only) notebook opens for reading; a change then says why it can't.
            logger.warning("notebook %s is a read-only file: it is opened read-only (make it writable first, "
                           "chmod u+w %s, to change it)", self._path, self._path)
            self._readonly = self._file_readonly = True
        if self._readonly:
            if not os.path.exists(self._path):
                raise FileNotFoundError(f"no notebook {self._path} to open read-only")
            self._load(self._read_file(writer=False))
            self._is_open = True
            return
        directory = os.path.dirname(os.path.abspath(self._path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"cannot open notebook {self._path}: directory {directory} does not exist")
        check_writable_file(self._path)
        self._opened_at = _caller()
        key = notebook_key(self._path)
        previous = _writer_of(key)
        if previous is not None and previous is not self and previous.isOpen():
            previous._hand_over(f"the notebook object opened at {self._opened_at}")
        self._lock.acquire()
        try:
            # An empty file (touch, mkstemp) holds nothing to lose: it is made a notebook as if absent.
            exists = os.path.exists(self._path) and not is_empty_file(self._path)
            if exists and not foreign:
                # Loaded even when about to be replaced: what it holds must be known
                # (its pending results, including those only its journal records).
                self._load(self._read_file(writer=True))
                if create:
                    self._refuse_to_drop_pending(force)
            if create or not exists:
                self._create_file(self._description if description is None else description)
                # The new file is a new inode: lock it.
                self._lock.lock_file()
                # Made what the new file holds: no change to refuse (the notebook is not open yet).
                self._loading = True
                try:
                    self._reset_to_empty(description)
                finally:
                    self._loading = False
        except BaseException:
            self._lock.release()
            raise
        self._is_open = True
        _WRITERS[key] = weakref.ref(self)
        if description is not None and not create and exists and description != self._description:
            # As in epyc: a description given when opening an existing notebook replaces the stored one
            # (saved at the next commit, as any change).
            self._description = description
            self._state_version += 1

    def _refuse_to_drop_pending(self, force: bool) -> None:
        pending = self.numberOfAllPendingResults()
        if pending and not force:
            raise NotebookOverwriteError(
                f"{self._path} holds {pending} pending result(s) (submitted jobs not yet collected); "
                f"create=True would drop them. Collect them first (updateResults() or wait() on the lab "
                f"that submitted them), or pass force=True to discard them"
            )

    def _read_only_why(self) -> NotebookReadOnlyError:
        """The error for a change to a notebook opened read-only because its file is read-only."""
        return NotebookReadOnlyError(
            f"notebook {self._path} is a read-only file, so it was opened read-only; make it writable first "
            f"(chmod u+w {self._path}) and open it again to change it"
        )

    def _check_writable(self) -> None:
        self._check_not_taken_over()
        self._refuse_forked_copy()
        if self._file_readonly:
            raise self._read_only_why()
        if self._readonly:
            raise NotebookReadOnlyError(
                f"notebook {self._path} was opened read-only; open it without readonly=True to save changes"
            )
        if not self._is_open:
            raise NotebookClosedError(f"notebook {self._path} is closed; call open() before saving changes")

    def _check_not_taken_over(self) -> None:
        if self._taken_over_by is not None:
            # A finished notebook refuses a change as finished, whichever object is used (as in epyc).
            holder = _writer_of(notebook_key(self._path))
            if self._locked or (holder is not None and holder is not self and holder.isLocked()):
                raise LabNotebookLockedException(
                    f"notebook {self._path} is finished (locked) and cannot change"
                )
            raise NotebookTakenOverError(
                f"this notebook object for {self._path} was closed because {self._taken_over_by} opened the "
                f"same file for writing; use that object (every row committed here is in it), or call "
                f"open() on this one to take the file back"
            )

    def checkWritable(self) -> None:
        """Raise if this notebook refuses changes (read-only, or taken over); see :meth:`LabNotebook.checkWritable`.

        A closed notebook refuses changes at once: taken in memory, they could
        not be saved, and open() reloads the file (epyc 1.7 reopened its file
        at every commit, so a lab sweep reopens a closed notebook itself, see
        :meth:`reopenForChanges`).

        Raises:
            NotebookTakenOverError: another object of this process took the file over.
            NotebookInUseError: this process is a forked copy of the one that opened the notebook.
            NotebookReadOnlyError: the notebook was opened with ``readonly=True``.
            NotebookClosedError: the notebook was closed (``close()``, or the end of a ``with`` block).
        """
        if self._loading:
            return
        if self._taken_over_by is not None:  # tested here: this runs per row, and a call costs ~1% of one
            self._check_not_taken_over()
        # Per row, so cheap: the at-fork hook keeps _WRITERS_PID. A child forked without it (a C library's
        # own fork) is refused by commit(), which asks the OS; nothing it adds reaches the parent's files.
        if self._lock.holder_pid() != _WRITERS_PID:
            self._refuse_forked_copy()
        if self._file_readonly:
            raise self._read_only_why()
        if self._readonly:
            raise NotebookReadOnlyError(
                f"notebook {self._path} was opened read-only and cannot change; open it without "
                f"readonly=True to change it"
            )
        if not self._is_open:
            raise NotebookClosedError(
                f"notebook {self._path} is closed and cannot change; call open() on it first (it reads what "
                f"the file holds, every committed row included), and close() it when done"
            )

    def reopenForChanges(self) -> None:
        """Open again a notebook closed by :meth:`close` (or a ``with`` block), so that it takes changes.

        A lab calls this before a sweep, as epyc 1.7's notebooks reopened their
        file at every commit. A notebook opened read-only, or taken over by
        another notebook object of this process, is left as it is (the change
        is then refused, saying why).
        """
        if self._is_open or self._readonly or self._taken_over_by is not None:
            return
        logger.info("notebook %s was closed; opening it again for the changes to come (close() it when done)",
                    self._path)
        self.open()

    # ---- result sets and their checks --------------------------------------------------------

    def _new_resultset(self, description: str | None) -> ResultSet:
        rs = ResultSet(description)
        self._attach(rs, RowCheck(), uuid.uuid4().hex)
        return rs

    def _attach(self, rs: ResultSet, check: RowCheck, uid: str) -> None:
        rs.setRowCheck(check)
        rs.setNotebook(self)
        self._records[id(rs)] = self._new_record(check, uid)

    def _new_record(self, check: RowCheck, uid: str) -> SetRecord:
        """The record kept for a result set (backends keep more in a subclass)."""
        return SetRecord(check, uid)

    def _record_of(self, rs: ResultSet) -> SetRecord:
        return self._records[id(rs)]

    def _uid(self, rs: ResultSet) -> str:
        return self._records[id(rs)].uid

    def deleteResultSet(self, rs: str | ResultSet) -> None:
        """Delete a result set (see :meth:`LabNotebook.deleteResultSet`); its record here goes with it."""
        target = self.resultSet(rs) if isinstance(rs, str) else rs
        super().deleteResultSet(rs)
        self._records.pop(id(target), None)

    def _reset_to_empty(self, description: str | None) -> None:
        """Forget everything: the notebook is new (its file was just created)."""
        self._resultsets = {}
        self._records = {}
        self._locked = False
        if description is not None:
            self._description = description
        self.addResultSet(LabNotebook.DEFAULT_RESULTSET)
        self._loaded()

    def _load(self, stored: StoredNotebook) -> None:
        """Make the notebook what ``stored`` holds."""
        loading, self._loading = self._loading, True
        try:
            self._load_stored(stored)
        finally:
            self._loading = loading
        self._clear_flags()

    def _clear_flags(self) -> None:
        """Everything the sets hold is in the file: as in epyc, none is dirty or type-changed."""
        for rs in self._resultsets.values():
            rs.dirty(False)
            rs.typechanged(False)

    def _load_stored(self, stored: StoredNotebook) -> None:
        self._resultsets = {}
        self._records = {}
        for s in stored.resultsets:
            if isinstance(s, StoredResults):
                rs = self._new_resultset(s.description)
                for rc in s.results:
                    rs.addSingleResult(rc)
                for jobid, params in s.pending.items():
                    rs.addSinglePendingResult(params, jobid)
            else:
                rs = ResultSet(s.description)
                self._attach(rs, RowCheck(s.kinds), s.uid)
                rs.loadStored(s.rows, s.roles, s.pending, s.missing)
            rs.restoreState(s.description, s.locked, s.attributes)
            self._resultsets[s.tag] = rs
        self._description = stored.description
        self._locked = False
        if not self._resultsets:
            self.addResultSet(LabNotebook.DEFAULT_RESULTSET)
        self._locked = stored.locked
        if stored.current in self._resultsets:
            self._current = stored.current
        elif LabNotebook.DEFAULT_RESULTSET in self._resultsets:
            self._current = LabNotebook.DEFAULT_RESULTSET
        else:
            self._current = next(iter(self._resultsets))
        self._loaded()

    def _state_signature(self) -> tuple[Any, ...]:
        """Changes whenever anything a file holds changes (cheap: one entry per result set)."""
        return (
            self._state_version,
            self._current,
            tuple(
                (tag, id(rs), rs.versions(), rs.numberOfResults(), len(rs.declaredDtypes()))
                for tag, rs in self._resultsets.items()
            ),
        )

    # ---- what subclasses provide --------------------------------------------------------------

    def _read_file(self, writer: bool) -> StoredNotebook:
        """Read the file (recovering it first when ``writer``)."""
        raise NotImplementedError

    def _create_file(self, description: str) -> None:
        """Write a new, empty notebook file."""
        raise NotImplementedError

    def _loaded(self) -> None:
        """Called once the notebook holds what the file holds: nothing is unsaved."""
        self._saved = self._state_signature()

    def _save(self) -> None:
        """Write what changed since the last commit (the backend's save hook; raise to keep it unsaved)."""
        raise NotImplementedError

    def _saved_hook(self) -> None:
        """Called after a commit was saved (HDF5 folds its journal here when due)."""

    def _drop_file(self) -> None:
        """Release what the open file holds without writing anything (see :meth:`abandon`)."""

    def _close_file(self) -> None:
        """Release what the open file holds (called after a commit, writers only)."""


def _writer_of(key: str) -> PersistentLabNotebook | None:
    """The object of this process writing the file at ``key``, by its resolved path or, for a hard link, its inode."""
    if _WRITERS_PID != os.getpid():
        _forget_writers_in_child()  # forked without the at-fork hook (a C library's own fork)
    holder = _WRITERS.get(key)
    if holder is not None and holder() is not None:
        return holder()
    try:
        st = os.stat(key)
    except FileNotFoundError:
        return None
    for other, ref in list(_WRITERS.items()):
        try:
            o = os.stat(other)
        except FileNotFoundError:
            continue
        if (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino):
            return ref()
    return None


def forget_writer(path: str) -> None:
    """Forget which object of this process writes ``path`` (it is being folded after being left open)."""
    _WRITERS.pop(notebook_key(path), None)


def _caller() -> str:
    """Where the user's code opened a notebook (the first frame outside epyclab), for messages."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not os.path.abspath(frame.filename).startswith(package + os.sep):
            return f"{frame.filename}:{frame.lineno} ({datetime.now().strftime('%H:%M:%S')})"
    return datetime.now().strftime("%H:%M:%S")
