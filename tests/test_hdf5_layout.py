"""The file layout is what docs/hdf5-layout.md says, plain h5py reads it, and commits cost what they add."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from notebook_cases import assert_same_snapshot, results_dict, snapshot

from epyclab import HDF5LabNotebook

DOC = Path(__file__).resolve().parent.parent / "docs" / "hdf5-layout.md"


def doc_code() -> str:
    (block,) = [b for b in re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.S | re.M) if "h5py.File" in b]
    return block


def test_the_documented_plain_h5py_code_reads_a_notebook(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with HDF5LabNotebook("results.h5", create=True) as nb:
        nb.addResultSet("a/b %c")
        for i in range(5):
            nb.addResult(results_dict(i, ok=i != 3, y=i / 3, label=f"é{i}", v=np.arange(i).reshape(1, i), **{
                "odd/name": i}))
        expected = {tag: nb.dataframe(tag, only_successful=False) for tag in nb.keys()}
    namespace: dict = {}
    exec(compile(doc_code(), str(DOC), "exec"), namespace)
    frames = namespace["frames"]
    assert set(frames) == set(expected)
    for tag, df in expected.items():
        plain = frames[tag]
        assert list(plain.columns) == list(df.columns)
        for name in df.columns:
            for x, y in zip(plain[name], df[name]):
                if isinstance(y, np.ndarray):
                    assert np.array_equal(x, y)
                else:
                    assert x == y or (pd.isna(x) and pd.isna(y)), (tag, name, x, y)


def test_the_file_carries_its_format_version(tmp_path):
    path = tmp_path / "nb.h5"
    HDF5LabNotebook(path, create=True, description="d").close()
    with h5py.File(path, "r") as f:
        assert f.attrs["version"] == "2"
        assert f.attrs["description"] == "d"
        assert "epyclab" in f.attrs["creator"]


def test_odd_tags_and_column_names_round_trip(tmp_path):
    nb = HDF5LabNotebook(tmp_path / "nb.h5", create=True)
    for tag in ("a/b", "100%", ".hidden", "..", "ünï"):
        nb.addResultSet(tag)
        nb.addResult(results_dict(0, **{"x/y": 1.0, "%": 2, ".": "dot", "": 3}))
    before = snapshot(nb)
    nb.close()
    assert_same_snapshot(before, snapshot(HDF5LabNotebook(tmp_path / "nb.h5", readonly=True)))


def journal_growth(nb: HDF5LabNotebook, path: Path, i: int) -> int:
    """The bytes one commit of one row adds to the journal."""
    journal = Path(f"{path}.journal")

    def size() -> int:
        # Its records (the zeros past them are space made ready; each record ends with a pickle's STOP, b".").
        return len(journal.read_bytes().rstrip(b"\0"))

    before = size()
    nb.addResult(results_dict(i, y=float(i), label="row"))
    nb.commit()
    return size() - before


def test_a_commit_writes_only_the_rows_added_since_the_last_one(tmp_path):
    path = tmp_path / "nb.h5"
    nb = HDF5LabNotebook(path, create=True)
    nb.CheckpointRows = 10**9
    nb.addResult(results_dict(0, y=0.0, label="row"))
    nb.commit()
    small = journal_growth(nb, path, 1)
    for i in range(2, 5000):
        nb.addResult(results_dict(i, y=float(i), label="row"))
    nb.commit()
    large = journal_growth(nb, path, 5000)
    assert 0 < small and abs(large - small) <= 16  # the same record, whatever the notebook holds
    nb.close()


def changed_pages(before: bytes, after: bytes) -> int:
    """How many 4 KiB pages of ``before`` differ in ``after`` (bytes appended do not count)."""
    page = 4096
    return sum(before[i : i + page] != after[i : i + page] for i in range(0, len(before), page))


def pages_a_checkpoint_changes(rows: int, tmp_path: Path) -> tuple[int, int]:
    """Pages of the file a checkpoint of 10 rows changed in place, and the file's pages before."""
    path = tmp_path / f"nb{rows}.h5"
    nb = HDF5LabNotebook(path, create=True)
    for i in range(rows):
        nb.addResult(results_dict(i, y=float(i), label=f"row {i}"))
    nb.checkpoint()
    before = path.read_bytes()
    for i in range(rows, rows + 10):
        nb.addResult(results_dict(i, y=float(i), label=f"row {i}"))
    nb.checkpoint()
    after = path.read_bytes()
    nb.close()
    assert len(after) >= len(before)
    return changed_pages(before, after), len(before) // 4096


def test_a_checkpoint_appends_and_rewrites_only_a_few_pages_whatever_the_file_holds(tmp_path):
    small, _ = pages_a_checkpoint_changes(2_000, tmp_path)
    large, total = pages_a_checkpoint_changes(40_000, tmp_path)
    # The pages changed in place are the last chunk of each column and HDF5's own
    # bookkeeping (chunks are larger in a larger file), not twenty times more.
    assert large <= 2 * small + 16 and large < total / 20, (small, large, total)
