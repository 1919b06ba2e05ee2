"""A local cluster whose state file is damaged is still stopped once its owner is gone.

The state file (``<profile>/epyclab/local-<cluster id>.json``) is how the
reaper and the next start find a dead owner's cluster. A file left empty or
cut short (a full disk, a crash, a race between two writers) used to be
skipped as unreadable, so its controller and engines ran on for good. Each
test starts a real cluster from a real owner process, damages the file, kills
the owner with SIGKILL, and checks by PID that every process is gone: stopped
by the reaper, or (the reaper killed too) by :func:`cleanup_orphans`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_parallel import descendants, processes_of_profile, still_running, wait_for_file
from waiting import wait_until

from epyclab.labs.transports.localcluster import cleanup_orphans, process_alive, read_state

OWNER = """
import sys, time
from epyclab.labs.transports.localcluster import LocalCluster

PROFILE, READY = sys.argv[1:3]
cluster = LocalCluster(1, PROFILE)
cluster.start()
open(READY, "w").close()
time.sleep(600)
"""

DAMAGE = {
    "empty": lambda text: "",
    "cut short": lambda text: text[: len(text) // 2],
    "not json": lambda text: "\x00\x01 not a state",
    "not a state": lambda text: "[]",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("cleaner", ["reaper", "next start"])
def test_a_cluster_with_a_damaged_state_file_is_stopped_when_its_owner_dies(
    tmp_path: Path, damage: str, cleaner: str
) -> None:
    script, profile, ready = tmp_path / "owner.py", tmp_path / "profile", tmp_path / "ready"
    script.write_text(OWNER)
    proc = subprocess.Popen([sys.executable, str(script), str(profile), str(ready)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs: list[dict[str, float]] = []
    try:
        wait_for_file(ready, timeout=120)
        (state_file,) = (profile / "epyclab").glob("local-*.json")
        state = json.loads(state_file.read_text())
        wait_until(lambda: len(json.loads(state_file.read_text())["engines"]) >= 1, timeout=60,
                   what="the engine recorded")
        procs = descendants(proc.pid)
        cluster_pids = {int(p["pid"]) for p in state["controller"] + json.loads(state_file.read_text())["engines"]}
        assert len(cluster_pids) >= 2 and cluster_pids <= {int(p["pid"]) for p in procs}
        reaper = state["reaper"]

        state_file.write_text(DAMAGE[damage](state_file.read_text()))
        # Read back, the file still names the cluster and its owner (by PID: a live owner is never overruled).
        known = read_state(state_file)
        assert known is not None and known["cluster_id"] == state["cluster_id"]
        assert known["owner"]["pid"] == proc.pid and process_alive(known["owner"])
        assert cleanup_orphans(str(profile)) == []  # the owner still runs: its cluster is left alone
        assert all(process_alive(p) for p in procs if int(p["pid"]) in cluster_pids)

        if cleaner == "next start":
            os.kill(int(reaper["pid"]), signal.SIGKILL)
            wait_until(lambda: not process_alive(reaper), timeout=30, what="the reaper gone")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if cleaner == "next start":
            assert cleanup_orphans(str(profile)) == [state["cluster_id"]]
        assert still_running(procs, grace=60) == []
        assert processes_of_profile(profile) == []
        assert list((profile / "epyclab").glob("*.json")) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in procs:
            if process_alive(p):
                os.kill(int(p["pid"]), signal.SIGKILL)
