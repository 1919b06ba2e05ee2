"""``epyclab backup`` / :func:`epyclab.backupNotebook`: a consistent copy while a writer runs (issue 19.5).

A real writer process commits in a loop (a row per commit, in two result sets, with checkpoints folding
its journal every few commits) and notes each commit once it has returned. Every backup taken meanwhile
opens, is one file with nothing beside it, and holds every row committed before it started, each once and
as written, and no row that was never written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from epyclab import HDF5LabNotebook, JSONLabNotebook, NotebookPathError, backupNotebook
from epyclab.cli import main
from epyclab.experiment import Experiment

WRITER = r"""
import sys
import epyclab
from epyclab import Experiment
cls = getattr(epyclab, sys.argv[1])
path, log = sys.argv[2], sys.argv[3]
# Checkpoints every few commits: backups meet the journal being folded and emptied.
cls.CheckpointRows = 5
nb = cls(path, create=True, description="written in a loop")
nb.addResultSet("odd")
with open(log, "a") as noted:
    i = 0
    while True:
        nb.select("odd" if i % 2 else nb.DEFAULT_RESULTSET)
        nb.addResult({Experiment.PARAMETERS: {"i": i}, Experiment.RESULTS: {"y": 3 * i, "s": f"row {i}"},
                      Experiment.METADATA: {Experiment.STATUS: True}})
        nb.commit()
        noted.write(f"{i}\n")  # after commit() returned: row i is committed
        noted.flush()
        i += 1
"""


def _committed(log: Path) -> set[int]:
    return {int(line) for line in log.read_text().splitlines()[:-1]}  # the last line may be half-written


def _rows(cls: type, path: Path) -> list[tuple[str, int, int, str]]:
    nb = cls(path, readonly=True)
    out = []
    for tag in nb.resultSets():
        df = nb.resultSet(tag).dataframe()
        out += [(tag, int(i), int(y), s) for i, y, s in zip(df.get("i", []), df.get("y", []), df.get("s", []))]
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cls", [HDF5LabNotebook, JSONLabNotebook], ids=["hdf5", "json"])
def test_every_backup_taken_while_a_writer_commits_holds_every_committed_row(cls: type, tmp_path: Path) -> None:
    path = tmp_path / f"live.{'h5' if cls is HDF5LabNotebook else 'json'}"
    log = tmp_path / "committed.log"
    log.touch()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, cls.__name__, str(path), str(log)],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(_committed(log)) < 20:
            assert writer.poll() is None, writer.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        runner = CliRunner()
        for k in range(10):
            before = _committed(log)
            dest = tmp_path / "backups" / f"b{k}{path.suffix}"
            dest.parent.mkdir(exist_ok=True)
            if k % 2:
                result = runner.invoke(main, ["backup", str(path), str(dest)])
                assert result.exit_code == 0, result.output
                assert result.output.startswith(f"backed up {path} to {dest} (")
            else:
                backupNotebook(path, dest)
            after = _committed(log)
            rows = _rows(cls, dest)
            seen = [i for _, i, _, _ in rows]
            assert len(seen) == len(set(seen)), f"backup {k} holds a row twice"
            assert before <= set(seen), f"backup {k} lacks committed rows {sorted(before - set(seen))}"
            # No row that was not written: each as the writer wrote it, and none past what it had committed
            # by the end of the backup (or the one commit in flight then).
            assert all(t == ("odd" if i % 2 else HDF5LabNotebook.DEFAULT_RESULTSET) and y == 3 * i
                       and s == f"row {i}" for t, i, y, s in rows)
            assert max(seen) <= max(after) + 2
            # One self-contained file: nothing beside it.
            assert sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(dest.name)) == [dest.name]
            assert writer.poll() is None
    finally:
        writer.kill()
        writer.wait(30)
    assert len(_committed(log)) > 20


def _row(i: int) -> dict:
    return {Experiment.PARAMETERS: {"i": np.int8(i)},
            Experiment.RESULTS: {"y": float(i) / 3, "a": np.arange(i + 1), "m": None if i == 1 else i},
            Experiment.METADATA: {Experiment.STATUS: i != 2}}


@pytest.mark.parametrize("cls", [HDF5LabNotebook, JSONLabNotebook], ids=["hdf5", "json"])
def test_a_backup_keeps_everything_a_notebook_holds(cls: type, tmp_path: Path) -> None:
    path, dest = tmp_path / "nb", tmp_path / "copy"
    nb = cls(path, create=True, description="the original")
    for i in range(3):
        nb.addResult(_row(i))
    nb.current()["note"] = {"k": [1, 2]}
    nb.addResultSet("finished", "a locked set")
    nb.addResult(_row(5))
    nb.current().finish()
    nb.addResultSet("waiting")
    nb.addPendingResult({"i": 7}, "job-7")
    nb.select(nb.DEFAULT_RESULTSET)
    nb.commit()  # in the journal only (HDF5): the backup replays it
    try:
        assert backupNotebook(path, dest) == 4
    finally:
        nb.close()
    original, copy = cls(path, readonly=True), cls(dest, readonly=True)
    assert copy.description() == "the original"
    assert copy.resultSets() == original.resultSets()
    assert copy.currentTag() == nb.DEFAULT_RESULTSET
    for tag in original.resultSets():
        a, b = original.resultSet(tag), copy.resultSet(tag)
        da, db = a.dataframe(), b.dataframe()
        assert list(db.columns) == list(da.columns)
        assert dict(db.dtypes) == dict(da.dtypes)
        for c in da.columns:
            assert [repr(v) for v in db[c]] == [repr(v) for v in da[c]], c
        assert b.isLocked() == a.isLocked()
        assert {j: b.pendingResultParameters(j) for j in b.pendingResults()} == \
               {j: a.pendingResultParameters(j) for j in a.pendingResults()}
        assert {k: b[k] for k in b.keys()} == {k: a[k] for k in a.keys()}
    assert copy.resultSet("finished").isLocked() and not copy.resultSet("waiting").isLocked()
    # The copy is a notebook like any other: it opens for writing.
    with cls(dest) as again:
        again.addResult(_row(9))


def test_a_backup_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "nb.h5"
    HDF5LabNotebook(path, create=True).close()
    dest = tmp_path / "there.h5"
    dest.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=f"{dest} exists: a backup is written to a new file only"):
        backupNotebook(path, dest)
    assert dest.read_bytes() == b"precious"
    result = CliRunner().invoke(main, ["backup", str(path), str(dest)])
    assert result.exit_code == 1 and "exists" in result.output and dest.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.h5", "there.h5"]


def test_a_backup_of_no_notebook_or_to_a_special_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no notebook"):
        backupNotebook(tmp_path / "absent.h5", tmp_path / "b.h5")
    path = tmp_path / "nb.h5"
    HDF5LabNotebook(path, create=True).close()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotebookPathError, match="is a FIFO"):
        backupNotebook(path, tmp_path / "fifo")
    result = CliRunner().invoke(main, ["backup", str(tmp_path / "absent.h5"), str(tmp_path / "b.h5")])
    assert result.exit_code == 1 and "no notebook at" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "nb.h5"]


def test_a_backup_into_a_directory_that_does_not_exist_says_which_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "nb.h5"
    HDF5LabNotebook(path, create=True).close()
    dest = tmp_path / "backups" / "nb.h5"
    with pytest.raises(FileNotFoundError, match=f"the directory {dest.parent} of the backup .*mkdir -p"):
        backupNotebook(path, dest)
    result = CliRunner().invoke(main, ["backup", str(path), str(dest)])
    assert result.exit_code == 1 and f"the directory {dest.parent}" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.h5"]


@pytest.mark.parametrize("cls", [HDF5LabNotebook, JSONLabNotebook], ids=["hdf5", "json"])
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_a_backup_is_a_new_file_with_the_mode_the_umask_gives(cls: type, umask: int, tmp_path: Path) -> None:
    # A backup is a new file to keep or share: it gets the mode any new file gets (as `epyclab copy` and
    # `export` give theirs), not the 0600 of the temporary file it is written under.
    path = tmp_path / "nb"
    with cls(path, create=True) as nb:
        nb.addResult(_row(0))
    old = os.umask(umask)
    try:
        backupNotebook(path, tmp_path / "python-copy")
        result = CliRunner().invoke(main, ["backup", str(path), str(tmp_path / "cli-copy")])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    for name in ("python-copy", "cli-copy"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(0o666 & ~umask), name
        with cls(tmp_path / name, readonly=True) as copy:  # and it is still a whole notebook
            assert len(copy.dataframe()) == 1
