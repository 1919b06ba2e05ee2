"""A result set's rows and columns: the rows loaded from a file, then the rows added since.

Rows are appended to per-column Python lists, one dict of lists per role
(parameter, result, metadata), never to a DataFrame: adding a row costs a few
list appends. Rows loaded from a file are kept as the file reader gave them
(the *base*, a :class:`~epyclab.notebooks.stored.StoredRows`) and new rows are
buffered after it. Every row is checked against the table of kinds (through a
:class:`~epyclab.notebooks.rowcheck.RowCheck`) before it is stored, so nothing
is kept that a format could not save.

This part knows nothing of locks, pending jobs or notebooks: a
:class:`~epyclab.notebooks.resultset.ResultSet` asks it to store a row once the
row may be stored. The DataFrame is built from it by
:mod:`epyclab.notebooks.frames`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from epyclab.errors import ResultsStructureException
from epyclab.experiment import Experiment, exception_text
from epyclab.notebooks.columns import MISSING
from epyclab.notebooks.kinds import KINDS, ColumnState, is_nat
from epyclab.notebooks.rowcheck import RowCheck

if TYPE_CHECKING:
    from epyclab.notebooks.stored import StoredRows

__all__ = ["RowBuffer", "PARAMETER", "RESULT", "METADATA", "MISSING_STATE", "missing_cell"]

PARAMETER, RESULT, METADATA = "parameter", "result", "metadata"

#: The state of a column that has had no value yet (every cell missing).
MISSING_STATE = ColumnState(KINDS["missing"], np.dtype(object))

# Runs an iterator to its end, keeping nothing (the appends of a row, done in C).
_consume = deque(maxlen=0).extend
# Rows kept as rows (see RowBuffer._flush) before they are moved into the columns.
_BLOCK = 1024


def _as_text(exc: Any) -> Any:
    """An exception as the text the result set stores (text, and None, as they are).

    Exceptions are stored as text, so a notebook reads back the same whether or not it went
    through a file. None (a successful run) stays a missing cell.
    """
    return exc if exc is None or isinstance(exc, str) else exception_text(exc)

#: The changes a row made to the columns' states: ``(name, old, new)``, ``old`` None for a new column.
StateChanges = list[tuple[str, "ColumnState | None", ColumnState]]


class RowBuffer:
    """The rows of a result set: loaded rows (the base) and the rows added since, by column and role."""

    def __init__(self) -> None:
        # One dict of column buffers per role, so a row's keys are checked
        # against their role with plain dict look-ups.
        self._params: dict[str, list[Any]] = {}
        self._results: dict[str, list[Any]] = {}
        self._meta: dict[str, list[Any]] = {}
        self._n_buffered = 0
        # The keys of the last row, its columns and those it lacks: a row like it is appended in C.
        self._row: _Row | None = None
        # Rows with the keys of _row not yet in the columns (each its values in the keys' order): see _flush.
        self._pending: list[list[Any]] = []
        self._base: StoredRows | None = None
        #: The state of each column of the loaded rows (the base), as they are held.
        self._base_states: dict[str, ColumnState] = {}
        #: Which loaded cells of int columns are missing (0 while the column is int, NaN if it widens).
        self._base_missing: dict[str, np.ndarray] = {}
        # Every row is checked against the table of kinds before it is stored, in
        # memory as in a file, so every notebook accepts and shows the same values.
        self._check = RowCheck()
        # The trial check last given, and (check, its version, the trial's version) when it was made.
        self._trial: tuple[RowCheck | None, tuple[Any, ...]] = (None, ())

    # ---- the check and the columns' states ----------------------------------

    def setRowCheck(self, check: RowCheck) -> None:
        """Check every row added from now on with ``check`` (a persistent notebook's format rules)."""
        self._check = check

    def states(self) -> dict[str, ColumnState]:
        """Each column's state (kind and dtype) as the check keeps it (the live dict: do not change it)."""
        return self._check.states

    def setStates(self, states: dict[str, ColumnState]) -> None:
        """Give the columns these states (widened by :meth:`ResultSet.setDtype`)."""
        self._check.states = states

    def trialCheck(self) -> RowCheck:
        """A check of rows against the columns as they stand, that changes nothing here.

        The same check is given again while neither the columns nor its own
        states changed, so that it keeps its plans (a check made afresh for
        each row takes the full check every time: it was most of a
        ClusterLab collection's time).
        """
        trial, made = self._trial
        if trial is None or made != (self._check, self._check.version, trial.version):
            trial = RowCheck(self._check.states)
            self._trial = (trial, (self._check, self._check.version, trial.version))
        return trial

    # ---- names ---------------------------------------------------------------

    def parameterNames(self) -> list[str]:
        """Names of the parameter columns."""
        return list(self._params)

    def resultNames(self) -> list[str]:
        """Names of the result columns."""
        return list(self._results)

    def metadataNames(self) -> list[str]:
        """Names of the metadata columns."""
        return list(self._meta)

    def names(self) -> list[str]:
        """All column names: parameters, then results, then metadata."""
        return list(self._params) + list(self._results) + list(self._meta)

    def hasParameter(self, name: str) -> bool:
        """True if ``name`` is a parameter column."""
        return name in self._params

    def roles(self) -> dict[str, list[str]]:
        """Column names by role (``'parameter'``, ``'result'``, ``'metadata'``)."""
        return {PARAMETER: list(self._params), RESULT: list(self._results), METADATA: list(self._meta)}

    def roleSizes(self) -> tuple[int, int, int]:
        """How many parameter, result and metadata columns there are (a new column changes them)."""
        return (len(self._params), len(self._results), len(self._meta))

    # ---- counting ----------------------------------------------------------------

    def __len__(self) -> int:
        """The number of rows, loaded and added."""
        return self._n_buffered + (0 if self._base is None else len(self._base))

    def numberOfBuffered(self) -> int:
        """The number of rows added since loading."""
        return self._n_buffered

    def numberOfLoaded(self) -> int:
        """The number of rows loaded from a file."""
        return 0 if self._base is None else len(self._base)

    # ---- adding rows -----------------------------------------------------------------

    def add(self, params: dict[str, Any], res: dict[str, Any], meta: dict[str, Any]) -> StateChanges:
        """Check and append one row (three dicts); return the columns it created or whose state it changed.

        Each change is ``(name, old, new)``: ``old`` is None for a column whose state is new; a
        column made for a name whose state was known (declared by a dtype) is ``(name, state, state)``.

        Raises:
            ResultsStructureException: a key is in two roles, or is not a string.
            UnstorableValueError: a value (or a name) no notebook format can keep; nothing is added.
        """
        row = self._row
        if row is not None:
            # A list: the tuple the check wants is row.keys (a tuple made here would be a copy of a list).
            keys = [*params, None, *res, None, *meta]
            if keys == row.key_list:
                # The common case: a row with the keys (and roles) of the last one. Only its values
                # are checked, then kept as a row until the columns are next read (see _flush).
                check = self._check
                _, values = check(params, res, meta, row.keys)  # equal to keys: the check's plan has this one
                at = row.exception_at
                if at is not None:
                    exc = values[at]
                    if exc is not None and type(exc) is not str:
                        values[at] = _as_text(exc)
                # A row moved into the columns with others (a block transposed in C) costs a third of
                # an append per column.
                pending = self._pending
                pending.append(values)
                if len(pending) >= _BLOCK:
                    self._flush()
                self._n_buffered += 1
                return check.changes
        return self._add_row(params, res, meta)

    def _add_row(self, params: Mapping[str, Any], res: Mapping[str, Any], meta: Mapping[str, Any]) -> StateChanges:
        """Check and append a row whose keys differ from the last row's (new columns, or some missing)."""
        self._flush()
        pcols, rcols, mcols = self._params, self._results, self._meta
        # Rows with only keys seen before are checked by three set comparisons done in C;
        # only new keys need the slower checks.
        known = params.keys() <= pcols.keys() and res.keys() <= rcols.keys() and meta.keys() <= mcols.keys()
        if not known:
            self.checkRoles(params, res, meta)
        keys, values = self._check(params, res, meta)
        made = self._add_columns(params, res, meta) if not known else []
        row = _Row(keys, (pcols, rcols, mcols))
        changes = self._append(row, values)
        # The next row with these keys is appended in C, padded likewise (a successful run
        # has no exception: a sweep's successes after a failure are rows without it).
        self._row = row
        if made:
            # A column made for a name whose state was already known (declared by a dtype) changes
            # no state, but it is a new column all the same.
            changed = {name for name, _, _ in changes}
            states = self._check.states
            extra = [(k, states[k], states[k]) for k in made if k not in changed]
            if extra:
                changes = [*changes, *extra]
        return changes

    def _append(self, row: _Row, values: list[Any]) -> StateChanges:
        """Append a checked row's ``values`` to the columns of ``row`` (padding is the caller's)."""
        if row.exception_at is not None:
            values[row.exception_at] = _as_text(values[row.exception_at])
        _consume(map(list.append, row.columns, values))
        if row.pad:
            _consume(map(list.append, row.pad, repeat(MISSING)))
        self._n_buffered += 1
        return self._check.changes

    def _flush(self) -> None:
        """Move the rows :meth:`add` kept as rows into the columns of the row they share (its ``_row``).

        Every read of the columns' cells, and every change of the columns or of ``_row``, comes after this.
        """
        pending = self._pending
        if not pending:
            return
        self._pending = []
        row = self._row
        assert row is not None  # rows are kept only while they share the last row's keys
        for column, cells in zip(row.columns, zip(*pending)):
            column.extend(cells)
        if row.pad:
            missing = [MISSING] * len(pending)
            for column in row.pad:
                column.extend(missing)

    def checkRoles(self, params: Mapping[str, Any], res: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Refuse a key in two roles (in this row, or against the columns).

        Raises:
            ResultsStructureException: a key is not a string, or is in two roles (naming both).
        """
        roles = [(params, self._params, PARAMETER), (res, self._results, RESULT), (meta, self._meta, METADATA)]
        seen: dict[str, str] = {}
        for part, _, role in roles:
            for k in part:
                if not isinstance(k, str):
                    raise ResultsStructureException(f"{role} names must be strings, got {k!r}")
                if k in seen:
                    raise ResultsStructureException(
                        f"{k!r} is both a {seen[k]} and a {role} in this results dict; "
                        f"rename one of them"
                    )
                seen[k] = role
        for part, cols, role in roles:
            for k in part:
                if k in cols:
                    continue
                for _, other, other_role in roles:
                    if other is not cols and k in other:
                        raise ResultsStructureException(
                            f"{k!r} is a {other_role} column of this result set and cannot "
                            f"also be a {role}; rename one of them"
                        )

    def register(
        self,
        params: Mapping[str, Any],
        res: Mapping[str, Any],
        meta: Mapping[str, Any],
        states: Mapping[str, ColumnState],
    ) -> list[str]:
        """Make a column, every cell missing, for each key not seen before, in its role; take ``states``.

        Only the keys are used: no row is added. ``states`` become the columns' states (those a
        trial check of the keys' values gave). Returns the names of the columns made.

        Raises:
            ResultsStructureException: a key is in two roles, or is not a string; nothing changes.
        """
        self.checkRoles(params, res, meta)
        made = self._add_columns(params, res, meta)
        self._check.states = states
        return made

    def _add_columns(self, params: Mapping[str, Any], res: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
        """Create the columns for keys not seen before (missing in every earlier row); return their names."""
        self._flush()
        self._row = None
        made = []
        for part, cols in ((params, self._params), (res, self._results), (meta, self._meta)):
            for k in part:
                if k not in cols:
                    cols[k] = [MISSING] * self._n_buffered
                    made.append(k)
        return made

    # ---- loaded rows ------------------------------------------------------------------

    def load(self, rows: StoredRows, roles: Mapping[str, Iterable[str]], missing: Mapping[str, np.ndarray]) -> None:
        """Make ``rows`` (as a file reader gives them) the rows already stored; ``roles`` maps role to names.

        ``missing`` marks, for int columns, the cells that were missing (stored as 0).
        Rows added before are dropped.
        """
        self._base = rows
        self._row = None
        self._pending = []
        self._params = {k: [] for k in roles.get(PARAMETER, ())}
        self._results = {k: [] for k in roles.get(RESULT, ())}
        self._meta = {k: [] for k in roles.get(METADATA, ())}
        self._n_buffered = 0
        self._base_states = {k: st for k, st in self._check.states.items() if k in rows}
        self._base_missing = {k: np.asarray(m, dtype=bool) for k, m in missing.items()}

    def loaded(self) -> StoredRows | None:
        """The rows loaded from a file, as the reader gave them (None if none were loaded)."""
        return self._base

    def loadedAsStored(self, name: str, state: ColumnState) -> bool:
        """True if loaded column ``name`` is held in ``state`` already (so needs no cast)."""
        return self._base is not None and name in self._base and self._base_states.get(name, state) == state

    def loadedColumn(self, name: str, state: ColumnState) -> Any:
        """Column ``name`` of the loaded rows as state ``state`` says (widened, or missing cells), as an array."""
        base = self._base
        assert base is not None
        if name not in base:
            return state.kind.column([None] * len(base), state)
        if self._base_states.get(name, state) == state:
            return base.column(name)
        col = state.kind.cast(base.column(name), self._base_states[name], state)
        mask = self._base_missing.get(name)
        if mask is not None and mask.any():
            # Cells missing in an int column show the fill of the kind it widened to (NaN).
            col = np.array(col, copy=True)
            col[mask] = state.kind.fill(state)
        return col

    # ---- buffered rows ------------------------------------------------------------------

    def buffered(self, name: str) -> list[Any]:
        """The raw cells of column ``name`` in the rows added since loading.

        The live list: do not change it. Rows added later reach it at the next read (see :meth:`_flush`).
        """
        self._flush()
        return next(cols[name] for cols in (self._params, self._results, self._meta) if name in cols)

    def bufferedColumns(self) -> Iterable[tuple[str, list[Any]]]:
        """``(name, raw cells)`` of every column, in :meth:`names` order (the live lists, as :meth:`buffered`)."""
        self._flush()
        for cols in (self._params, self._results, self._meta):
            yield from cols.items()

    def bufferedRows(self, start: int) -> dict[str, list[Any]]:
        """The raw cells of rows ``start`` onwards, by column; MISSING marks absent cells.

        ``start`` counts all rows, and must not reach back into loaded rows.

        Raises:
            ValueError: ``start`` is before the end of the loaded rows.
        """
        base_len = self.numberOfLoaded()
        if start < base_len:
            raise ValueError(f"rows before {base_len} were loaded, not buffered")
        lo = start - base_len
        self._flush()
        return {k: col[lo:] for cols in (self._params, self._results, self._meta) for k, col in cols.items()}

    def missingMask(self, name: str) -> np.ndarray:
        """Which cells of column ``name`` are missing (a row without the key, or None), over every row."""
        base = self._base
        n_base = 0 if base is None else len(base)
        if base is None or name not in base:
            head = np.ones(n_base, dtype=bool)
        elif name in self._base_missing:
            head = self._base_missing[name]
        else:
            # Only int columns keep which cells were missing; elsewhere a missing cell reads as the
            # column's NaN, NaT or None, which is how it is told here (a NaN given is taken as missing too).
            head = base.frame()[name].isna().to_numpy()
        self._flush()
        col = next((cols[name] for cols in (self._params, self._results, self._meta) if name in cols), [])
        return np.concatenate([head, _missing_cells(col)])


class _Row:
    """The keys of a row (roles apart, as :class:`RowCheck` gives them), their columns, and the columns it lacks."""

    __slots__ = ("keys", "key_list", "columns", "exception_at", "pad")

    def __init__(self, keys: tuple[Any, ...], by_role: tuple[dict[str, list[Any]], ...]) -> None:
        self.keys = keys
        self.key_list = list(keys)
        columns = []
        #: Where the exception is among the row's values, if the row has one (it is stored as text).
        self.exception_at: int | None = None
        role = 0
        for k in keys:
            if k is None:
                role += 1  # the boundary between two roles
                continue
            columns.append(by_role[role][k])
            if role == 2 and k == Experiment.EXCEPTION:
                self.exception_at = len(columns) - 1
        self.columns = tuple(columns)
        # The columns such a row has no key for, each given a missing cell (valid until a column is made).
        have = {id(c) for c in columns}
        self.pad = tuple(c for cols in by_role for c in cols.values() if id(c) not in have)


# Types no missing cell has (NaN is a float, NaT of its own type): a column of only these has none.
_NEVER_MISSING = frozenset({int, bool, str, datetime})


def _missing_cells(col: list[Any]) -> np.ndarray:
    """:func:`missing_cell` of each cell of ``col``, as a bool array."""
    # Whole columns are written at a checkpoint: the types of their cells, found in C, mostly
    # tell that none is missing without a Python call per cell.
    if set(map(type, col)) <= _NEVER_MISSING:
        return np.zeros(len(col), dtype=bool)
    return np.fromiter((missing_cell(v) for v in col), dtype=bool, count=len(col))


def missing_cell(v: Any) -> bool:
    """True for a value that reads back as a missing cell: None, NaT, NaN (not a value a selection can match)."""
    return v is None or v is MISSING or is_nat(v) or (isinstance(v, (float, np.floating)) and v != v)
