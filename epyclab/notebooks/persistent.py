"""What file-backed notebooks share: opening, locking, loading, and refusing what cannot be saved."""

from __future__ import annotations

import os
import uuid
from typing import Any

from epyclab.errors import NotebookOverwriteError, NotebookReadOnlyError
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.notebooks.locks import WriterLock
from epyclab.notebooks.resultset import ResultSet
from epyclab.notebooks.rowcheck import RowCheck
from epyclab.notebooks.stored import StoredNotebook

__all__ = ["PersistentLabNotebook"]


class PersistentLabNotebook(LabNotebook):
    """A notebook kept in a file; subclasses say how the file is read and written.

    The file is opened (and, for writing, locked against other writers) when
    the notebook is made; :meth:`close` commits and releases it, :meth:`open`
    takes it again. ``readonly=True`` reads a notebook without locking it, so
    it works while another process writes; such a notebook cannot be saved.
    ``create=True`` starts an empty notebook even if the file exists, but
    refuses (:class:`~epyclab.errors.NotebookOverwriteError`) if that would
    drop pending results, unless ``force=True``.
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
        self._is_open = False
        self._lock = WriterLock(path)
        # Per result set (by id): its row check and its identity in the file.
        self._checks: dict[int, RowCheck] = {}
        self._uids: dict[int, str] = {}
        super().__init__(path, description)
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

    def open(self) -> None:
        """Open the file again after :meth:`close` (reading what it holds now); no-op if open."""
        if not self._is_open:
            self._open_file(False, False, None)

    def close(self) -> None:
        """Commit, then release the file (other processes may now write it)."""
        if not self._is_open:
            return
        try:
            if not self._readonly:
                self.commit()
                self._close_file()
        finally:
            self._is_open = False
            self._lock.release()

    def _open_file(self, create: bool, force: bool, description: str | None) -> None:
        if self._readonly:
            if not os.path.exists(self._path):
                raise FileNotFoundError(f"no notebook {self._path} to open read-only")
            self._load(self._read_file(writer=False))
            self._is_open = True
            return
        directory = os.path.dirname(os.path.abspath(self._path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"cannot open notebook {self._path}: directory {directory} does not exist")
        self._lock.acquire()
        try:
            exists = os.path.exists(self._path)
            if exists:
                # Loaded even when about to be replaced: what it holds must be known
                # (its pending results, including those only its journal records).
                self._load(self._read_file(writer=True))
                if create:
                    self._refuse_to_drop_pending(force)
            if create or not exists:
                self._create_file(self._description if description is None else description)
                self._reset_to_empty(description)
        except BaseException:
            self._lock.release()
            raise
        self._is_open = True

    def _refuse_to_drop_pending(self, force: bool) -> None:
        pending = self.numberOfAllPendingResults()
        if pending and not force:
            raise NotebookOverwriteError(
                f"{self._path} holds {pending} pending result(s) (submitted jobs not yet collected); "
                f"create=True would drop them. Collect them first (updateResults() or wait() on the lab "
                f"that submitted them), or pass force=True to discard them"
            )

    def _check_writable(self) -> None:
        if self._readonly:
            raise NotebookReadOnlyError(
                f"notebook {self._path} was opened read-only; open it without readonly=True to save changes"
            )
        if not self._is_open:
            raise NotebookReadOnlyError(f"notebook {self._path} is closed; call open() before saving changes")

    # ---- result sets and their checks --------------------------------------------------------

    def _new_resultset(self, description: str | None) -> ResultSet:
        rs = ResultSet(description)
        self._attach(rs, RowCheck(), uuid.uuid4().hex)
        return rs

    def _attach(self, rs: ResultSet, check: RowCheck, uid: str) -> None:
        rs._set_row_check(check)
        self._checks[id(rs)] = check
        self._uids[id(rs)] = uid

    def _uid(self, rs: ResultSet) -> str:
        return self._uids[id(rs)]

    def _reset_to_empty(self, description: str | None) -> None:
        """Forget everything: the notebook is new (its file was just created)."""
        self._resultsets = {}
        self._checks, self._uids = {}, {}
        self._locked = False
        if description is not None:
            self._description = description
        self.addResultSet(LabNotebook.DEFAULT_RESULTSET)
        self._loaded()

    def _load(self, stored: StoredNotebook) -> None:
        """Make the notebook what ``stored`` holds."""
        self._resultsets = {}
        self._checks, self._uids = {}, {}
        for s in stored.resultsets:
            rs = ResultSet(s.description)
            self._attach(rs, RowCheck(s.kinds), s.uid)
            rs._load(s.frame, s.roles, s.pending, s.missing)
            rs._attributes = dict(s.attributes)
            rs._locked = s.locked
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
                (tag, id(rs), rs._state_version, rs._pending_version, rs.numberOfResults())
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

    def _close_file(self) -> None:
        """Release what the open file holds (called after a commit, writers only)."""
