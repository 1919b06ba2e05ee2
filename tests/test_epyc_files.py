"""Notebooks written by epyc 1.x open and read; they are converted, never damaged; other files are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from notebook_cases import assert_same_snapshot, results_dict, snapshot

from epyclab import (
    HDF5LabNotebook,
    NotebookFormatError,
    NotebookReadOnlyError,
    NotebookVersionException,
)
from epyclab.experiment import Experiment

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "epyc-1.7.2-notebook.h5"


@pytest.fixture
def epyc_file(tmp_path) -> Path:
    """A copy of the notebook epyc 1.7.2 wrote (opening it creates side files next to it)."""
    path = tmp_path / "epyc.h5"
    shutil.copyfile(FIXTURE, path)
    return path


def test_the_epyc_fixture_reads_as_its_readme_describes(epyc_file):
    nb = HDF5LabNotebook(epyc_file, readonly=True)
    assert set(nb.keys()) == {"walks", "repeated", "paths", "pending", HDF5LabNotebook.DEFAULT_RESULTSET}
    assert nb.currentTag() == "walks"
    assert nb.description() == "Fixture notebook written by epyc 1.7.2"

    walks = nb.dataframe("walks", only_successful=False)
    assert len(walks) == 12 and len(nb.dataframe("walks")) == 9
    assert set(zip(walks["n"], walks["seed"])) == {(n, s) for n in (5, 10, 13, 20) for s in (1, 2, 3)}
    assert walks["n"].dtype == np.int64 and walks["final"].dtype == np.int64
    assert walks["mean"].dtype == np.float64 and walks["hit"].dtype == bool
    assert walks["label"].dtype == "str"
    assert walks[Experiment.START_TIME].dtype == "datetime64[us]"
    failed = walks[~walks[Experiment.STATUS]]
    assert set(failed["n"]) == {13} and set(failed[Experiment.EXCEPTION]) == {"unlucky n"}
    assert walks[walks[Experiment.STATUS]]["label"].str.startswith("walk of").all()
    rs = nb.resultSet("walks")
    assert rs["note"] == "an attribute on a result set"
    assert rs.parameterNames() == ["n", "seed"] and set(rs.resultNames()) == {"final", "mean", "label", "hit"}

    repeated = nb.dataframe("repeated")
    assert len(repeated) == 3
    assert sorted(repeated["epyc.experiment.rep"]) == [0, 1, 2]
    assert set(repeated["epyc.experiment.repetitions"]) == {3}

    paths = nb.dataframe("paths")
    assert sorted(paths["n"]) == [4, 6]
    assert all(isinstance(p, list) and len(p) == 4 for p in paths["path"])
    assert paths["path"][0] == [0.0, 1.0, 2.0, 3.0]

    assert nb.numberOfResults("pending") == 0
    assert sorted(nb.pendingResults("pending")) == ["job-1", "job-2"]
    assert nb.pendingResultParameters("job-1") == {"n": 100, "seed": 1}
    assert nb.pendingResultParameters("job-2") == {"n": 200, "seed": 2}
    assert nb.numberOfResults(HDF5LabNotebook.DEFAULT_RESULTSET) == 0


def write_epyc_layout(path: Path) -> None:
    """A notebook in epyc 1.x's layout, written with plain h5py."""
    text = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["version"] = "1"
        f.attrs["description"] = "hand-made epyc notebook"
        f.attrs["current-resultset"] = "sweep"
        f.attrs["locked"] = False
        f.attrs["creator"] = "a test"
        g = f.create_group("sweep")
        g.attrs["description"] = "a sweep"
        g.attrs["locked"] = True
        g.attrs["owner"] = "ünïcødé"
        g.attrs["count"] = np.int64(3)
        dtype = np.dtype([
            ("x", np.int64), ("y", np.float64), ("ok", bool), ("name", text),
            ("trace", h5py.vlen_dtype(np.float64)),
            (Experiment.STATUS, bool), (Experiment.EXCEPTION, text), (Experiment.END_TIME, text),
        ])
        rows = np.empty(3, dtype=dtype)
        for i in range(3):
            rows[i] = (
                i, i / 2, i % 2 == 0, f"name-{i}é", np.arange(i, dtype=float),
                i != 1, "" if i != 1 else "boom", f"2024-01-0{i + 1}T10:00:00.000001",
            )
        ds = g.create_dataset("results", data=rows)
        ds.attrs["parameters"] = ["x"]
        ds.attrs["results"] = ["y", "ok", "name", "trace"]
        ds.attrs["metadata"] = [Experiment.STATUS, Experiment.EXCEPTION, Experiment.END_TIME]
        pdtype = np.dtype([("x", np.int64), ("epyc.resultset.pending-jobid", text)])
        g.create_dataset("pending", data=np.array([(9, "j9")], dtype=pdtype))
        f.create_group("empty").attrs["description"] = "nothing"


def test_a_file_in_epycs_layout_written_with_h5py_reads(tmp_path):
    path = tmp_path / "hand.h5"
    write_epyc_layout(path)
    nb = HDF5LabNotebook(path, readonly=True)
    assert nb.currentTag() == "sweep" and sorted(nb.keys()) == ["empty", "sweep"]
    rs = nb.resultSet("sweep")
    assert rs.isLocked() and rs.description() == "a sweep"
    assert rs["owner"] == "ünïcødé" and rs["count"] == 3 and type(rs["count"]) is int
    df = nb.dataframe("sweep", only_successful=False)
    assert list(df.columns) == ["x", "y", "ok", "name", "trace", Experiment.STATUS, Experiment.EXCEPTION,
                                Experiment.END_TIME]
    assert df["x"].tolist() == [0, 1, 2] and df["y"].tolist() == [0.0, 0.5, 1.0]
    assert df["name"].tolist() == ["name-0é", "name-1é", "name-2é"]
    assert df["trace"].tolist() == [[], [0.0], [0.0, 1.0]]
    assert df[Experiment.EXCEPTION].tolist() == ["", "boom", ""]
    assert df[Experiment.END_TIME][2] == pd.Timestamp("2024-01-03T10:00:00.000001")
    assert nb.pendingResultParameters("j9") == {"x": 9}


def test_opening_and_closing_an_epyc_file_leaves_it_untouched(epyc_file):
    original = epyc_file.read_bytes()
    nb = HDF5LabNotebook(epyc_file)
    nb.dataframe("walks")
    nb.close()
    assert epyc_file.read_bytes() == original
    assert sorted(p.name for p in epyc_file.parent.iterdir()) == ["epyc.h5"]


def test_a_change_converts_the_epyc_file_and_keeps_the_original(epyc_file):
    original = epyc_file.read_bytes()
    nb = HDF5LabNotebook(epyc_file)
    nb.select("walks")
    nb.addResult(results_dict(99, final=1, mean=0.5, label="new", hit=True))
    nb.resolvePendingResult(results_dict(100), "job-1")
    before = snapshot(nb)
    nb.close()
    assert (epyc_file.parent / "epyc.h5.epyc1.bak").read_bytes() == original
    with h5py.File(epyc_file, "r") as f:
        assert f.attrs["version"] == "2"
    after = HDF5LabNotebook(epyc_file, readonly=True)
    assert_same_snapshot(before, snapshot(after))
    assert after.numberOfResults("walks") == 13


def test_a_read_only_epyc_notebook_is_never_written(epyc_file):
    original = epyc_file.read_bytes()
    nb = HDF5LabNotebook(epyc_file, readonly=True)
    with pytest.raises(NotebookReadOnlyError, match=str(epyc_file)):
        nb.addResult(results_dict(99, final=1))  # refused at once, not at commit
    nb.commit()
    assert epyc_file.read_bytes() == original


def test_an_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "future.h5"
    with h5py.File(path, "w") as f:
        f.attrs["version"] = "3"
    with pytest.raises(NotebookVersionException, match="'3'") as err:
        HDF5LabNotebook(path)
    assert err.value.actualVersion() == "3"


def test_an_hdf5_file_that_is_not_a_notebook_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    original = path.read_bytes()
    for kwargs in ({}, {"create": True}, {"readonly": True}):
        with pytest.raises(NotebookFormatError, match="not a notebook"):
            HDF5LabNotebook(path, **kwargs)
    assert path.read_bytes() == original


def test_a_file_that_is_not_hdf5_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a notebook\n")
    for kwargs in ({}, {"create": True}):
        with pytest.raises(NotebookFormatError, match="not an HDF5 file"):
            HDF5LabNotebook(path, **kwargs)
    assert path.read_text() == "not a notebook\n"
