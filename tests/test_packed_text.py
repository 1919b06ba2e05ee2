"""Text columns are read packed (one buffer and offsets) and made into the DataFrame's strings from it.

Real HDF5 notebooks, written by epyclab and read back in this process; a cell
damaged on the disk (bytes that are not UTF-8) is written with h5py.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epyclab import HDF5LabNotebook
from epyclab.errors import NotebookFormatError
from epyclab.notebooks.packedtext import PackedText

# Any text a notebook stores: no NUL, no lone surrogates.
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


@settings(max_examples=40, deadline=None)
@given(cells=st.lists(texts, max_size=60), block=st.integers(1, 70))
def test_packed_cells_read_back_as_written(cells, block) -> None:
    encoded = np.array([c.encode() for c in cells], dtype=object)
    packed = PackedText.read(lambda a, b: encoded[a:b], len(cells), block=block)
    assert len(packed) == len(cells)
    assert packed.strings().tolist() == cells
    arr = packed.pandas_array()
    assert arr.dtype == pd.array([], dtype="str").dtype
    assert list(arr) == cells


def test_a_notebook_s_text_reads_back_in_its_dataframe(tmp_path) -> None:
    values = ["", "walk 1", "été ∑ 😀", "x" * 5000, "", "tab\tnew\nline"] * 5_000  # several blocks
    with HDF5LabNotebook(tmp_path / "nb.h5", create=True) as nb:
        for i, v in enumerate(values):
            nb.addResult({"parameters": {"i": i}, "metadata": {}, "results": {"label": v}})
    df = HDF5LabNotebook(tmp_path / "nb.h5", readonly=True).dataframe(only_successful=False)
    assert df["label"].tolist() == values
    assert df["label"].dtype == pd.array([], dtype="str").dtype


def test_a_cell_that_is_not_utf8_is_a_format_error_naming_the_dataset(tmp_path) -> None:
    path = tmp_path / "nb.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        for i in range(3):
            nb.addResult({"parameters": {"i": i}, "metadata": {}, "results": {"label": f"walk {i}"}})
    with h5py.File(path, "r+") as f:
        (group,) = f["resultsets"].values()
        group["columns"]["label"][1] = b"walk \xff"  # damaged on the disk
    nb = HDF5LabNotebook(path, readonly=True)
    with pytest.raises(NotebookFormatError, match=r"label") as err:
        nb.dataframe(only_successful=False)
    assert str(path) in str(err.value)
