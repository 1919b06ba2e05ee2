"""Provenance names the user's own experiment through any nesting of combinators.

A ``SummaryExperiment(RepeatedExperiment(MyExperiment(), 10))`` must record
``MyExperiment``'s class and module file, and the git commit and dirty flag of
the user's repository holding that file, never epyclab's wrapper class, its
file or epyclab's own checkout. The user's repository is a real one made by
the test (``git init``, a commit, then an uncommitted edit); a module outside
any work tree records no commit at all. Checked for Lab, ParallelLab (forked
copies) and ClusterLab (a real controller and engines), which all record
through :func:`epyclab.labs.provenance.recordFirstRun`.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab.combinators import ExperimentCombinator, RepeatedExperiment, SummaryExperiment, innermost
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab
from epyclab.labs.provenance import PREFIX
from epyclab.notebooks.hdf5 import HDF5LabNotebook

MODULE = '''
from epyclab import Experiment


class Mine(Experiment):
    def do(self, params):
        return {"y": params["x"] * 2.0}
'''

CLASS, FILE, COMMIT, DIRTY = (f"{PREFIX}experiment.class", f"{PREFIX}experiment.module",
                              f"{PREFIX}git.commit", f"{PREFIX}git.dirty")


def git(directory: Path, *argv: str) -> str:
    return subprocess.run(["git", "-C", str(directory), "-c", "user.email=t@example.org", "-c", "user.name=t",
                           *argv], check=True, capture_output=True, text=True).stdout.strip()


class UserRepo:
    """A git work tree of the user's holding module ``name``.py (class ``Mine``), imported from there."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.file = root / f"{name}.py"
        root.mkdir(parents=True)
        self.file.write_text(MODULE)
        git(root, "init", "-q")
        git(root, "add", self.file.name)
        git(root, "commit", "-q", "-m", "the experiment")
        self.head = git(root, "rev-parse", "HEAD")
        sys.path.insert(0, str(root))
        self.module: ModuleType = importlib.import_module(name)

    def dirty(self, yes: bool) -> None:
        """Edit the module without committing (or undo the edit): the class already imported is unchanged."""
        self.file.write_text(MODULE + ("\n# an edit not yet committed\n" if yes else ""))

    def remove(self) -> None:
        sys.path.remove(str(self.root))
        sys.modules.pop(self.module.__name__, None)


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserRepo]:
    repo = UserRepo(tmp_path_factory.mktemp("user") / "project", "mine_provenance")
    try:
        yield repo
    finally:
        repo.remove()


def epyclab_checkout_commit() -> str | None:
    done = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def assert_names_the_user(rs: object, repo: UserRepo, dirty: bool) -> None:
    assert rs[CLASS] == f"{repo.module.__name__}.Mine"  # type: ignore[index]
    assert Path(rs[FILE]) == repo.file  # type: ignore[index]
    assert rs[COMMIT] == repo.head  # type: ignore[index]
    assert bool(rs[DIRTY]) is dirty  # type: ignore[index]


# ---- any nesting ---------------------------------------------------------------------------------

#: A nesting, outermost first: "R" a RepeatedExperiment of 2, "S" a SummaryExperiment.
nestings = st.lists(st.sampled_from("RS"), max_size=4)


def wrap(ex: Experiment, nesting: list[str]) -> Experiment:
    for kind in reversed(nesting):
        ex = RepeatedExperiment(ex, 2) if kind == "R" else SummaryExperiment(ex)
    return ex


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nesting=nestings, dirty=st.booleans())
def test_any_nesting_of_combinators_records_the_users_class_file_and_repository(
    user_repo: UserRepo, nesting: list[str], dirty: bool
) -> None:
    user_repo.dirty(dirty)
    try:
        e = wrap(user_repo.module.Mine(), nesting)
        assert type(innermost(e)) is user_repo.module.Mine
        lab = Lab()
        lab["x"] = [1, 2]
        lab.runExperiment(e, progress=False)
        rs = lab.notebook().current()
        assert lab.notebook().numberOfResults() > 0
        assert_names_the_user(rs, user_repo, dirty)
    finally:
        user_repo.dirty(False)


def test_the_issues_example_names_neither_epyclabs_wrapper_nor_its_checkout(user_repo: UserRepo,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / "nb.h5"
    lab = Lab(HDF5LabNotebook(str(path), create=True))
    lab["x"] = range(3)
    lab.runExperiment(SummaryExperiment(RepeatedExperiment(user_repo.module.Mine(), 10)), progress=False)
    lab.close()

    rs = HDF5LabNotebook(str(path), readonly=True).current()  # as saved, read back
    assert_names_the_user(rs, user_repo, dirty=False)
    assert "epyclab" not in rs[CLASS] and "combinators" not in rs[FILE]
    ours = epyclab_checkout_commit()
    if ours is not None:  # a clone of epyclab: its commit is not the one recorded
        assert rs[COMMIT] != ours


def test_a_combinator_of_the_users_own_is_seen_through(user_repo: UserRepo) -> None:
    class Twice(ExperimentCombinator):
        def do(self, params: dict) -> dict:
            return {"y": 2 * self.experiment().set(params).run()[Experiment.RESULTS]["y"]}

    lab = Lab()
    lab["x"] = [3]
    lab.runExperiment(Twice(SummaryExperiment(user_repo.module.Mine())), progress=False)
    assert_names_the_user(lab.notebook().current(), user_repo, dirty=False)


def test_a_dirty_tree_is_recorded_dirty_through_combinators_in_a_parallel_lab(user_repo: UserRepo) -> None:
    from epyclab.labs.parallel import ParallelLab

    user_repo.dirty(True)
    try:
        lab = ParallelLab(cores=2, backend="fork")
        lab["x"] = range(6)
        lab.runExperiment(RepeatedExperiment(SummaryExperiment(RepeatedExperiment(user_repo.module.Mine(), 3)), 2),
                          progress=False)
        rs = lab.notebook().current()
        assert lab.notebook().numberOfResults() == 12
        assert_names_the_user(rs, user_repo, dirty=True)
    finally:
        user_repo.dirty(False)


def test_a_module_outside_any_work_tree_records_no_commit_through_combinators(tmp_path: Path) -> None:
    loose = tmp_path / "loose_provenance.py"
    loose.write_text(MODULE)
    assert subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True).returncode != 0, \
        "the test's temporary directory is inside a git work tree: it cannot stand for a file outside one"
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("loose_provenance")
        lab = Lab()
        lab["x"] = [1]
        lab.runExperiment(SummaryExperiment(RepeatedExperiment(module.Mine(), 2)), progress=False)
        rs = lab.notebook().current()
        assert rs[CLASS] == "loose_provenance.Mine" and Path(rs[FILE]) == loose
        assert COMMIT not in rs and DIRTY not in rs
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("loose_provenance", None)


def test_a_cluster_lab_records_the_users_experiment_through_combinators(user_repo: UserRepo,
                                                                       tmp_path: Path) -> None:
    from clusterhub import running_hub

    from epyclab.labs.clusterlab import ClusterLab

    user_repo.dirty(True)
    try:
        with running_hub(tmp_path / "profile") as hub:
            lab = ClusterLab(profile_dir=str(hub.profile_dir))
            try:
                lab["x"] = range(3)
                lab.runExperiment(SummaryExperiment(RepeatedExperiment(user_repo.module.Mine(), 2)),
                                  progress=False)
                assert lab.wait(timeout=120, progress=False)
                assert lab.notebook().numberOfResults() == 3
                assert_names_the_user(lab.notebook().current(), user_repo, dirty=True)
            finally:
                lab.close()
    finally:
        user_repo.dirty(False)
