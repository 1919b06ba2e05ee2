"""A result set: the rows of one sweep (or a group of sweeps), plus pending jobs.

:class:`ResultSet` is epyc 1.7's API as a thin face over parts that can be read
and tested alone:

- :mod:`~epyclab.notebooks.rowbuffer`: rows and columns (loaded rows, then
  rows added since, each checked against the table of kinds);
- :mod:`~epyclab.notebooks.frames`: the DataFrame built from them, and
  selecting rows by parameter values;
- :mod:`~epyclab.notebooks.pending`: pending results (jobs not yet back);
- :mod:`~epyclab.notebooks.attributes`: description, user attributes, lock;
- :mod:`~epyclab.notebooks.changefeed`: what changed since a commit;
- :mod:`~epyclab.notebooks.dtypes`: epyc's numpy type API;
- :mod:`~epyclab.notebooks.resultsdicts`: results dicts in and out.

What is here: whether a change is allowed (locks, the notebook holding the
set), the DataFrame cache, and the flags epyc's API reports. Counting rows,
failed rows and pending results builds no DataFrame and needs no pandas.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from epyclab.errors import (
    CancelledException,
    ResultSetLockedException,
    ResultsStructureException,
)
from epyclab.experiment import Experiment, ResultsDict, exception_text, failed_result
from epyclab.notebooks import dtypes, reruns
from epyclab.notebooks.attributes import SetAttributes
from epyclab.notebooks.changefeed import ChangeMark, Changes, change_mark, changes_since
from epyclab.notebooks.frames import build_frame, count_failed, select_rows
from epyclab.notebooks.kinds import ColumnState, state_of_value
from epyclab.notebooks.pending import PendingResults
from epyclab.notebooks.resultsdicts import check_points, describe, failed_in_place, rows_to_results, with_results
from epyclab.notebooks.rowbuffer import RowBuffer
from epyclab.notebooks.rowcheck import RowCheck

if TYPE_CHECKING:
    import pandas as pd

    from epyclab.notebooks.stored import StoredRows

__all__ = ["ResultSet", "with_results"]

_PARAMETERS, _METADATA, _RESULTS = Experiment.PARAMETERS, Experiment.METADATA, Experiment.RESULTS

# The state a standard metadata column has once it holds any value of its type: inferDtype gives it
# to a standard field the results dict lacks, so dtype() shows the field's type (epyc's dtype has them all).
_SAMPLES: dict[type, Any] = {str: "", datetime: datetime(2000, 1, 1), float: 0.0, bool: False, int: 0}
_STANDARD_STATES: dict[str, ColumnState] = {
    k: state_of_value(_SAMPLES[t]) for k, t in Experiment.StandardMetadataTypes.items()
}


class ResultSet:
    """The results of experiments, one row per run, with parameters, results and metadata.

    Columns are the union of every key seen. Cells a row did not have take the
    default of their column's type (see :mod:`epyclab.notebooks.columns`):
    NaN for floats, 0 for ints, False for bools, '' for strings. Failed runs
    keep their parameters and metadata; their result cells are such defaults.
    """

    #: Metadata key under which pending results keep their job id in storage.
    JOBID = "epyc.resultset.pending-jobid"

    #: Python type -> the numpy dtype a column of such values has (see :mod:`epyclab.notebooks.dtypes`).
    TypeMapping: dict[type, np.dtype] = dtypes.TYPE_MAPPING

    #: numpy dtype kind -> the value of a missing cell of that kind, as :meth:`zero` gives it
    #: (NaN for floats and complex, where epyc has 0.0: docs/migrating.md).
    ZeroMapping: dict[str, Any] = dtypes.ZERO_MAPPING

    def __init__(self, description: str | None = None) -> None:
        self._state = SetAttributes(description)
        # self._state.isLocked(), kept here too (finish and restoreState change both): every row asks it.
        self._locked = False
        self._rows = RowBuffer()
        self._pending = PendingResults()
        self._frame: pd.DataFrame | None = None
        self._stored_frame: pd.DataFrame | None = None
        self._dirty = False
        self._typechanged = False
        self._pending_dtype: np.dtype | None = None
        # Fields declared by setDtype that have no column yet: dtype() lists them all the same.
        self._declared: dict[str, np.dtype] = {}
        # Every dtype given to setDtype since the set was made or loaded: a persistent notebook
        # records the new ones at a commit (a journal replays them).
        self._dtype_log: list[np.dtype] = []
        # The exceptions of cancelled jobs, by their stored text: results() gives the instance
        # back while this session lasts (as epyc does); a file keeps only the text.
        self._cancelled: dict[str, CancelledException] = {}
        # The notebook holding this set (weakly: a dropped notebook must go at once, to be folded).
        self._notebook: weakref.ref[Any] | None = None

    # ---- description and attributes --------------------------------------

    def description(self) -> str:
        """The free-text description of this result set."""
        return self._state.description()

    def setDescription(self, d: str) -> None:
        """Change the description.

        Raises:
            ResultSetLockedException: the set is finished.
            NotebookReadOnlyError: the notebook holding the set refuses changes.
        """
        self.checkChangeable()
        self._state.setDescription(d)

    def setAttribute(self, k: str, v: Any) -> None:
        """Set a user attribute (a str, number or bool); its type is kept.

        Raises:
            TypeError: ``k`` is not a string.
            ResultSetLockedException: the set is finished.
            NotebookReadOnlyError: the notebook holding the set refuses changes.
        """
        self.checkChangeable()
        self._state.set(k, v)

    def getAttribute(self, k: str) -> Any:
        """A user attribute (KeyError if absent)."""
        return self._state.get(k)

    def deleteAttribute(self, k: str) -> None:
        """Remove a user attribute (KeyError if absent)."""
        self.checkChangeable()
        self._state.delete(k)

    def keys(self) -> list[str]:
        """The names of the user attributes."""
        return self._state.names()

    def __setitem__(self, k: str, v: Any) -> None:
        self.setAttribute(k, v)

    def __getitem__(self, k: str) -> Any:
        return self.getAttribute(k)

    def __delitem__(self, k: str) -> None:
        self.deleteAttribute(k)

    def __contains__(self, k: str) -> bool:
        return k in self._state

    # ---- locking ------------------------------------------------------------

    def finish(self) -> None:
        """Lock the result set; pending results still outstanding are cancelled first.

        Raises:
            NotebookReadOnlyError: the notebook holding the set refuses changes (read-only, taken over).
        """
        if self._state.isLocked():
            return
        self._check_notebook()
        for jobid in self._pending.jobs():
            self.cancelSinglePendingResult(jobid)
        self._state.lock()
        self._locked = True

    def isLocked(self) -> bool:
        """True once :meth:`finish` has been called."""
        return self._state.isLocked()

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
        if self._state.isLocked():
            raise ResultSetLockedException(
                f"{self._where()} is finished (locked) and cannot change; "
                "add a new result set for further results (addResultSet)"
            )

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
        names = self._rows.parameterNames()
        names.extend(k for k in self._pending.parameterNames() if k not in names)
        return names

    def resultNames(self) -> list[str]:
        """Names of the result columns."""
        return self._rows.resultNames()

    def metadataNames(self) -> list[str]:
        """Names of the metadata columns."""
        return self._rows.metadataNames()

    def names(self) -> list[str]:
        """All column names: parameters, then results, then metadata."""
        return self._rows.names()

    # ---- adding results -------------------------------------------------------

    def addSingleResult(self, rc: ResultsDict) -> None:
        """Append the row of one results dict (whose results are a dict, not a list).

        Raises:
            NotebookReadOnlyError: the notebook holding the set refuses changes.
            ResultSetLockedException: the set is finished.
            ResultsStructureException: ``rc`` is not a results dict, or a key is in two roles.
            UnstorableValueError: a value (or a name) no notebook format can keep; nothing is added.
        """
        notebook = self._notebook() if self._notebook is not None else None
        if notebook is not None:
            notebook.checkWritable()
        self.addWritableResult(rc)

    def addWritableResult(self, rc: ResultsDict) -> None:
        """:meth:`addSingleResult` for the notebook holding the set, which has asked its ``checkWritable`` already.

        Raises:
            ResultSetLockedException: the set is finished.
            ResultsStructureException: ``rc`` is not a results dict, or a key is in two roles.
            UnstorableValueError: a value (or a name) no notebook format can keep; nothing is added.
        """
        # The set's lock (checkChangeable raises, saying which), read from the copy kept here: a call
        # to isLocked() costs ~1% of a row.
        if self._locked:
            self.checkChangeable()
        if type(rc) is dict:
            params, meta, res = rc.get(_PARAMETERS), rc.get(_METADATA), rc.get(_RESULTS)
            if type(params) is dict and type(meta) is dict and type(res) is dict:
                # The common case, every row of a sweep: _added inlined (a call costs ~4% of a row).
                if self._rows.add(params, res, meta):
                    self._typechanged = True
                self._frame = self._stored_frame = None
                self._dirty = True
                return
        if type(rc) is dict and Experiment.RESULTS not in rc:
            rc = with_results(rc)
        if not Experiment.isResultsDict(rc):
            raise ResultsStructureException(
                "a results dict needs dicts under 'parameters', 'metadata' and 'results'; "
                f"got {describe(rc)}", rc,
            )
        params, meta, res = rc[Experiment.PARAMETERS], rc[Experiment.METADATA], rc[Experiment.RESULTS]
        if not isinstance(res, dict):
            raise ResultsStructureException(
                "addSingleResult takes a results dict whose results are a dict; "
                "add a list of results with LabNotebook.addResult", rc,
            )
        self._added(self._rows.add(params, res, meta))

    def _added(self, changes: list[tuple[str, ColumnState | None, ColumnState]]) -> None:
        """A row was added; ``changes`` are the column states it changed."""
        if changes:
            self._typechanged = True
        self._frame = self._stored_frame = None
        self._dirty = True

    # ---- reading results ----------------------------------------------------------

    def numberOfResults(self) -> int:
        """The number of rows (successful or failed; pending results not included)."""
        return len(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def numberOfFailedResults(self) -> int:
        """The number of rows whose run failed (status false), as :meth:`dataframe` would show them.

        Reads the status column alone: no DataFrame is built (``epyclab show`` counts failed
        runs this way). A result set without a status column has none.
        """
        if reruns.hasReruns(self._state.copy()):
            # Rows replaced by a rerun are not counted: the current view is.
            return count_failed(self._rows, self._dataframe())
        return count_failed(self._rows, self._frame)

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
            self._stored_frame = build_frame(self._rows)
        return self._stored_frame.copy(deep=False)

    def _dataframe(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = self._currentView(self.storedFrame())
        return self._frame

    def _currentView(self, stored: pd.DataFrame) -> pd.DataFrame:
        """Stored rows (in the order they arrived) as shown: in the design's order, rerun rows replaced."""
        return reruns.currentView(stored, self._state.copy(), self._rows.parameterNames())

    def results(self) -> list[ResultsDict]:
        """Every row as a results dict (failed rows have empty results)."""
        return rows_to_results(self._rows, self._dataframe(), self._cancelled)

    def resultsFor(self, params: Mapping[str, Any]) -> list[ResultsDict]:
        """The results dicts of the rows matching ``params`` (see :meth:`dataframeFor`)."""
        return rows_to_results(self._rows, self.dataframeFor(params), self._cancelled)

    def dataframeFor(self, params: Mapping[str, Any], only_successful: bool = False) -> pd.DataFrame:
        """The rows whose named parameters have the given values.

        A list (or tuple, set, range) value selects any of its values. Only the
        named parameters' columns are compared; other columns are not looked at.
        ``None`` selects the rows where the parameter was None (or absent): such
        a cell reads as its column's fill (0 in an int column), but it is not
        that value, so ``{"v": 0}`` does not select it.

        Raises:
            KeyError: a name in ``params`` is not a column.
        """
        stored = self.storedFrame()
        for k in params:
            if k not in stored.columns:
                raise KeyError(f"{k!r} is not a column of this result set (columns: {list(stored.columns)})")
        if len(stored) == 0 or not params:
            return self.dataframe(only_successful=only_successful)
        return select_rows(self._rows, stored, params, only_successful, self._currentView)

    def dataset(self, layout: str | None = None) -> Any:
        """The result set as an xarray Dataset: parameters as dimensions, results as variables.

        See :mod:`epyclab.notebooks.dataset` for the layout (``'grid'``, ``'points'``,
        or None to choose from the rows). Needs xarray (the ``xarray`` extra).

        Raises:
            OptionalDependencyError: xarray is not installed.
        """
        from epyclab.notebooks.dataset import resultSetDataset  # here: xarray only when asked for

        return resultSetDataset(self, layout)

    def recordRerun(self, exception: Any = None, where: Any = None) -> list[tuple[dict[str, Any], int | None]]:
        """Record that the failed rows (of type ``exception``, matching ``where``) are rerun; return their points.

        Each point comes with its position in its sweep's design (None for a row without one).

        Each new row for such a point replaces the failed row in :meth:`dataframe`
        (the old one stays stored, in the new row's ``epyclab.rerun.history``).
        See :func:`epyclab.notebooks.reruns.startRerun`; labs call this from ``rerunFailed``.
        """
        return reruns.startRerun(self, exception, where)

    def parameterRange(self, param: str) -> set[Any]:
        """The distinct values parameter ``param`` takes in the results and pending results."""
        values: set[Any] = set()
        if self._rows.hasParameter(param):
            values.update(self._dataframe()[param].tolist())
        values.update(self._pending.values(param))
        return values

    def parameterSpace(self) -> dict[str, set[Any]]:
        """Each parameter's distinct values."""
        return {p: self.parameterRange(p) for p in self.parameterNames()}

    def parameterCombinations(self) -> list[dict[str, Any]]:
        """The distinct points (parameter combinations) that have results."""
        names = self._rows.parameterNames()
        if not names or self.numberOfResults() == 0:
            return []
        distinct = self._dataframe()[names].drop_duplicates()
        return distinct.to_dict("records")

    # ---- pending results ------------------------------------------------------------

    def addSinglePendingResult(self, params: Mapping[str, Any], jobid: str) -> None:
        """Record that a job for ``params`` has been submitted and will give a result.

        Raises:
            PendingResultException: ``jobid`` is already pending in this set.
            UnstorableValueError: the job id or a parameter cannot be stored.
            ResultSetLockedException: the set is finished.
        """
        self.checkChangeable()
        self._pending.add(params, jobid)

    def pendingResults(self) -> list[str]:
        """The job ids of the pending results."""
        return self._pending.jobs()

    def numberOfPendingResults(self) -> int:
        """How many results are pending."""
        return len(self._pending)

    def pendingResultsFor(self, params: Mapping[str, Any]) -> list[str]:
        """The job ids pending for points matching ``params`` (list values select any)."""
        return self._pending.jobsFor(params)

    def pendingResultParameters(self, jobid: str) -> dict[str, Any]:
        """The parameters of a pending job (:class:`~epyclab.errors.PendingResultException` if none)."""
        return self._pending.parameters(jobid)

    def resolveSinglePendingResult(self, jobid: str) -> None:
        """Forget a pending job whose result has been (or is being) added."""
        self.checkChangeable()
        self._pending.remove(jobid)

    def cancelSinglePendingResult(self, jobid: str) -> None:
        """Cancel a pending job: it becomes a failed result carrying a :class:`CancelledException`."""
        params = self.pendingResultParameters(jobid)
        self.checkChangeable()
        exc = CancelledException(f"job {jobid} was cancelled")
        rc = failed_result(params, exc)
        # Record the failed row first: if it is refused, the job stays pending, not lost.
        self.addSingleResult(rc)
        self._cancelled[exception_text(exc)] = exc
        self._pending.remove(jobid)

    def ready(self) -> bool:
        """True when no result is pending."""
        return len(self._pending) == 0

    # ---- types (epyc's type API: see epyclab.notebooks.dtypes) -------------------

    @staticmethod
    def zero(dtype: Any) -> Any:
        """The value of a missing cell in a column of numpy ``dtype`` (NaN for floats, as documented).

        Raises:
            TypeError: ``dtype`` is not a numpy dtype.
        """
        return dtypes.zero(dtype)

    @classmethod
    def typeToDtype(cls, t: type) -> np.dtype:
        """The numpy dtype of a column of values of type ``t`` (numpy scalar types keep their width).

        Raises:
            TypeError: no notebook can store values of type ``t``.
        """
        return dtypes.type_to_dtype(t)

    @staticmethod
    def valueToDtype(v: Any) -> np.dtype:
        """The numpy dtype of a column holding ``v`` (a Python int as narrow as int64 allows).

        Raises:
            UnstorableValueError: no notebook can store ``v``.
        """
        return dtypes.value_to_dtype(v)

    def dtype(self) -> np.dtype:
        """The structured numpy dtype of a row: one field per column, then one per field declared by :meth:`setDtype`.

        A column's field has the dtype its values are kept in; a declared field with no column
        yet has the declared dtype (widened as declared numbers are).

        Raises:
            ResultsStructureException: nothing is known yet: no row added, no field inferred
                (:meth:`inferDtype`) or declared (:meth:`setDtype`), as in epyc.
        """
        names = self.names()
        if not names and not self._declared:
            raise ResultsStructureException(
                f"{self._where()} has no dtype yet: it has no rows and no known fields; add a "
                "result, or name the fields with inferDtype(rc) or setDtype(dtype)"
            )
        states = self._rows.states()
        row = dtypes.row_dtype(names, states)
        fields = [(k, row.fields[k][0]) for k in names]
        fields += [(k, states[k].kind.numpy_dtype(states[k]) if k in states else d)
                   for k, d in self._declared.items() if k not in names]
        return np.dtype(fields)

    def inferDtype(self, rc: ResultsDict) -> np.dtype:
        """Register the fields of ``rc`` and return the row dtype (no row is added), as epyc does.

        Each parameter, result and metadata key of ``rc`` that is not a column yet becomes one
        (result keys only if the run succeeded: status not False),
        in its role, as does every standard metadata field (:attr:`Experiment.StandardMetadata`)
        even when ``rc`` lacks it: :meth:`parameterNames`, :meth:`resultNames`,
        :meth:`metadataNames` and :meth:`dtype` list them from now on, and the rows there are
        show the column's missing cell. Columns never go: a field of an earlier inference stays.
        A new or widened column sets :meth:`isTypeChanged`; :meth:`isDirty` is unchanged.

        Raises:
            NotebookReadOnlyError: the notebook holding the set refuses changes.
            ResultSetLockedException: the set is finished.
            ResultsStructureException: ``rc`` is not a results dict, or a key is in two roles.
            UnstorableValueError: ``rc`` holds a value the result set would refuse; nothing changes.
        """
        self.checkChangeable()
        rc = with_results(rc)
        if not Experiment.isResultsDict(rc):
            raise ResultsStructureException(
                "inferDtype takes a results dict with dicts under 'parameters', 'metadata' and "
                f"'results'; got {describe(rc)}", rc,
            )
        params, meta = rc[Experiment.PARAMETERS], rc[Experiment.METADATA]
        # As in epyc, a failed run's results (there should be none) name no result fields.
        ok = meta.get(Experiment.STATUS, True) is not False and isinstance(rc[Experiment.RESULTS], dict)
        res = rc[Experiment.RESULTS] if ok else {}
        self._register(params, res, meta, standard_metadata=True)
        return self.dtype()

    def _register(
        self,
        params: Mapping[str, Any],
        res: Mapping[str, Any],
        meta: Mapping[str, Any],
        standard_metadata: bool,
    ) -> None:
        """Make columns (no rows) for the keys not seen yet, with the states their values give."""
        trial = self._rows.trialCheck()
        trial(params, res, meta)
        states = dict(trial.states)
        if standard_metadata:
            names = set(self.names())
            missing = {k: None for k in _STANDARD_STATES if k not in meta and k not in names}
            for k in missing:
                states.setdefault(k, _STANDARD_STATES[k])
            meta = {**meta, **missing}
        before = self._rows.states()
        widened = any(before.get(k) != st for k, st in states.items())
        made = self._rows.register(params, res, meta, states)
        if made or widened:
            self._typechanged = True
            self._frame = self._stored_frame = None

    def setDtype(self, dtype: np.dtype) -> None:
        """Declare the row dtype: every field is listed by :meth:`dtype` at once, and columns widen to it.

        A numeric field widens its column (or, with no column yet, fixes the dtype the first
        values take); text, object and datetime fields take their values' kind. A declared field
        makes no column until a value comes. Only a column that widens sets :meth:`isTypeChanged`.

        Raises:
            UnstorableValueError: a field's dtype cannot hold a column's values exactly.
        """
        dtype = np.dtype(dtype)
        states, changes = dtypes.widen_to(self._rows.states(), dtype)
        self._dtype_log.append(dtype)
        names = set(self.names())
        for name in dtype.names or ():
            if name not in names:
                self._declared[name] = dtype.fields[name][0]
        if changes:
            self._rows.setStates(states)
            if any(name in names for name, _, _ in changes):
                self._typechanged = True
            self._frame = self._stored_frame = None

    def declaredDtypes(self) -> list[np.dtype]:
        """The dtypes given to :meth:`setDtype` since the set was made or loaded, in order (a copy)."""
        return list(self._dtype_log)

    def pendingdtype(self) -> np.dtype:
        """The structured dtype of a pending result: its job id (text) and its parameters.

        Fields declared by :meth:`setPendingResultDtype` come first, as declared, then every
        other parameter a pending job has; the job id's field is there once a job is.
        """
        declared = self._pending_dtype
        fields: dict[str, np.dtype] = {} if declared is None else {n: declared.fields[n][0] for n in declared.names}
        inferred: dict[str, np.dtype] = {}
        for params in self._pending.items().values():
            for k, v in params.items():
                d = self.valueToDtype(v)
                inferred[k] = d if k not in inferred else np.result_type(inferred[k], d)
        fields.update((k, d) for k, d in inferred.items() if k not in fields)
        if self.JOBID not in fields and (declared is None or len(self._pending)):
            return np.dtype([(self.JOBID, np.dtype(object))] + list(fields.items()))
        return np.dtype(list(fields.items()))

    def inferPendingResultDtype(self, params: Mapping[str, Any]) -> np.dtype:
        """Register ``params`` as parameters and return the pending dtype once a job for them is pending.

        As in epyc, each parameter not a column yet becomes one (no rows), so
        :meth:`parameterNames` lists it; no job is added, and no result or metadata field.

        Raises:
            NotebookReadOnlyError: the notebook holding the set refuses changes.
            ResultSetLockedException: the set is finished.
            ResultsStructureException: a parameter name is a result or metadata column.
            UnstorableValueError: a parameter value cannot be stored; nothing changes.
        """
        self.checkChangeable()
        if not isinstance(params, Mapping):
            raise ResultsStructureException(
                f"inferPendingResultDtype takes a dict of parameters; got {describe(params)}"
            )
        self._register(params, {}, {}, standard_metadata=False)
        now = self.pendingdtype()
        fields = {n: now.fields[n][0] for n in now.names}
        fields.setdefault(self.JOBID, np.dtype(object))
        for k, v in params.items():
            d = self.valueToDtype(v)
            fields[k] = d if k not in fields else np.result_type(fields[k], d)
        return np.dtype(list(fields.items()))

    def setPendingResultDtype(self, dtype: np.dtype) -> None:
        """Declare the dtype of pending results: :meth:`pendingdtype` lists its fields at once."""
        self._pending_dtype = np.dtype(dtype)

    def typechanged(self, f: bool = True) -> None:
        """Set (or clear, with ``f=False``) the flag saying a column's type changed."""
        self._typechanged = f

    def isTypeChanged(self) -> bool:
        """True if a row created or widened a column since the flag was cleared (a persistent commit clears it)."""
        return self._typechanged

    def dirty(self, f: bool = True) -> None:
        """Set (or clear, with ``f=False``) the flag saying the result set changed."""
        self._dirty = f

    def isDirty(self) -> bool:
        """True if a row was added since the flag was cleared (a persistent commit clears it)."""
        return self._dirty

    # ---- checks a lab makes before adding ---------------------------------------------

    def checkResult(self, rc: ResultsDict) -> ResultsDict | None:
        """None if ``rc`` can be added; else the failed results dict to add in its place.

        The failed row keeps the parameters and the storable metadata, has
        status False and, as its exception, the
        :class:`~epyclab.errors.UnstorableValueError` naming the key, value and
        type. Labs call this so that a value no notebook can keep makes a
        failed row, never a stopped sweep. Nothing is added.
        """
        return failed_in_place(self._rows, rc)

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
        check_points(self._rows, points, self._where())

    # ---- hooks for persistent notebooks ---------------------------------------------

    def setRowCheck(self, check: RowCheck) -> None:
        """Check every row added from now on with ``check`` (a persistent notebook's format rules)."""
        self._rows.setRowCheck(check)

    def columnStates(self) -> dict[str, ColumnState]:
        """Each column's state (kind and dtype), as the table of kinds keeps it."""
        return dict(self._rows.states())

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
        self._rows.load(rows, roles, missing or {})
        self._pending.load(pending)
        self._frame = self._stored_frame = None

    def bufferedRows(self, start: int) -> dict[str, list[Any]]:
        """The raw cells of rows ``start`` onwards, by column; MISSING marks absent cells.

        ``start`` counts all rows, and must not reach back into loaded rows.
        """
        return self._rows.bufferedRows(start)

    def missingMask(self, name: str) -> np.ndarray:
        """Which cells of column ``name`` are missing (a row without the key, or None), over every row."""
        return self._rows.missingMask(name)

    # ---- change feed: what persistent notebooks save through (see changefeed) ----

    def changeMark(self) -> ChangeMark:
        """Where the result set stands now; :meth:`changesSince` tells what changed after it."""
        return change_mark(self)

    def changesSince(self, mark: ChangeMark) -> Changes:
        """The rows, new columns, pending jobs added and removed, and state changes since ``mark``.

        Rows are raw cells by column (``MISSING`` marks an absent cell); ``roles`` is
        given only when a column was added. ``mark`` is not changed: the result's
        ``mark`` is where the result set stands now.
        """
        return changes_since(self, mark)

    def roles(self) -> dict[str, list[str]]:
        """Column names by role (``'parameter'``, ``'result'``, ``'metadata'``)."""
        return self._rows.roles()

    def roleSizes(self) -> tuple[int, int, int]:
        """How many parameter, result and metadata columns there are (a new column changes them)."""
        return self._rows.roleSizes()

    def attributes(self) -> dict[str, Any]:
        """A copy of the result set's attributes."""
        return self._state.copy()

    def pendingItems(self) -> dict[str, dict[str, Any]]:
        """Job id -> parameters of every pending result (a copy)."""
        return self._pending.items()

    def hasPendingResult(self, jobid: str) -> bool:
        """True if ``jobid`` is pending here."""
        return jobid in self._pending

    def versions(self) -> tuple[int, int]:
        """Counters that change whenever the state, or the pending results, change (for cheap signatures)."""
        return (self._state.version(), self._pending.version())

    def restoreState(self, description: str, locked: bool, attributes: Mapping[str, Any]) -> None:
        """Set what a file recorded of the result set (its description, lock and attributes), unchecked."""
        self._state.restore(description, locked, attributes)
        self._locked = self._state.isLocked()

    def applyPendingChanges(self, added: Mapping[str, Mapping[str, Any]], removed: Iterable[str]) -> None:
        """Replay a recorded change of the pending results (jobs added and removed), unchecked."""
        self._pending.apply(added, removed)
