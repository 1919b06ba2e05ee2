"""A ParallelLab's cluster dies with the script that started it, however the script dies.

Each test runs a real script that starts a real local cluster, kills the script
(SIGTERM as a job scheduler sends it, or SIGKILL) while its sweep runs or after
it, and checks by PID that every process the script had started (controller,
schedulers, engines, nannies and the reaper) is gone within a bounded wait.
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

from epyclab.labs.transports.localcluster import cleanup_orphans, process_alive

SCRIPT = """
import os, sys, time
from epyclab import Experiment, ParallelLab

PROFILE, RUNNING, PHASE = sys.argv[1:4]

class Slow(Experiment):
    def do(self, params):
        if PHASE in ("start", "mid") and not os.path.exists(RUNNING):
            open(RUNNING, "w").close()
        time.sleep(0.05)
        return {"y": params["x"]}

lab = ParallelLab(cores=2, profile_dir=PROFILE, backend="ipyparallel")
lab["x"] = range(100000 if PHASE == "mid" else 20)
lab.runExperiment(Slow(), progress=False)
open(RUNNING, "w").close()   # after the sweep: the warm cluster waits for the next one
time.sleep(600)
"""


# start: killed as soon as the first point runs (in the lab's forked copy, while the cluster is
# launched); mid: killed mid-sweep, the cluster up; after: killed while the warm cluster waits.
@pytest.mark.parametrize("phase", ["start", "mid", "after"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_script_leaves_no_cluster_process(tmp_path: Path, sig: int, phase: str) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    profile, running = tmp_path / "profile", tmp_path / "running"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(profile), str(running), phase],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    procs: list[dict[str, float]] = []
    try:
        wait_for_file(running, timeout=120)
        (state_file,) = (profile / "epyclab").glob("local-*.json")
        if phase == "mid":
            wait_until(lambda: (lambda st: len(st["controller"]) >= 2 and len(st["engines"]) >= 2)(
                json.loads(state_file.read_text())), timeout=120, what="the cluster's processes recorded")
        state = json.loads(state_file.read_text())
        procs = descendants(proc.pid)
        reaper = state["reaper"]
        assert reaper is not None and process_alive(reaper)
        assert int(reaper["pid"]) in [int(p["pid"]) for p in procs]
        # In a session of its own: a Ctrl-C to the script's process group does not reach it.
        assert os.getsid(int(reaper["pid"])) != os.getsid(proc.pid)
        recorded = {int(p["pid"]) for p in state["controller"] + state["engines"]}
        if phase != "start":  # at the start, ipyparallel may not have started (or we recorded) them yet
            assert len(recorded) >= 3
        assert recorded <= {int(p["pid"]) for p in procs}
        # (The lab's forked copy may be exiting by now: the engines have taken over.)
        assert all(process_alive(p) for p in procs if int(p["pid"]) in recorded | {int(reaper["pid"])})

        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        assert still_running(procs, grace=60) == []
        # Nor any process the records missed (a scheduler forked by a controller still starting).
        assert processes_of_profile(profile) == []
        assert list((profile / "epyclab").glob("*.json")) == []
        assert list((profile / "security").glob("*.json")) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cleanup_orphans(str(profile))
        for p in procs:
            if process_alive(p):
                os.kill(int(p["pid"]), signal.SIGKILL)
