"""What ParallelLab's local cluster writes under its profile is private to the user, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from epyclab.labs.parallelcluster import LocalCluster


def test_the_local_clusters_state_and_log_directories_and_files_are_private(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    old = os.umask(0o022)  # the usual umask: without care, directories come out 0755
    try:
        with LocalCluster(1, str(profile)) as client:
            assert client.ids
            seen = {}
            for sub in ("epyclab", "log"):
                top = profile / sub
                seen[top] = stat.S_IMODE(os.lstat(top).st_mode)
                for path in top.iterdir():
                    if path.is_file() and not path.is_symlink():
                        seen[path] = stat.S_IMODE(os.lstat(path).st_mode)
    finally:
        os.umask(old)
    assert any(p.name.startswith("local-") for p in seen) and any(p.suffix == ".log" for p in seen)
    # epyclab's own files are 0600; ipyparallel's (its processes' logs) are shut in by their directory.
    directories = {p.name: m for p, m in seen.items() if p.name in ("epyclab", "log")}
    assert directories == {"epyclab": 0o700, "log": 0o700}
    assert stat.S_IMODE(os.lstat(profile / "security").st_mode) == 0o700
    mine = {str(p): m for p, m in seen.items() if p.parent.name == "epyclab" or p.name.startswith("clusters")}
    assert mine and set(mine.values()) == {0o600}
