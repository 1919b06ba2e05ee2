"""JSON notebooks: the same content as HDF5 ones, in plain JSON, written atomically."""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pytest
from notebook_cases import VALUES, assert_same_snapshot, late_key_rows, results_dict, snapshot
from test_hdf5_roundtrip import fill_notebook

from epyclab import (
    JSONLabNotebook,
    NotebookFormatError,
    NotebookOverwriteError,
    NotebookVersionException,
    UnstorableValueError,
)


def reopened(nb):
    nb.close()
    return JSONLabNotebook(nb.name())


@pytest.mark.parametrize("key", list(VALUES))
def test_each_kind_reads_back_with_its_dtype(key, tmp_path):
    nb = JSONLabNotebook(tmp_path / "nb.json", create=True)
    for i, v in enumerate(VALUES[key]):
        nb.addResult(results_dict(i, **{key: v}))
    nb.addResult(results_dict(9, ok=False))
    before = snapshot(nb)
    assert_same_snapshot(before, snapshot(reopened(nb)))


def test_everything_reads_back_across_sessions(tmp_path):
    nb = JSONLabNotebook(tmp_path / "nb.json", create=True, description="json ✓")
    fill_notebook(nb)
    nb = reopened(nb)
    for rc in late_key_rows(5):
        nb.addResult(rc, tag="every")
    nb.addResult(results_dict(10, i8=2.5), tag="every")  # int8 widens to float64 exactly
    before = snapshot(nb)
    assert_same_snapshot(before, snapshot(reopened(nb)))


def test_the_file_is_plain_json_with_the_documented_encodings(tmp_path):
    path = tmp_path / "nb.json"
    with JSONLabNotebook(path, create=True) as nb:
        nb.addResult(results_dict(0, f=math.nan, c=1 + 2j, a=np.arange(4).reshape(2, 2), t=(1, 2), when=datetime(
            2024, 1, 2, 3, 4, 5, 6)))
        nb.addPendingResult({"n": math.inf}, "job-1")
    doc = json.loads(path.read_text(encoding="utf-8"))  # strict JSON: no bare NaN
    assert doc["format"] == "epyclab-notebook" and doc["version"] == "2"
    rs = doc["resultsets"][-1]
    cols = rs["columns"]
    assert cols["f"]["values"] == [{"__float__": "nan"}]
    assert cols["c"]["values"] == [[1.0, 2.0]]
    assert cols["when"]["values"] == ["2024-01-02T03:04:05.000006"] and cols["when"]["unit"] == "us"
    assert cols["a"]["values"] == [{"__ndarray__": {"dtype": "<i8", "shape": [2, 2], "data": [0, 1, 2, 3]}}]
    assert cols["t"]["values"] == [{"__tuple__": [1, 2]}]
    assert rs["pending"] == {"job-1": {"__dict__": {"n": {"__float__": "inf"}}}}
    assert [p.name for p in tmp_path.iterdir()] == ["nb.json"]  # no temporary file left behind


def test_each_commit_replaces_the_file_in_one_step(tmp_path):
    path = tmp_path / "nb.json"
    nb = JSONLabNotebook(path, create=True)
    inode = path.stat().st_ino
    nb.addResult(results_dict(0, y=1.0))
    nb.commit()
    # A new file renamed over the old one: a reader holds either, never half of one.
    assert path.stat().st_ino != inode
    size = path.stat().st_size
    nb.commit()  # nothing changed: nothing written
    assert path.stat().st_size == size
    nb.close()


def test_a_value_that_cannot_be_stored_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "nb.json"
    nb = JSONLabNotebook(path, create=True)
    nb.addResult(results_dict(0, x=1))
    nb.commit()
    text = path.read_text()
    with pytest.raises(UnstorableValueError, match="result 'x'.*dict"):
        nb.addResult(results_dict(1, x={"a": 1}))
    nb.commit()
    assert path.read_text() == text and nb.numberOfResults() == 1


def test_create_refuses_to_drop_pending_results_unless_forced(tmp_path):
    path = tmp_path / "nb.json"
    with JSONLabNotebook(path, create=True) as nb:
        nb.addPendingResult({"n": 1}, "job-1")
    with pytest.raises(NotebookOverwriteError, match="1 pending"):
        JSONLabNotebook(path, create=True)
    with JSONLabNotebook(path, create=True, force=True) as nb:
        assert nb.numberOfAllPendingResults() == 0


def test_files_that_are_not_json_notebooks_are_refused(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2")
    (tmp_path / "b.json").write_text('{"some": "json"}')
    (tmp_path / "c.json").write_text('{"format": "epyclab-notebook", "version": "9"}')
    with pytest.raises(NotebookFormatError, match="not a JSON notebook"):
        JSONLabNotebook(tmp_path / "a.json")
    with pytest.raises(NotebookFormatError, match="not an epyclab notebook"):
        JSONLabNotebook(tmp_path / "b.json", create=True)
    with pytest.raises(NotebookVersionException):
        JSONLabNotebook(tmp_path / "c.json")
    assert (tmp_path / "b.json").read_text() == '{"some": "json"}'
