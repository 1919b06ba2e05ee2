"""A plain h5py reader in another process never makes a writer wait silently.

HDF5 holds a shared ``flock`` on a file for as long as an ``h5py.File`` is
open. Opening the notebook for writing and committing wait for no reader;
folding the journal in (close, checkpoint) cannot happen while one holds the
file, and says so at once at WARNING, naming the process and the fix; nothing
committed is lost. Each test starts a real process that opens the file with
plain h5py and stops it by its PID.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import h5py
import pytest
from notebook_cases import results_dict

from epyclab import HDF5LabNotebook
from epyclab.errors import NotebookInUseError
from epyclab.notebooks.locks import DataLock, holders

# Opens argv[1] with plain h5py, says so, and keeps it open until killed.
PLAIN_READER = """
import sys, time
import h5py
f = h5py.File(sys.argv[1], "r")
print(len(f["resultsets"]), flush=True)
time.sleep(600)
"""


class PlainReader:
    """A process holding the notebook open with plain h5py; stopped by its PID."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PLAIN_READER, path], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip().isdigit()
        self.pid = self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def notebook(tmp_path):
    path = str(tmp_path / "n.h5")
    with HDF5LabNotebook(path, create=True) as nb:
        nb.addResult(results_dict(0, y=0.5))
    return path


def test_the_holder_is_found_by_its_pid(notebook):
    reader = PlainReader(notebook)
    try:
        assert reader.pid in holders(notebook)
    finally:
        reader.stop()
    assert reader.pid not in holders(notebook)


def test_opening_and_committing_wait_for_no_plain_reader(notebook, monkeypatch, caplog):
    # No wait at all is allowed: a writer that needed the reader gone would fail at once.
    monkeypatch.setattr(DataLock, "Timeout", 0.0)
    monkeypatch.setattr(HDF5LabNotebook, "CheckpointInterval", 0.0)  # every commit tries to fold
    reader = PlainReader(notebook)
    try:
        with caplog.at_level(logging.INFO, logger="epyclab"):
            nb = HDF5LabNotebook(notebook)
            for i in range(1, 4):
                nb.addResult(results_dict(i, y=i / 2))
                nb.commit()
            assert HDF5LabNotebook(notebook, readonly=True).numberOfResults() == 4
            postponed = [r.getMessage() for r in caplog.records if "postponed" in r.getMessage()]
            assert postponed and all(f"process {reader.pid}" in m for m in postponed)
            caplog.clear()
            nb.close()
        # close() could not fold the journal in: it says so, naming the reader and the fix.
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(f"process {reader.pid}" in m and "close the h5py.File" in m and "readonly=True" in m
                   and "nothing is lost" in m for m in warnings), warnings
        assert HDF5LabNotebook(notebook, readonly=True).numberOfResults() == 4
    finally:
        reader.stop()
    # Once the reader is gone, the next writer folds the journal in: plain h5py sees every row.
    HDF5LabNotebook(notebook).close()
    assert not os.path.exists(notebook + ".journal")
    with h5py.File(notebook, "r") as f:
        assert next(iter(f["resultsets"].values())).attrs["rows"] == 4


def test_a_fold_that_waits_says_so_at_once_naming_the_reader(notebook, caplog):
    nb = HDF5LabNotebook(notebook)
    nb.addResult(results_dict(1, y=1.5))
    nb.commit()
    reader = PlainReader(notebook)
    said = []

    class StopTheReaderWhenTold(logging.Handler):
        # The user reads the warning and closes the reader: the wait then ends, well before its limit.
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.WARNING and f"process {reader.pid}" in record.getMessage():
                said.append(record.getMessage())
                reader.stop()

    handler = StopTheReaderWhenTold()
    logging.getLogger("epyclab").addHandler(handler)
    try:
        assert nb.checkpoint() is True  # waits up to DataLock.Timeout (60 s): it said so, and got the file
    finally:
        logging.getLogger("epyclab").removeHandler(handler)
        reader.stop()
        nb.close()
    assert len(said) == 1
    assert notebook in said[0] and "close the h5py.File" in said[0] and "readonly=True" in said[0]
    with h5py.File(notebook, "r") as f:
        assert next(iter(f["resultsets"].values())).attrs["rows"] == 2


def test_a_wait_that_ends_in_vain_names_the_reader_and_the_fix(notebook, monkeypatch):
    reader = PlainReader(notebook)
    try:
        with pytest.raises(NotebookInUseError) as err:
            DataLock(notebook).acquire_or_fail(exclusive=True, wait=0.2)
    finally:
        reader.stop()
    message = str(err.value)
    assert notebook in message and f"process {reader.pid}" in message
    assert "close the h5py.File in the process that opened it" in message and "readonly=True" in message
