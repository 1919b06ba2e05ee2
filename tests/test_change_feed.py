"""ResultSet's change feed: what persistent notebooks save through; and one record per live result set."""

from __future__ import annotations

import h5py

from epyclab import HDF5LabNotebook, ResultSet
from epyclab.notebooks.columns import MISSING


def rc(i: int, **results):
    return {"parameters": {"i": i}, "metadata": {}, "results": results}


def test_changes_since_a_mark_are_the_rows_columns_pending_and_state_added_after_it():
    rs = ResultSet("d")
    rs.addSingleResult(rc(0, y=1.0))
    rs.addSinglePendingResult({"i": 5}, "job-5")
    mark = rs.changeMark()
    nothing = rs.changesSince(mark)
    assert (nothing.rows, nothing.roles, nothing.pending_changed, nothing.state_changed) == ({}, None, False, False)

    rs.addSingleResult(rc(1, y=2.0, z="new column"))
    rs.addSinglePendingResult({"i": 6}, "job-6")
    rs.resolveSinglePendingResult("job-5")
    rs["note"] = "an attribute"
    changes = rs.changesSince(mark)
    assert changes.start == 1
    assert changes.rows == {"i": [1], "y": [2.0], "z": ["new column"]}
    assert changes.roles == {"parameter": ["i"], "result": ["y", "z"], "metadata": []}
    assert changes.pending_added == {"job-6": {"i": 6}} and changes.pending_removed == ["job-5"]
    assert changes.state_changed
    # The mark is not moved; the changes' own mark is where the set stands now.
    assert rs.changesSince(mark).rows == changes.rows
    assert rs.changesSince(changes.mark).rows == {}

    rs.addSingleResult(rc(2, y=3.0))  # no new column: no roles, a missing cell where z was not given
    later = rs.changesSince(changes.mark)
    assert later.roles is None and later.rows["z"] == [MISSING] and later.rows["y"] == [3.0]


def test_a_deleted_sets_rows_do_not_count_toward_the_next_checkpoint(tmp_path):
    path = tmp_path / "nb.h5"
    nb = HDF5LabNotebook(path, create=True)
    nb.CheckpointRows = 100
    nb.addResultSet("big")
    for i in range(90):
        nb.addResult(rc(i, y=float(i)))
    nb.commit()
    nb.select(HDF5LabNotebook.DEFAULT_RESULTSET)
    nb.deleteResultSet("big")
    for i in range(20):
        nb.addResult(rc(i, y=float(i)))
    nb.commit()  # 20 live rows wait: below 100, so no checkpoint yet
    with h5py.File(path, "r") as f:
        assert list(f["resultsets"]) == []
    for i in range(20, 100):
        nb.addResult(rc(i, y=float(i)))
    nb.commit()  # 100 live rows: folded now
    with h5py.File(path, "r") as f:
        (group,) = f["resultsets"].values()
        assert group.attrs["rows"] == 100
    nb.close()
