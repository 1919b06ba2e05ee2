"""Provenance per result set: the first run records Python, platform, package versions, the experiment's class
and module, and the git commit (and dirty flag) of its source tree; later runs leave it alone; it is saved."""

from __future__ import annotations

import importlib
import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from clusterhub import HubProcesses, Square, running_hub

from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.lab import Lab
from epyclab.labs.provenance import PREFIX
from epyclab.notebooks.hdf5 import HDF5LabNotebook

MODULE = '''
from epyclab import Experiment


class Noted(Experiment):
    def do(self, params):
        return {"y": params["x"] + 1}
'''


def git(directory: Path, *argv: str) -> str:
    return subprocess.run(["git", "-C", str(directory), *argv], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A git work tree holding the user's experiment module, importable as ``noted``."""
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "noted.py").write_text(MODULE)
    git(directory, "init", "-q")
    git(directory, "-c", "user.email=t@example.org", "-c", "user.name=t", "add", "noted.py")
    git(directory, "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "-m", "first")
    sys.path.insert(0, str(directory))
    try:
        yield directory
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("noted", None)


def test_the_first_run_records_where_the_results_came_from_and_it_is_saved(repo: Path, tmp_path: Path) -> None:
    noted = importlib.import_module("noted")
    path = tmp_path / "nb.h5"
    nb = HDF5LabNotebook(str(path), create=True)
    lab = Lab(nb)
    lab["x"] = range(3)
    lab.runExperiment(noted.Noted())
    head = git(repo, "rev-parse", "HEAD")

    # The tree changes and a second run goes into the same set: what the first run recorded stays.
    (repo / "noted.py").write_text(MODULE + "\n# edited\n")
    lab["x"] = range(3, 5)
    lab.runExperiment(noted.Noted())
    nb.close()

    rs = HDF5LabNotebook(str(path)).current()
    assert rs[f"{PREFIX}python"] == platform.python_version()
    assert rs[f"{PREFIX}platform"] == platform.platform()
    for package in ("epyclab", "numpy", "pandas"):
        assert rs[f"{PREFIX}{package}"] == metadata.version(package)
    assert rs[f"{PREFIX}experiment.class"] == "noted.Noted"
    assert Path(rs[f"{PREFIX}experiment.module"]) == repo / "noted.py"
    assert rs[f"{PREFIX}git.commit"] == head
    assert bool(rs[f"{PREFIX}git.dirty"]) is False

    # A new result set, run from the dirty tree, says so.
    nb = HDF5LabNotebook(str(path))
    nb.addResultSet("second")
    lab = Lab(nb)
    lab["x"] = [1]
    lab.runExperiment(noted.Noted())
    assert bool(nb.current()[f"{PREFIX}git.dirty"]) is True
    assert nb.current()[f"{PREFIX}git.commit"] == head
    nb.close()


def test_without_a_work_tree_no_commit_is_claimed(tmp_path: Path) -> None:
    (tmp_path / "loose.py").write_text(MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        loose = importlib.import_module("loose")
        lab = Lab()
        lab["x"] = [1]
        lab.runExperiment(loose.Noted())
        rs = lab.notebook().current()
        assert rs[f"{PREFIX}experiment.class"] == "loose.Noted"
        assert f"{PREFIX}git.commit" not in rs and f"{PREFIX}git.dirty" not in rs
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("loose", None)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcesses]:
    with running_hub(tmp_path / "profile") as procs:
        yield procs


def test_a_cluster_lab_records_its_engines_environment(hub: HubProcesses) -> None:
    lab = ClusterLab(profile_dir=str(hub.profile_dir))
    lab["x"] = range(4)
    lab.runExperiment(Square())
    assert lab.wait(timeout=120, progress=False)
    rs = lab.notebook().current()
    (kind,) = json.loads(rs[f"{PREFIX}engines"])  # the same interpreter here: one kind, two engines
    assert kind["engines"] == 2 and kind["python"] == platform.python_version()
    assert f"{PREFIX}engines.differ" not in rs
    lab.close()
