"""One writer at a time, with a clear error for the second; readers work while a writer writes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from notebook_cases import results_dict
from test_crash_safety import Writer

from epyclab import (
    HDF5LabNotebook,
    JSONLabNotebook,
    NotebookInUseError,
    NotebookOverwriteError,
    NotebookReadOnlyError,
)
from epyclab.notebooks.locks import DataLock

TESTS = Path(__file__).resolve().parent

HOLDER = """
import sys, time
import epyclab
nb = getattr(epyclab, sys.argv[1])(sys.argv[2])
nb.addResult({"parameters": {"i": 0}, "metadata": {}, "results": {"y": 1.0}})
nb.commit()
print("ready", flush=True)
time.sleep(120)
"""


def hold(cls: type, path: Path) -> subprocess.Popen:
    """A process that opens the notebook for writing and keeps it open."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, cls.__name__, str(path)], stdout=subprocess.PIPE, text=True, cwd=TESTS
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("cls", [HDF5LabNotebook, JSONLabNotebook])
def test_a_second_writer_gets_a_clear_error_naming_the_first(cls, tmp_path):
    path = tmp_path / "nb"
    proc = hold(cls, path)
    try:
        with pytest.raises(NotebookInUseError) as err:
            cls(path)
        text = str(err.value)
        assert f"process {proc.pid}" in text and "readonly=True" in text
        # Reading works meanwhile, and sees what the writer committed.
        assert cls(path, readonly=True).numberOfResults() == 1
    finally:
        stop(proc)
    # The writer was killed: its lock went with it.
    nb = cls(path)
    assert nb.numberOfResults() == 1
    nb.close()


def test_a_notebook_dropped_without_close_frees_its_lock_and_keeps_its_commits(tmp_path):
    # As when a Jupyter cell that opens a notebook runs again.
    nb = HDF5LabNotebook(tmp_path / "nb.h5", create=True)
    nb.addResult(results_dict(0, y=1.0))
    nb.commit()
    nb.addResult(results_dict(1, y=2.0))  # never committed
    del nb
    nb = HDF5LabNotebook(tmp_path / "nb.h5")
    assert nb.numberOfResults() == 1
    nb.close()


def test_readers_see_whole_commits_while_a_writer_commits(tmp_path):
    path = tmp_path / "nb.h5"
    w = Writer(HDF5LabNotebook, path, 500)
    try:
        assert w.wait_for("committed ")
        seen = []
        for _ in range(8):
            assert w.wait_for("commit")
            nb = HDF5LabNotebook(path, readonly=True)
            df = nb.dataframe(only_successful=False)
            assert df["i"].tolist() == list(range(len(df)))
            assert len(df) % 500 == 0  # whole commits only
            seen.append(len(df))
        assert seen == sorted(seen) and seen[-1] > seen[0]
    finally:
        w.kill()


def test_a_read_only_notebook_cannot_be_saved(tmp_path):
    path = tmp_path / "nb.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        nb.addResult(results_dict(0, y=1.0))
    ro = HDF5LabNotebook(path, readonly=True)
    assert ro.isReadOnly()
    ro.commit()  # nothing changed: nothing to refuse
    with pytest.raises(NotebookReadOnlyError, match="read-only"):
        ro.addResult(results_dict(1, y=2.0))  # refused at once, not at commit
    ro.commit()
    assert HDF5LabNotebook(path, readonly=True).numberOfResults() == 1
    with pytest.raises(FileNotFoundError):
        HDF5LabNotebook(tmp_path / "absent.h5", readonly=True)


def test_a_closed_notebook_refuses_changes_until_opened_again(tmp_path):
    path = tmp_path / "nb.h5"
    nb = HDF5LabNotebook(path, create=True)
    nb.close()
    other = HDF5LabNotebook(path)
    other.addResult(results_dict(0, y=1.0))
    other.close()
    # Refused at once, before the row is taken: it could never be saved, and open() reads the file again.
    with pytest.raises(NotebookReadOnlyError, match="is closed and cannot change"):
        nb.addResult(results_dict(5, y=5.0))
    assert nb.numberOfResults() == 0
    nb.commit()  # nothing changed: nothing to refuse
    nb.open()  # reads the file again: what the other writer added
    assert nb.numberOfResults() == 1 and nb.isOpen()
    nb.close()


def test_a_checkpoint_waits_for_a_plain_h5py_reader_and_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(DataLock, "Timeout", 0.2)
    path = tmp_path / "nb.h5"
    nb = HDF5LabNotebook(path, create=True)
    nb.addResult(results_dict(0, y=1.0))
    nb.commit()
    with h5py.File(path, "r"):  # HDF5 locks the file while it is open
        assert nb.checkpoint() is False
        nb.addResult(results_dict(1, y=2.0))
        nb.commit()
        assert HDF5LabNotebook(path, readonly=True).numberOfResults() == 2
    assert nb.checkpoint() is True
    nb.close()
    with h5py.File(path, "r") as f:
        group = next(iter(f["resultsets"].values()))
        assert group.attrs["rows"] == 2


def test_create_refuses_to_drop_pending_results_unless_forced(tmp_path):
    path = tmp_path / "nb.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        nb.addPendingResult({"n": 1}, "job-1")
        nb.addPendingResult({"n": 2}, "job-2")
    with pytest.raises(NotebookOverwriteError, match="2 pending"):
        HDF5LabNotebook(path, create=True)
    assert HDF5LabNotebook(path, readonly=True).numberOfAllPendingResults() == 2
    nb = HDF5LabNotebook(path, create=True, force=True, description="fresh")
    assert nb.numberOfAllPendingResults() == 0 and nb.description() == "fresh"
    nb.close()
    assert HDF5LabNotebook(path, readonly=True).numberOfAllPendingResults() == 0


PENDING_THEN_KILLED = """
import sys, time
from epyclab import HDF5LabNotebook
nb = HDF5LabNotebook(sys.argv[1], create=True)
nb.addPendingResult({"n": 1}, "job-1")
nb.commit()  # into the journal only: the process is killed before any checkpoint
print("ready", flush=True)
time.sleep(120)
"""


def test_create_counts_pending_results_a_killed_writer_left_in_its_journal(tmp_path):
    path = tmp_path / "nb.h5"
    proc = subprocess.Popen([sys.executable, "-c", PENDING_THEN_KILLED, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        stop(proc)
    with pytest.raises(NotebookOverwriteError, match="1 pending"):
        HDF5LabNotebook(path, create=True)
    assert HDF5LabNotebook(path, readonly=True).pendingResults() == ["job-1"]


def test_create_without_pending_results_starts_afresh(tmp_path):
    path = tmp_path / "nb.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        nb.addResult(results_dict(0, y=1.0))
    with HDF5LabNotebook(path, create=True) as nb:
        assert nb.numberOfResults() == 0


def test_lock_waits_are_bounded(tmp_path, monkeypatch):
    # A reader never hangs behind a checkpoint that does not end: it gives up with a clear error.
    monkeypatch.setattr(DataLock, "Timeout", 0.2)
    path = tmp_path / "nb.h5"
    HDF5LabNotebook(path, create=True).close()
    blocker = DataLock(str(path))
    assert blocker.acquire(exclusive=True)
    try:
        start = time.monotonic()
        with pytest.raises(NotebookInUseError, match="try again"):
            HDF5LabNotebook(path, readonly=True)
        assert time.monotonic() - start < 10
    finally:
        blocker.release()


def test_a_notebook_in_a_directory_that_does_not_exist_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory .*missing does not exist"):
        HDF5LabNotebook(tmp_path / "missing" / "nb.h5")
    assert not (tmp_path / "missing").exists()
