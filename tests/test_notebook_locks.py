"""The locks on their own (epyclab/notebooks/locks.py), on real files and real processes.

One writer per notebook, whatever name it comes through (a second object in
this process, another process, a hard link), told who holds it; the right
passes on once released or dropped; readers and a change exclude each other.
"""

from __future__ import annotations

import gc
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from epyclab.errors import NotebookInUseError
from epyclab.notebooks.locks import DataLock, WriterLock
from epyclab.notebooks.sidefiles import side_path

# Holds a flock on argv[1] (writing argv[2] into it first) until its stdin closes.
HOLD_FILE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, sys.argv[2].encode())
print("held", flush=True)
sys.stdin.read()
"""

# Opens argv[1] for writing with epyclab's own WriterLock until its stdin closes.
HOLD_WRITER = """
import sys
from epyclab.notebooks.locks import WriterLock
lock = WriterLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


class Holder:
    """A process holding a lock, stopped by closing its stdin (and waited for)."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def notebook(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "nb.h5"
    path.write_bytes(b"a notebook")
    yield str(path)


def test_the_writer_lock_notes_its_holder_and_goes_with_release(notebook: str) -> None:
    lock = WriterLock(notebook)
    lock.release()  # never acquired: nothing to give up, nothing removed
    lock.acquire()
    lock_file = Path(side_path(notebook, "lock"))
    info = json.loads(lock_file.read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["program"] == " ".join(sys.argv)[:200]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", info["since"])
    lock.release()
    assert not lock_file.exists()
    lock.release()  # twice is harmless
    again = WriterLock(notebook)
    again.acquire()
    again.release()


def test_a_second_writer_in_this_process_is_told_to_use_the_first(notebook: str) -> None:
    first = WriterLock(notebook)
    first.acquire()
    try:
        with pytest.raises(NotebookInUseError) as err:
            WriterLock(notebook).acquire()
        assert str(err.value) == (
            f"notebook {notebook} is already open for writing in this process (by another notebook object); "
            f"use that one, or close() it before opening it again"
        )
    finally:
        first.release()


def test_a_writer_dropped_without_release_frees_the_notebook(notebook: str) -> None:
    lock = WriterLock(notebook)
    lock.acquire()
    del lock
    gc.collect()
    other = WriterLock(notebook)
    other.acquire()  # neither "in this process" nor held
    other.release()


def test_a_writer_in_another_process_is_named(notebook: str) -> None:
    holder = Holder(HOLD_WRITER, notebook)
    try:
        with pytest.raises(NotebookInUseError) as err:
            WriterLock(notebook).acquire()
    finally:
        holder.stop()
    pattern = (
        rf"notebook {re.escape(notebook)} is open for writing by process {holder.proc.pid} on host "
        rf"{re.escape(socket.gethostname())} \(-c {re.escape(notebook)}\) since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d; "
        r"close it there \(close\(\) or end that program\), or open it here with readonly=True to read it"
    )
    assert re.fullmatch(pattern, str(err.value)), str(err.value)
    lock = WriterLock(notebook)  # the holder ended: the notebook is free
    lock.acquire()
    lock.release()


@pytest.mark.parametrize(
    "note, named",
    [
        ("", "another process"),
        ("not json", "another process"),
        ('{"pid": 7, "host": "h", "since": "then"}', "process 7 on host h since then"),
        ('{"pid": 7, "host": "h", "program": "run.py", "since": "then"}', "process 7 on host h (run.py) since then"),
    ],
)
def test_the_holder_is_named_from_its_note(notebook: str, note: str, named: str) -> None:
    holder = Holder(HOLD_FILE, side_path(notebook, "lock"), note)
    try:
        with pytest.raises(NotebookInUseError, match=f"is open for writing by {re.escape(named)}; close it there"):
            WriterLock(notebook).acquire()
    finally:
        holder.stop()


def test_a_writer_through_a_hard_link_is_refused(notebook: str, tmp_path: Path) -> None:
    link = tmp_path / "other-name.h5"
    os.link(notebook, link)
    holder = Holder(HOLD_WRITER, notebook)
    try:
        with pytest.raises(NotebookInUseError) as err:
            WriterLock(str(link)).acquire()
    finally:
        holder.stop()
    assert str(err.value) == (
        f"notebook {link} is open for writing by another process under another name "
        f"(a hard link to the same file); close it there, or open it here with readonly=True"
    )
    # Refused, it left nothing behind: its own lock file is gone and the notebook is free.
    assert not Path(side_path(str(link), "lock")).exists()
    lock = WriterLock(str(link))
    lock.acquire()
    lock.release()


def test_a_notebook_created_after_the_lock_is_locked_by_lock_file(notebook: str, tmp_path: Path) -> None:
    path = tmp_path / "new.h5"
    lock = WriterLock(str(path))
    lock.acquire()  # no file yet: only the lock file
    path.write_bytes(b"created")
    lock.lock_file()
    os.link(path, tmp_path / "link.h5")
    try:
        with pytest.raises(NotebookInUseError, match="under another name"):
            WriterLock(str(tmp_path / "link.h5")).acquire()
    finally:
        lock.release()
    free = WriterLock(str(tmp_path / "link.h5"))  # released: the inode lock went too
    free.acquire()
    free.release()


def test_readers_share_and_a_change_excludes_them(notebook: str) -> None:
    a, b, c = DataLock(notebook), DataLock(notebook), DataLock(notebook)
    assert a.acquire(exclusive=False, wait=0) and b.acquire(exclusive=False, wait=0)
    assert c.acquire(exclusive=True, wait=0) is False
    a.release()
    b.release()
    assert c.acquire(exclusive=True, wait=0)
    assert a.acquire(exclusive=False, wait=0) is False
    c.share()  # the writer turns its lock into a shared one: readers come in, writers do not
    assert a.acquire(exclusive=False, wait=0)
    assert b.acquire(exclusive=True, wait=0) is False
    a.release()
    c.release()
    c.release()  # twice is harmless
    assert b.acquire(exclusive=True, wait=0)
    b.release()


def test_a_reader_waits_for_a_change_then_gives_up_saying_why(notebook: str) -> None:
    class Patient(DataLock):
        Timeout = 0.3

    writer = DataLock(notebook)
    assert writer.acquire(exclusive=True, wait=0)
    try:
        started = time.monotonic()
        with pytest.raises(NotebookInUseError) as err:
            Patient(notebook).acquire_or_fail(exclusive=False)
        assert time.monotonic() - started >= 0.3  # it waited, as told
        assert str(err.value) == (
            f"notebook {notebook} has been changed by its writer (this process ({os.getpid()})) for more "
            f"than 0 s; try again later"
        )
        with pytest.raises(NotebookInUseError) as err:
            DataLock(notebook).acquire_or_fail(exclusive=True, wait=1)
        assert str(err.value) == (
            f"notebook {notebook} has been held open for reading by this process ({os.getpid()}) for more "
            f"than 1 s; close the h5py.File in the process that opened it, or open the notebook there with "
            f"epyclab's readonly=True, which lets go of the file once it is read, then try again"
        )
    finally:
        writer.release()
    reader = DataLock(notebook)
    reader.acquire_or_fail(exclusive=False, wait=0)
    reader.release()


def test_a_reader_gets_the_lock_once_the_change_ends(notebook: str) -> None:
    holder = Holder(HOLD_FILE, notebook, "")
    reader = DataLock(notebook)
    try:
        assert reader.acquire(exclusive=False, wait=0.05) is False
    finally:
        holder.stop()
    assert reader.acquire(exclusive=False, wait=5)
    reader.release()
