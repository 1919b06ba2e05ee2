"""A notebook file is read without trusting it (issue 19.2): crafted files, each changed in one way with plain
h5py or json, are refused with NotebookFormatError naming the file and the group, dataset, attribute or key,
before anything is allocated on the word of a count. Each opening runs in a process whose address space is
limited, so a reader that believed ``rows = 2**40`` would fail there with MemoryError, not pass."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

from epyclab import HDF5LabNotebook, JSONLabNotebook
from epyclab.experiment import Experiment

# Opens argv[2] (class argv[1]) read-only, then for writing, under a memory limit of 1 GiB more than it
# uses once everything is imported; prints one JSON line: the outcome of each opening.
OPEN_LIMITED = r"""
import json, os, resource, sys, traceback
# pandas keeps text in pyarrow when it is installed; pyarrow's own allocator reserves address space
# that the memory limit below would refuse: the system allocator counts only what is used.
os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
import epyclab
from epyclab import NotebookFormatError
import pandas, h5py
cls = getattr(epyclab, sys.argv[1])
with open("/proc/self/status") as f:
    size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, size + 2**30))
out = []
for kwargs in ({"readonly": True}, {}):
    try:
        nb = cls(sys.argv[2], **kwargs)
        counts = {t: len(nb.resultSet(t).dataframe()) for t in nb.resultSets()}
        nb.close()
        out.append(["ok", counts])
    except NotebookFormatError as e:
        out.append(["NotebookFormatError", str(e)])
    except BaseException as e:
        out.append(["other", traceback.format_exc()])
print(json.dumps(out))
"""


def open_limited(cls: type, path: Path) -> list[list]:
    proc = subprocess.run([sys.executable, "-c", OPEN_LIMITED, cls.__name__, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def refused(cls: type, path: Path, *named: str) -> None:
    """Both openings (read-only and for writing) raise NotebookFormatError naming the file and ``named``."""
    for outcome, said in open_limited(cls, path):
        assert outcome == "NotebookFormatError", said
        assert said.startswith(f"{path} is damaged or not an epyclab notebook: ") or str(path) in said, said
        for text in named:
            assert text in said, said


def _row(i: int) -> dict:
    return {Experiment.PARAMETERS: {"i": i}, Experiment.RESULTS: {"a": np.arange(i + 1.0), "m": None if i == 1 else i,
                                                                 "t": datetime(2024, 1, 1 + i)},
            Experiment.METADATA: {Experiment.STATUS: True}}


@pytest.fixture
def h5(tmp_path: Path) -> Path:
    path = tmp_path / "nb.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        nb.addResultSet("s")
        for i in range(3):
            nb.addResult(_row(i))
        nb.current()["note"] = "kept"
        nb.addPendingResult({"i": 9}, "job-9")
    return path


def _change(path: Path, change: Callable[[h5py.File], None]) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def test_a_result_set_claiming_2_to_the_40_rows_is_refused_without_allocating(h5: Path) -> None:
    _change(h5, lambda f: f["resultsets/s"].attrs.__setitem__("rows", 2**40))
    refused(HDF5LabNotebook, h5, "result set group /resultsets/s", f"{2**40} row(s)")


def test_rows_backed_by_no_storage_are_refused(h5: Path) -> None:
    # Every column resized to 2**40 cells (chunked datasets: nothing written for them), and rows to match.
    def grow(f: h5py.File) -> None:
        g = f["resultsets/s"]
        for name in g["columns"]:
            old = g["columns"][name]
            attrs, dtype = dict(old.attrs), old.dtype
            del g["columns"][name]
            new = g["columns"].create_dataset(name, shape=(2**40,), maxshape=(None,), chunks=(1024,), dtype=dtype)
            new.attrs.update(attrs)
        g.attrs["rows"] = 2**40
    _change(h5, grow)
    refused(HDF5LabNotebook, h5, "dataset /resultsets/s/columns/", "the file keeps")


def test_a_column_shorter_than_its_rows_is_refused(h5: Path) -> None:
    _change(h5, lambda f: f["resultsets/s"].attrs.__setitem__("rows", 4))
    refused(HDF5LabNotebook, h5, "result set group /resultsets/s", "it says it has 4 row(s), but dataset")


def test_a_cell_whose_shape_does_not_fit_its_values_is_refused(h5: Path) -> None:
    def reshape(f: h5py.File) -> None:
        shapes = f["resultsets/s/shapes/a"]
        shapes[2] = np.array([2**31, 2**31], dtype=np.int64)
    _change(h5, reshape)
    refused(HDF5LabNotebook, h5, "dataset /resultsets/s/columns/a", "cannot reshape array of size 3")


def test_a_pickle_in_the_attributes_is_refused_and_never_unpickled(h5: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # A pickle that would create a file if it were ever unpickled.
    evil = pickle.dumps(type("X", (), {"__reduce__": lambda self: (open, (str(marker), "w"))})(), protocol=0)
    _change(h5, lambda f: f["resultsets/s"].attrs.__setitem__("attributes", np.void(evil)))
    refused(HDF5LabNotebook, h5, "attribute attributes of /resultsets/s")
    _change(h5, lambda f: f["resultsets/s"].attrs.__setitem__("attributes", evil.decode("latin-1")))
    refused(HDF5LabNotebook, h5, "attribute attributes of /resultsets/s", "JSONDecodeError")
    assert not marker.exists()


@pytest.mark.parametrize(("what", "change", "named"), [
    ("unknown kind", lambda f: f["resultsets/s/columns/i"].attrs.__setitem__("kind", "mystery"),
     "dataset /resultsets/s/columns/i"),
    ("roles not a dict", lambda f: f["resultsets/s"].attrs.__setitem__("roles", "[1, 2]"),
     "result set group /resultsets/s"),
    ("a role naming no column", lambda f: f["resultsets/s"].attrs.__setitem__(
        "roles", json.dumps({"parameter": ["i", "ghost"], "result": [], "metadata": []})),
     "dataset /resultsets/s/columns/ghost"),
    ("negative rows", lambda f: f["resultsets/s"].attrs.__setitem__("rows", -1), "attribute rows of /resultsets/s"),
    ("a tag not its name", lambda f: f["resultsets/s"].attrs.__setitem__("tag", "t"), "its tag 't'"),
    ("a column that is a group", lambda f: (f["resultsets/s/columns"].__delitem__("i"),
                                            f["resultsets/s/columns"].create_group("i")),
     "dataset /resultsets/s/columns/i"),
    ("pending of unequal lengths", lambda f: (f["resultsets/s/pending"].__delitem__("jobid"),
                                              f["resultsets/s/pending"].create_dataset(
                                                  "jobid", data=["a", "b"], dtype=h5py.string_dtype())),
     "group /resultsets/s/pending"),
    ("pending parameters not JSON", lambda f: f["resultsets/s/pending/parameters"].__setitem__(0, "{oops"),
     "group /resultsets/s/pending"),
    ("an array of a crafted dtype", lambda f: f["resultsets/s/pending/parameters"].__setitem__(
        0, json.dumps({"__dict__": {"x": {"__ndarray__": {"dtype": "V99999999999", "shape": [3],
                                                          "data": [1, 2, 3]}}}})),
     "group /resultsets/s/pending"),
    ("no journal-seq", lambda f: f.attrs.__delitem__("journal-seq"), "the file's attributes (/)"),
    ("resultsets not a group", lambda f: (f.__delitem__("resultsets"), f.create_dataset("resultsets", data=[1])),
     "/resultsets"),
])
def test_a_crafted_hdf5_notebook_is_refused_naming_what_is_wrong(h5: Path, what: str, change: Callable,
                                                                 named: str) -> None:
    _change(h5, change)
    refused(HDF5LabNotebook, h5, named)


@pytest.fixture
def js(tmp_path: Path) -> Path:
    path = tmp_path / "nb.json"
    with JSONLabNotebook(path, create=True) as nb:
        nb.addResultSet("s")
        for i in range(3):
            nb.addResult(_row(i))
        nb.addPendingResult({"i": 9}, "job-9")
    return path


def _edit(path: Path, change: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _set(doc: dict) -> dict:
    return next(s for s in doc["resultsets"] if s["tag"] == "s")


@pytest.mark.parametrize(("what", "change", "named"), [
    ("rows = 2**40", lambda d: _set(d).__setitem__("rows", 2**40), "column 'i' of result set 's'"),
    ("rows = 2**40 and no columns", lambda d: (_set(d).__setitem__("rows", 2**40), _set(d).__setitem__("columns", {}),
                                               _set(d).__setitem__("roles", {"parameter": [], "result": [],
                                                                             "metadata": []})),
     "result set 's': it says it has 1099511627776 row(s) and no column"),
    ("a crafted column dtype", lambda d: _set(d)["columns"]["i"].__setitem__("dtype", "S999999999"),
     "column 'i' of result set 's': dtype"),
    ("missing rows out of range", lambda d: _set(d)["columns"]["m"].__setitem__("missing", [2**40]),
     "column 'm' of result set 's'"),
    ("a crafted cell", lambda d: _set(d)["columns"]["a"]["values"].__setitem__(
        0, {"__ndarray__": {"dtype": "<f8", "shape": [2**20, 2**20], "data": [1.0]}}), "column 'a' of result set 's'"),
    ("a pickle in the attributes",
     lambda d: _set(d).__setitem__("attributes", {"__pickle__": "gASVCAAAAAAAAACMAXiULg=="}), "result set 's'"),
    ("attributes not a dict", lambda d: _set(d).__setitem__("attributes", [1]), "result set 's'"),
    ("rows not a count", lambda d: _set(d).__setitem__("rows", "3"), "key \"rows\" of result set 's'"),
    ("resultsets not a list", lambda d: d.__setitem__("resultsets", {"x": 1}), "key \"resultsets\""),
    ("a result set not an object", lambda d: d["resultsets"].append(7), "result set 2 of \"resultsets\""),
    ("no description", lambda d: d.__delitem__("description"), "keys \"description\""),
    ("a role naming no column", lambda d: _set(d)["roles"]["parameter"].append("ghost"), "result set 's'"),
])
def test_a_crafted_json_notebook_is_refused_naming_what_is_wrong(js: Path, what: str, change: Callable,
                                                                 named: str) -> None:
    _edit(js, change)
    refused(JSONLabNotebook, js, named)


def test_deeply_nested_json_is_refused(js: Path) -> None:
    js.write_text('{"format": "epyclab-notebook", "version": "2", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(JSONLabNotebook, js, "is not a JSON notebook")


def test_the_untouched_notebooks_open(h5: Path, js: Path) -> None:
    """The checks refuse nothing that epyclab wrote."""
    for cls, path in ((HDF5LabNotebook, h5), (JSONLabNotebook, js)):
        assert open_limited(cls, path) == [["ok", {"epyc.resultset.default": 0, "s": 3}]] * 2
