"""Text cells as a file reader holds them until the DataFrame wants them: one buffer and offsets.

An HDF5 text column (variable-length UTF-8) comes out of h5py as one Python
``bytes`` object per cell. Decoded into ``str`` objects and kept until the
DataFrame is built, the cells of a 100,000-row notebook's text columns held
about 3x what the DataFrame itself holds (a ``str`` object costs ~50 bytes
beyond its text). :class:`PackedText` keeps a column's cells as Arrow keeps
them (the UTF-8 bytes end to end, and an int64 offset per cell), so reading a
column costs its text plus 8 bytes a cell, and its pandas array
(``ArrowStringArray``, as ``pandas.array(..., dtype="str")`` makes) is built
from those buffers without a Python object per cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["PackedText"]


class PackedText:
    """``n`` text cells: UTF-8 bytes end to end (``buffer``), cell ``i`` at ``offsets[i]:offsets[i + 1]``."""

    __slots__ = ("offsets", "buffer")

    def __init__(self, offsets: np.ndarray, buffer: bytes) -> None:
        self.offsets, self.buffer = offsets, buffer

    @classmethod
    def read(cls, read: Callable[[int, int], Sequence[bytes]], n: int, block: int = 16_384) -> PackedText:
        """``n`` cells read ``block`` at a time by ``read(start, stop)`` (an object array of ``bytes``, as h5py
        reads variable-length text), packed.

        A block at a time: the ``bytes`` objects of one block (and HDF5's own copy of
        them) are all that is held besides the packed cells, and their memory is reused
        by the next block instead of growing the process by the whole column's.
        """
        offsets = np.zeros(n + 1, dtype=np.int64)
        parts = []
        for start in range(0, n, block):
            cells = read(start, min(n, start + block))
            lengths = np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))
            np.cumsum(lengths, out=offsets[start + 1 : start + 1 + len(cells)])
            offsets[start + 1 : start + 1 + len(cells)] += offsets[start]
            parts.append(b"".join(cells))
            del cells
        return cls(offsets, b"".join(parts))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def strings(self) -> np.ndarray:
        """The cells as an object array of ``str``.

        Raises:
            UnicodeDecodeError: a cell is not UTF-8.
        """
        b, o = self.buffer, self.offsets.tolist()
        return np.array([b[o[i] : o[i + 1]].decode("utf-8") for i in range(len(self))], dtype=object)

    def pandas_array(self) -> Any:
        """The cells as ``pandas.array(cells, dtype="str")`` gives them (from the buffers, where pandas uses Arrow).

        Raises:
            ValueError: a cell is not UTF-8 (pyarrow's ``ArrowInvalid`` is a ``ValueError``).
        """
        import pandas as pd

        dtype = pd.StringDtype(na_value=np.nan) if hasattr(pd.StringDtype(), "na_value") else None
        if dtype is None or dtype.storage != "pyarrow" or pd.array([], dtype="str").dtype != dtype:
            return pd.array(self.strings(), dtype="str")  # a pandas that keeps text otherwise
        import pyarrow as pa

        cells = pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(self.offsets), pa.py_buffer(self.buffer))
        cells.validate(full=True)  # every cell UTF-8 (a damaged file may hold any bytes)
        return pd.arrays.ArrowStringArray(pa.chunked_array([cells]), dtype=dtype)
