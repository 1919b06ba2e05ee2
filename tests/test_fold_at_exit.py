"""A notebook left open is folded into its file at exit and when dropped, so the .h5 alone holds every commit;
``epyclab show`` says when commits wait in a journal beside a file."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
from click.testing import CliRunner
from test_unfoldable_journal import killed_writer

from epyclab.cli import main

ROWS = 250

NEVER_CLOSED = f"""
import sys
from epyclab import HDF5LabNotebook
nb = HDF5LabNotebook(sys.argv[1], create=True)
for i in range({ROWS}):
    nb.addResult({{"parameters": {{"i": i}}, "metadata": {{}}, "results": {{"y": i / 2}}}})
    if i % 50 == 49:
        nb.commit()
nb.addResult({{"parameters": {{"i": -1}}, "metadata": {{}}, "results": {{"y": -1.0}}}})  # never committed
"""

DROPPED = f"""
import gc, sys
import h5py
from epyclab import HDF5LabNotebook
nb = HDF5LabNotebook(sys.argv[1], create=True)
for i in range({ROWS}):
    nb.addResult({{"parameters": {{"i": i}}, "metadata": {{}}, "results": {{"y": i / 2}}}})
nb.commit()
del nb
gc.collect()
with h5py.File(sys.argv[1], "r") as f:  # the file alone, while the program goes on
    print(sum(int(g.attrs["rows"]) for g in f["resultsets"].values()), flush=True)
"""


def plain_h5py_rows(path) -> list[int]:
    """The ``i`` column as plain h5py reads it from the file alone."""
    with h5py.File(path, "r") as f:
        (group,) = f["resultsets"].values()
        return group["columns"]["i"][: int(group.attrs["rows"])].tolist()


def test_a_script_that_never_closes_leaves_every_commit_in_the_file_alone(tmp_path):
    path = tmp_path / "nb.h5"
    done = subprocess.run([sys.executable, "-c", NEVER_CLOSED, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert plain_h5py_rows(path) == list(range(ROWS))
    assert sorted(os.listdir(tmp_path)) == ["nb.h5"]  # no journal, no lock left


def test_a_dropped_notebook_is_folded_while_the_program_goes_on(tmp_path):
    path = tmp_path / "nb.h5"
    done = subprocess.run([sys.executable, "-c", DROPPED, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ROWS)]
    assert plain_h5py_rows(path) == list(range(ROWS))


def test_show_says_when_a_journal_waits_beside_the_file(tmp_path):
    path = tmp_path / "nb.h5"
    killed_writer(path, 1.0, 2.0, 3.0)  # SIGKILL: nothing can fold the journal
    result = CliRunner().invoke(main, ["show", str(path)])
    assert result.exit_code == 0, result.output
    assert f"journal: 3 commit(s) wait in {path}.journal" in result.output
    assert "rows: 3" in result.output
    # Once folded (by opening for writing), show says nothing of a journal.
    from epyclab import HDF5LabNotebook

    HDF5LabNotebook(path).close()
    result = CliRunner().invoke(main, ["show", str(path)])
    assert result.exit_code == 0 and "wait in" not in result.output and "rows: 3" in result.output
