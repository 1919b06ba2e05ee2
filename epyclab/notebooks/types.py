"""A column as a notebook file holds it: format-neutral numpy arrays.

How each kind of value becomes such a column, and back, is decided by the
table of kinds (:mod:`epyclab.notebooks.kinds`); the HDF5 and JSON notebooks
only decide how to lay these arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["StoredColumn", "from_storage"]


@dataclass
class StoredColumn:
    """A column in the arrays a notebook file holds.

    ``kind`` is the name of its kind in the table of kinds. ``data`` is 1-D:
    numbers, bools, str objects (or, for the ``str`` kind as an HDF5 file is
    read, a :class:`~epyclab.notebooks.packedtext.PackedText`), int64 ticks of ``unit`` (datetime), or for
    cell kinds (array, list, tuple) an object array of flat 1-D arrays of
    ``element`` dtype, with ``shapes`` an object array of int64 shapes
    (``[-1]`` marks a missing cell).
    """

    kind: str
    data: Any  # np.ndarray, or PackedText (see above)
    shapes: np.ndarray | None = None
    unit: str | None = None
    element: np.dtype | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.data)


def from_storage(stored: StoredColumn) -> Any:
    """The typed column (as a DataFrame holds it) of a stored column."""
    # The table of kinds builds on this module, so it is imported when first needed.
    from epyclab.notebooks.kinds import kind_named

    return kind_named(stored.kind).from_storage(stored)
