"""An HDF5 notebook's file is as large as its data, not as the layout's chunks.

A notebook of many small result sets once took about 230 KB per set (every
column chunked at 1,024 rows). These tests bound the size by what is stored:
a fixed cost per file, per result set and per column, plus the cells; that
bound is several times below what 1,024-row chunks take. Columns that grow
across many checkpoints keep few chunks and read back whole.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from notebook_cases import results_dict

from epyclab import HDF5LabNotebook
from epyclab.notebooks.hdf5layout import append_column, read_stored, write_column
from epyclab.notebooks.packedtext import PackedText
from epyclab.notebooks.types import StoredColumn

#: What an empty notebook file may take (superblock, root attributes, the resultsets group).
FILE_BYTES = 8 * 1024
#: What a result set may take beyond its columns (its groups and attributes).
SET_BYTES = 3 * 1024
#: What a column of a result set may take beyond its cells (object header, attributes).
COLUMN_BYTES = 1024
#: The smallest 1,024-row chunk of a column (uint8 masks aside): 1,024 bools.
OLD_CHUNK_BYTES = 1024


def cell_bytes(value: object) -> int:
    """What one cell stores at most: 16 bytes of reference and the text for str, else 8 (16 for complex)."""
    if isinstance(value, str):
        return 16 + len(value.encode("utf-8")) + 16
    return 16


def data_bytes(nb: HDF5LabNotebook) -> int:
    total = 0
    for tag in nb.keys():
        df = nb.dataframe(tag, only_successful=False)
        total += sum(cell_bytes(v) for name in df.columns for v in df[name])
    return total


def size_bound(nb: HDF5LabNotebook) -> int:
    sets = len(nb.keys())
    columns = sum(len(nb.dataframe(tag, only_successful=False).columns) for tag in nb.keys())
    return FILE_BYTES + SET_BYTES * sets + COLUMN_BYTES * columns + data_bytes(nb)


small_value = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)


#: Each example writes a file (several times): fewer of them than the profile's.
FILES = settings(max_examples=40)


@FILES
@given(
    sets=st.lists(st.integers(1, 8), min_size=1, max_size=10),
    columns=st.integers(1, 4),
    value=small_value,
)
def test_many_small_result_sets_take_what_their_data_takes(tmp_path_factory, sets, columns, value):
    path = tmp_path_factory.mktemp("size") / "nb.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        for s, rows in enumerate(sets):
            nb.addResultSet(f"set {s}")
            for i in range(rows):
                nb.addResult(results_dict(i, **{f"r{c}": value for c in range(columns)}))
            nb.commit()
        bound = size_bound(nb)
        stored_columns = sum(len(nb.dataframe(tag, only_successful=False).columns) for tag in nb.keys())
    size = os.path.getsize(path)
    assert size <= bound, (size, bound)
    # The bound is no formality: 1,024-row chunks would take more than it allows.
    assert stored_columns * OLD_CHUNK_BYTES * 4 > bound


def test_fifty_sets_of_five_rows_take_less_than_a_megabyte(tmp_path):
    # The user's case: 50 result sets of 5 rows, every column of an Experiment's results and metadata.
    path = tmp_path / "nb.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        for s in range(50):
            nb.addResultSet(f"set{s}")
            for i in range(5):
                nb.addResult(results_dict(i, final=i % 17 - 8, mean=i / 3.0, label=f"walk {i}"))
            nb.commit()
        bound = size_bound(nb)
    assert os.path.getsize(path) <= bound < 1024 * 1024  # 1,024-row chunks took 11.9 MB


def test_a_large_result_set_costs_its_rows_not_its_columns(tmp_path):
    path = tmp_path / "nb.h5"
    rows = 20_000
    with HDF5LabNotebook(path, create=True) as nb:
        for i in range(rows):
            nb.addResult(results_dict(i, final=i % 17 - 8, mean=i / 3.0, label=f"walk {i % 10}"))
        nb.commit()
    # The cells (nine numbers, two short texts and the text's heap entries) and no more than a little slack.
    assert os.path.getsize(path) / rows < 400


def chunk_count(ds: h5py.Dataset) -> int:
    return 1 if ds.chunks is None else -(-ds.shape[0] // ds.chunks[0])


@FILES
@given(
    first=st.integers(0, 300),
    batches=st.lists(st.integers(1, 2500), min_size=1, max_size=6),
    kind=st.sampled_from(["float", "str", "int", "array"]),
    data=st.data(),
)
def test_a_column_grown_batch_by_batch_reads_back_whole_with_few_chunks(tmp_path_factory, first, batches, kind,
                                                                         data):
    path = tmp_path_factory.mktemp("grow") / "f.h5"
    total = first + sum(batches)
    values = np.arange(total)
    missing = data.draw(st.sets(st.integers(0, max(total - 1, 0)), max_size=5)) if kind == "int" else set()
    mask = np.isin(values, list(missing))

    def column(lo: int, hi: int) -> StoredColumn:
        if kind == "float":
            return StoredColumn("float", values[lo:hi] / 7)
        if kind == "int":
            return StoredColumn("int", values[lo:hi].astype(np.int64))
        if kind == "str":
            return StoredColumn("str", np.array([f"row {v}" for v in values[lo:hi]], dtype=object))
        cells = np.empty(hi - lo, dtype=object)
        shapes = np.empty(hi - lo, dtype=object)
        for j, v in enumerate(values[lo:hi]):
            cells[j] = np.arange(v % 4, dtype=np.float64)
            shapes[j] = np.array([v % 4], dtype=np.int64)
        return StoredColumn("array", cells, shapes=shapes, element=np.dtype(np.float64))

    masks = kind == "int"
    with h5py.File(path, "w", libver=("v110", "latest"), fs_strategy="fsm", fs_persist=True) as f:
        g = f.create_group("set")
        for sub in ("columns", "shapes", "missing"):
            g.create_group(sub)
        write_column(g, "x", column(0, first), mask[:first] if masks else None)
    start = first
    for n in batches:  # each batch in a session of its own, as checkpoints are
        with h5py.File(path, "r+", libver=("v110", "latest")) as f:
            append_column(f["set"], "x", start, column(start, start + n), mask[start:start + n] if masks else None)
        start += n
    with h5py.File(path, "r") as f:
        g = f["set"]
        ds = g["columns"]["x"]
        assert ds.shape == (total,) and ds.attrs["name"] == "x" and ds.attrs["kind"] == kind
        # Few chunks to read, whatever the batches were: at most 64, or chunks of 16,384 rows.
        assert chunk_count(ds) <= 64 or ds.chunks[0] == 16384
        got = read_stored(g, "x", total)
        expected = column(0, total)
        if kind == "array":
            assert all(np.array_equal(a, b) for a, b in zip(got.data, expected.data))
            assert [list(s) for s in got.shapes] == [list(s) for s in expected.shapes]
        else:
            # Text comes back packed (one buffer and offsets), as the reader keeps it until the DataFrame.
            data = got.data.strings() if isinstance(got.data, PackedText) else got.data
            assert list(data) == list(expected.data)
        if masks:
            stored = g["missing"]["x"][:total].astype(bool) if "x" in g["missing"] else np.zeros(total, bool)
            assert np.array_equal(stored, mask)
        else:
            assert "x" not in g["missing"]
    # Rewritten layouts leave little dead space behind: the file holds about what the column holds
    # (a text or array cell: a 16-byte reference, and a 16-byte heap entry header and its bytes).
    row = {"float": 8, "int": 8, "str": 16 + 16 + 16, "array": 2 * (16 + 16 + 24)}[kind]
    assert os.path.getsize(path) <= 64 * 1024 + 2 * total * row


def test_a_notebook_grown_over_many_checkpoints_stays_small_and_whole(tmp_path):
    path = tmp_path / "nb.h5"
    expected = 0
    for session in range(12):
        with HDF5LabNotebook(path) as nb:
            for i in range(session * 40):
                nb.addResult(results_dict(expected, y=i / 3, label=f"r{i}"))
                expected += 1
    nb = HDF5LabNotebook(path, readonly=True)
    df = nb.dataframe(only_successful=False)
    assert len(df) == expected
    assert list(df["n"]) == list(range(expected))
    assert os.path.getsize(path) <= size_bound(nb)
    pd.testing.assert_frame_equal(df, HDF5LabNotebook(path, readonly=True).dataframe(only_successful=False))
