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

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

from epyclab.errors import NotebookInUseError
from epyclab.notebooks import locks
from epyclab.notebooks.locks import READER_FIX, DataLock, WriterLock, describe_holders, holders
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


# ---- waiting for the data lock: what the user is told, and when ------------------------------------------


class Said(logging.Handler):
    """Keeps epyclab's records (level, message, when) and lets go of ``holder`` on the record that ``release_on``
    accepts, as a user who reads the message and closes the other program does."""

    def __init__(self, holder: DataLock, release_on: Any) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[int, str]] = []
        self._holder, self._release_on = holder, release_on

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))
        if self._release_on(self.records):
            self._holder.release()


@pytest.fixture
def told() -> Iterator[Any]:
    """Attach a :class:`Said` to epyclab's logger at INFO (restored afterwards); yields a function making one."""
    log = logging.getLogger("epyclab")
    level, handlers = log.level, []
    log.setLevel(logging.INFO)

    def attach(holder: DataLock, release_on: Any) -> Said:
        handler = Said(holder, release_on)
        log.addHandler(handler)
        handlers.append(handler)
        return handler

    yield attach
    for h in handlers:
        log.removeHandler(h)
    log.setLevel(level)


class QuietFor03(DataLock):
    QuietWait = 0.3


def test_a_reader_waiting_for_a_change_says_so_at_info_then_once_at_warning_after_the_quiet_wait(
    notebook: str, told: Any
) -> None:
    writer = DataLock(notebook)
    assert writer.acquire(exclusive=True, wait=0)
    # The writer's change ends when the reader's second message (of any level) comes.
    said = told(writer, lambda records: len(records) == 2)
    started = time.monotonic()
    reader = QuietFor03(notebook)
    try:
        assert reader.acquire(exclusive=False, wait=6), "the reader gave up: it was never told to stop waiting"
        elapsed = time.monotonic() - started
    finally:
        reader.release()
        writer.release()
    assert [level for level, _ in said.records] == [logging.INFO, logging.WARNING], said.records
    # The same words both times: how long so far (the time it had waited), the notebook and its writer.
    words = re.compile(rf"waiting \((\d+\.\d) s so far, up to 6 s\) for the writer of notebook {re.escape(notebook)} "
                       rf"\(this process \({os.getpid()}\)\) to finish changing it")
    first, second = (words.fullmatch(m) for _, m in said.records)
    assert first and second, said.records
    # Said at once, then again once the quiet wait (0.3 s) had passed.
    assert float(first[1]) <= float(second[1]) <= elapsed + 0.05
    assert float(second[1]) >= 0.3


class ReleasedOnce:
    """A lock released once, by whichever thread comes first (the logging handler, or a safety net)."""

    def __init__(self, lock: DataLock) -> None:
        self._lock, self._mutex, self._done = lock, threading.Lock(), False

    def release(self) -> None:
        with self._mutex:
            if not self._done:
                self._done = True
                self._lock.release()


def test_a_change_waiting_for_readers_warns_at_once_naming_them_and_the_fix(notebook: str, told: Any) -> None:
    me = f"this process ({os.getpid()})"
    for doing, wait, call in (
        ("", 60, lambda lock: lock.acquire(exclusive=True)),  # the default wait: DataLock.Timeout (60 s)
        ("", 5, lambda lock: lock.acquire_or_fail(exclusive=True, wait=5)),
        ("to fold it in", 5, lambda lock: lock.acquire(exclusive=True, wait=5, doing="to fold it in")),
    ):
        reader = DataLock(notebook)
        assert reader.acquire(exclusive=False, wait=0)
        once = ReleasedOnce(reader)
        said = told(once, lambda records: True)  # the reader closes its file once told
        # Were it never told, the reader would still let go after 8 s (so the wait never runs to 60 s).
        safety = threading.Timer(8, once.release)
        safety.start()
        writer = QuietFor03(notebook)
        try:
            assert call(writer) in (True, None)
        finally:
            safety.cancel()
            writer.release()
            once.release()
            logging.getLogger("epyclab").removeHandler(said)
        assert said.records == [(
            logging.WARNING,
            f"waiting up to {wait} s{' ' + doing if doing else ''} for the readers of notebook {notebook} to let go "
            f"of it: {me} holds it open for reading; {READER_FIX}",
        )]


def test_nothing_is_said_while_the_logger_would_drop_it(notebook: str) -> None:
    log = logging.getLogger("epyclab")
    level = log.level
    log.setLevel(logging.ERROR)
    reader = DataLock(notebook)
    assert reader.acquire(exclusive=False, wait=0)

    class Counting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    seen: list[logging.LogRecord] = []
    handler = Counting(logging.DEBUG)
    log.addHandler(handler)
    try:
        assert DataLock(notebook).acquire(exclusive=True, wait=0.1) is False
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        reader.release()
    assert seen == []


# ---- the writer's note ------------------------------------------------------------------------------------


def test_the_note_keeps_the_first_200_characters_of_a_long_command_line(notebook: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["run.py", "x" * 300])
    lock = WriterLock(notebook)
    lock.acquire()
    try:
        note = json.loads(Path(side_path(notebook, "lock")).read_text())
    finally:
        lock.release()
    assert note["program"] == ("run.py " + "x" * 300)[:200]


@pytest.mark.parametrize("note", ["{}", "[1, 2]", "5", '"text"', "{\"pid\": 7"])
def test_a_note_that_is_not_a_writers_note_names_another_process(notebook: str, note: str) -> None:
    lock_path = side_path(notebook, "lock")
    Path(lock_path).write_text(note)
    fd = os.open(lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held as another writer holds it (no WriterLock of this process)
    try:
        with pytest.raises(NotebookInUseError) as err:
            WriterLock(notebook).acquire()
    finally:
        os.close(fd)
    assert str(err.value) == (
        f"notebook {notebook} is open for writing by another process; close it there (close() or end that "
        f"program), or open it here with readonly=True to read it"
    )


# ---- who holds a notebook open ------------------------------------------------------------------------------

# Takes a lock on argv[1] of the kind argv[2] says ("flock" shared, or a POSIX "lockf" lock on byte 0), says "held",
# and keeps it until its stdin closes.
HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
if sys.argv[2] == "flock":
    fcntl.flock(fd, fcntl.LOCK_SH)
else:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)  # byte 0 (the writer's own is far past the end)
print("held", flush=True)
sys.stdin.read()
"""


class Holding:
    """A process holding a lock on a file (see HOLD), stopped by closing its stdin and waited for."""

    def __init__(self, script: Path, path: str, kind: str, *extra: bytes) -> None:
        self.argv = [os.fsencode(sys.executable), os.fsencode(script), os.fsencode(path), kind.encode(), *extra]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"held"

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0
        self.proc.stdout.close()


@pytest.fixture
def hold_script(tmp_path: Path) -> Path:
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    return script


def test_holders_are_the_processes_with_a_whole_file_lock_each_named_once(
    notebook: str, tmp_path: Path, hold_script: Path
) -> None:
    assert holders(notebook) == [] and describe_holders(notebook) == "another process"
    before, after = tmp_path / "before", tmp_path / "after"
    before.write_bytes(b"")
    after.write_bytes(b"")
    unrelated = [DataLock(str(before))]
    assert unrelated[0].acquire(exclusive=False, wait=0)
    writer = WriterLock(notebook)
    writer.acquire()  # its byte lock on the notebook's inode (an OFD lock, no process id) is no holder
    byte_lock = Holding(hold_script, notebook, "lockf")  # neither is another program's POSIX byte lock
    readers = [DataLock(notebook), DataLock(notebook)]  # this process, twice
    try:
        assert holders(notebook) == []
        for r in readers:
            assert r.acquire(exclusive=False, wait=0)
        unrelated.append(DataLock(str(after)))
        assert unrelated[1].acquire(exclusive=False, wait=0)
        assert holders(notebook) == [os.getpid()]
        assert describe_holders(notebook) == f"this process ({os.getpid()})"
    finally:
        for lock in readers + unrelated:
            lock.release()
        byte_lock.stop()
        writer.release()
    assert holders(notebook) == []


def test_another_holder_is_named_by_its_command_line(notebook: str, hold_script: Path) -> None:
    reader = DataLock(notebook)
    assert reader.acquire(exclusive=False, wait=0)
    # A long command line, with an argument that is not UTF-8 (a Latin-1 file name).
    other = Holding(hold_script, notebook, "flock", b"caf\xe9-" + b"y" * 100)
    try:
        named = describe_holders(notebook)
        pids = holders(notebook)
    finally:
        other.stop()
        reader.release()
    command = b" ".join(other.argv).decode("utf-8", "replace")
    assert len(command) > 120
    assert sorted(pids) == sorted([os.getpid(), other.proc.pid])
    assert sorted(named.split(", ")) == sorted([f"this process ({os.getpid()})",
                                                f"process {other.proc.pid} ({command[:120]})"])


# Run as process 1 of a new pid namespace (a container): holds argv[1] itself and prints who holds it. The
# test's own lock, taken outside the namespace, is not shown there.
IN_NAMESPACE = """
import fcntl, os, sys
from epyclab.notebooks.locks import describe_holders, holders
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_SH)
print(os.getpid(), holders(sys.argv[1]), describe_holders(sys.argv[1]).split(" (")[0])
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_holder_that_is_process_1_of_its_pid_namespace_is_named(notebook: str) -> None:
    outside = DataLock(notebook)
    assert outside.acquire(exclusive=False, wait=0)
    try:
        done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", IN_NAMESPACE,
                               notebook], capture_output=True, text=True, timeout=60)
    finally:
        outside.release()
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("new PID namespaces are not permitted here (a container without CAP_SYS_ADMIN)")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1 [1] this process\n", done.stdout + done.stderr


# Takes a shared flock on argv[1], leaves it to a child it forks (which prints its pid and waits for its stdin
# to close), and ends: the lock is still noted under the process that took it, which is gone.
LEFT_TO_A_CHILD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_SH)
if os.fork() == 0:
    print(os.getpid(), flush=True)
    sys.stdin.read()
os._exit(0)
"""


def test_a_holder_that_ended_leaving_its_lock_to_a_child_is_named_by_its_pid(notebook: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", LEFT_TO_A_CHILD, notebook], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    child = int(proc.stdout.readline())
    try:
        assert proc.wait(timeout=30) == 0
        assert holders(notebook) == [proc.pid]
        assert describe_holders(notebook) == f"process {proc.pid}"
    finally:
        proc.stdin.close()  # the child reads the end of its input and ends
        proc.stdout.close()
    wait_until(lambda: holders(notebook) == [], 30, f"process {child}, the lock's last holder, to end")
