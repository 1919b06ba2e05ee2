"""Git is asked for a sweep's provenance while its first points run, and leaves no process behind.

(What is recorded is checked in tests/test_cluster_provenance.py.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab.experiment import Experiment
from epyclab.labs import provenance
from epyclab.labs.lab import Lab


class Interrupted(Experiment):
    """Its first point is interrupted (as by Ctrl-C) before any result is out."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGINT)
        return {"y": 1}


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_a_sweep_stopped_before_its_first_result_leaves_no_git_process() -> None:
    before = children()
    lab = Lab()
    lab["x"] = [1, 2]
    with pytest.raises(KeyboardInterrupt):
        lab.runExperiment(Interrupted(), progress=False)
    assert lab.notebook().numberOfResults() == 0
    assert children() - before == set()


def test_a_query_closed_unread_stops_its_processes_and_one_read_gives_the_state(tmp_path: Path) -> None:
    before = children()
    provenance.GitQuery(tmp_path).close()
    assert children() - before == set()
    # Not a work tree: no state, whether asked at once or through a query.
    assert provenance.gitState(tmp_path) is None
    here = Path(__file__).resolve().parent
    assert provenance.gitState(here) == provenance.GitQuery(here).result()
    assert children() - before == set()


def stale_repo(root: Path, files: int) -> Path:
    """A git work tree of ``files`` committed files whose index no longer matches their times (as after
    a checkout, a build or an editor's save): a plain ``git status`` would refresh the index and write it back."""
    import subprocess
    import time

    repo = root / "repo"
    repo.mkdir()
    run = {"cwd": repo, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q"], **run)  # type: ignore[call-overload]
    for i in range(files):
        (repo / f"f{i}.txt").write_text(str(i))
    subprocess.run(["git", "add", "."], **run)  # type: ignore[call-overload]
    subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"], **run)  # type: ignore[call-overload]
    later = time.time() + 5
    for i in range(files):
        os.utime(repo / f"f{i}.txt", (later, later))
    return repo


def test_asking_git_leaves_the_users_index_untouched(tmp_path: Path) -> None:
    repo = stale_repo(tmp_path, 50)
    index = repo / ".git" / "index"
    before = index.stat()
    commit, dirty = provenance.gitState(repo)  # type: ignore[misc]
    assert len(commit) == 40 and dirty is False
    after = index.stat()
    # Not written again (a write replaces the file through index.lock: a new inode).
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)



def test_dirty_means_a_tracked_file_changed_not_a_new_untracked_one(tmp_path: Path) -> None:
    # As docs/cluster.md says: an untracked file leaves the tree clean; a changed tracked one makes it dirty.
    repo = stale_repo(tmp_path, 3)
    (repo / "helper.py").write_text("x = 1\n")
    commit, dirty = provenance.gitState(repo)  # type: ignore[misc]
    assert len(commit) == 40 and dirty is False
    (repo / "f1.txt").write_text("changed")
    assert provenance.gitState(repo) == (commit, True)

@pytest.fixture(scope="module")
def big_stale_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stale_repo(tmp_path_factory.mktemp("git"), 3000)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(0.0, 0.06))
def test_a_git_query_stopped_at_any_moment_leaves_no_lock_in_the_users_repository(
    big_stale_repo: Path, delay: float
) -> None:
    import time

    repo = big_stale_repo
    lock = repo / ".git" / "index.lock"
    query = provenance.GitQuery(repo)
    time.sleep(delay)
    query.close()  # a sweep that ended early: git is killed wherever it is
    assert not lock.exists()
    # The user's next git command works.
    import subprocess

    done = subprocess.run(["git", "-C", str(repo), "update-index", "--refresh", "-q"], capture_output=True, text=True)
    assert "index.lock" not in done.stderr, done.stderr
    # Every file stale again for the next example, so that its git status has the whole index to refresh.
    later = time.time() + 5
    for path in repo.glob("*.txt"):
        os.utime(path, (later, later))
