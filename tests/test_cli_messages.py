"""The notebook commands say what they did only once it is done, and take shell paths (``~``).

A command that fails (here: on a read-only notebook) prints no message
claiming the change on stdout, exits 1 with the reason on stderr, and leaves
every file it named unchanged. Paths starting with ``~`` are expanded as a
shell would, also where the shell does not (quoted, or after ``:``/``=``).
All through the installed command, as a user types it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from epyclab import Experiment, HDF5LabNotebook, LabNotebook
from epyclab.notebooks.journal import read_frames
from epyclab.notebooks.sidefiles import side_path

EPYCLAB = str(Path(sys.executable).with_name("epyclab"))


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    """The installed ``epyclab`` command, as a user runs it."""
    return subprocess.run([EPYCLAB, *args], capture_output=True, text=True, timeout=120, **kw)


def notebook(path: Path) -> Path:
    with HDF5LabNotebook(path, create=True) as nb:
        nb.addResult({Experiment.PARAMETERS: {"x": 1}, Experiment.METADATA: {}, Experiment.RESULTS: {"y": 2.0}})
        nb.addResultSet("scratch")
        nb.addResult({Experiment.PARAMETERS: {"x": 2}, Experiment.METADATA: {}, Experiment.RESULTS: {"y": 4.0}})
        nb.addResultSet("other")
        nb.select(LabNotebook.DEFAULT_RESULTSET)
    return path


def unchanged(*paths: Path) -> list[bytes]:
    """The notebooks' bytes; any journal beside one holds no commit (a writer that gave up may leave it empty)."""
    for p in paths:
        journal = side_path(str(p), "journal")
        assert not os.path.exists(journal) or read_frames(journal) == [], journal
    return [p.read_bytes() for p in paths]


def read_only(path: Path) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IRGRP)


@pytest.mark.parametrize("command", [
    ["remove", "{ro}:scratch"],
    ["remove", "{ok}:scratch", "{ro}:scratch"],  # one writable file, one not: neither changes
    ["remove", "{ro}:scratch", "{ok}:scratch"],
    ["select", "{ro}:scratch"],
    ["copy", "{ok}:scratch=new", "{ro}"],
])
def test_a_command_failing_on_a_read_only_file_claims_nothing(tmp_path, command):
    ok, ro = notebook(tmp_path / "ok.h5"), notebook(tmp_path / "ro.h5")
    read_only(ro)
    before = unchanged(ok, ro)
    done = run(*[a.format(ok=ok, ro=ro) for a in command])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout == ""  # no "removing", "removed", "copied", "selected"
    assert f"{ro} is a read-only file" in done.stderr and "chmod u+w" in done.stderr
    assert unchanged(ok, ro) == before


def test_remove_says_what_it_removed_after_it_is_saved(tmp_path):
    a, b = notebook(tmp_path / "a.h5"), notebook(tmp_path / "b.h5")
    with HDF5LabNotebook(a) as nb:
        nb.select("scratch")
    done = run("remove", f"{a}:scratch", f"{b}:other", f"{b}:scratch")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"removed {a}:scratch",
        f"{a}: the current result set is now {LabNotebook.DEFAULT_RESULTSET}",
        f"removed {b}:other",
        f"removed {b}:scratch",
    ]
    assert HDF5LabNotebook(a, readonly=True).keys() == [LabNotebook.DEFAULT_RESULTSET, "other"]
    assert HDF5LabNotebook(b, readonly=True).keys() == [LabNotebook.DEFAULT_RESULTSET]


def test_a_tilde_is_the_home_directory_in_every_notebook_command(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    notebook(home / "nb.h5")
    env = {**os.environ, "HOME": str(home)}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def tilde(*args: str) -> subprocess.CompletedProcess:
        done = run(*args, env=env, cwd=cwd)  # no shell: '~' reaches the command as typed in quotes
        assert done.returncode == 0, (args, done.stderr)
        return done

    assert "~/nb.h5" in tilde("show", "~/nb.h5").stdout
    tilde("export", "~/nb.h5:scratch", "~/out.csv")
    assert pd.read_csv(home / "out.csv")["y"].tolist() == [4.0]
    tilde("export", "~/nb.h5", "~/current.csv")
    assert pd.read_csv(home / "current.csv")["y"].tolist() == [2.0]
    tilde("copy", "~/nb.h5:scratch=copied", "~/merged.h5")
    assert "copied" in HDF5LabNotebook(home / "merged.h5", readonly=True)
    tilde("select", "~/nb.h5:scratch")
    tilde("remove", "~/nb.h5:other")
    assert HDF5LabNotebook(home / "nb.h5", readonly=True).keys() == [LabNotebook.DEFAULT_RESULTSET, "scratch"]
    assert os.listdir(cwd) == []  # nothing made under a directory literally named '~'
