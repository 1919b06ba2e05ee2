"""A result set: the rows of one sweep (or a group of sweeps), plus pending jobs.

Rows are appended to per-column Python lists, never to a DataFrame: adding a
row costs a few list appends. The DataFrame is built when asked for and cached
until the next change. Rows loaded from a file are kept as the file reader gave
them (the *base*, a :class:`~epyclab.notebooks.stored.StoredRows`, typed into a
DataFrame when first asked for) and new rows are buffered after it. Counting
rows, failed rows and pending results builds no DataFrame and needs no pandas.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from epyclab.errors import (
    CancelledException,
    EpyclabError,
    PendingResultException,
    ResultSetLockedException,
    ResultsStructureException,
    UnstorableValueError,
)
from epyclab.experiment import Experiment, ResultsDict, exception_text, failed_result
from epyclab.notebooks.columns import MISSING
from epyclab.notebooks.kinds import (
    KINDS,
    ColumnState,
    NotStorable,
    check_name,
    is_nat,
    kind_of_dtype,
    kind_of_type,
    state_of_value,
)
from epyclab.notebooks.rowcheck import RowCheck, value_message
from epyclab.order import in_design_order

if TYPE_CHECKING:
    import pandas as pd

    from epyclab.notebooks.stored import StoredRows

__all__ = ["ResultSet", "with_results"]

PARAMETER, RESULT, METADATA = "parameter", "result", "metadata"

_PARAMETERS, _METADATA, _RESULTS = Experiment.PARAMETERS, Experiment.METADATA, Experiment.RESULTS
# Runs an iterator to its end, keeping nothing (the appends of a row, done in C).
_consume = deque(maxlen=0).extend

_MISSING_STATE = ColumnState(KINDS["missing"], np.dtype(object))


@dataclass(frozen=True)
class ChangeMark:
    """Where a result set stood: rows, column counts by role, pending results and state counters."""

    rows: int
    sizes: tuple[int, int, int]
    pending_version: int
    pending: dict[str, dict[str, Any]]
    state_version: int


@dataclass(frozen=True)
class Changes:
    """What changed in a result set since a :class:`ChangeMark` (see :meth:`ResultSet.changesSince`)."""

    start: int
    rows: dict[str, list[Any]]
    roles: dict[str, list[str]] | None
    pending_added: dict[str, dict[str, Any]]
    pending_removed: list[str]
    pending_changed: bool
    state_changed: bool
    mark: ChangeMark


class ResultSet:
    """The results of experiments, one row per run, with parameters, results and metadata.

    Columns are the union of every key seen. Cells a row did not have take the
    default of their column's type (see :mod:`epyclab.notebooks.columns`):
    NaN for floats, 0 for ints, False for bools, '' for strings. Failed runs
    keep their parameters and metadata; their result cells are such defaults.
    """

    #: Metadata key under which pending results keep their job id in storage.
    JOBID = "epyc.resultset.pending-jobid"

    def __init__(self, description: str | None = None) -> None:
        if description is None:
            description = f"Result set created at {datetime.now().isoformat(timespec='seconds')}"
        self._description = description
        self._attributes: dict[str, Any] = {}
        self._locked = False
        # One dict of column buffers per role, so a row's keys are checked
        # against their role with plain dict look-ups.
        self._params: dict[str, list[Any]] = {}
        self._results: dict[str, list[Any]] = {}
        self._meta: dict[str, list[Any]] = {}
        self._n_missing: dict[str, int] = {}
        self._n_buffered = 0
        # The keys of the last complete row and its columns: a row like it is appended in C.
        self._row: _Row | None = None
        self._base: StoredRows | None = None
        self._frame: pd.DataFrame | None = None
        self._stored_frame: pd.DataFrame | None = None
        self._pending: dict[str, dict[str, Any]] = {}
        # Every row is checked against the table of kinds before it is stored, in
        # memory as in a file, so every notebook accepts and shows the same values.
        self._row_check = RowCheck()
        #: The state of each column of the loaded rows (the base), as they are held.
        self._base_states: dict[str, ColumnState] = {}
        #: Which loaded cells of int columns are missing (0 while the column is int, NaN if it widens).
        self._base_missing: dict[str, np.ndarray] = {}
        self._dirty = False
        self._typechanged = False
        self._pending_dtype: np.dtype | None = None
        # Counters that tell a persistent notebook what changed since it last wrote.
        self._state_version = 0
        self._pending_version = 0
        # The exceptions of cancelled jobs, by their stored text: results() gives the instance
        # back while this session lasts (as epyc does); a file keeps only the text.
        self._cancelled: dict[str, CancelledException] = {}
        # The notebook holding this set (weakly: a dropped notebook must go at once, to be folded).
        self._notebook: weakref.ref[Any] | None = None

    # ---- description and attributes --------------------------------------

    def description(self) -> str:
        """The free-text description of this result set."""
        return self._description

    def setDescription(self, d: str) -> None:
        """Change the description."""
        self._check_unlocked()
        self._description = d
        self._state_version += 1

    def setAttribute(self, k: str, v: Any) -> None:
        """Set a user attribute (a str, number or bool)."""
        self._check_unlocked()
        if not isinstance(k, str):
            raise TypeError(f"result set attribute names are strings, got {k!r}")
        self._attributes[k] = v
        self._state_version += 1

    def getAttribute(self, k: str) -> Any:
        """A user attribute (KeyError if absent)."""
        return self._attributes[k]

    def deleteAttribute(self, k: str) -> None:
        """Remove a user attribute (KeyError if absent)."""
        self._check_unlocked()
        del self._attributes[k]
        self._state_version += 1

    def keys(self) -> list[str]:
        """The names of the user attributes."""
        return list(self._attributes)

    def __setitem__(self, k: str, v: Any) -> None:
        self.setAttribute(k, v)

    def __getitem__(self, k: str) -> Any:
        return self.getAttribute(k)

    def __delitem__(self, k: str) -> None:
        self.deleteAttribute(k)

    def __contains__(self, k: str) -> bool:
        return k in self._attributes

    # ---- locking ------------------------------------------------------------

    def finish(self) -> None:
        """Lock the result set; pending results still outstanding are cancelled first.

        Raises:
            NotebookReadOnlyError: the notebook holding the set refuses changes (read-only, taken over).
        """
        if self._locked:
            return
        self._check_notebook()
        for jobid in list(self._pending):
            self.cancelSinglePendingResult(jobid)
        self._locked = True
        self._state_version += 1

    def isLocked(self) -> bool:
        """True once :meth:`finish` has been called."""
        return self._locked

    def setNotebook(self, notebook: Any) -> None:
        """Tie the set to the notebook holding it (called by the notebook, not by users).

        From then on a change is refused at once when the notebook refuses changes
        (opened read-only, taken over), and errors name the set's tag and the notebook.
        """
        self._notebook = weakref.ref(notebook)

    def checkChangeable(self) -> None:
        """Raise if the set cannot change now; nothing happens if it can.

        Raises:
            NotebookReadOnlyError: the notebook holding the set refuses changes (read-only,
                taken over: :class:`~epyclab.errors.NotebookTakenOverError`).
            ResultSetLockedException: the set is finished (locked).
        """
        # Asked before every change (every row added): inlined, it costs two attribute reads.
        notebook = self._notebook() if self._notebook is not None else None
        if notebook is not None:
            notebook.checkWritable()
        if self._locked:
            raise ResultSetLockedException(
                f"{self._where()} is finished (locked) and cannot change; "
                "add a new result set for further results (addResultSet)"
            )

    def _check_unlocked(self) -> None:
        self.checkChangeable()

    def assertUnlocked(self) -> None:
        """Raise :class:`~epyclab.errors.ResultSetLockedException` if the set is finished (epyc 1.7's name).

        Raises:
            ResultSetLockedException: the set is finished (locked).
            NotebookReadOnlyError: the notebook holding the set refuses changes.
        """
        self.checkChangeable()

    def _check_notebook(self) -> None:
        notebook = self._notebook() if self._notebook is not None else None
        if notebook is not None:
            notebook.checkWritable()

    def _where(self) -> str:
        """The set, named for a message: its tag and its notebook's name when it has them."""
        notebook = self._notebook() if self._notebook is not None else None
        if notebook is None:
            return "the result set"
        try:
            tag = notebook.resultSetTag(self)
        except KeyError:
            return f"a result set deleted from notebook {notebook.name()!r}"
        name = notebook.name()
        return f"result set {tag!r} of notebook {name!r}" if name else f"result set {tag!r}"

    # ---- column names -------------------------------------------------------

    def parameterNames(self) -> list[str]:
        """Names of the parameter columns (including parameters of pending results)."""
        names = list(self._params)
        for params in self._pending.values():
            names.extend(k for k in params if k not in names)
        return names

    def resultNames(self) -> list[str]:
        """Names of the result columns."""
        return list(self._results)

    def metadataNames(self) -> list[str]:
        """Names of the metadata columns."""
        return list(self._meta)

    def names(self) -> list[str]:
        """All column names: parameters, then results, then metadata."""
        return list(self._params) + list(self._results) + list(self._meta)

    # ---- adding results -------------------------------------------------------

    def addSingleResult(self, rc: ResultsDict) -> None:
        """Append the row of one results dict (whose results are a dict, not a list).

        Raises:
            NotebookReadOnlyError: the notebook holding the set refuses changes.
            ResultSetLockedException: the set is finished.
            ResultsStructureException: ``rc`` is not a results dict, or a key is in two roles.
            UnstorableValueError: a value (or a name) no notebook format can keep; nothing is added.
        """
        self.checkChangeable()
        if type(rc) is dict:
            params, meta, res = rc.get(_PARAMETERS), rc.get(_METADATA), rc.get(_RESULTS)
            if type(params) is dict and type(meta) is dict and type(res) is dict:
                row = self._row
                if row is not None:
                    keys = (*params, None, *res, None, *meta)
                    if keys == row.keys:
                        # The common case: a row with the keys (and roles) of the last one, every column
                        # present. Only its values are checked, then appended in C.
                        _, values = self._row_check(params, res, meta, keys)
                        self._append(row, values)
                        return
                self._add_row(params, res, meta)
                return
        if type(rc) is dict and Experiment.RESULTS not in rc:
            rc = with_results(rc)
        if not Experiment.isResultsDict(rc):
            raise ResultsStructureException(
                "a results dict needs dicts under 'parameters', 'metadata' and 'results'; "
                f"got {_describe(rc)}", rc,
            )
        params, meta, res = rc[Experiment.PARAMETERS], rc[Experiment.METADATA], rc[Experiment.RESULTS]
        if not isinstance(res, dict):
            raise ResultsStructureException(
                "addSingleResult takes a results dict whose results are a dict; "
                "add a list of results with LabNotebook.addResult", rc,
            )
        self._add_row(params, res, meta)

    def _add_row(self, params: Mapping[str, Any], res: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Check and append a row whose keys differ from the last row's (new columns, or some missing)."""
        pcols, rcols, mcols = self._params, self._results, self._meta
        # Rows with only keys seen before are checked by three set comparisons done in C;
        # only new keys need the slower checks.
        known = params.keys() <= pcols.keys() and res.keys() <= rcols.keys() and meta.keys() <= mcols.keys()
        if not known:
            self._check_roles(params, res, meta)
        keys, values = self._row_check(params, res, meta)
        if not known:
            self._add_columns(params, res, meta)
        row = _Row(keys, (pcols, rcols, mcols))
        complete = len(values) == len(pcols) + len(rcols) + len(mcols)
        self._append(row, values)
        if complete:
            self._row = row
        else:
            self._pad_row()

    def _append(self, row: _Row, values: tuple[Any, ...]) -> None:
        """Append a checked row's ``values`` to the columns of ``row`` (padding is the caller's)."""
        _consume(map(list.append, row.columns, values))
        if row.exceptions is not None:
            # Exceptions are stored as text, so a notebook reads back the same
            # whether or not it went through a file.
            exc = row.exceptions[-1]
            if exc is None:
                row.exceptions[-1] = ""
            elif not isinstance(exc, str):
                row.exceptions[-1] = exception_text(exc)
        self._n_buffered += 1
        changes = self._row_check.changes
        if changes:
            self._widened(changes)
        self._frame = self._stored_frame = None
        self._dirty = True

    def _widened(self, changes: list[tuple[str, ColumnState | None, ColumnState]]) -> None:
        """Columns changed state (a new column, or one that widened)."""
        self._typechanged = True

    def _check_roles(self, params: Mapping[str, Any], res: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Refuse a key in two roles (in this row, or against the columns)."""
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

    def _add_columns(self, params: Mapping[str, Any], res: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Create the columns for keys not seen before."""
        self._row = None
        roles = [(params, self._params), (res, self._results), (meta, self._meta)]
        for part, cols in roles:
            for k in part:
                if k not in cols:
                    cols[k] = [MISSING] * self._n_buffered
                    self._n_missing[k] = self._n_buffered

    def _pad_row(self) -> None:
        """Give the columns the last row did not have a missing cell."""
        n = self._n_buffered
        for cols in (self._params, self._results, self._meta):
            for k, col in cols.items():
                if len(col) < n:
                    col.append(MISSING)
                    self._n_missing[k] += 1

    # ---- reading results ----------------------------------------------------------

    def numberOfResults(self) -> int:
        """The number of rows (successful or failed; pending results not included)."""
        return self._n_buffered + (0 if self._base is None else len(self._base))

    def __len__(self) -> int:
        return self.numberOfResults()

    def numberOfFailedResults(self) -> int:
        """The number of rows whose run failed (status false), as :meth:`dataframe` would show them.

        Reads the status column alone: no DataFrame is built (``epyclab show`` counts failed
        runs this way). A result set without a status column has none.
        """
        status = Experiment.STATUS
        if self.numberOfResults() == 0 or status not in self.names():
            return 0
        if self._frame is not None:
            return int((~self._frame[status].astype(bool)).sum())
        st = self._row_check.states.get(status, _MISSING_STATE)
        parts = []
        if self._base is not None and len(self._base):
            parts.append(self._typed_base_column(status, st))
        if self._n_buffered:
            parts.append(st.kind.column(self._column_buffer(status), st))
        return sum(int(np.count_nonzero(~np.asarray(part).astype(bool))) for part in parts)

    def _column_buffer(self, name: str) -> list[Any]:
        """The raw cells of column ``name`` in the rows added since loading."""
        return next(cols[name] for cols in (self._params, self._results, self._meta) if name in cols)

    def dataframe(self, only_successful: bool = False) -> pd.DataFrame:
        """The results as a DataFrame, one row per run.

        The frame is built on demand and cached until the result set changes;
        each call returns a new (copy-on-write) DataFrame, so changing it does
        not change the result set.
        """
        df = self._dataframe()
        if only_successful and Experiment.STATUS in df.columns and len(df):
            df = df[df[Experiment.STATUS].astype(bool)].reset_index(drop=True)
            return df
        return df.copy(deep=False)

    def storedFrame(self) -> pd.DataFrame:
        """Every row in the order rows were added (the order files keep), typed as :meth:`dataframe` types them."""
        if self._stored_frame is None:
            self._stored_frame = self._build_frame()
        return self._stored_frame.copy(deep=False)

    def _dataframe(self) -> pd.DataFrame:
        if self._frame is None:
            # Rows are stored as they arrived; a sweep's rows are shown in its design's order.
            self._frame = in_design_order(self.storedFrame())
        return self._frame

    def _build_frame(self) -> pd.DataFrame:
        import pandas as pd  # here: counting and naming rows needs no pandas

        base = self._base
        order = self.names()
        if self._n_buffered == 0 and base is not None:
            frame = base.frame()
            return frame[[c for c in order if c in base]] if order else frame
        states = self._row_check.states
        new = {}
        for cols in (self._params, self._results, self._meta):
            for k, values in cols.items():
                st = states.get(k, _MISSING_STATE)
                new[k] = st.kind.column(values, st)
        df = pd.DataFrame(new, columns=order) if order else pd.DataFrame(index=range(self._n_buffered))
        if base is None or len(base) == 0:
            return df
        return pd.concat([self._typed_base(order), df], ignore_index=True)

    def _typed_base(self, order: list[str]) -> pd.DataFrame:
        """The loaded rows, every column as its current state says (widened, or missing cells)."""
        import pandas as pd

        base = self._base
        assert base is not None
        states = self._row_check.states
        frame = base.frame()
        cols = {}
        for k in order:
            st = states.get(k, _MISSING_STATE)
            cols[k] = frame[k] if k in base and self._base_states.get(k, st) == st else self._typed_base_column(k, st)
        return pd.DataFrame(cols, index=frame.index, columns=order)

    def _typed_base_column(self, k: str, st: ColumnState) -> Any:
        """Column ``k`` of the loaded rows as state ``st`` says (widened, or missing cells), as an array."""
        base = self._base
        assert base is not None
        if k not in base:
            return st.kind.column([None] * len(base), st)
        if self._base_states.get(k, st) == st:
            return base.column(k)
        col = st.kind.cast(base.column(k), self._base_states[k], st)
        mask = self._base_missing.get(k)
        if mask is not None and mask.any():
            # Cells missing in an int column show the fill of the kind it widened to (NaN).
            col = np.array(col, copy=True)
            col[mask] = st.kind.fill(st)
        return col

    def results(self) -> list[ResultsDict]:
        """Every row as a results dict (failed rows have empty results)."""
        return self._rows_to_results(self._dataframe())

    def resultsFor(self, params: Mapping[str, Any]) -> list[ResultsDict]:
        """The results dicts of the rows matching ``params`` (see :meth:`dataframeFor`)."""
        return self._rows_to_results(self.dataframeFor(params))

    def _rows_to_results(self, df: pd.DataFrame) -> list[ResultsDict]:
        pnames, rnames, mnames = list(self._params), list(self._results), list(self._meta)
        out = []
        for row in df.to_dict("records"):
            meta = {k: row[k] for k in mnames}
            if self._cancelled and meta.get(Experiment.EXCEPTION) in self._cancelled:
                meta[Experiment.EXCEPTION] = self._cancelled[meta[Experiment.EXCEPTION]]
            ok = bool(meta.get(Experiment.STATUS, True))
            out.append({
                Experiment.PARAMETERS: {k: row[k] for k in pnames},
                Experiment.METADATA: meta,
                Experiment.RESULTS: {k: row[k] for k in rnames} if ok else {},
            })
        return out

    def dataframeFor(self, params: Mapping[str, Any], only_successful: bool = False) -> pd.DataFrame:
        """The rows whose named parameters have the given values.

        A list (or tuple, set, range) value selects any of its values. Only the
        named parameters' columns are compared; other columns are not looked at.
        ``None`` selects the rows where the parameter was None (or absent): such
        a cell reads as its column's fill (0 in an int column), but it is not
        that value, so ``{"v": 0}`` does not select it.
        """
        stored = self.storedFrame()
        for k in params:
            if k not in stored.columns:
                raise KeyError(f"{k!r} is not a column of this result set (columns: {list(stored.columns)})")
        if len(stored) == 0 or not params:
            return self.dataframe(only_successful=only_successful)
        # Which cells are missing is known in the stored order: carried through the reordering.
        marks = {f"\x00missing {k}": self.missingMask(k) for k in params}
        df = in_design_order(stored.assign(**marks))
        if only_successful and Experiment.STATUS in df.columns:
            df = df[df[Experiment.STATUS].astype(bool)]
        mask = None
        for k, v in params.items():
            col, missing = df[k], df[f"\x00missing {k}"]
            if _is_value_list(v):
                values = list(v)
                present = [x for x in values if x is not None]
                m = col.isin(present) & ~missing
                if len(present) < len(values):
                    m = m | missing
            elif v is None:
                m = missing
            else:
                m = (col == v) & ~missing
            mask = m if mask is None else (mask & m)
        assert mask is not None
        return df[mask].drop(columns=list(marks)).reset_index(drop=True)

    def parameterRange(self, param: str) -> set[Any]:
        """The distinct values parameter ``param`` takes in the results and pending results."""
        values: set[Any] = set()
        if param in self._params:
            values.update(self._dataframe()[param].tolist())
        values.update(params[param] for params in self._pending.values() if param in params)
        return values

    def parameterSpace(self) -> dict[str, set[Any]]:
        """Each parameter's distinct values."""
        return {p: self.parameterRange(p) for p in self.parameterNames()}

    def parameterCombinations(self) -> list[dict[str, Any]]:
        """The distinct points (parameter combinations) that have results."""
        names = list(self._params)
        if not names or self.numberOfResults() == 0:
            return []
        distinct = self._dataframe()[names].drop_duplicates()
        return distinct.to_dict("records")

    # ---- pending results ------------------------------------------------------------

    def addSinglePendingResult(self, params: Mapping[str, Any], jobid: str) -> None:
        """Record that a job for ``params`` has been submitted and will give a result."""
        self._check_unlocked()
        if jobid in self._pending:
            raise PendingResultException(jobid, f"job id {jobid!r} is already pending in this result set")
        check_name(jobid, "job id")
        for k, v in params.items():
            check_name(k, "parameter name")
            try:
                state_of_value(v)
            except NotStorable as exc:
                raise UnstorableValueError(value_message("parameter", k, v, str(exc))) from None
        self._pending[jobid] = dict(params)
        self._pending_version += 1

    def pendingResults(self) -> list[str]:
        """The job ids of the pending results."""
        return list(self._pending)

    def numberOfPendingResults(self) -> int:
        """How many results are pending."""
        return len(self._pending)

    def pendingResultsFor(self, params: Mapping[str, Any]) -> list[str]:
        """The job ids pending for points matching ``params`` (list values select any)."""
        return [
            jobid
            for jobid, p in self._pending.items()
            if all(
                k in p and (p[k] in v if _is_value_list(v) else p[k] == v)
                for k, v in params.items()
            )
        ]

    def pendingResultParameters(self, jobid: str) -> dict[str, Any]:
        """The parameters of a pending job."""
        try:
            return self._pending[jobid]
        except KeyError:
            raise PendingResultException(jobid) from None

    def resolveSinglePendingResult(self, jobid: str) -> None:
        """Forget a pending job whose result has been (or is being) added."""
        self._check_unlocked()
        if jobid not in self._pending:
            raise PendingResultException(jobid)
        del self._pending[jobid]
        self._pending_version += 1

    def cancelSinglePendingResult(self, jobid: str) -> None:
        """Cancel a pending job: it becomes a failed result carrying a :class:`CancelledException`."""
        params = self.pendingResultParameters(jobid)
        self._check_unlocked()
        exc = CancelledException(f"job {jobid} was cancelled")
        rc = failed_result(params, exc)
        # Record the failed row first: if it is refused, the job stays pending, not lost.
        self.addSingleResult(rc)
        self._cancelled[exception_text(exc)] = exc
        del self._pending[jobid]
        self._pending_version += 1

    def ready(self) -> bool:
        """True when no result is pending."""
        return not self._pending

    # ---- types (epyc's type API, answered from the table of kinds) -------------------

    #: Python type -> the numpy dtype a column of such values has (text, cells: object).
    TypeMapping: dict[type, np.dtype] = {
        bool: np.dtype(bool),
        int: np.dtype(np.int64),
        float: np.dtype(np.float64),
        complex: np.dtype(np.complex128),
        str: np.dtype(object),
        datetime: np.dtype("datetime64[us]"),
        list: np.dtype(object),
        tuple: np.dtype(object),
        np.ndarray: np.dtype(object),
    }

    #: numpy dtype kind -> the value of a missing cell of that kind, as :meth:`zero` gives it.
    #: epyc's table has 0.0 and 0j for floats and complex; epyclab has NaN, so that a missing
    #: value is not taken for a measured 0.0 (docs/migrating.md).
    ZeroMapping: dict[str, Any] = {
        "i": 0, "u": 0, "f": float("nan"), "c": complex(float("nan"), 0.0), "b": False, "U": "", "S": "", "O": "",
    }

    @staticmethod
    def zero(dtype: Any) -> Any:
        """The value of a missing cell in a column of numpy ``dtype`` (NaN for floats, as documented).

        Raises:
            TypeError: ``dtype`` is not a numpy dtype.
        """
        dtype = np.dtype(dtype)
        if dtype.kind in "biufc":
            kind = kind_of_dtype(dtype)
            return kind.fill(ColumnState(kind, dtype))
        if dtype.kind == "M":
            import pandas as pd

            return pd.NaT
        if dtype.kind in "OUS":
            return ""
        raise TypeError(f"no notebook column has dtype {dtype}")

    @classmethod
    def typeToDtype(cls, t: type) -> np.dtype:
        """The numpy dtype of a column of values of type ``t`` (numpy scalar types keep their width).

        Raises:
            TypeError: no notebook can store values of type ``t``.
        """
        if isinstance(t, type) and issubclass(t, np.generic) and not issubclass(t, np.str_):
            return np.dtype(t)
        kind = kind_of_type(t)
        if kind is None or kind is KINDS["missing"]:
            raise TypeError(f"a notebook cannot store values of type {t.__name__}")
        for base, dtype in cls.TypeMapping.items():
            if issubclass(t, base):
                return dtype
        return np.dtype(object)

    @staticmethod
    def valueToDtype(v: Any) -> np.dtype:
        """The numpy dtype of a column holding ``v`` (a Python int as narrow as int64 allows).

        Raises:
            UnstorableValueError: no notebook can store ``v``.
        """
        try:
            st = state_of_value(v)
        except NotStorable as exc:
            raise UnstorableValueError(value_message("value", "", v, str(exc))) from None
        return st.kind.numpy_dtype(st)

    def dtype(self) -> np.dtype:
        """The structured numpy dtype of a row: one field per column, as the columns are stored."""
        states = self._row_check.states
        fields = []
        for k in self.names():
            st = states.get(k, _MISSING_STATE)
            fields.append((k, st.kind.numpy_dtype(st)))
        return np.dtype(fields)

    def inferDtype(self, rc: ResultsDict) -> np.dtype:
        """The row dtype this result set would have once ``rc`` is added (nothing is added).

        Raises:
            UnstorableValueError: ``rc`` holds a value the result set would refuse.
        """
        rc = with_results(rc)
        trial = RowCheck(self._row_check.states)
        trial(rc[Experiment.PARAMETERS], rc.get(Experiment.RESULTS) or {}, rc[Experiment.METADATA])
        names = self.names() + [
            k
            for part in (rc[Experiment.PARAMETERS], rc.get(Experiment.RESULTS) or {}, rc[Experiment.METADATA])
            for k in part
            if k not in self.names()
        ]
        return np.dtype([(k, trial.states[k].kind.numpy_dtype(trial.states[k])) for k in names])

    def setDtype(self, dtype: np.dtype) -> None:
        """Widen the columns to the fields of structured ``dtype`` (new fields make no column until a value comes).

        Raises:
            UnstorableValueError: a field's dtype cannot hold a column's values exactly.
        """
        states = dict(self._row_check.states)
        changes = []
        for name in dtype.names or ():
            ft = dtype.fields[name][0]
            if ft.kind not in "biufc":
                continue  # text, objects and datetimes take their values' kind
            kind = kind_of_dtype(ft)
            wanted = ColumnState(kind, ft)
            old = states.get(name)
            try:
                new = wanted if old is None else old.kind.widen(old, wanted)
            except NotStorable as exc:
                raise UnstorableValueError(f"cannot give column {name!r} dtype {ft}: {exc}") from None
            if new != old:
                changes.append((name, old, new))
                states[name] = new
        if changes:
            self._row_check.states = states
            self._widened(changes)
            self._frame = self._stored_frame = None

    def pendingdtype(self) -> np.dtype:
        """The structured dtype of a pending result: its job id (text) and its parameters."""
        if self._pending_dtype is not None:
            return self._pending_dtype
        fields: dict[str, np.dtype] = {}
        for params in self._pending.values():
            for k, v in params.items():
                d = self.valueToDtype(v)
                fields[k] = d if k not in fields else np.result_type(fields[k], d)
        return np.dtype([(self.JOBID, np.dtype(object))] + list(fields.items()))

    def inferPendingResultDtype(self, params: Mapping[str, Any]) -> np.dtype:
        """The pending dtype once a job for ``params`` is pending (nothing is added).

        Raises:
            UnstorableValueError: a parameter value cannot be stored.
        """
        fields = dict((n, self.pendingdtype().fields[n][0]) for n in self.pendingdtype().names)
        for k, v in params.items():
            d = self.valueToDtype(v)
            fields[k] = d if k not in fields else np.result_type(fields[k], d)
        return np.dtype(list(fields.items()))

    def setPendingResultDtype(self, dtype: np.dtype) -> None:
        """Fix the dtype :meth:`pendingdtype` reports."""
        self._pending_dtype = np.dtype(dtype)

    def typechanged(self, f: bool = True) -> None:
        """Set (or clear, with ``f=False``) the flag saying a column's type changed."""
        self._typechanged = f

    def isTypeChanged(self) -> bool:
        """True if a column's type widened (or a column came) since the flag was cleared."""
        return self._typechanged

    def dirty(self, f: bool = True) -> None:
        """Set (or clear, with ``f=False``) the flag saying the result set changed."""
        self._dirty = f

    def isDirty(self) -> bool:
        """True if a row was added since the flag was cleared."""
        return self._dirty

    def checkResult(self, rc: ResultsDict) -> ResultsDict | None:
        """None if ``rc`` can be added; else the failed results dict to add in its place.

        The failed row keeps the parameters and the storable metadata, has
        status False and, as its exception, the
        :class:`~epyclab.errors.UnstorableValueError` naming the key, value and
        type. Labs call this so that a value no notebook can keep makes a
        failed row, never a stopped sweep. Nothing is added.
        """
        rc = with_results(rc)
        params, meta = rc.get(Experiment.PARAMETERS, {}), rc.get(Experiment.METADATA, {})
        trial = RowCheck(self._row_check.states)
        error: EpyclabError
        try:
            # A results key that is also a metadata key (or a column of another role) is the run's
            # problem as much as an unstorable value is.
            self._check_roles(params, rc.get(Experiment.RESULTS) or {}, meta)
            trial(params, rc.get(Experiment.RESULTS) or {}, meta)
            return None
        except (UnstorableValueError, ResultsStructureException) as exc:
            error = exc
        kept = {}
        for k, v in meta.items():
            if k in (Experiment.STATUS, Experiment.EXCEPTION, Experiment.TRACEBACK):
                continue
            try:
                RowCheck(self._row_check.states)({}, {}, {k: v})
            except UnstorableValueError:
                continue
            kept[k] = v
        failed = failed_result(dict(params), error)
        failed[Experiment.METADATA] = {**failed[Experiment.METADATA], **kept}
        return failed

    def checkParameters(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Refuse a sweep whose points' parameters this result set cannot store, before anything runs.

        Parameters are known before any point runs, and a failed row keeps
        them, so a parameter value the set cannot store (one of another kind
        than its column's, a dict, an aware datetime; see the table of kinds)
        or a parameter named like a result or metadata column could be
        recorded neither as a result nor as a failure: the sweep is refused
        with the first such point named. Nothing is added or changed.

        Raises:
            UnstorableValueError: a parameter value cannot be stored (the point, key, value and type named).
            ResultsStructureException: a parameter is named like a result or metadata column.
        """
        trial = RowCheck(self._row_check.states)
        known: dict[Any, None] = {}
        for n, params in enumerate(points):
            # Most sweeps repeat a few key sets: roles are checked once per key set.
            keys = tuple(params)
            try:
                if keys not in known:
                    self._check_roles(params, {}, {})
                    known[keys] = None
                trial(params, {}, {})
            except (UnstorableValueError, ResultsStructureException) as exc:
                fix = (
                    "give the parameter values of one kind (see the table of kinds in docs/hdf5-layout.md), "
                    "or run this sweep into a new result set (notebook.addResultSet(tag))"
                )
                raise type(exc)(
                    f"{self._where()}: point {n + 1} of {len(points)} ({dict(params)!r}): {exc}. Nothing was run: "
                    f"a parameter is kept with every result, failed ones too; {fix}"
                ) from None

    # ---- hooks for persistent notebooks ---------------------------------------------

    def setRowCheck(self, check: RowCheck) -> None:
        """Check every row added from now on with ``check`` (a persistent notebook's format rules)."""
        self._row_check = check

    def columnStates(self) -> dict[str, ColumnState]:
        """Each column's state (kind and dtype), as the table of kinds keeps it."""
        return dict(self._row_check.states)

    def loadStored(
        self,
        rows: StoredRows,
        roles: Mapping[str, Iterable[str]],
        pending: Mapping[str, Mapping[str, Any]],
        missing: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Make ``rows`` (as a file reader gives them) the rows already stored; ``roles`` maps role to column names.

        ``missing`` marks, for int columns, the cells that were missing (stored as 0). The
        rows are typed into a DataFrame only when one is first asked for.
        """
        self._base = rows
        self._row = None
        self._params = {k: [] for k in roles.get(PARAMETER, ())}
        self._results = {k: [] for k in roles.get(RESULT, ())}
        self._meta = {k: [] for k in roles.get(METADATA, ())}
        self._n_missing = dict.fromkeys(self.names(), 0)
        self._n_buffered = 0
        self._pending = {j: dict(p) for j, p in pending.items()}
        self._base_states = {k: st for k, st in self._row_check.states.items() if k in rows}
        self._base_missing = {k: np.asarray(m, dtype=bool) for k, m in (missing or {}).items()}
        self._frame = self._stored_frame = None

    def bufferedRows(self, start: int) -> dict[str, list[Any]]:
        """The raw cells of rows ``start`` onwards, by column; MISSING marks absent cells.

        ``start`` counts all rows, and must not reach back into loaded rows.
        """
        base_len = 0 if self._base is None else len(self._base)
        if start < base_len:
            raise ValueError(f"rows before {base_len} were loaded, not buffered")
        lo = start - base_len
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
        col = next((cols[name] for cols in (self._params, self._results, self._meta) if name in cols), [])
        tail = np.fromiter((_missing_cell(v) for v in col), dtype=bool, count=len(col))
        return np.concatenate([head, tail])

    def _roles(self) -> dict[str, list[str]]:
        """Column names by role."""
        return {PARAMETER: list(self._params), RESULT: list(self._results), METADATA: list(self._meta)}


    # ---- change feed: what persistent notebooks save through (instead of reading private state) ----

    def changeMark(self) -> ChangeMark:
        """Where the result set stands now; :meth:`changesSince` tells what changed after it."""
        return ChangeMark(
            rows=self.numberOfResults(),
            sizes=self.roleSizes(),
            pending_version=self._pending_version,
            pending=dict(self._pending),
            state_version=self._state_version,
        )

    def changesSince(self, mark: ChangeMark) -> Changes:
        """The rows, new columns, pending jobs added and removed, and state changes since ``mark``.

        Rows are raw cells by column (``MISSING`` marks an absent cell); ``roles`` is
        given only when a column was added. ``mark`` is not changed: the result's
        ``mark`` is where the result set stands now.
        """
        same_pending = self._pending_version == mark.pending_version
        now = ChangeMark(
            rows=self.numberOfResults(),
            sizes=self.roleSizes(),
            pending_version=self._pending_version,
            # Unchanged pending results are not copied again: a commit costs what changed.
            pending=mark.pending if same_pending else dict(self._pending),
            state_version=self._state_version,
        )
        rows = self.bufferedRows(mark.rows) if now.rows > mark.rows else {}
        added: dict[str, dict[str, Any]] = {}
        removed: list[str] = []
        if now.pending_version != mark.pending_version:
            added = {j: p for j, p in now.pending.items() if j not in mark.pending}
            removed = [j for j in mark.pending if j not in now.pending]
        return Changes(
            start=mark.rows,
            rows=rows,
            roles=self.roles() if now.sizes != mark.sizes else None,
            pending_added=added,
            pending_removed=removed,
            pending_changed=now.pending_version != mark.pending_version,
            state_changed=now.state_version != mark.state_version,
            mark=now,
        )

    def roles(self) -> dict[str, list[str]]:
        """Column names by role (``'parameter'``, ``'result'``, ``'metadata'``)."""
        return self._roles()

    def roleSizes(self) -> tuple[int, int, int]:
        """How many parameter, result and metadata columns there are (a new column changes them)."""
        return (len(self._params), len(self._results), len(self._meta))

    def attributes(self) -> dict[str, Any]:
        """A copy of the result set's attributes."""
        return dict(self._attributes)

    def pendingItems(self) -> dict[str, dict[str, Any]]:
        """Job id -> parameters of every pending result (a copy)."""
        return dict(self._pending)

    def hasPendingResult(self, jobid: str) -> bool:
        """True if ``jobid`` is pending here."""
        return jobid in self._pending

    def versions(self) -> tuple[int, int]:
        """Counters that change whenever the state, or the pending results, change (for cheap signatures)."""
        return (self._state_version, self._pending_version)

    def restoreState(self, description: str, locked: bool, attributes: Mapping[str, Any]) -> None:
        """Set what a file recorded of the result set (its description, lock and attributes), unchecked."""
        self._description, self._locked = description, locked
        self._attributes = dict(attributes)

    def applyPendingChanges(self, added: Mapping[str, Mapping[str, Any]], removed: Iterable[str]) -> None:
        """Replay a recorded change of the pending results (jobs added and removed), unchecked."""
        for jobid in removed:
            self._pending.pop(jobid, None)
        for jobid, params in added.items():
            self._pending[jobid] = dict(params)
        self._pending_version += 1


class _Row:
    """The keys of a row that has every column (roles apart, as :class:`RowCheck` gives them) and their columns."""

    __slots__ = ("keys", "columns", "exceptions")

    def __init__(self, keys: tuple[Any, ...], by_role: tuple[dict[str, list[Any]], ...]) -> None:
        self.keys = keys
        columns = []
        #: The exception column, if the row has one (its last cell is made text once appended).
        self.exceptions: list[Any] | None = None
        role = 0
        for k in keys:
            if k is None:
                role += 1  # the boundary between two roles
                continue
            columns.append(by_role[role][k])
            if role == 2 and k == Experiment.EXCEPTION:
                self.exceptions = columns[-1]
        self.columns = tuple(columns)


def with_results(rc: Any) -> Any:
    """``rc`` with empty results if it is a failed results dict with no ``results`` key (epyc writes those)."""
    if (
        type(rc) is dict
        and Experiment.RESULTS not in rc
        and isinstance(rc.get(Experiment.METADATA), dict)
        and rc[Experiment.METADATA].get(Experiment.STATUS) is False
    ):
        return {**rc, Experiment.RESULTS: {}}
    return rc


def _missing_cell(v: Any) -> bool:
    """True for a value that reads back as a missing cell: None, NaT, NaN (not a value a selection can match)."""
    return v is None or v is MISSING or is_nat(v) or (isinstance(v, (float, np.floating)) and v != v)


def _is_value_list(v: Any) -> bool:
    # A numpy array of values is as natural here as a list (lab['p'] = numpy.linspace(...)).
    return isinstance(v, (list, tuple, set, frozenset, range)) or (isinstance(v, np.ndarray) and v.ndim == 1)


def _describe(rc: Any) -> str:
    if isinstance(rc, dict):
        return f"a dict with keys {sorted(map(str, rc))}"
    return f"a {type(rc).__name__}"
