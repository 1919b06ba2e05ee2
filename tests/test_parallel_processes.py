"""ParallelLab's processes: started and stopped however a sweep ends, orphans cleaned, engines dying.

Every test here starts real clusters (each in its own profile directory under
tmp_path) and checks, by the PIDs it recorded, that every process is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import ipyparallel as ipp
import psutil
import pytest
from conftest_parallel import (
    CTRL_C_SCRIPT,
    Announces,
    KillsItsEngine,
    Logged,
    RecordingNotebook,
    Sleepy,
    Square,
    descendants,
    processes_of_profile,
    still_running,
    wait_for_file,
)
from waiting import wait_until

from epyclab.errors import ClusterConnectionError
from epyclab.experiment import Experiment
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports import warm
from epyclab.labs.transports.localcluster import LocalCluster, cleanup_orphans, process_alive

STATUS = Experiment.STATUS


def spying_lab(profile: Path, **nb_kwargs: Any) -> tuple[ParallelLab, RecordingNotebook, list[dict[str, Any]]]:
    """A ParallelLab on its own cluster whose notebook records the cluster's processes during the sweep."""
    seen: list[dict[str, Any]] = []
    lab: ParallelLab

    def look() -> None:
        if not seen and lab.localCluster is not None:
            seen.extend(lab.localCluster.processes())

    nb = RecordingNotebook(on_add=look, **nb_kwargs)
    lab = ParallelLab(nb, cores=2, profile_dir=str(profile), backend="ipyparallel")
    return lab, nb, seen


def state_files(profile: Path) -> list[Path]:
    """epyclab's record of the clusters started in ``profile`` and ipyparallel's connection files."""
    return sorted((profile / "epyclab").glob("*.json")) + sorted((profile / "security").glob("*.json"))


def run_script(path: Path, *args: str, cwd: Path | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(path), *args], cwd=cwd or path.parent, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,
    )


# ---- a cluster of its own, stopped however the sweep ends ---------------------------------------


def test_own_cluster_is_kept_warm_across_sweeps_and_stopped_by_shutdown(tmp_path: Path) -> None:
    lab, nb, seen = spying_lab(tmp_path / "profile")
    lab["x"] = range(50)
    lab.runExperiment(Square(), progress=False)
    assert nb.numberOfResults() == 50
    first = lab.localCluster
    assert first is not None
    # The sweep may have ended (its points run by the lab's forked copy) before the cluster was up;
    # the cluster goes on starting, for the next sweep.
    first.check()
    first.wait(2)
    # A controller (and its schedulers) and two engines, still running for the next sweep.
    assert len(first.processes()) >= 5 and seen
    assert first.client is not None and len(first.client.ids) == 2
    # The next sweep (another lab, same size and profile) runs on the same processes.
    again = ParallelLab(nb, cores=2, profile_dir=str(tmp_path / "profile"), backend="ipyparallel")
    again["x"] = range(50, 80)
    again.runExperiment(Square(), progress=False)
    assert again.localCluster is first
    # On the same engine processes as the first sweep.
    assert set(nb.dataframe()[Experiment.PID]) <= set(first.pids())
    assert sorted(nb.dataframe()["x"]) == list(range(80))
    lab.shutdown()
    assert lab.localCluster is None
    assert still_running(first.processes()) == []
    assert state_files(tmp_path / "profile") == []
    assert warm.running() == []


class LeavesAProcess(Experiment):
    """Starts a ``sleep`` it leaves running: from the engine's main thread, or (odd x) from a thread it keeps alive."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        started: list[subprocess.Popen[bytes]] = []
        if params["x"] % 2:
            ready = threading.Event()

            def keep() -> None:
                started.append(subprocess.Popen(["sleep", "600"]))
                ready.set()
                threading.Event().wait()  # the thread that started the child lives on

            threading.Thread(target=keep, daemon=True).start()
            ready.wait()
        else:
            started.append(subprocess.Popen(["sleep", "600"]))
        return {"child": started[0].pid}


def test_processes_the_points_left_on_the_engines_are_stopped_with_the_cluster(tmp_path: Path) -> None:
    # The cluster's record of its processes (read from the kernel's per-thread lists of children) finds a
    # child of an engine whichever of its threads started it, and shutdown() stops it with the engines.
    lab, _, _ = spying_lab(tmp_path / "profile")
    children: list[int] = []
    try:
        lab["x"] = range(4)
        lab.runExperiment(Square(), progress=False)  # starts the cluster (points may run in forked copies)
        local = lab.localCluster
        assert local is not None
        local.wait(2)
        again = ParallelLab(cores=2, profile_dir=str(tmp_path / "profile"), backend="ipyparallel")
        again["x"] = range(4)
        again.runExperiment(LeavesAProcess(), progress=False)
        assert again.localCluster is local
        df = again.dataframe()
        assert len(df) == 4 and set(df[Experiment.PID]) <= set(local.pids())  # run on the engines
        children = [int(c) for c in df["child"]]
        assert all(psutil.pid_exists(c) for c in children)

        def recorded() -> bool:
            local.check()  # records the cluster's processes again, a second after the last record
            return set(children) <= set(local.pids())

        # In the record (the state file the reaper reads if this process dies), not only found by
        # the environment ipyparallel gives its processes, which a point's process may change.
        wait_until(recorded, 10, "the points' processes to be recorded with the cluster's")
    finally:
        lab.shutdown()
    wait_until(lambda: not any(process_alive({"pid": c, "created": None}) for c in children), 10,
               "the points' processes to be stopped")


def test_a_failing_experiment_leaves_the_warm_cluster_usable(tmp_path: Path) -> None:
    lab, nb, seen = spying_lab(tmp_path / "profile")
    lab["x"] = range(20)
    try:
        lab.runExperiment(Square(fail_at=tuple(range(20))), progress=False)
        assert nb.numberOfResults() == 20
        local = lab.localCluster
        assert local is not None and seen
        local.check()  # the controller runs (raises otherwise)
        lab.runExperiment(Square(), progress=False)
        assert nb.numberOfResults() == 40
        assert lab.localCluster is local  # the same cluster ran the second sweep
        seen = local.processes()
    finally:
        lab.shutdown()
    assert still_running(seen) == []


def test_an_idle_warm_cluster_stops_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "IDLE_SECONDS", 1.0)
    lab, nb, seen = spying_lab(tmp_path / "profile")
    lab["x"] = range(10)
    try:
        lab.runExperiment(Square(), progress=False)
        assert seen
        assert still_running(seen, grace=30) == []
        # The cluster was stopped as it started (the sweep ended first): not one of its processes is left.
        assert processes_of_profile(tmp_path / "profile") == []
        assert warm.running() == []
        assert state_files(tmp_path / "profile") == []
    finally:
        lab.shutdown()


EXIT_SCRIPT = """
import json, sys
from epyclab import Experiment, ParallelLab

class Square(Experiment):
    def do(self, params):
        return {"y": params["x"] ** 2}

lab = ParallelLab(cores=2, profile_dir=sys.argv[1], backend="ipyparallel")
lab["x"] = range(40)
lab.runExperiment(Square(), progress=False)
# What the lab recorded: every process its cluster started, with start times.
print(json.dumps(lab.localCluster.processes()))
"""


def test_a_script_that_runs_a_sweep_and_exits_leaves_no_process(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(EXIT_SCRIPT)
    proc = run_script(script, str(tmp_path / "profile"))
    tree: dict[int, dict[str, Any]] = {}
    try:
        # The process tree while it runs, too: anything it started, recorded or not.
        while proc.poll() is None:
            for p in descendants(proc.pid):
                tree[int(p["pid"])] = p
            threading.Event().wait(0.1)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    recorded = json.loads(out.strip().splitlines()[-1])
    # At least the controller, two engines and the copy that ran points while they started
    # (the controller's schedulers too, if the sweep outlasted their start).
    assert len(recorded) >= 4
    # Sampled every 0.1 s, the tree can miss a process that lived less than that (the forked copy that
    # ran points while the engines started, once they took over; CI saw it): the sampler must have seen
    # the cluster, and every recorded process is checked below whether it was seen or not.
    assert {p["pid"] for p in recorded} & set(tree)
    # At exit the cluster was stopped: nothing it recorded, nothing in its process tree, remains.
    assert still_running(recorded, grace=5) == []
    assert still_running(list(tree.values()), grace=5) == []
    assert processes_of_profile(tmp_path / "profile", grace=5) == []
    assert state_files(tmp_path / "profile") == []


def test_processes_are_stopped_and_results_committed_when_the_notebook_raises(tmp_path: Path) -> None:
    lab, nb, seen = spying_lab(tmp_path / "profile", fail_after=7)
    lab["x"] = range(200)
    with pytest.raises(OSError, match="no space left"):
        lab.runExperiment(Square(), progress=False)
    assert nb.numberOfResults() == 7
    assert nb.commits[-1] == 7
    assert seen
    assert still_running(seen) == []
    assert state_files(tmp_path / "profile") == []


def test_ctrl_c_commits_finished_results_stops_everything_and_propagates(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(CTRL_C_SCRIPT)
    profile, running, out = tmp_path / "profile", tmp_path / "running", tmp_path / "out.json"
    lab = {"profile_dir": str(profile), "backend": "ipyparallel"}
    proc = run_script(script, str(running), str(out), json.dumps(lab))
    try:
        wait_for_file(running)
        procs = descendants(proc.pid)
        assert len(procs) >= 5
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    counts = json.loads(out.read_text())
    assert counts["added"] >= 5
    assert counts["committed"] == counts["added"]
    assert still_running(procs) == []
    assert state_files(profile) == []


HDF5_CTRL_C_SCRIPT = """
import os, sys, time
from epyclab import Experiment, HDF5LabNotebook, ParallelLab

PROFILE, RUNNING, OUT, NOTEBOOK = sys.argv[1:5]

class Slow(Experiment):
    def do(self, params):
        time.sleep(0.05)
        return {"y": params["x"]}

class Notebook(HDF5LabNotebook):
    def addResult(self, rc, tag=None):
        super().addResult(rc, tag)
        if self.numberOfResults() == 5:
            open(RUNNING, "w").close()

nb = Notebook(NOTEBOOK, create=True)
lab = ParallelLab(nb, cores=2, profile_dir=PROFILE, backend="ipyparallel", commitEvery=10**9, commitInterval=3600)
lab["x"] = range(100000)
try:
    lab.runExperiment(Slow(), progress=False)
except KeyboardInterrupt:
    with open(OUT, "w") as f:
        f.write(str(nb.numberOfResults()))
    os._exit(3)   # no close, no exit handlers: the file holds what the lab committed, nothing more
"""


def test_ctrl_c_leaves_every_finished_result_in_an_hdf5_notebook(tmp_path: Path) -> None:
    from epyclab import HDF5LabNotebook

    script = tmp_path / "sweep.py"
    script.write_text(HDF5_CTRL_C_SCRIPT)
    profile, running, out, notebook = tmp_path / "profile", tmp_path / "running", tmp_path / "n", tmp_path / "nb.h5"
    proc = run_script(script, str(profile), str(running), str(out), str(notebook))
    try:
        wait_for_file(running)
        procs = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    added = int(out.read_text())
    assert added >= 5
    nb = HDF5LabNotebook(str(notebook), readonly=True)
    assert nb.numberOfResults() == added
    assert sorted(nb.dataframe()["y"]) == sorted(set(nb.dataframe()["y"]))
    assert still_running(procs) == []


ORPHAN_SCRIPT = """
import os, sys, time
from epyclab import Experiment, ParallelLab

PROFILE, RUNNING = sys.argv[1:3]

class Slow(Experiment):
    def do(self, params):
        if not os.path.exists(RUNNING):
            open(RUNNING, "w").close()
        time.sleep(0.05)
        return {"y": params["x"]}

lab = ParallelLab(cores=2, profile_dir=PROFILE, backend="ipyparallel")
lab["x"] = range(100000)
lab.runExperiment(Slow(), progress=False)
"""


def test_cluster_orphaned_by_a_killed_parent_is_stopped_by_the_next_start(tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    profile, running = tmp_path / "profile", tmp_path / "running"
    proc = run_script(script, str(profile), str(running))
    try:
        wait_for_file(running)
        (state_file,) = (profile / "epyclab").glob("local-*.json")
        # The first points may run in the lab's forked copy before the cluster is up: wait until
        # the controller's schedulers and both engines are recorded.
        wait_until(lambda: (lambda st: len(st["controller"]) >= 2 and len(st["engines"]) >= 2)(
            json.loads(state_file.read_text())), timeout=120, what="the cluster's processes recorded")
        orphans = descendants(proc.pid)
        # The reaper would stop the cluster at once (tests/test_parallel_reaper.py); killed with its
        # owner (as a whole process tree may be), the next start is the clean-up left.
        reaper = json.loads(state_file.read_text())["reaper"]
        os.kill(int(reaper["pid"]), signal.SIGKILL)
        proc.kill()  # SIGKILL: the lab gets no chance to clean up
        # (The lab's forked copy, if still there, sees its parent go and exits by itself.)
        state = json.loads(state_file.read_text())
        cluster_pids = {int(p["pid"]) for p in state["controller"] + state["engines"]}
        orphans = [p for p in orphans if int(p["pid"]) in cluster_pids]
        proc.wait(timeout=30)
        assert len(orphans) >= 5
        assert all(process_alive(p) for p in orphans), "the cluster should outlive its killed parent"
        assert len(list((profile / "epyclab").glob("*.json"))) == 1

        lab, nb, seen = spying_lab(profile)
        lab["x"] = range(10)
        lab.runExperiment(Square(), progress=False)
        lab.shutdown()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # Whatever failed above, leave no orphan behind on the shared machine.
        cleanup_orphans(str(profile))
    assert still_running(orphans) == []
    assert nb.numberOfResults() == 10
    assert still_running(seen) == []
    assert state_files(profile) == []


def test_orphan_killed_before_its_pids_were_recorded_is_stopped_from_ipyparallels_file(tmp_path: Path) -> None:
    # As if the owner died right after ipyparallel started the processes: the state file
    # names the cluster and its dead owner, but no PID.
    profile = tmp_path / "profile"
    cluster = ipp.Cluster(
        n=1, profile_dir=str(profile), cluster_id="epyclab-early-death", controller_ip="127.0.0.1",
        log_level=40, shutdown_atexit=False,
    )
    cluster.start_cluster_sync()
    procs = [p for p in descendants(os.getpid()) if p["pid"] in _cluster_pids_of(cluster)]
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(owner.pid).create_time()
    owner.wait()
    (profile / "epyclab").mkdir(parents=True)
    (profile / "epyclab" / "local-epyclab-early-death.json").write_text(json.dumps({
        "cluster_id": "epyclab-early-death", "profile_dir": str(profile),
        "owner": {"pid": owner.pid, "created": created}, "controller": [], "engines": [],
    }))
    try:
        assert cleanup_orphans(str(profile)) == ["epyclab-early-death"]
    finally:
        if any(process_alive(p) for p in procs):
            cluster.stop_engines_sync()
            cluster.stop_controller_sync()
    assert len(procs) >= 3
    assert still_running(procs) == []
    assert processes_of_profile(profile) == []
    assert state_files(profile) == []


def test_cluster_of_a_live_owner_is_left_alone(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    with LocalCluster(1, str(profile)) as client:
        assert cleanup_orphans(str(profile)) == []
        assert client[:].apply_sync(os.getpid)


MAIN_SCRIPT = """
import json, sys
from epyclab import Experiment, ParallelLab
from besides import OFFSET   # a module next to the script, not installed anywhere

SCALE = 3

def helper(x):
    return x * SCALE + OFFSET

class Scaled(Experiment):
    def do(self, params):
        return {"y": helper(params["x"])}

if __name__ == "__main__":
    lab = ParallelLab(cores=2, profile_dir=sys.argv[1], backend="ipyparallel")
    lab["x"] = range(30)
    lab.runExperiment(Scaled(), progress=False)
    df = lab.dataframe(only_successful=False)
    print(json.dumps({
        "ok": bool(df["epyc.experiment.status"].all()),
        "y": sorted(int(v) for v in df["y"]),
        "pids": sorted({int(p) for p in df["epyclab.experiment.pid"]}),
        "classname": df["epyc.experiment.classname"].iloc[0],
    }))
"""


def test_experiment_defined_in_a_scripts_main_runs_on_the_engines(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "besides.py").write_text("OFFSET = 100\n")
    script = scripts / "main.py"
    script.write_text(MAIN_SCRIPT)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_script(script, str(tmp_path / "profile"), cwd=elsewhere)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["ok"], err
    assert report["y"] == [3 * x + 100 for x in range(30)]
    assert report["classname"] == "__main__.Scaled"
    assert proc.pid not in report["pids"]


# ---- engines dying ---------------------------------------------------------------------------------


def test_an_engine_sigkilled_mid_sweep_loses_no_point(tmp_path: Path) -> None:
    marker = tmp_path / "engine-pid"
    killed: list[int] = []

    def kill_the_engine() -> None:
        pid = int(wait_for_file(marker))
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_engine, daemon=True)
    killer.start()
    lab, nb, seen = spying_lab(tmp_path / "profile")
    lab["x"] = range(60)
    try:
        lab.runExperiment(Announces(str(marker), at=20), progress=False)
    finally:
        lab.shutdown()
    killer.join(timeout=30)
    assert killed
    df = nb.dataframe(only_successful=False)
    assert sorted(df["x"]) == list(range(60))
    assert df[STATUS].all()
    # Point 20 was running on the engine that was killed: it was run again on the other one.
    assert df.set_index("x").loc[20, "pid"] != killed[0]
    assert lab.lastSweep["resubmitted"] >= 1
    assert still_running(seen) == []


def test_a_controller_that_dies_mid_sweep_ends_it_with_an_error(tmp_path: Path) -> None:
    lab, nb, seen = spying_lab(tmp_path / "profile")

    def kill_the_controller() -> None:
        wait_until(lambda: seen, 60, "the lab to start its cluster", interval=0.02)
        os.kill(seen[0]["pid"], signal.SIGKILL)  # the first recorded process is the controller

    killer = threading.Thread(target=kill_the_controller, daemon=True)
    killer.start()
    lab["x"] = range(400)
    with pytest.raises(ClusterConnectionError, match="controller .* has died"):
        lab.runExperiment(Sleepy(0.05), progress=False)
    killer.join(timeout=30)
    assert 0 < nb.numberOfResults() < 400
    assert nb.commits[-1] == nb.numberOfResults()
    assert still_running(seen) == []
    # Every process of the profile, recorded or not: the dead controller's schedulers included.
    assert processes_of_profile(tmp_path / "profile") == []
    assert state_files(tmp_path / "profile") == []


def test_a_controller_killed_before_its_schedulers_were_recorded_leaves_nothing_running(tmp_path: Path) -> None:
    """Its schedulers, forked after the last record and re-parented when it died, are found by the cluster's id."""
    profile = tmp_path / "profile"
    local = LocalCluster(1, str(profile))
    local.launch()  # returns before the controller forks its schedulers: nothing records them here
    try:
        controller = local.cluster.controller.pid if local.cluster and local.cluster.controller else None
        assert controller is not None
        recorded = set(local.pids())

        def unrecorded() -> list[int]:
            try:
                children = psutil.Process(controller).children(recursive=True)
            except psutil.Error:
                return []
            return [c.pid for c in children if c.pid not in recorded]

        wait_until(lambda: len(unrecorded()) >= 2, 60, "the controller to fork its schedulers", interval=0.02)
        schedulers = [{"pid": pid, "created": psutil.Process(pid).create_time()} for pid in unrecorded()]
        os.kill(controller, signal.SIGKILL)
        def ended() -> bool:
            # Gone, or a zombie; reaped between two looks (by its launcher's thread) counts as gone.
            try:
                return psutil.Process(controller).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_until(ended, 20, "the killed controller to end")
        with pytest.raises(ClusterConnectionError, match="controller .* has died"):
            local.check()
        # Seeing the controller dead stops its schedulers at once, not only at the cluster's stop.
        assert still_running(schedulers, grace=0) == []
    finally:
        local.stop()
    assert processes_of_profile(profile) == []
    assert state_files(profile) == []


def test_a_point_that_kills_every_engine_it_runs_on_fails_without_a_hang(tmp_path: Path) -> None:
    local = LocalCluster(3, str(tmp_path / "profile"))
    client = local.start()
    procs = local.processes()
    try:
        lab = ParallelLab(client=client)
        lab["x"] = range(30)
        lab.runExperiment(KillsItsEngine(at=7), progress=False)
        df = lab.dataframe(only_successful=False).set_index("x")
        assert sorted(df.index) == list(range(30))
        assert not df.loc[7, STATUS]
        assert "EngineError" in df.loc[7, Experiment.EXCEPTION]
        assert df.drop(index=7)[STATUS].all()
        # Two engines died for it (once in a chunk, once alone); one remains.
        assert len(client.ids) == 1
    finally:
        local.stop()
    assert still_running(procs) == []


def test_an_engine_that_joins_mid_sweep_gets_the_experiment(tmp_path: Path) -> None:
    local = LocalCluster(1, str(tmp_path / "profile"))
    client = local.start()
    gate = tmp_path / "gate"
    logdir = tmp_path / "runs"
    logdir.mkdir()

    def add_an_engine() -> None:
        assert local.cluster is not None
        local.cluster.start_engines_sync(1)
        wait_until(lambda: len(client.ids) == 2, 60, "the second engine to register")
        gate.touch()

    helper = threading.Thread(target=add_an_engine, daemon=True)
    helper.start()
    try:
        lab = ParallelLab(client=client)
        lab["x"] = range(30)
        lab.runExperiment(WaitsForGate(str(gate), str(logdir)), progress=False)
        helper.join(timeout=60)
        df = lab.dataframe(only_successful=False)
        assert sorted(df["x"]) == list(range(30))
        assert df[STATUS].all()
        assert len(set(df["pid"])) == 2
        runs = {int(f.name): len(f.read_text().splitlines()) for f in logdir.iterdir()}
        assert runs == {x: 1 for x in range(30)}
        assert local.cluster is not None
        procs = [p for p in descendants(os.getpid()) if p["pid"] in _cluster_pids_of(local.cluster)]
    finally:
        local.stop()
    assert procs
    assert still_running(procs) == []


class WaitsForGate(Logged):
    """Holds every point until ``gate`` exists (the test opens it once a second engine has joined)."""

    def __init__(self, gate: str, logdir: str) -> None:
        super().__init__(logdir)
        self.gate = gate

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        while not os.path.exists(self.gate):
            threading.Event().wait(0.02)
        return super().do(params)


# ---- a cluster given to the lab ----------------------------------------------------------------------


def test_a_given_cluster_is_used_and_left_running(tmp_path: Path) -> None:
    cluster = ipp.Cluster(
        n=2, profile_dir=str(tmp_path / "profile"), controller_ip="127.0.0.1",
        controller_args=["--ping=500"], log_level=40,
    )
    cluster.start_cluster_sync()
    try:
        procs = descendants(os.getpid())
        procs = [p for p in procs if p["pid"] in _cluster_pids_of(cluster)]
        lab = ParallelLab(cluster=cluster)
        lab["x"] = range(40)
        lab.runExperiment(Square(), progress=False)
        assert lab.numberOfCores() == 2
        assert len(lab.dataframe()) == 40
        assert all(process_alive(p) for p in procs)
        lab["x"] = range(40, 50)
        lab.runExperiment(Square(), progress=False)
        assert len(lab.dataframe()) == 50
    finally:
        # Stopped by the API that started it: engines first, then the controller.
        cluster.stop_engines_sync()
        cluster.stop_controller_sync()
    assert procs
    assert still_running(procs) == []


def _cluster_pids_of(cluster: ipp.Cluster) -> set[int]:
    """Every process of a cluster, engines started after it included (found from its launchers)."""
    pids = {cluster.controller.pid}
    for engine_set in cluster.engines.values():
        pids |= {launcher.pid for launcher in engine_set.launchers.values()}
    family = set(pids)
    for pid in pids:
        family |= {p["pid"] for p in descendants(pid)}
    return family


def test_a_given_cluster_that_is_not_running_is_refused(tmp_path: Path) -> None:
    cluster = ipp.Cluster(n=1, profile_dir=str(tmp_path / "profile"), log_level=40)
    lab = ParallelLab(cluster=cluster)
    lab["x"] = range(3)
    with pytest.raises(ClusterConnectionError, match="not running; start it first"):
        lab.runExperiment(Square(), progress=False)
