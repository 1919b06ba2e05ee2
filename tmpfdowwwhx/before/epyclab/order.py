"""Rows in the design's order: the marks a lab puts on each run, and the sort that reads them.

Parallel labs finish points in any order, and a result is added to the notebook
the moment it arrives (so a crash loses only what was running). Each run of a
sweep therefore carries two metadata values: :data:`SWEEP`, an id shared by the
runs of one ``runExperiment`` call, and :data:`POINT`, the point's position in
the design. :func:`in_design_order` sorts the rows of each sweep by position
when a result set builds its DataFrame. Only rows of one sweep that sit together
are reordered; rows without marks (added by hand, read from an epyc file) and
sweeps relative to each other keep the order they were added in.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SWEEP", "POINT", "stamp", "in_design_order"]

#: Metadata key: the id of the sweep (one ``runExperiment`` call) a run belongs to.
SWEEP = "epyclab.lab.sweep"
#: Metadata key: the position of the run's point in its sweep's design (0-based).
POINT = "epyclab.lab.point"


def stamp(rc: dict[str, Any], mark: dict[str, Any]) -> None:
    """Add ``mark`` to the metadata of results dict ``rc`` and of every results dict nested in it."""
    rc["metadata"].update(mark)
    res = rc.get("results")
    if type(res) is list:  # repetitions (rare): each is a row of its own
        for r in res:
            stamp(r, mark)


def in_design_order(df: Any) -> Any:
    """``df`` (a pandas DataFrame) with each sweep's rows sorted by :data:`POINT`; the same object if already so."""
    if SWEEP not in df.columns or POINT not in df.columns or len(df) < 2:
        return df
    points = df[POINT]
    if points.is_monotonic_increasing:
        return df
    sweeps = df[SWEEP]
    # A block is a run of consecutive rows of one sweep; a row without marks is a block of its own.
    unmarked = sweeps.isna() | (sweeps == "")
    block = ((sweeps != sweeps.shift()) | unmarked).cumsum()
    key = points.where(~unmarked, 0)
    order = (
        df.assign(_block=block.to_numpy(), _point=key.to_numpy())
        .sort_values(["_block", "_point"], kind="stable")
        .index
    )
    if (order == df.index).all():
        return df
    return df.loc[order].reset_index(drop=True)
