"""The HDF5 notebook: results kept in an HDF5 file that a crash never damages.

How a notebook ``results.h5`` is kept (docs/hdf5-layout.md has the details):

* :meth:`HDF5LabNotebook.commit` appends what changed since the last commit
  (new rows, pending-result and state changes) as one record to the journal
  ``results.h5.journal``: one ``write``, whatever the size of the notebook.
* A *checkpoint* folds the journal into ``results.h5``: it appends the new
  rows to the column datasets, then empties the journal. It runs when the
  journal has grown (:attr:`HDF5LabNotebook.CheckpointRows`,
  :attr:`~HDF5LabNotebook.CheckpointBytes`,
  :attr:`~HDF5LabNotebook.CheckpointInterval`) and on :meth:`close`. Every
  byte it overwrites is first saved in ``results.h5.undo``
  (:mod:`epyclab.notebooks.undo`), so a kill in the middle is undone.
* Opening a notebook undoes an unfinished checkpoint, then replays the
  journal records the file lacks: every commit that returned is there.
* ``results.h5.lock`` keeps a second writer out; the file itself is locked
  while a checkpoint changes it, so readers never see half a change.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
import pickle
import shutil
import sys
import tempfile
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from time import monotonic
from typing import Any, Callable

import h5py

from epyclab.errors import (
    EpyclabError,
    NotebookFormatError,
    NotebookInUseError,
    NotebookIOError,
    NotebookReadOnlyError,
)
from epyclab.log import logger
from epyclab.notebooks import fileio
from epyclab.notebooks.download import download, is_url
from epyclab.notebooks.filecrc import FileCrc
from epyclab.notebooks.hdf5check import refuse_foreign_storage
from epyclab.notebooks.hdf5layout import (
    CREATE_OPTIONS,
    VERSION,
    WRITE_OPTIONS,
    escape,
    init_empty,
    read_notebook,
    resultset_group,
    write_pending,
    write_resultset_attributes,
)
from epyclab.notebooks.hdf5rows import ColumnTrack, RowsTrack, write_base, write_rows
from epyclab.notebooks.heapcheck import check_global_heaps
from epyclab.notebooks.journal import (
    Journal,
    decode_frame,
    describe_damage,
    encode_frame,
    has_records,
    read_file_id,
    read_scan,
    rewrite_without,
    write_aside,
)
from epyclab.notebooks.jsonvalues import encode_value
from epyclab.notebooks.locks import READER_FIX, DataLock, WriterLock, describe_holders
from epyclab.notebooks.persistent import PersistentLabNotebook, SetRecord, forget_writer
from epyclab.notebooks.replay import Lost, Replay, apply_record
from epyclab.notebooks.resultset import ChangeMark, ResultSet
from epyclab.notebooks.rowcheck import RowCheck
from epyclab.notebooks.sidefiles import check_writable_file, io_error, new_file_mode, notebook_key, side_path
from epyclab.notebooks.stored import StoredNotebook
from epyclab.notebooks.undo import GuardedFile, UndoFile, recover

__all__ = ["HDF5LabNotebook"]


@dataclass
class _Committed:
    """What the journal (or the file) already holds of one result set."""

    #: Where the result set stood at the last commit.
    mark: ChangeMark
    #: Job id -> parameters as JSON, as last committed.
    pending: dict[str, str] = field(default_factory=dict)
    #: The mark's pending version when the pending results were last written to the file.
    pending_stored: int = -1
    #: How many of the set's declared dtypes (setDtype) are committed.
    dtypes: int = 0


@dataclass
class _Record(SetRecord):
    """What the HDF5 notebook keeps for one result set: also what its file and journal hold of it."""

    rows: RowsTrack = field(default_factory=lambda: RowsTrack(base_len=0, stored_rows=0))
    committed: _Committed | None = None


class HDF5LabNotebook(PersistentLabNotebook):
    """A notebook persisted to an HDF5 file, crash-safe, that commits in time proportional to what changed.

    ``HDF5LabNotebook(name, create=False, description=None)`` opens the
    notebook in file ``name``, creating it if it does not exist (or if
    ``create=True``, which refuses to drop pending results unless
    ``force=True``). Notebooks written by epyc 1.x open too; the first
    commit that changes one converts it to this format, keeping the original
    as ``<name>.epyc1.bak``. ``readonly=True`` reads a notebook, also while
    another process writes it. A ``name`` that is an http(s) URL is downloaded
    to a temporary file (removed when the notebook object goes) and opened
    read-only, as in epyc.

    Raises:
        NotebookIOError: a URL could not be downloaded (the message says why).
        NotebookReadOnlyError: ``create=True`` with a URL.
    """

    #: Fold the journal into the file once this many rows are in it...
    CheckpointRows = 20_000
    #: ...or once it is this large (bytes)...
    CheckpointBytes = 32 * 2**20
    #: ...or when a commit comes this many seconds after the last checkpoint.
    CheckpointInterval = 60.0
    #: How long :meth:`close` (and the fold of a notebook left open at exit) waits for readers
    #: of the file before leaving the journal to be folded later: long enough for an epyclab
    #: reader to finish reading, not to wait for a plain ``h5py.File`` left open.
    CloseWait = 2.0

    def __init__(
        self,
        name: str | os.PathLike[str],
        create: bool = False,
        description: str | None = None,
        readonly: bool = False,
        force: bool = False,
    ) -> None:
        self._journal: Journal | None = None
        self._replay: list[Any] = []
        #: Where the replay stands as of the file being loaded (see replay.Replay).
        self._replay_from = Replay(0)
        #: The replay of the last load (what it found lost).
        self._replayed = Replay(0)
        #: A reader's words about damage to the journal, said once the replay tells what it cost.
        self._damage_text = ""
        self._file_stored: dict[str, Any] = {}
        self._file_id = ""
        self._seq = 0
        self._file_seq = 0
        self._from_epyc = False
        self._committed_state: Any = None
        #: The last state a record held, and its key (built again only when the state changes).
        self._last_state: tuple[Any, dict[str, Any]] | None = None
        #: The uids of the result sets the file holds.
        self._filed: set[str] = set()
        self._last_checkpoint = monotonic()
        #: The file's CRC-32, kept up to date by the checkpoints (each undo log names it).
        self._crc = FileCrc()
        self._hard_linked = False
        self._keep_journal = False
        self._folder: weakref.finalize | None = None
        # The journal the finalizer closes (a list, as the journal is replaced on conversion).
        self._open_journal: list[Journal | None] = [None]
        if is_url(name):
            # As epyc: a notebook named by a URL is downloaded and read; there is no file to change.
            if create:
                raise NotebookReadOnlyError(
                    f"cannot create notebook {name}: a notebook named by a URL is only read; create it "
                    f"as a local file and upload that"
                )
            name, directory = download(str(name))
            weakref.finalize(self, shutil.rmtree, directory, True)
            readonly = True
        super().__init__(name, create, description, readonly, force)

    def _side(self, suffix: str) -> str:
        # Beside the file the name resolves to: a symbolic link leads to the same journal.
        return side_path(self._path, suffix)

    # ---- reading the file ------------------------------------------------------------------

    def _read_file(self, writer: bool) -> StoredNotebook:
        # Reading needs no more than a shared lock, which readers (plain h5py ones too) share: a
        # writer opening the notebook waits for no one. Writers are kept out by the writer lock.
        lock = DataLock(self._path)
        lock.acquire_or_fail(exclusive=False)
        try:
            if os.path.exists(self._side("undo")):
                # A writer was killed in a checkpoint: the file must be restored before reading,
                # and no one may read it meanwhile (a plain h5py reader would see half a change).
                lock.release()
                lock.acquire_or_fail(exclusive=True, doing="to undo the unfinished change a killed writer left")
                try:
                    recover(self._path, self._side("undo"), verify_restored)
                except PermissionError:
                    raise NotebookFormatError(
                        f"{self._path} was left in the middle of a change by a writer that was killed, "
                        f"and this process may not write it to undo the change; open it once for writing"
                    ) from None
                lock.share()
            check_global_heaps(self._path)  # before HDF5 reads a text: a damaged heap can make it hang
            refuse_foreign_storage(self._path)
            stored = read_notebook(self._path)
            self._replay = self._journal_records(stored, writer)
        finally:
            lock.release()
        return stored

    def _journal_records(self, stored: StoredNotebook, writer: bool) -> list[bytes]:
        """The journal's records as raw frames (decoded, and those the file includes skipped, on replay)."""
        path = self._side("journal")
        file_id = read_file_id(path)
        if file_id is None:
            return []
        if stored.version != VERSION or file_id != stored.file_id:
            # The journal belongs to another file that had this name: never replay it here.
            if writer:
                aside = f"{path}.orphaned-{uuid.uuid4().hex[:8]}"
                fileio.replace(path, aside)
                fileio.flush_dir(aside)
                logger.warning("%s belongs to another notebook file; moved it to %s", path, aside)
            else:
                logger.warning("ignoring %s: it belongs to another notebook file", path)
            return []
        scan = read_scan(path)
        if scan is None:
            return []
        # A reader says so once the replay tells what the damage cost (a writer's journal says it).
        self._damage_text = describe_damage(scan, stored.seq) if scan.damaged and not writer else ""
        return scan.frames

    def _create_file(self, description: str) -> None:
        if self._journal is not None:
            self._journal.close()  # the journal of the notebook being replaced
            self._journal = None
        for suffix in ("journal", "undo"):
            if os.path.exists(self._side(suffix)):
                logger.info("removing %s, left by the notebook being replaced", self._side(suffix))
                fileio.unlink(self._side(suffix))
        file_id = uuid.uuid4().hex
        tmp = self._write_new(lambda f: init_empty(f, file_id, description), "creating it")
        try:
            fileio.replace(tmp, notebook_key(self._path))
            fileio.flush_dir(tmp)
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise io_error(self._path, exc, "creating it") from exc
        self._file_id = file_id
        self._seq = 0
        self._from_epyc = False
        self._replay = []
        self._file_stored = {}

    def _write_new(self, build: Callable[[h5py.File], None], doing: str) -> str:
        """Write a whole new HDF5 file beside the notebook through ``build(f)``; its temporary name.

        The caller renames it into place. h5py writes through a :class:`GuardedFile`, so a
        full disk is an error naming the notebook, never a crash, and leaves nothing behind.

        Raises:
            NotebookIOError: the disk is full, or another I/O error.
        """
        target = notebook_key(self._path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".new",
                                       dir=os.path.dirname(target))
        except OSError as exc:
            raise io_error(self._path, exc, doing) from exc
        fileio.track(fd, tmp)
        guard = GuardedFile(tmp, fd)
        try:
            try:
                with h5py.File(guard, "w", **CREATE_OPTIONS) as f:
                    build(f)
            except BaseException:
                if guard.failure is None:
                    raise
            if guard.failure is not None:
                raise io_error(self._path, guard.failure, doing) from guard.failure
            os.fchmod(fd, new_file_mode(target))
            try:
                # Whole on the disk before it is renamed into place: a power cut leaves the old file or this one.
                fileio.flush(fd)
            except OSError as exc:
                raise io_error(self._path, exc, doing) from exc
        except BaseException:
            fileio.close(fd)
            os.unlink(tmp)
            raise
        fileio.close(fd)
        return tmp

    def _load(self, stored: StoredNotebook) -> None:
        """Load ``stored`` and replay the journal; records that cannot be folded are set aside, never fatal."""
        frames = self._replay
        since = Replay(stored.seq)  # where the replay stands as of ``stored``
        while True:
            self._prepare(stored, frames, since)
            try:
                super()._load(stored)
                return
            except _Unfoldable as u:
                failed = u.index
                if failed is None:
                    # The records replay, but the file cannot take them all (the checkpoint was
                    # undone): fold them one at a time to find the first it cannot take.
                    if len(frames) > 1:
                        self._prepare(stored, frames[:1], since)
                        # The journal keeps every record meanwhile: the later ones are in it only.
                        self._keep_journal = True
                        try:
                            super()._load(stored)
                        except _Unfoldable:
                            failed = 0
                        else:
                            # Row numbers after a missing commit carry on from where that one left them.
                            stored, frames, since = self._reread(), frames[1:], self._replayed.copy()
                            continue
                        finally:
                            self._keep_journal = False
                    else:
                        failed = 0
                # Only that record: the later ones are replayed after it, as after a damaged one.
                self._set_aside(frames[failed : failed + 1], u.cause)
                frames = frames[:failed] + frames[failed + 1 :]

    def _prepare(self, stored: StoredNotebook, frames: list[bytes], since: Replay) -> None:
        """Get ready to load ``stored`` and replay ``frames`` (again, after a failed attempt) from ``since``."""
        self._file_id, self._seq = stored.file_id, stored.seq
        self._file_seq = stored.seq
        self._from_epyc = stored.version != VERSION
        self._file_stored = {s.uid: s for s in stored.resultsets}
        self._replay = frames
        self._replay_from = since
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _reread(self) -> StoredNotebook:
        """What the file holds now (after a checkpoint of this process), journal left alone."""
        lock = DataLock(self._path)
        lock.acquire_or_fail(exclusive=False)
        try:
            return read_notebook(self._path)
        finally:
            lock.release()

    def _set_aside(self, frames: list[bytes], cause: BaseException, rewrite: bool = True) -> None:
        """Keep journal records that cannot be folded in a file of their own, and say so.

        With ``rewrite`` the journal is rewritten without them; else the caller rewrites it.
        """
        records = _describe_frames(frames)
        journal = self._side("journal")
        if self._readonly:
            logger.warning(
                "%s: %d journal record(s) of %s cannot be read into the notebook (%s: %s); they are "
                "left out here, and set aside into a file of their own when the notebook is next "
                "opened for writing", journal, len(frames), self._path, type(cause).__name__, cause,
            )
            return
        aside = f"{journal}.unfolded-{datetime.now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        write_aside(aside, self._file_id, frames)
        if rewrite:
            # The journal keeps the other records: written whole, flushed, then renamed over it.
            rewrite_without(journal, self._file_id, frames, self._path, self._file_seq)
        logger.warning(
            "%s: %d committed change(s) (%s) could not be folded into the notebook (%s: %s). The notebook "
            "opens without them; they are kept in %s. To recover them, read that file with "
            "epyclab.notebooks.journal.read_records(path) (each record holds the rows, by column, "
            "and the pending-result changes of one commit) and add what you need with addResult()",
            self._path, len(frames), records, type(cause).__name__, _shortened(str(cause)), aside,
        )

    def _loaded(self) -> None:
        """Track what the file holds, replay the journal, and get ready to commit.

        Raises:
            _Unfoldable: a record cannot be replayed (its index) or the file cannot take them (None).
        """
        for rs in self._resultsets.values():
            self._track(rs, self._file_stored.get(self._uid(rs)))
        stored_uids = set(self._file_stored)
        self._filed = set(stored_uids)
        self._file_stored = {}
        frames, self._replay = self._replay, []
        replayed, kept, asides, why = self._replay_records(frames)
        if replayed:
            stored_uids.update(self._uid(rs) for rs in self._resultsets.values())
            # What was replayed is committed (it is in the journal), not yet in the file.
            for rs in self._resultsets.values():
                c = self._committed(rs)
                c.mark = rs.changeMark()
                c.pending = {j: _pending_json(j, p) for j, p in c.mark.pending.items()}
                c.dtypes = len(rs.declaredDtypes())
        # Result sets made in memory (a new notebook's default one) are not in
        # the file yet: the next commit must record them, or its rows would
        # refer to a result set that a later reader does not know.
        in_file = all(self._uid(rs) in stored_uids for rs in self._resultsets.values())
        self._committed_state = self._state_record_key() if in_file and not self._from_epyc else None
        self._saved = self._state_signature()
        if asides:
            self._set_aside(asides, NotebookFormatError(f"they cannot be applied ({why})"), rewrite=False)
        lost = self._describe_lost(self._replayed.lost)
        if self._readonly or self._from_epyc:
            damage, self._damage_text = self._damage_text, ""
            if damage or lost:
                logger.warning(
                    "journal of notebook %s: %s. Only what is damaged is left out; the damaged bytes are set "
                    "aside into a file of their own when the notebook is next opened for writing",
                    self._path, "; ".join(t for t in (damage, lost) if t),
                )
            return  # an epyc file gets a journal when its first change converts it
        try:
            # Records replayed after a missing commit are renumbered (or cut) as the notebook holds them,
            # so that the commits appended from now on follow them (not while records are folded one by one).
            self._journal = Journal(
                self._side("journal"), self._file_id, where=self._path, base_seq=self._file_seq,
                frames=kept if kept is not None and not self._keep_journal else None, lost=lost,
            )
        except OSError as exc:
            raise io_error(
                self._path, exc, "opening its journal for writing",
                kept="nothing was changed; open it with readonly=True to read it",
            ) from exc
        if lost and not self._journal.warned():
            # Commits missing from a journal with no damaged bytes (set aside already, or cut out whole).
            logger.warning("journal of notebook %s: %s", self._path, lost)
        self._last_checkpoint = monotonic()
        # The fold at exit may type columns with pandas, which can no longer be imported once the
        # interpreter shuts down (concurrent.futures refuses new exit hooks): a writer loads it now.
        # (Readers, `epyclab show` among them, never need it for counts and names.)
        import pandas  # noqa: F401

        # Left open (never closed) at exit or when dropped: the journal is folded in then.
        if self._folder is None or not self._folder.alive:
            # By absolute path: the program may change directory before it exits.
            self._folder = weakref.finalize(
                self, _fold_left_open, os.path.abspath(self._path), self._lock, self._open_journal
            )
            _fold_at_exit(self._folder)
        self._open_journal[0] = self._journal
        # A journal lies beside one name of the file: through another hard link it is not found.
        # So a notebook with several names is folded at every commit: the file alone holds them.
        self._hard_linked = os.stat(self._path).st_nlink > 1
        if self._hard_linked:
            logger.warning(
                "%s has %d names (hard links); every commit is folded into the file at once, so that "
                "each name sees it (slower commits)", self._path, os.stat(self._path).st_nlink,
            )
        if replayed:
            try:
                # Not waiting for readers: if they hold the file, the journal keeps the records. But
                # when the records are folded one at a time (to find one the file cannot take), the
                # next step needs this one in the file: that waits, saying so, or fails saying why.
                if not self._checkpoint(wait=DataLock.Timeout if self._keep_journal else 0) and self._keep_journal:
                    raise NotebookInUseError(
                        f"notebook {self._path} needs its journal folded in to open (a record of it cannot be "
                        f"folded, and the records before it must be), but {describe_holders(self._path)} "
                        f"holds it open for reading; {READER_FIX}, then open it again (nothing was lost)"
                    )
            except NotebookIOError as exc:
                # The notebook opens all the same: the journal holds what the file lacks.
                logger.warning("%s", exc)
            except NotebookInUseError:
                raise  # not a record that cannot be folded: readers in the way
            except _UNFOLDABLE as exc:
                raise _Unfoldable(None, exc) from exc

    def _replay_records(self, frames: list[bytes]) -> tuple[bool, list[bytes] | None, list[bytes], str]:
        """Replay journal records the file lacks, across missing commits (see :class:`Replay`).

        Returns whether any was replayed; the records as replayed, if any differs from
        the journal's (renumbered after a missing commit, or cut), else None; the parts
        that cannot be applied, as records; and why they cannot.

        Raises:
            _Unfoldable: a record cannot be replayed (its index).
        """
        replay = self._replay_from.copy()
        replayed, changed = False, False
        kept: list[bytes] = []
        asides: list[bytes] = []
        whys: list[str] = []
        for i, frame in enumerate(frames):
            try:
                record = decode_frame(frame)
                if record["seq"] <= self._seq:
                    continue  # already in the file
                placed = replay.place(record, {self._uid(rs): rs for rs in self._resultsets.values()})
                self._apply(placed.apply)
            except _UNFOLDABLE as exc:
                if isinstance(exc, NotebookIOError):
                    raise
                raise _Unfoldable(i, exc) from exc
            replay.accept(placed)
            replayed = True
            changed = changed or placed.changed
            kept.append(self._reencode(placed.apply) if placed.changed else frame)
            if placed.aside is not None:
                asides.append(self._reencode(placed.aside))
                whys.append(f"commit {record['seq']}: {placed.why}")
        self._replayed = replay
        return replayed, kept if changed else None, asides, _shortened("; ".join(whys))

    def _reencode(self, record: dict[str, Any]) -> bytes:
        return encode_frame(pickle.dumps(record, protocol=5), record["seq"], self._file_id)

    def _describe_lost(self, lost: list[Lost]) -> str:
        """The rows missing commits held, by result set, in words (empty if none)."""
        if not lost:
            return ""
        tags = {self._uid(rs): tag for tag, rs in self._resultsets.items()}
        parts = []
        for item in lost[:_LISTED_RECORDS]:
            # Counted as the rows were added (a new user read "row 11" as dataframe()'s, which is in design order).
            first, last = _ordinal(item.first + 1), _ordinal(item.first + item.count)
            rows = f"the {first} row added to it" if item.count == 1 else f"the {first} to {last} rows added to it"
            commits = item.commits
            held = f"commit {commits[0]}" if len(commits) == 1 else f"commits {commits[0]} to {commits[-1]}"
            parts.append(f"{item.count} row(s) of result set {tags.get(item.uid, item.uid)!r} ({rows}, counted in "
                         f"the order rows were added, not dataframe()'s; {held})")
        if len(lost) > _LISTED_RECORDS:
            parts.append(f"{sum(x.count for x in lost[_LISTED_RECORDS:])} row(s) more in {len(lost) - _LISTED_RECORDS} "
                         f"other gap(s)")
        return ("the missing commits held " + ", ".join(parts) + "; every later commit is in the notebook. A sweep "
                "run again with runExperiment(..., resume=True) computes the lost points again")

    def _new_record(self, check: RowCheck, uid: str) -> SetRecord:
        return _Record(check, uid)

    def _hdf5_record(self, rs: ResultSet) -> _Record:
        record = self._record_of(rs)
        assert isinstance(record, _Record)
        return record

    def _committed(self, rs: ResultSet) -> _Committed:
        committed = self._hdf5_record(rs).committed
        assert committed is not None
        return committed

    def _track(self, rs: ResultSet, stored: Any = None) -> None:
        """Start tracking a result set (``stored``: what the file holds of it, if anything)."""
        n = rs.numberOfResults()
        rows = RowsTrack(base_len=n, stored_rows=n if stored is not None else 0)
        if stored is not None:
            for name in stored.rows.names():
                rows.columns[name] = ColumnTrack(stored.kinds[name].key())
            rows.base_written = not self._from_epyc
        mark = rs.changeMark()
        pending = {j: _pending_json(j, p) for j, p in mark.pending.items()}
        record = self._hdf5_record(rs)
        record.rows = rows
        record.committed = _Committed(
            mark, pending, mark.pending_version if stored is not None else -1, len(rs.declaredDtypes())
        )

    def _apply(self, record: dict[str, Any]) -> None:
        """Replay one journal record into the notebook in memory."""
        by_uid = {self._uid(rs): rs for rs in self._resultsets.values()}
        state = apply_record(record, by_uid, self._adopt, self._path)
        if state is not None:
            live = {id(rs) for rs in state.sets.values()}
            for rs in self._resultsets.values():
                if id(rs) not in live:
                    self._records.pop(id(rs), None)  # deleted by this commit
            self._resultsets = state.sets
            self._description, self._locked, self._current = state.description, state.locked, state.current
        self._seq = record["seq"]

    def _new_resultset(self, description: str | None) -> ResultSet:
        rs = super()._new_resultset(description)
        self._track(rs)
        return rs

    def _adopt(self, uid: str, description: str) -> ResultSet:
        """A new, empty result set known (to the journal) as ``uid``."""
        rs = ResultSet(description)
        self._attach(rs, RowCheck(), uid)
        self._track(rs)
        return rs

    # ---- committing ---------------------------------------------------------------------------

    def _save(self) -> None:
        """Append what changed to the journal (an epyc file is converted instead)."""
        if self._from_epyc:
            self._convert()
            return
        record, after = self._record()
        assert self._journal is not None
        written = False
        try:
            self._journal.append(record, seq=record["seq"])
            written = True
        except OSError as exc:
            raise io_error(
                self._path, exc, "committing",
                kept="this commit's changes are still in memory, and every earlier commit is in the notebook",
            ) from exc
        finally:
            # Even if an interrupt comes right after the write: the record is in.
            if written:
                after()
                self._seq = record["seq"]

    def _saved_hook(self) -> None:
        if self._checkpoint_due():
            # A notebook with several names must fold each commit (its journal lies beside one name):
            # it waits for readers, saying so at once. Any other commit waits for no one.
            self._checkpoint(wait=DataLock.Timeout if self._hard_linked else 0)

    def _state_record_key(self) -> Any:
        return (
            self._state_version,
            self._current,
            tuple((tag, self._uid(rs), rs.versions()[0]) for tag, rs in self._resultsets.items()),
        )

    def _record(self) -> tuple[dict[str, Any], Any]:
        """The journal record of what changed since the last commit, and what to note once it is written.

        Everything that could be refused (a pending result's parameters, an
        attribute) is encoded here, before anything is written.
        """
        key = self._state_record_key()

        def current_state() -> dict[str, Any]:
            if self._last_state is None or self._last_state[0] != key:
                self._last_state = (key, {
                    "description": self._description,
                    "locked": self._locked,
                    "current": self._current,
                    "sets": [
                        (self._uid(rs), tag, rs.description(), rs.isLocked(), _attributes_json(tag, rs))
                        for tag, rs in self._resultsets.items()
                    ],
                })
            return self._last_state[1]

        state = current_state() if key != self._committed_state else None
        rows, pending, dtypes, notes = [], [], [], []
        for rs in self._resultsets.values():
            c = self._committed(rs)
            changes = rs.changesSince(c.mark)
            if changes.rows:
                roles = changes.roles
                if roles is None and len(self._hdf5_record(rs).rows.columns) != sum(changes.mark.sizes):
                    # Columns the file lacks: every record names their roles until a checkpoint, so that
                    # if the record that made one is damaged, the later ones can still be replayed.
                    roles = rs.roles()
                rows.append((self._uid(rs), changes.start, roles, changes.rows))
            added: dict[str, str] = {}
            if changes.pending_changed:
                added = {j: _pending_json(j, p) for j, p in changes.pending_added.items()}
                pending.append((self._uid(rs), added, changes.pending_removed))
            declared = rs.declaredDtypes()
            if len(declared) > c.dtypes:
                dtypes.append((self._uid(rs), declared[c.dtypes :]))
            notes.append((c, changes, added, len(declared)))
        if state is None and any(u not in self._filed for u, *_ in rows + pending):
            # A result set the file does not hold yet: every record names it (with the notebook's state),
            # so that if the record that made it is damaged, the later ones can still be replayed.
            state = current_state()
        record = {"seq": self._seq + 1, "state": state, "rows": rows, "pending": pending}
        if dtypes:
            record["dtypes"] = dtypes  # (absent from most records; earlier epyclab ignores it)

        def after() -> None:
            self._committed_state = key
            for c, changes, added, declared in notes:
                c.dtypes = declared
                c.mark = changes.mark
                for jobid in changes.pending_removed:
                    c.pending.pop(jobid, None)
                c.pending.update(added)

        return record, after

    # ---- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Fold the journal into the HDF5 file now (so plain h5py sees every commit).

        Waits up to :attr:`DataLock.Timeout` for readers of the file (a plain
        ``h5py.File`` left open holds it), saying at once at WARNING on the
        ``epyclab`` logger which processes hold it; returns False (and keeps the
        journal, losing nothing) if they do not let go.
        """
        self.commit()
        self._check_writable()
        return self._checkpoint(wait=DataLock.Timeout)

    def _checkpoint_due(self) -> bool:
        assert self._journal is not None
        # One record per live result set: a deleted set's rows no longer count.
        records = [self._hdf5_record(rs) for rs in self._resultsets.values()]
        unstored = sum(r.committed.mark.rows - r.rows.stored_rows for r in records if r.committed is not None)
        return (
            self._hard_linked
            or unstored >= self.CheckpointRows
            or self._journal.size() >= self.CheckpointBytes
            or monotonic() - self._last_checkpoint >= self.CheckpointInterval
        )

    def _checkpoint(self, wait: float) -> bool:
        """Fold the journal into the file, waiting up to ``wait`` s for readers; False if they stayed."""
        assert self._journal is not None
        if self._journal.empty():
            return True
        lock = DataLock(self._path)
        if not lock.acquire(exclusive=True, wait=wait, doing="to fold its journal in"):
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "checkpoint of %s postponed: %s holds it open for reading (the commits wait in the "
                    "journal; epyclab's readonly=True readers see them)", self._path, describe_holders(self._path),
                )
            return False
        done = False
        try:
            # An earlier checkpoint of this process may have been interrupted while undoing itself.
            recover(self._path, self._side("undo"), verify_restored)
            rows = copy.deepcopy({id(rs): self._hdf5_record(rs).rows for rs in self._resultsets.values()})
            try:
                undo = UndoFile(self._path, self._side("undo"), self._crc)
            except OSError as exc:
                raise self._fold_error(exc) from exc
            try:
                with h5py.File(undo, "r+", **WRITE_OPTIONS) as f:
                    pending_stored = self._write_changes(f, rows)
            except BaseException:
                undo.rollback()
                if undo.failure is not None:
                    raise self._fold_error(undo.failure) from undo.failure
                raise
            if undo.failure is not None:
                # h5py finished in memory after a write failed: the file is put back as it was.
                undo.rollback()
                raise self._fold_error(undo.failure) from undo.failure
            try:
                undo.commit()  # the log on the disk, then the file, then the log removed (undone if it fails)
            except OSError as exc:
                raise self._fold_error(exc) from exc
            done = True
        finally:
            if done:
                # The file has changed: note it even if an interrupt comes now.
                for rs in self._resultsets.values():
                    self._hdf5_record(rs).rows = rows[id(rs)]
                for c in pending_stored:
                    c.pending_stored = c.mark.pending_version
                self._filed = {self._uid(rs) for rs in self._resultsets.values()}
                self._last_checkpoint = monotonic()
            lock.release()
        # Emptying the journal can wait: its records are in the file, and replaying skips them.
        if not self._keep_journal:
            self._journal.reset(self._file_id)
        return True

    def _fold_error(self, exc: OSError) -> NotebookIOError:
        return io_error(
            self._path, exc, "folding its journal into it",
            kept=f"every committed row is kept in {self._side('journal')}, and the file is as it was",
        )

    def _write_changes(self, f: h5py.File, tracks: dict[int, RowsTrack]) -> list[_Committed]:
        """Write everything committed that ``f`` lacks; returns the result sets whose pending were written."""
        f.attrs["description"] = self._description
        f.attrs["locked"] = self._locked
        f.attrs["current-resultset"] = self._current or ""
        links = set()
        pending_written = []
        for tag, rs in self._resultsets.items():
            uid, track, c = self._uid(rs), tracks[id(rs)], self._committed(rs)
            g = resultset_group(f, tag, uid)
            links.add(escape(tag))
            kinds = rs.columnStates()
            if not track.base_written:
                write_base(g, rs, track, kinds)
                g.attrs["rows"] = track.stored_rows
            write_rows(g, rs, track, kinds)
            g.attrs["roles"] = json.dumps(rs.roles())
            write_resultset_attributes(g, rs.description(), rs.isLocked(), _attributes_json(tag, rs))
            if c.pending_stored != c.mark.pending_version:
                write_pending(g, c.pending)
                pending_written.append(c)
        for link in list(f["resultsets"]):
            if link not in links:
                del f["resultsets"][link]
        f.attrs["journal-seq"] = self._seq
        return pending_written

    def _convert(self) -> None:
        """Write this notebook, loaded from an epyc 1.x file, as a new file in this format."""
        backup = f"{notebook_key(self._path)}.epyc1.bak"
        n = 0
        while os.path.exists(backup):
            n += 1
            backup = f"{notebook_key(self._path)}.epyc1.bak{n}"
        file_id = uuid.uuid4().hex
        for rs in self._resultsets.values():
            c = self._committed(rs)
            c.mark = rs.changeMark()
            c.pending = {j: _pending_json(j, p) for j, p in c.mark.pending.items()}
            c.pending_stored = -1
        rows = copy.deepcopy({id(rs): self._hdf5_record(rs).rows for rs in self._resultsets.values()})

        def build(f: h5py.File) -> None:
            init_empty(f, file_id, self._description)
            self._write_changes(f, rows)

        tmp = self._write_new(build, "converting it from epyc's format")
        try:
            try:
                fileio.link(notebook_key(self._path), backup)
            except OSError:  # a file system without hard links
                shutil.copy2(notebook_key(self._path), backup)
            fileio.replace(tmp, notebook_key(self._path))
            fileio.flush_dir(tmp)
        except OSError as exc:
            raise io_error(self._path, exc, "converting it from epyc's format") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        # A new inode now holds the notebook: the writer's lock moves to it.
        self._lock.lock_file()
        logger.warning(
            "%s was an epyc 1.x notebook; it is now in epyclab's format (the original is kept as %s)",
            self._path,
            backup,
        )
        self._file_id, self._from_epyc = file_id, False
        for rs in self._resultsets.values():
            self._hdf5_record(rs).rows = rows[id(rs)]
            c = self._committed(rs)
            c.pending_stored = c.mark.pending_version
        self._committed_state = self._state_record_key()
        self._filed = {self._uid(rs) for rs in self._resultsets.values()}
        if self._journal is not None:
            self._journal.close()
        self._journal = Journal(self._side("journal"), file_id)
        self._journal.reset(file_id)
        self._open_journal[0] = self._journal

    def _drop_file(self) -> None:
        # What earlier commits journalled stays in the journal (folded when next opened); nothing is written,
        # not even the trim of the journal's spare space (a forked copy lets go this way of its parent's file).
        if self._folder is not None:
            self._folder.detach()
            _AT_EXIT.discard(self._folder)
            self._folder = None
        if self._journal is not None:
            self._journal.close(trim=False)
            self._journal = None

    def _close_file(self) -> None:
        if self._folder is not None:
            self._folder.detach()
            _AT_EXIT.discard(self._folder)
            self._folder = None
        if self._journal is None:
            return
        try:
            done = self._checkpoint(wait=self.CloseWait)
        except NotebookIOError as exc:
            self._journal.close()
            self._journal = None
            raise NotebookIOError(
                f"{exc} (the notebook is closed; opening it again folds the journal in)", exc.errno
            ) from exc
        if not done:
            logger.warning(
                "%s is held open for reading by %s, so its journal was not folded into it: the journal "
                "stays beside it and is read with it (nothing is lost; epyclab's readonly=True readers see "
                "every commit), and the next writer to open and close the notebook folds it in. For plain "
                "h5py to see the last commits, %s",
                self._path, describe_holders(self._path), READER_FIX,
            )
        self._journal.close(remove=done)
        self._journal = None


#: The folds of the notebooks open for writing, run at exit by :func:`_fold_all_at_exit`.
_AT_EXIT: set[weakref.finalize] = set()
_at_exit_hooked = False


def _no_folds_in_child() -> None:
    # A forked child exiting (os.fork in do(), then sys.exit) must not fold its parent's notebooks.
    _AT_EXIT.clear()


os.register_at_fork(after_in_child=_no_folds_in_child)


def _fold_at_exit(fold: weakref.finalize) -> None:
    """Have ``fold`` run at exit, while h5py still works.

    weakref's own exit hook runs finalizers in an order set by when the first
    finalizer of the process was made: if any library made one before h5py was
    imported, that hook runs after h5py's, which has unregistered h5py's type
    converters by then, and the fold fails (a file's text attributes can no
    longer be read). An exit hook registered after ``import h5py`` runs before
    h5py's (atexit runs hooks last registered first), so the folds go there.
    """
    global _at_exit_hooked
    fold.atexit = False
    _AT_EXIT.difference_update([f for f in _AT_EXIT if not f.alive])  # those of notebooks dropped since
    _AT_EXIT.add(fold)
    if not _at_exit_hooked:
        atexit.register(_fold_all_at_exit)
        _at_exit_hooked = True


def _fold_all_at_exit() -> None:
    """Fold every notebook still open for writing (each fold runs once; a closed notebook's was removed)."""
    interrupted = _interrupted_exit_flag()
    for fold in list(_AT_EXIT):
        _AT_EXIT.discard(fold)
        fold()
    if interrupted is not None and interrupted.value == 0 and isinstance(getattr(sys, "last_value", None),
                                                                         KeyboardInterrupt):
        # A script ended by Ctrl-C exits by SIGINT (a shell shows 130) when CPython's flag for it is still set
        # after the exit hooks. A fold can clear it: its first pandas text column makes pyarrow (when installed)
        # run code through PyRun_*, which resets the flag. Set it again, so Ctrl-C ends the script as usual.
        interrupted.value = 1


def _interrupted_exit_flag() -> Any:
    """CPython's "ended by an uncaught KeyboardInterrupt" flag as a ctypes int, or None where it is not exported.

    It is ``_Py_UnhandledKeyboardInterrupt`` up to Python 3.11; 3.12 moved it into the runtime's state, where
    it cannot be reached (there a fold may still turn the exit status of a script ended by Ctrl-C into 1).
    """
    import ctypes  # here: only at exit

    try:
        return ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt")
    except ValueError:
        return None


def _fold_left_open(path: str, lock: WriterLock, journal: list[Journal | None]) -> None:
    """Fold the journal of a notebook left open (at exit, or when dropped) so the file alone holds every commit.

    Never raises, whatever other finalizers ran before it: it reads the journal by its path (never
    through a link), not through a descriptor that may be closed (or reused) by now, and folds by
    opening the notebook again by path. When the fold cannot happen the journal stays as it is, and
    the next opening of the notebook replays it.
    """
    # Only the process that opened the notebook folds it: in a forked child (at its exit, or when it
    # drops its copy of the object) the notebook is the parent's, which folds it itself.
    ours = lock.held()
    try:
        if journal[0] is not None:
            journal[0].close()
        lock.release()  # in a forked child: closes its descriptors, and leaves the lock file alone
    except OSError as exc:
        # Its descriptors were closed already: releasing is all that is wanted.
        logger.debug("releasing notebook %s left open: %s", path, exc)
    if not ours:
        return
    # At exit the object left open is still alive: it must not be handed over (it has let go).
    forget_writer(path)
    try:
        if not has_records(side_path(path, "journal")):
            return
        # Strictly for writing: a file made read-only meanwhile would open read-only and fold nothing.
        check_writable_file(path)
        HDF5LabNotebook(path).close()
    except Exception as exc:  # noqa: BLE001 (at exit or in a finalizer nothing can handle it; the journal keeps every row)
        logger.warning(
            "notebook %s was left open; folding its journal into the file failed (%s: %s): the journal stays "
            "beside it, and opening the notebook folds it in", path, type(exc).__name__, exc,
        )
    else:
        logger.info("notebook %s was left open: its journal was folded into the file", path)


#: What a journal record that cannot be folded raises (its value, its shape or its file); not I/O errors.
_UNFOLDABLE = (EpyclabError, TypeError, ValueError, KeyError, IndexError, pickle.UnpicklingError)


class _Unfoldable(Exception):
    """Journal record ``index`` cannot be replayed (``None``: the file cannot take the records)."""

    def __init__(self, index: int | None, cause: BaseException) -> None:
        super().__init__(index, cause)
        self.index, self.cause = index, cause


def _describe_frames(frames: list[bytes]) -> str:
    """What the records set aside hold, for the warning: each one when they are few, else a summary.

    A thousand commits set aside must not make a warning of a thousand clauses (one line of 30 KB).
    """
    if len(frames) <= _LISTED_RECORDS:
        return "; ".join(_describe_frame(f) for f in frames)
    seqs, rows, pending, unreadable = [], 0, 0, 0
    for frame in frames:
        try:
            record = decode_frame(frame)
        except _UNFOLDABLE:
            unreadable += 1
            continue
        seqs.append(record.get("seq"))
        rows += sum(len(next(iter(cols.values()), [])) for _, _, _, cols in record.get("rows", []))
        pending += sum(len(added) + len(removed) for _, added, removed in record.get("pending", []))
    known = sorted(q for q in seqs if isinstance(q, int))
    span = f"commits {known[0]} to {known[-1]}" if known else "commits"
    text = f"{span}: {len(seqs)} record(s), {rows} row(s), {pending} pending-result change(s)"
    return text + (f"; {unreadable} record(s) that cannot be read" if unreadable else "")


#: At most this many set-aside records are described one by one in a warning.
_LISTED_RECORDS = 5


def _shortened(text: str, limit: int = 600) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def _describe_frame(frame: bytes) -> str:
    """What a journal record holds, in a few words, for the warning that sets it aside."""
    try:
        record = decode_frame(frame)
    except _UNFOLDABLE as exc:
        return f"a record that cannot be read ({exc})"
    rows = sum(len(next(iter(cols.values()), [])) for _, _, _, cols in record.get("rows", []))
    pending = sum(len(added) + len(removed) for _, added, removed in record.get("pending", []))
    return f"commit {record.get('seq')}: {rows} row(s), {pending} pending-result change(s)"


def verify_restored(path: str) -> None:
    """Check that a file restored from its undo log reads as a notebook (every object and attribute).

    Raises:
        NotebookFormatError: h5py cannot open it, or an object or attribute of it cannot be read.
    """
    def visit(name: str, obj: Any) -> None:
        dict(obj.attrs)  # every attribute's value
        if isinstance(obj, h5py.Dataset):
            _ = obj.shape, obj.dtype

    check_global_heaps(path)
    try:
        # Not locking: the caller holds the file's lock while it restores it.
        with h5py.File(path, "r", locking=False) as f:
            if "version" not in f.attrs:
                raise NotebookFormatError(f"{path} has no 'version' attribute")
            dict(f.attrs)
            f.visititems(visit)
    except NotebookFormatError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise NotebookFormatError(f"{path} does not read as an HDF5 notebook: {type(exc).__name__}: {exc}") from None


def _pending_json(jobid: str, params: dict[str, Any]) -> str:
    return json.dumps(encode_value(params, what=f"the parameters of pending job {jobid!r}"))


def _attributes_json(tag: str, rs: ResultSet) -> str:
    return json.dumps(encode_value(rs.attributes(), what=f"an attribute of result set {tag!r}"))


def _ordinal(n: int) -> str:
    """``n`` as an English ordinal: 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
