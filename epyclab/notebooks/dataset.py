"""A result set as a labelled array: an xarray ``Dataset`` (``ResultSet.dataset()``).

A factorial sweep over ``N``, ``p`` and repetitions is naturally an array
``N x p x repetition``; this module builds it from the result set's current
view (:meth:`ResultSet.dataframe`), so plotting and analysis tools that take
xarray (or netCDF) need no hand-written pivot.

Layout:

- *Grid* (a factorial design, complete or with missing or pending points;
  chosen when the points fill more than half of the grid of their values):
  each swept parameter (one with more than one value) is a dimension whose
  coordinate holds its values in the design's order (the order the values
  first appear in the result set); a parameter with one value is a scalar
  coordinate.
- *Points* (a pointwise design, or any set whose points fill half of their grid or less):
  one dimension ``point``, with every swept parameter as a coordinate along it.
- ``repetition``: a dimension when a point has more than one row (repetitions,
  or the same point swept again), or the rows came from a ``RepeatedExperiment``.

Every result and metadata column is a variable over those dimensions (timings,
status, exception, seed...). An array-valued result keeps its own dimensions,
named ``<result>_dim_0``..., padded with missing values where arrays differ in
shape. A cell with no successful run (failed, pending, or never run) holds a
missing value in the result variables (NaN, NaT, '' for text; an int variable
with missing cells is float; a bool variable holds False there: see the mask).
Two variables say what each cell is: :data:`MASK` (True where a successful run's
results are) and :data:`STATE` (``'ok'``, ``'failed'``, ``'pending'``,
``'missing'``). The result set's attributes (provenance and seed included) and
its description are the Dataset's attributes.

xarray is an optional dependency (the ``xarray`` extra), imported
only here and only when a Dataset is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from epyclab.errors import OptionalDependencyError
from epyclab.experiment import Experiment

if TYPE_CHECKING:
    import xarray

__all__ = ["MASK", "STATE", "POINT_DIM", "REPETITION_DIM", "resultSetDataset", "requireXarray"]

#: Variable: True where the cell holds a successful run's results.
MASK = "epyclab.mask"
#: Variable: what each cell is: 'ok', 'failed', 'pending' or 'missing'.
STATE = "epyclab.state"
#: The dimension of a pointwise layout.
POINT_DIM = "point"
#: The dimension of repetitions.
REPETITION_DIM = "repetition"
_REPETITIONS = "epyc.experiment.repetitions"


def requireXarray() -> Any:
    """Import and return xarray, or say how to install it.

    Raises:
        OptionalDependencyError: xarray is not installed.
    """
    try:
        import xarray
    except ImportError as exc:
        raise OptionalDependencyError(
            "ResultSet.dataset() needs xarray, which is not installed: pip install xarray "
            "(or the extra: pip install -e '.[xarray]' in epyclab's checkout)"
        ) from exc
    return xarray


def _key(v: Any) -> Any:
    """A hashable key equal for equal values; every missing value (None, NaN, NaT) is one key."""
    if v is None:
        return None
    if not isinstance(v, (np.ndarray, list, tuple, dict, set)):
        try:
            if v != v:  # NaN, NaT (numpy's and pandas')
                return None
        except (TypeError, ValueError):
            pass
    if isinstance(v, np.generic):
        v = v.item()
    try:
        hash(v)
    except TypeError:
        return ("\x00unhashable", repr(v))
    return v


def _coordinate(values: list[Any]) -> np.ndarray:
    """Values of a parameter as a coordinate array (numeric dtypes kept; text or mixed as object)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biufcmM" and arr.ndim == 1:
        return arr
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class _Layout:
    """Where each row (and each pending job) goes: a cell index tuple, and the shape and coordinates."""

    def __init__(self, df: Any, params: Sequence[str], pending: Sequence[Mapping[str, Any]],
                 layout: str | None) -> None:
        names = [p for p in params if p in df.columns]
        columns = {p: df[p].tolist() for p in names}
        n = len(df)
        row_keys = [tuple(_key(columns[p][i]) for p in names) for i in range(n)]
        pend_keys = [tuple(_key(job.get(p)) for p in names) for job in pending]
        # Each parameter's values in the design's order: as they first appear.
        levels: dict[str, dict[Any, Any]] = {p: {} for p in names}
        for i, key in enumerate(row_keys):
            for j, p in enumerate(names):
                levels[p].setdefault(key[j], columns[p][i])
        for job, key in zip(pending, pend_keys):
            for j, p in enumerate(names):
                levels[p].setdefault(key[j], job.get(p))
        self.swept = [p for p in names if len(levels[p]) > 1]
        self.fixed = {p: next(iter(levels[p].values())) for p in names if len(levels[p]) == 1}
        where = [names.index(p) for p in self.swept]
        combos: dict[tuple[Any, ...], int] = {}
        for key in row_keys + pend_keys:
            combos.setdefault(tuple(key[j] for j in where), len(combos))
        cells = math.prod(len(levels[p]) for p in self.swept)
        if layout not in (None, "grid", "points"):
            raise ValueError(f"layout must be 'grid', 'points' or None (chosen from the rows), got {layout!r}")
        # A grid when the points fill more than half of one (a factorial sweep, perhaps not finished);
        # a pointwise design's n points fill n of n**k cells.
        self.grid = layout == "grid" or (layout is None and 2 * len(combos) > cells)
        if self.grid:
            index = {p: {k: i for i, k in enumerate(levels[p])} for p in self.swept}

            def cell(key: tuple[Any, ...]) -> tuple[int, ...]:
                return tuple(index[p][key[j]] for p, j in zip(self.swept, where))

            self.dims = list(self.swept)
            self.shape = [len(levels[p]) for p in self.swept]
            self.coords: dict[str, Any] = {p: _coordinate(list(levels[p].values())) for p in self.swept}
        else:
            def cell(key: tuple[Any, ...]) -> tuple[int, ...]:
                return (combos[tuple(key[j] for j in where)],)

            self.dims = [POINT_DIM]
            self.shape = [len(combos)]
            firsts: dict[tuple[Any, ...], tuple[Any, ...]] = {}
            for i, key in enumerate(row_keys):
                firsts.setdefault(tuple(key[j] for j in where), tuple(columns[p][i] for p in self.swept))
            for job, key in zip(pending, pend_keys):
                firsts.setdefault(tuple(key[j] for j in where), tuple(job.get(p) for p in self.swept))
            ordered = sorted(firsts.items(), key=lambda kv: combos[kv[0]])
            self.coords = {p: (POINT_DIM, _coordinate([v[k] for _, v in ordered])) for k, p in enumerate(self.swept)}
        counts: dict[tuple[int, ...], int] = {}
        self.rows: list[tuple[int, ...]] = []
        for key in row_keys:
            c = cell(key)
            self.rows.append((*c, counts.get(c, 0)))
            counts[c] = counts.get(c, 0) + 1
        self.pending: list[tuple[int, ...]] = []
        for key in pend_keys:
            c = cell(key)
            self.pending.append((*c, counts.get(c, 0)))
            counts[c] = counts.get(c, 0) + 1
        self.reps = max(counts.values(), default=1)
        self.repeated = self.reps > 1 or _REPETITIONS in df.columns
        if self.repeated:
            self.dims.append(REPETITION_DIM)
            self.shape.append(self.reps)
            self.coords[REPETITION_DIM] = np.arange(self.reps)
        else:
            self.rows = [r[:-1] for r in self.rows]
            self.pending = [r[:-1] for r in self.pending]


def _fill_for(kind: str) -> Any:
    return {"f": np.nan, "c": complex(np.nan, np.nan), "M": np.datetime64("NaT"), "m": np.timedelta64("NaT"),
            "b": False}.get(kind)


def _variable(column: Any, present: np.ndarray, index: tuple[np.ndarray, ...], shape: list[int], name: str,
              dims: list[str]) -> tuple[list[str], np.ndarray]:
    """The array of one column: row ``i``'s value at cell ``index[.][i]`` where ``present[i]``, else missing."""
    dtype = column.dtype
    kind = "U" if _is_text(dtype) else np.dtype(dtype).kind
    values = column.to_numpy()
    if kind == "O" and present.any() and all(isinstance(v, np.ndarray) for v in values[present]):
        return _array_variable(list(values), present, index, shape, name, dims)
    if kind in "iu" and int(present.sum()) < math.prod(shape):
        kind, dtype = "f", np.float64
    if kind == "U":
        arr = np.full(shape, "", dtype=object)
    elif kind == "O":
        arr = np.full(shape, None, dtype=object)
    else:
        fill = _fill_for(kind)
        arr = np.full(shape, 0 if fill is None else fill, dtype=dtype)
    if not shape:
        if present.any():
            arr[()] = values[present][-1]
        return dims, arr
    # Every row's cell at once (a row has a cell of its own: repetitions have their own index).
    arr[tuple(i[present] for i in index)] = values[present]
    return dims, arr


def _array_variable(values: list[Any], present: np.ndarray, index: tuple[np.ndarray, ...], shape: list[int],
                    name: str, dims: list[str]) -> tuple[list[str], np.ndarray]:
    """An array-valued result: its own dimensions after the cell's, padded to the largest shape."""
    arrays = [np.asarray(v) for v, here in zip(values, present) if here]
    ndim = max(a.ndim for a in arrays)
    inner = [max(a.shape[k] if k < a.ndim else 1 for a in arrays) for k in range(ndim)]
    dtype = np.result_type(*arrays)
    ragged = any(a.shape != tuple(inner) for a in arrays)
    missing = len(arrays) < math.prod(shape)
    if (ragged or missing) and dtype.kind in "biu":
        dtype = np.dtype(np.float64)
    fill = _fill_for(dtype.kind)
    arr = np.full([*shape, *inner], fill if fill is not None else 0, dtype=dtype)
    for i in np.flatnonzero(present):
        a = np.asarray(values[i])
        a = a.reshape(a.shape + (1,) * (ndim - a.ndim))
        arr[tuple(int(ix[i]) for ix in index) + tuple(slice(0, n) for n in a.shape)] = a
    return dims + [f"{name}_dim_{k}" for k in range(ndim)], arr


def _is_text(dtype: Any) -> bool:
    import pandas as pd

    return isinstance(dtype, pd.StringDtype) or str(dtype) == "str"


def resultSetDataset(rs: Any, layout: str | None = None, attrs: Mapping[str, Any] | None = None) -> xarray.Dataset:
    """Result set ``rs`` as an xarray Dataset (see the module docstring for its layout).

    ``layout``: ``'grid'``, ``'points'``, or None to take a grid when the rows
    (with the pending jobs) fill one. ``attrs`` are added to the Dataset's.

    Raises:
        OptionalDependencyError: xarray is not installed.
        ValueError: ``layout`` is none of those.
    """
    xr = requireXarray()
    df = rs.dataframe(only_successful=False)
    pending = [rs.pendingResultParameters(j) for j in rs.pendingResults()]
    lay = _Layout(df, rs.parameterNames(), pending, layout)
    results = set(rs.resultNames())
    ok = df[Experiment.STATUS].astype(bool).tolist() if Experiment.STATUS in df.columns else [True] * len(df)
    data: dict[str, Any] = {}
    good = np.asarray(ok, dtype=bool)
    index = tuple(np.asarray(lay.rows, dtype=np.intp).reshape(len(lay.rows), len(lay.shape)).T)
    parameters = set(rs.parameterNames())
    for name in df.columns:
        if name in parameters:
            continue
        column = df[name]
        present = ~column.isna().to_numpy(dtype=bool)
        if name in results:
            # A failed run has no results: its cells are missing, not the column's zero.
            present &= good
        data[name] = _variable(column, present, index, lay.shape, name, lay.dims)
    state = np.full(lay.shape, "missing", dtype=object)
    mask = np.zeros(lay.shape, dtype=bool)
    for w, good in zip(lay.rows, ok):
        state[w] = "ok" if good else "failed"
        mask[w] = good
    for w in lay.pending:
        state[w] = "pending"
    data[STATE] = (lay.dims, state)
    data[MASK] = (lay.dims, mask)
    coords = dict(lay.coords)
    coords.update({p: v for p, v in lay.fixed.items()})
    attributes = {k: v for k, v in rs.attributes().items()}
    attributes["epyclab.description"] = rs.description()
    attributes["epyclab.layout"] = "grid" if lay.grid else "points"
    attributes.update(attrs or {})
    return xr.Dataset(data, coords=coords, attrs=attributes)
