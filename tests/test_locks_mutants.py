"""The writer lock when things happen in an awkward order, or on awkward descriptors.

- the previous writer releases (removes the lock file) between this writer
  opening the lock file and locking it; or a third writer takes a new lock
  file in that moment: there is still exactly one writer;
- a writer killed with its note in the lock file: the next writer's note
  replaces it whole, so a refused writer is told who really holds it;
- a process started with standard input closed gets descriptor 0 for its
  lock file (or the notebook file): releasing still releases;
- the lock file is readable as the notebook is (0644 under a umask of 0).

The first case is an interleaving of two real writers at one exact point; the
point is reached by running the other writer's real release (or acquire) right
after this writer's ``open_side`` returns, since no timing can hold the
window open from outside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from epyclab.errors import NotebookInUseError
from epyclab.notebooks import locks
from epyclab.notebooks.locks import WriterLock
from epyclab.notebooks.sidefiles import side_path


@pytest.fixture
def notebook(tmp_path: Path) -> str:
    path = tmp_path / "nb.h5"
    path.write_bytes(b"a notebook")
    return str(path)


def after_first_open(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Run ``action`` once, right after the next writer opens its lock file."""
    real = locks.open_side
    pending = [action]

    def open_then_act(*args: Any, **kwargs: Any) -> int:
        fd = real(*args, **kwargs)
        if pending:
            pending.pop()()
        return fd

    monkeypatch.setattr(locks, "open_side", open_then_act)


def test_a_lock_file_removed_between_open_and_lock_is_opened_again(notebook, monkeypatch) -> None:
    first = WriterLock(notebook)
    first.acquire()
    second = WriterLock(notebook)
    after_first_open(monkeypatch, first.release)  # the first writer closes: its lock file goes
    second.acquire()
    try:
        # The second writer holds the lock file that exists now, so a third is refused.
        with pytest.raises(NotebookInUseError):
            WriterLock(notebook).acquire()
        assert os.path.exists(side_path(notebook, "lock"))
    finally:
        second.release()


def test_a_lock_file_replaced_between_open_and_lock_leaves_the_new_holder_alone(notebook, monkeypatch) -> None:
    first = WriterLock(notebook)
    first.acquire()
    third = WriterLock(notebook)

    def first_goes_and_third_comes() -> None:
        first.release()
        third.acquire()

    second = WriterLock(notebook)
    after_first_open(monkeypatch, first_goes_and_third_comes)
    try:
        with pytest.raises(NotebookInUseError):
            second.acquire()
    finally:
        third.release()
    second.acquire()  # and once the third has gone, the second gets it
    second.release()


def test_the_note_of_a_writer_killed_long_ago_is_replaced_whole(notebook: str) -> None:
    lock_path = Path(side_path(notebook, "lock"))
    stale = {"pid": 1, "host": "elsewhere", "program": "x" * 150, "since": "2020-01-01T00:00:00"}
    lock_path.write_text(json.dumps(stale))  # left behind: its writer was killed, so it never removed it
    lock = WriterLock(notebook)
    lock.acquire()
    try:
        note = json.loads(lock_path.read_text())
        assert note["pid"] == os.getpid() and note["host"] != "elsewhere"
    finally:
        lock.release()


def test_the_lock_file_is_readable_as_the_notebook_is(notebook: str) -> None:
    old = os.umask(0)
    try:
        lock = WriterLock(notebook)
        lock.acquire()
    finally:
        os.umask(old)
    try:
        assert os.stat(side_path(notebook, "lock")).st_mode & 0o777 == 0o644
    finally:
        lock.release()


ON_DESCRIPTOR_0 = """
import os, sys
from epyclab.errors import NotebookInUseError
from epyclab.notebooks.locks import WriterLock
notebook, which = sys.argv[1], sys.argv[2]
lock = WriterLock(notebook)
if which == "lock file":
    os.close(0)  # the lock file gets descriptor 0
    lock.acquire()
else:
    os.rename(notebook, notebook + ".away")
    lock.acquire()  # no notebook file yet: the lock file alone
    os.rename(notebook + ".away", notebook)
    os.close(0)
    lock.lock_file()  # the notebook file gets descriptor 0
lock.release()
print("released")
again = WriterLock(notebook)
try:
    again.acquire()
except NotebookInUseError as exc:
    print("refused:", exc)
else:
    print("taken again")
    again.release()
"""


@pytest.mark.parametrize("which", ["lock file", "notebook file"])
def test_a_lock_on_descriptor_0_is_released(notebook: str, which: str) -> None:
    done = subprocess.run([sys.executable, "-c", ON_DESCRIPTOR_0, notebook, which], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.split("\n")[:2] == ["released", "taken again"], done.stdout + done.stderr
    assert not os.path.exists(side_path(notebook, "lock"))


def test_releasing_twice_never_removes_the_next_writers_lock(notebook: str) -> None:
    first = WriterLock(notebook)
    first.acquire()
    first.release()
    second = WriterLock(notebook)
    second.acquire()
    try:
        first.release()  # a second close() of the first notebook object
        assert os.path.exists(side_path(notebook, "lock"))
        with pytest.raises(NotebookInUseError):
            WriterLock(notebook).acquire()
    finally:
        second.release()


DATA_LOCK_TWICE = """
import os, sys
from epyclab.notebooks.locks import DataLock
DataLock(sys.argv[1]).release()  # released before it was taken: nothing to close
lock = DataLock(sys.argv[1])
assert lock.acquire(exclusive=False)  # the default wait (DataLock.Timeout) on a free file
lock.release()
lock.release()  # a second release must close nothing (descriptor 1 is this process's stdout)
os.close(0)
assert lock.acquire(exclusive=True, wait=0)  # on descriptor 0 now
lock.release()
assert DataLock(sys.argv[1]).acquire(exclusive=True, wait=0)  # so released it is free again
print("still writing", flush=True)
"""


def test_a_data_lock_released_twice_closes_nothing_else(notebook: str) -> None:
    done = subprocess.run([sys.executable, "-c", DATA_LOCK_TWICE, notebook], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == "still writing\n", done.stderr
