"""Building DataFrames from a result set's rows, and selecting rows by parameter values.

The rows are held by a :class:`~epyclab.notebooks.rowbuffer.RowBuffer`; here
they become a pandas DataFrame, each column typed as the table of kinds says
for its state (a loaded column that widened since is cast, its missing cells
filled). Counting failed rows reads the status column alone, building no
DataFrame. pandas is imported only when a DataFrame is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from epyclab.experiment import Experiment
from epyclab.notebooks.rowbuffer import MISSING_STATE, RowBuffer
from epyclab.order import in_design_order

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["build_frame", "count_failed", "select_rows", "is_value_list"]


def build_frame(rows: RowBuffer) -> pd.DataFrame:
    """Every row in the order rows were added (the order files keep), one column per name, typed."""
    import pandas as pd  # here: counting and naming rows needs no pandas

    base = rows.loaded()
    order = rows.names()
    n_buffered = rows.numberOfBuffered()
    if n_buffered == 0 and base is not None and all(c in base for c in order):
        frame = base.frame()
        return frame[order] if order else frame
    states = rows.states()
    new = {}
    for k, values in rows.bufferedColumns():
        st = states.get(k, MISSING_STATE)
        new[k] = st.kind.column(values, st)
    df = pd.DataFrame(new, columns=order) if order else pd.DataFrame(index=range(n_buffered))
    if base is None or len(base) == 0:
        return df
    return pd.concat([_typed_loaded(rows, order), df], ignore_index=True)


def _typed_loaded(rows: RowBuffer, order: list[str]) -> pd.DataFrame:
    """The loaded rows, every column as its current state says (widened, or missing cells)."""
    import pandas as pd

    base = rows.loaded()
    assert base is not None
    states = rows.states()
    frame = base.frame()
    cols = {}
    for k in order:
        st = states.get(k, MISSING_STATE)
        cols[k] = frame[k] if rows.loadedAsStored(k, st) else rows.loadedColumn(k, st)
    return pd.DataFrame(cols, index=frame.index, columns=order)


def count_failed(rows: RowBuffer, frame: pd.DataFrame | None) -> int:
    """The number of rows whose run failed (status false); ``frame`` is the built frame if there is one.

    Reads the status column alone: no DataFrame is built. Rows without a status column have none.
    """
    status = Experiment.STATUS
    if len(rows) == 0 or status not in rows.names():
        return 0
    if frame is not None:
        return int((~frame[status].astype(bool)).sum())
    st = rows.states().get(status, MISSING_STATE)
    parts = []
    if rows.numberOfLoaded():
        parts.append(rows.loadedColumn(status, st))
    if rows.numberOfBuffered():
        parts.append(st.kind.column(rows.buffered(status), st))
    return sum(int(np.count_nonzero(~np.asarray(part).astype(bool))) for part in parts)


def select_rows(
    rows: RowBuffer,
    stored: pd.DataFrame,
    params: Mapping[str, Any],
    only_successful: bool,
    view: Callable[[pd.DataFrame], pd.DataFrame] = in_design_order,
) -> pd.DataFrame:
    """The rows of ``stored`` (:func:`build_frame` of ``rows``) whose named parameters have the given values.

    Returned in the order ``view`` puts them in (the design's order by default). A list value selects
    any of its values; ``None`` selects missing cells.
    ``params`` is not empty and every name in it is a column.
    """
    # Which cells are missing is known in the stored order: carried through the reordering.
    marks = {f"\x00missing {k}": rows.missingMask(k) for k in params}
    df = view(stored.assign(**marks))
    if only_successful and Experiment.STATUS in df.columns:
        df = df[df[Experiment.STATUS].astype(bool)]
    mask = None
    for k, v in params.items():
        col, missing = df[k], df[f"\x00missing {k}"]
        if is_value_list(v):
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


def is_value_list(v: Any) -> bool:
    """True if ``v`` given as a parameter's value in a selection means "any of these values"."""
    # A numpy array of values is as natural here as a list (lab['p'] = numpy.linspace(...)).
    return isinstance(v, (list, tuple, set, frozenset, range)) or (isinstance(v, np.ndarray) and v.ndim == 1)
