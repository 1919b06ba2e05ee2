"""What ParallelLab's local cluster writes under its profile is private to the user, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import ipyparallel as ipp
import pytest
from waiting import wait_until

from epyclab.labs.transports.localcluster import LocalCluster


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


@ipp.interactive  # sent by value: the engines cannot import this test module
def _say_and_die(marker: str) -> None:
    import os

    os.write(2, f"{marker}: a C library's last words\n".encode())  # below Python: no capture sees it
    os._exit(3)


@ipp.interactive
def _say(marker: str) -> str:
    import os

    os.write(1, f"{marker}: said on stdout\n".encode())
    return os.readlink("/proc/self/fd/2")  # where a write to fd 2 goes at once


def test_what_the_engines_wrote_is_kept_in_the_clusters_log_after_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engines are stopped by PID and their output files removed: their last words must survive,
    # also those written just before the engine dies (a crash).
    from epyclab.labs.transports.localclusterlog import cluster_log_path

    # As outside pytest: ipykernel redirects an engine's descriptors only when this is not set.
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)

    profile = tmp_path / "profile"
    cluster = LocalCluster(2, str(profile))
    with cluster as client:
        client.wait_for_engines(2, timeout=60)
        alive, doomed = client.ids[:2]
        # Its descriptor is its output file, not a pipe a thread forwards (lost if the engine dies first).
        assert client[alive].apply_sync(_say, "MARK-ALIVE").endswith(".log")
        client[doomed].apply_async(_say_and_die, "MARK-DYING")
        wait_until(lambda: doomed not in client.ids, timeout=60, what="the engine's death seen by the hub")
    log = cluster_log_path(profile).read_text()
    assert "MARK-DYING: a C library's last words" in log and "MARK-ALIVE: said on stdout" in log
    assert cluster.cluster_id in log
    assert list((profile / "log").glob(f"*{cluster.cluster_id}*")) == []  # the files themselves are gone
    assert stat.S_IMODE(os.lstat(cluster_log_path(profile)).st_mode) == 0o600
