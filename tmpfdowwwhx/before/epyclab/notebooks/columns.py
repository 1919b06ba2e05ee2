"""The marker for a cell that a row did not have.

A result set appends each row's values to one list per column. A cell that a
row did not have (a failed run's results, or a key that appeared later) holds
:data:`MISSING` until the DataFrame is built, when it becomes the missing
value of the column's kind, as the table of kinds
(:mod:`epyclab.notebooks.kinds`) says: NaN for floats and complex numbers, 0
for ints, False for bools, '' for text, NaT for datetimes, None for arrays and
lists. A ``None`` result value is a missing cell too.

NaN rather than epyc's 0.0 for floats, because a mean over a column that holds
zeros for runs that produced nothing would be silently wrong.
"""

from __future__ import annotations

__all__ = ["MISSING"]


class _Missing:
    """The marker for a cell that a row did not have."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        # Keep the marker a singleton through pickling (it crosses to engines).
        return "MISSING"


MISSING = _Missing()
