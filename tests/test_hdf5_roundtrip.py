"""HDF5 notebooks give back, in a new process, exactly what was committed: values, dtypes and state."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from notebook_cases import (
    VALUES,
    assert_same_snapshot,
    every_kind_rows,
    late_key_rows,
    results_dict,
    snapshot,
)

from epyclab import HDF5LabNotebook, JSONLabNotebook, UnstorableValueError
from epyclab.experiment import Experiment

TESTS = Path(__file__).resolve().parent
T_NAIVE = datetime(2020, 1, 1, 0, 0, 0, 1)

READER = """
import pickle, sys
from notebook_cases import snapshot
import epyclab
nb = getattr(epyclab, sys.argv[1])(sys.argv[2], readonly=True)
with open(sys.argv[3], "wb") as f:
    pickle.dump(snapshot(nb), f)
"""


def snapshot_in_new_process(cls: type, path: Path, tmp_path: Path) -> dict:
    """Open the notebook in a fresh Python process and bring back what it holds."""
    out = tmp_path / "snapshot.pickle"
    subprocess.run(
        [sys.executable, "-c", READER, cls.__name__, str(path), str(out)],
        check=True,
        cwd=TESTS,
        timeout=120,
    )
    with open(out, "rb") as f:
        return pickle.load(f)


def fill_notebook(nb) -> None:
    """Every kind of value, and every kind of state, committed in several steps."""
    nb.addResultSet("every", "every kind of value")
    for rc in every_kind_rows():
        nb.addResult(rc)
        nb.commit()
    nb.current()["seed"] = 42
    nb.current()["ratio"] = 0.5
    nb.current()["model"] = "walk ☃"
    nb.current()["final"] = False
    nb.addResultSet("late", "a key after 1,000 rows")
    for i, rc in enumerate(late_key_rows(1000)):
        nb.addResult(rc)
        if i % 100 == 99:
            nb.commit()
    nb.addResultSet("pending", "submitted jobs")
    nb.addPendingResult({"n": 100, "name": "a"}, "job-1")
    nb.addPendingResult({"n": 200, "name": "b", "x": 0.5}, "job-2")
    nb.addResultSet("done", "finished")
    nb.addResult(results_dict(0, y=1.0))
    nb.current().finish()
    nb.select("every")


@pytest.mark.parametrize("cls", [HDF5LabNotebook, JSONLabNotebook])
def test_a_new_process_reads_back_exactly_what_was_committed(cls, tmp_path):
    path = tmp_path / f"nb.{cls.__name__}"
    nb = cls(path, create=True, description="round trip ✓")
    nb.CheckpointRows = 50  # several checkpoints, not just the one at close
    fill_notebook(nb)
    before = snapshot(nb)
    nb.close()
    assert_same_snapshot(before, snapshot_in_new_process(cls, path, tmp_path))

    # A second session appends to what was loaded: widening, new keys, missing cells.
    nb = cls(path)
    nb.CheckpointRows = 50
    nb.addResult(results_dict(10, int=2.5, text="more", extra=[1.0]), tag="every")
    nb.commit()
    nb.addResult(results_dict(11, ok=False), tag="every")
    nb.resolvePendingResult(results_dict(100, y=5.0), "job-1")
    nb.current()["seed"] = 43
    nb.select("late")
    before = snapshot(nb)
    nb.close()
    after = snapshot_in_new_process(cls, path, tmp_path)
    assert_same_snapshot(before, after)
    assert after["sets"]["every"]["frame"]["int"].dtype == np.float64
    assert after["sets"]["pending"]["pending"] == {"job-2": {"n": 200, "name": "b", "x": 0.5}}


def reopened(nb, cls=HDF5LabNotebook):
    """Close ``nb`` and open its file again, in this process."""
    nb.close()
    return cls(nb.name())


@pytest.mark.parametrize("key", list(VALUES))
def test_each_kind_reads_back_with_its_dtype(key, tmp_path):
    nb = HDF5LabNotebook(tmp_path / "nb.h5", create=True)
    for i, v in enumerate(VALUES[key]):
        nb.addResult(results_dict(i, **{key: v}))
    nb.addResult(results_dict(9, ok=False))
    before = snapshot(nb)
    assert_same_snapshot(before, snapshot(reopened(nb)))


def test_a_key_that_appears_after_1000_rows_gets_missing_values_before(tmp_path):
    nb = HDF5LabNotebook(tmp_path / "nb.h5", create=True)
    nb.CheckpointRows = 300
    for i, rc in enumerate(late_key_rows(1000)):
        nb.addResult(rc)
        if i % 250 == 0:
            nb.commit()
    before = snapshot(nb)
    nb = reopened(nb)
    assert_same_snapshot(before, snapshot(nb))
    df = nb.dataframe(only_successful=False)
    assert df["late"].tolist()[:1000] == [0] * 1000 and df["late"].tolist()[1000:] == [3, 4, 0]
    assert df["late_text"].tolist()[998:] == ["", "", "arrived", "again", ""]
    assert df["late_time"].isna().sum() == 1001


def test_missing_cells_of_an_int_column_become_nan_when_a_float_comes_after_a_checkpoint(tmp_path):
    # An int column's missing cell is 0 while the column is int; a float that
    # widens it later makes the cell NaN, in memory as in the file written
    # before the float came (the file keeps which cells are missing), and in a
    # later session too.
    nb = HDF5LabNotebook(tmp_path / "nb.h5", create=True)
    nb.addResult(results_dict(0, v=1))
    nb.addResult(results_dict(1, ok=False))
    nb.checkpoint()
    nb.addResult(results_dict(2, v=2.5))
    nb.addResult(results_dict(3, ok=False))
    nb.checkpoint()
    before = snapshot(nb)
    v = before["sets"][nb.currentTag()]["frame"]["v"]
    assert v[0] == 1.0 and math.isnan(v[1]) and v[2] == 2.5 and math.isnan(v[3])
    assert_same_snapshot(before, snapshot(reopened(nb)))


@pytest.mark.parametrize("cls", [HDF5LabNotebook, JSONLabNotebook])
def test_a_missing_int_cell_becomes_nan_when_a_later_session_widens_the_column(cls, tmp_path):
    path = tmp_path / f"nb.{'h5' if cls is HDF5LabNotebook else 'json'}"
    nb = cls(path, create=True)
    nb.addResult(results_dict(0, v=1))
    nb.addResult(results_dict(1, ok=False))
    nb.addResult(results_dict(2, v=None))
    nb.close()
    nb = cls(path)
    assert nb.dataframe(only_successful=False)["v"].tolist() == [1, 0, 0]
    nb.addResult(results_dict(3, v=2.5))
    before = snapshot(nb)
    v = before["sets"][nb.currentTag()]["frame"]["v"]
    assert v[0] == 1.0 and math.isnan(v[1]) and math.isnan(v[2]) and v[3] == 2.5
    assert_same_snapshot(before, snapshot(reopened(nb, cls)))


def test_a_column_widens_in_a_later_session_and_reads_back_the_same(tmp_path):
    nb = HDF5LabNotebook(tmp_path / "nb.h5", create=True)
    for i in range(3):
        nb.addResult(results_dict(i, v=i, t=T_NAIVE))
    nb.addResult(results_dict(3, ok=False))
    nb = reopened(nb)
    nb.addResult(results_dict(4, ok=False))
    nb.addResult(results_dict(5, v=0.5 + 1j, t=T_NAIVE))
    before = snapshot(nb)
    after = snapshot(reopened(nb))
    assert_same_snapshot(before, after)
    assert after["sets"][nb.currentTag()]["frame"]["v"].dtype == np.complex128



def test_state_reads_back(tmp_path):
    nb = HDF5LabNotebook(tmp_path / "nb.h5", create=True, description="state")
    nb.addResultSet("a", "first")
    nb.addResult(results_dict(0, y=1.0))
    nb.addResultSet("gone")
    nb.addResult(results_dict(0, y=1.0))
    nb.commit()
    nb.select("a")  # the current set cannot be deleted (as in epyc)
    nb.deleteResultSet("gone")
    nb.addResultSet("again")
    nb.addResult(results_dict(0, y=1.0))
    nb.select("a")
    nb.deleteResultSet("again")
    nb.addResultSet("again", "second incarnation")
    nb.addResult(results_dict(7, y=7.0))
    nb.resultSet("a")["when"] = "today"
    nb.resultSet("a").setDescription("first, renamed")
    nb.select("a")
    nb.finish()
    before = snapshot(nb)
    after = snapshot(reopened(nb))
    assert_same_snapshot(before, after)
    assert "gone" not in after["tags"] and after["locked"]
    assert after["sets"]["again"]["frame"]["n"].tolist() == [7]


def test_a_value_that_cannot_be_stored_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "nb.h5"
    nb = HDF5LabNotebook(path, create=True)
    nb.addResult(results_dict(0, x=1, t="text"))
    nb.commit()
    journal = Path(f"{path}.journal")
    size, data = journal.stat().st_size, path.read_bytes()
    cases = [
        ({"x": {"a": 1}}, "result 'x'", "dict"),
        ({"x": object()}, "result 'x'", "object"),
        ({"x": "a string"}, "result 'x'", "str"),
        ({"x": 2**64}, "result 'x'", "int"),
        ({"t": "nul\x00"}, "result 't'", "str"),
        ({"u": datetime.now(timezone.utc)}, "result 'u'", "datetime"),
        ({"u": [1, "two"]}, "result 'u'", "list"),
        ({"u": np.array(["a"])}, "result 'u'", "numpy.ndarray"),
    ]
    for results, key, typename in cases:
        with pytest.raises(UnstorableValueError) as err:
            nb.addResult(results_dict(1, x=1, t="ok") | {Experiment.RESULTS: {"x": 1, "t": "ok"} | results})
        assert key in str(err.value) and typename in str(err.value)
    rc = results_dict(1)
    rc[Experiment.PARAMETERS]["p"] = {"nested": 1}
    with pytest.raises(UnstorableValueError, match="parameter 'p'.*dict"):
        nb.addResult(rc)
    assert nb.numberOfResults() == 1
    nb.commit()
    assert journal.stat().st_size == size and path.read_bytes() == data
    assert reopened(nb).numberOfResults() == 1


def test_pending_parameters_that_cannot_be_stored_are_refused_when_added(tmp_path):
    path = tmp_path / "nb.h5"
    nb = HDF5LabNotebook(path, create=True)
    nb.addResult(results_dict(0, x=1))
    nb.commit()
    journal = Path(f"{path}.journal")
    size = journal.stat().st_size
    with pytest.raises(UnstorableValueError, match="parameter 'n'.*object"):
        nb.addPendingResult({"n": object()}, "job-7")
    with pytest.raises(UnstorableValueError, match="NUL"):
        nb.addPendingResult({"n\x00": 1}, "job-8")
    assert nb.pendingResults() == []
    nb.commit()
    assert journal.stat().st_size == size
    nb.addPendingResult({"n": 7}, "job-7")
    nb.resolvePendingResult(results_dict(7, x=7), "job-7")
    nb.commit()
    nb = reopened(nb)
    assert nb.numberOfResults() == 2 and nb.pendingResults() == []


def test_the_context_manager_commits_on_exit(tmp_path):
    with HDF5LabNotebook(tmp_path / "nb.h5", create=True) as nb:
        nb.addResult(results_dict(0, y=1.0))
    assert not nb.isOpen()
    assert HDF5LabNotebook(tmp_path / "nb.h5", readonly=True).numberOfResults() == 1


def test_a_file_without_missing_masks_takes_new_missing_cells(tmp_path):
    # Files written before masks were kept have no missing/ group: appending an
    # int column's missing cell must still work, and the old cells stay values.
    import h5py

    path = tmp_path / "old.h5"
    nb = HDF5LabNotebook(path, create=True)
    nb.addResult(results_dict(0, v=1))
    nb.close()
    with h5py.File(path, "r+") as f:
        for g in f["resultsets"].values():
            del g["missing"]
    nb = HDF5LabNotebook(path)
    nb.addResult(results_dict(1, ok=False))
    nb.close()
    nb = HDF5LabNotebook(path)
    assert nb.dataframe(only_successful=False)["v"].tolist() == [1, 0]
    nb.addResult(results_dict(2, v=0.5))
    nb.close()
    v = HDF5LabNotebook(path, readonly=True).dataframe(only_successful=False)["v"].tolist()
    assert v[0] == 1.0 and math.isnan(v[1]) and v[2] == 0.5
