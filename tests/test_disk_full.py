"""A full disk at any moment (commit, checkpoint, close, open, create) is a clear error naming the notebook,
never a crash; once space is back the notebook opens with every committed row.

The disk is a real, small tmpfs mounted for the test (we run as root), filled with
a file of computed size so that a chosen number of bytes is left. The writer is a
real process, so a segmentation fault in h5py would show as its exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from epyclab import HDF5LabNotebook, JSONLabNotebook, NotebookIOError

TESTS = Path(__file__).resolve().parent
ROWS = 3000


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        # Lazily: a failed test may still hold a file there; the mount goes once it is closed.
        subprocess.run(["umount", "-l", str(mount)], check=True)


def free_bytes(d: Path) -> int:
    st = os.statvfs(d)
    return st.f_bavail * st.f_frsize


def fill(d: Path, leave: int) -> Path:
    """Fill the disk so that about ``leave`` bytes stay free; the filler's path."""
    filler = d / "filler"
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free_bytes(d) - leave))
    assert free_bytes(d) <= leave + 4096
    return filler


WRITER = f"""
import sys
from epyclab import HDF5LabNotebook, NotebookIOError
nb = HDF5LabNotebook(sys.argv[1], create=True)
nb.CheckpointRows = 10**9
for i in range({ROWS}):
    nb.addResult({{"parameters": {{"i": i}}, "metadata": {{"note": "x" * 40}}, "results": {{"y": i * 0.5}}}})
nb.commit()
print("committed", flush=True)
sys.stdin.readline()  # the disk is full now
for i in range({ROWS}, {ROWS} + 600):
    nb.addResult({{"parameters": {{"i": i}}, "metadata": {{"note": "x" * 40}}, "results": {{"y": i * 0.5}}}})
try:
    nb.commit()
    print("commit ok", flush=True)
except NotebookIOError as e:
    print("commit error:", e, flush=True)
try:
    nb.checkpoint()
    print("checkpoint ok", flush=True)
except NotebookIOError as e:
    print("checkpoint error:", e, flush=True)
try:
    nb.close()
    print("close ok", flush=True)
except NotebookIOError as e:
    print("close error:", e, flush=True)
"""


@pytest.mark.parametrize("leave", [0, 4096, 8192, 32768, 100_000, 200_000])
def test_a_full_disk_in_commit_checkpoint_and_close_is_a_clear_error_and_loses_nothing(small_disk, leave):
    path = small_disk / "nb.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=TESTS)
    try:
        assert proc.stdout.readline().strip() == "committed"
        filler = fill(small_disk, leave)
        out, err = proc.communicate("go\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, f"the writer died (status {proc.returncode}):\n{err}"
    assert "SystemError" not in err and "Traceback" not in err
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in out.splitlines())
    for step in ("commit", "checkpoint", "close"):
        outcome = lines[step]
        assert outcome.startswith(("ok", "error:")), out
        if outcome.startswith("error:"):
            assert str(path) in outcome and "the disk is full" in outcome and "Free some space" in outcome
    if lines["commit"].startswith("error:"):
        assert "still in memory" in lines["commit"]
    if lines["close"].startswith("error:"):
        if lines["commit"] == "ok":
            assert "journal" in lines["close"] and "opening it again folds" in lines["close"]
        else:  # the uncommitted rows are still in memory: the notebook stays open to close again
            assert "stays open: close() it again" in lines["close"]
    committed = ROWS + (600 if lines["commit"] == "ok" else 0)

    # While the disk is still full: readable, and (for writing) opens or says clearly why not.
    assert HDF5LabNotebook(path, readonly=True).numberOfResults() == committed
    try:
        nb = HDF5LabNotebook(path)
    except NotebookIOError as e:
        assert str(path) in str(e) and "the disk is full" in str(e)
    else:
        assert nb.numberOfResults() == committed
        try:
            nb.close()
        except NotebookIOError as e:
            assert "the disk is full" in str(e)

    # Space is back: every committed row is there, and the file alone holds them after a close.
    filler.unlink()
    nb = HDF5LabNotebook(path)
    df = nb.dataframe(only_successful=False)
    assert df["i"].tolist() == list(range(committed))
    nb.close()
    assert not os.path.exists(f"{path}.journal") and not os.path.exists(f"{path}.undo")
    assert sorted(os.listdir(small_disk)) == ["nb.h5"]


@pytest.mark.parametrize("leave", [0, 4096, 16384])
def test_creating_a_notebook_on_a_full_disk_is_a_clear_error_leaving_nothing(small_disk, leave):
    filler = fill(small_disk, leave)
    for cls, name in ((HDF5LabNotebook, "new.h5"), (JSONLabNotebook, "new.json")):
        path = small_disk / name
        try:
            nb = cls(path, create=True)
        except NotebookIOError as e:
            assert str(path) in str(e) and "the disk is full" in str(e)
            assert sorted(os.listdir(small_disk)) == ["filler"]
        else:
            nb.close()
            path.unlink()
    filler.unlink()


def test_a_json_commit_on_a_full_disk_leaves_the_file_as_it_was(small_disk):
    path = small_disk / "nb.json"
    nb = JSONLabNotebook(path, create=True)
    nb.addResult({"parameters": {"i": 0}, "metadata": {}, "results": {"y": 1.0}})
    nb.commit()
    before = path.read_bytes()
    filler = fill(small_disk, 0)
    for i in range(1, 200):
        nb.addResult({"parameters": {"i": i}, "metadata": {}, "results": {"z": "x" * 100}})
    with pytest.raises(NotebookIOError, match=f"{path}: the disk is full while saving the notebook"):
        nb.commit()
    assert path.read_bytes() == before
    assert sorted(os.listdir(small_disk)) == ["filler", "nb.json", "nb.json.lock"]
    filler.unlink()
    nb.commit()  # the changes were kept in memory: saved once space is back
    nb.close()
    assert JSONLabNotebook(path, readonly=True).numberOfResults() == 200


@pytest.mark.parametrize("leave", [0, 100_000, 400_000])
def test_a_commit_that_must_grow_the_journal_on_a_full_disk_is_a_clear_error_or_fits_exactly(small_disk, leave):
    # The journal's room (1 MiB, allocated by posix_fallocate at the first commit) is too small for the next
    # record (0.7 MB of text after the first 0.5 MB: about 150 kB past the room), so the commit must grow
    # it on a disk with `leave` bytes free: 1 MiB more never fits; just what the record needs, with 400 kB.
    path = small_disk / "nb.h5"
    journal = small_disk / "nb.h5.journal"
    nb = HDF5LabNotebook(path, create=True)
    nb.CheckpointRows = 10**9
    nb.addResult({"parameters": {"i": 0}, "metadata": {}, "results": {"text": "a" * 500_000}})
    nb.commit()
    room = journal.stat().st_size
    assert room >= 1 << 20  # grown ahead
    filler = fill(small_disk, leave)
    nb.addResult({"parameters": {"i": 1}, "metadata": {}, "results": {"text": "b" * 700_000}})
    try:
        nb.commit()
    except NotebookIOError as e:
        assert leave < 400_000
        assert str(path) in str(e) and "the disk is full" in str(e) and "Free some space" in str(e)
        assert "still in memory" in str(e)
        assert journal.stat().st_size == room  # nothing half made is left behind
        filler.unlink()
        nb.commit()  # the row was kept in memory: saved once space is back
    else:
        assert leave == 400_000
        assert room < journal.stat().st_size < room + (1 << 20)  # grown by just what the record needs
        filler.unlink()
    nb.close()
    df = HDF5LabNotebook(path, readonly=True).dataframe(only_successful=False)
    assert df["i"].tolist() == [0, 1] and df["text"].tolist() == ["a" * 500_000, "b" * 700_000]
