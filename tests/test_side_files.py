"""The file, not the name: links cannot admit a second writer, side files are never written through a link,
storage outside the file is refused, and a read-only file is never written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
from notebook_cases import results_dict
from test_hdf5_locking import hold, stop

from epyclab import (
    HDF5LabNotebook,
    JSONLabNotebook,
    NotebookFormatError,
    NotebookInUseError,
    NotebookReadOnlyError,
    NotebookSideFileError,
)

FORMATS = [HDF5LabNotebook, JSONLabNotebook]


def _make(cls: type, path: Path, rows: int = 1) -> None:
    with cls(path, create=True) as nb:
        for i in range(rows):
            nb.addResult(results_dict(i, y=float(i)))


@pytest.mark.parametrize(("cls", "how"), [(HDF5LabNotebook, "symlink"), (HDF5LabNotebook, "hardlink"),
                                          (JSONLabNotebook, "symlink")])
def test_a_second_writer_through_a_link_is_refused(cls, how, tmp_path):
    path = tmp_path / "nb"
    _make(cls, path)
    other = tmp_path / "elsewhere" / "alias"
    other.parent.mkdir()
    (os.symlink if how == "symlink" else os.link)(path, other)
    proc = hold(cls, path)  # a real process writes it by its own name
    try:
        with pytest.raises(NotebookInUseError, match="open for writing by"):
            cls(other)
    finally:
        stop(proc)
    # ... and the other way round: held through the link, refused by the name.
    proc = hold(cls, other)
    try:
        with pytest.raises(NotebookInUseError, match="open for writing by"):
            cls(path)
    finally:
        stop(proc)
    # Nothing was lost: the holders' commits (one row each) are in the file.
    assert cls(other, readonly=True).numberOfResults() == 3
    assert cls(path, readonly=True).numberOfResults() == 3


def test_a_hard_linked_json_notebook_is_not_written_by_either_name(tmp_path):
    # A JSON commit replaces the file: the names would become two notebooks that both "succeed".
    path = tmp_path / "nb.json"
    _make(JSONLabNotebook, path)
    other = tmp_path / "alias.json"
    os.link(path, other)
    before = path.read_bytes()
    for name in (path, other):
        with pytest.raises(NotebookReadOnlyError, match=r"2 names \(hard links\).*Copy it"):
            JSONLabNotebook(name)
        assert JSONLabNotebook(name, readonly=True).numberOfResults() == 1
    assert path.read_bytes() == before and os.stat(path).st_nlink == 2


def test_a_writer_through_a_symlink_uses_the_files_own_journal(tmp_path):
    path = tmp_path / "nb.h5"
    _make(HDF5LabNotebook, path)
    link = tmp_path / "link.h5"
    os.symlink(path, link)
    nb = HDF5LabNotebook(link)
    nb.addResult(results_dict(5, y=5.0))
    nb.commit()
    assert os.path.exists(f"{path}.journal") and not os.path.exists(f"{link}.journal")
    # A reader by the real name sees the commit the link's writer journalled.
    assert HDF5LabNotebook(path, readonly=True).numberOfResults() == 2
    nb.close()


@pytest.mark.parametrize("suffix", ["lock", "journal", "undo"])
@pytest.mark.parametrize("readonly", [False, True])
def test_a_symlinked_side_file_is_never_written_through(suffix, readonly, tmp_path):
    path = tmp_path / "nb.h5"
    _make(HDF5LabNotebook, path)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    os.symlink(victim, f"{path}.{suffix}")
    if readonly and suffix == "lock":
        # A reader takes no writer lock: it reads the notebook, and leaves the link alone.
        assert HDF5LabNotebook(path, readonly=True).numberOfResults() == 1
    else:
        with pytest.raises(NotebookSideFileError, match=rf"nb\.h5\.{suffix} is a symbolic link.*Remove the link"):
            HDF5LabNotebook(path, readonly=readonly)
    assert victim.read_text() == "the user's own file\n"
    assert os.path.islink(f"{path}.{suffix}")


def test_a_hard_linked_side_file_is_never_written(tmp_path):
    path = tmp_path / "nb.h5"
    _make(HDF5LabNotebook, path)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    os.link(victim, f"{path}.journal")
    with pytest.raises(NotebookSideFileError, match="hard link"):
        HDF5LabNotebook(path)
    assert victim.read_text() == "the user's own file\n"


def _rewrite_column(path: Path, make) -> str:
    """Replace the first result column's dataset by what ``make(group, name, data)`` creates; its name."""
    with h5py.File(path, "r+") as f:
        group = next(iter(f["resultsets"].values()))["columns"]
        name = "y"
        data = group[name][...]
        del group[name]
        make(group, name, data)
    return name


def test_external_storage_is_refused(tmp_path):
    path = tmp_path / "nb.h5"
    _make(HDF5LabNotebook, path, rows=2)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"private key material!" * 10)

    def external(group, name, data):
        group.create_dataset(name, shape=data.shape, dtype=data.dtype, external=[(str(secret), 0, 16)])

    _rewrite_column(path, external)
    for readonly in (True, False):
        with pytest.raises(NotebookFormatError, match=r"external file\(s\) .*secret\.bin.*never reads"):
            HDF5LabNotebook(path, readonly=readonly)


def test_virtual_datasets_and_external_links_are_refused(tmp_path):
    path = tmp_path / "nb.h5"
    _make(HDF5LabNotebook, path, rows=2)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["y"] = np.array([42.0, 43.0])

    def virtual(group, name, data):
        layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
        layout[:] = h5py.VirtualSource(str(other), "y", shape=data.shape)
        group.create_virtual_dataset(name, layout)

    _rewrite_column(path, virtual)
    with pytest.raises(NotebookFormatError, match="virtual dataset"):
        HDF5LabNotebook(path, readonly=True)

    path2 = tmp_path / "nb2.h5"
    _make(HDF5LabNotebook, path2, rows=2)
    _rewrite_column(path2, lambda g, name, data: g.__setitem__(name, h5py.ExternalLink(str(other), "y")))
    with pytest.raises(NotebookFormatError, match="external link to .*other.h5"):
        HDF5LabNotebook(path2, readonly=True)


@pytest.mark.parametrize("cls", FORMATS)
def test_a_read_only_file_is_refused_for_writing_and_left_as_it_was(cls, tmp_path):
    path = tmp_path / "nb"
    _make(cls, path, rows=2)
    os.chmod(path, 0o444)
    before = path.read_bytes()
    with pytest.raises(NotebookReadOnlyError, match=rf"{path} is a read-only file.*readonly=True.*chmod u\+w"):
        cls(path, create=True)
    assert path.read_bytes() == before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert cls(path, readonly=True).numberOfResults() == 2
    assert not os.path.exists(f"{path}.lock")


# Every way epyc code may try to change a notebook (as a lab's sweep or by hand).
CHANGES = {
    "addResult": lambda nb: nb.addResult({"parameters": {"x": 9}, "metadata": {}, "results": {"y": 1.0}}),
    "addResultSet": lambda nb: nb.addResultSet("another"),
    "setDescription": lambda nb: nb.setDescription("changed"),
    "attribute": lambda nb: nb.current().__setitem__("note", "changed"),
    "addPendingResult": lambda nb: nb.addPendingResult({"x": 9}, "job-9"),
    "deleteResultSet": lambda nb: nb.deleteResultSet("other"),
    "a lab's sweep": lambda nb: _sweep(nb),
}


def _sweep(nb):
    from epyclab import Experiment, Lab

    class One(Experiment):
        def do(self, params):
            return {"y": 1.0}

    lab = Lab(nb)
    lab["x"] = [7, 8]
    lab.runExperiment(One(), progress=False)


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("cls", FORMATS)
def test_a_read_only_file_opens_for_reading_as_in_epyc_and_refuses_every_change(cls, tmp_path, change, caplog):
    # epyc opens an archived (read-only) notebook; epyclab does too, read-only, and says so once.
    path = tmp_path / "nb"
    _make(cls, path, rows=2)
    with cls(path) as nb:
        nb.addResultSet("other")
        nb.select(nb.resultSets()[0])
    os.chmod(path, 0o444)
    before = path.read_bytes()
    with caplog.at_level("WARNING", logger="epyclab"):
        nb = cls(path)
    assert f"{path} is a read-only file" in caplog.text and "chmod u+w" in caplog.text
    assert nb.isReadOnly() and nb.numberOfResults() == 2 and len(nb.dataframe()) == 2
    with pytest.raises(NotebookReadOnlyError, match=rf"{path} is a read-only file.*chmod u\+w"):
        CHANGES[change](nb)
    nb.close()
    assert path.read_bytes() == before and stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert sorted(os.listdir(tmp_path)) == ["nb"]  # no lock, journal or backup beside it
