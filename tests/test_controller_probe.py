"""A ClusterLab fails fast on a controller that is not running, and waits for one that is merely slow.

Real controllers (tests/clusterhub.py, or `epyclab cluster start`), started and
killed by the tests; the probe itself on real sockets of this machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from clusterhub import HubProcesses
from test_cluster_local import cluster, controller_killed_alone

from epyclab.clustersetup import processes
from epyclab.clustersetup.controllertree import controllerExited
from epyclab.clustersetup.hosts import LOCAL
from epyclab.clustersetup.ssh import Remote
from epyclab.clustersetup.state import Processes, loadProcesses, saveProcesses
from epyclab.errors import ClusterConnectionError
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.remote.hubprobe import controller_absent
from epyclab.notebooks.labnotebook import LabNotebook

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def stale(tmp_path: Path) -> HubProcesses:
    """The profile of a controller that was started, then SIGKILLed: its connection file stays behind."""
    procs = HubProcesses(tmp_path / "profile", engines=0)
    try:
        procs.start_controller()
        procs.kill_controller()
    finally:
        procs.stop()
    assert procs.alive() == []
    assert procs.client_file.exists()
    # A killed multi-threaded process shows as a zombie while its last threads still exit and hold
    # its sockets; the controller is gone for good once its port refuses connections.
    port = json.loads(procs.client_file.read_text())["registration"]
    deadline = time.monotonic() + 10
    while _accepts(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _accepts(port), f"port {port} of the killed controller still accepts connections"
    return procs


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_a_killed_controller_fails_within_10_s_with_the_usual_message(stale: HubProcesses) -> None:
    started = time.monotonic()
    with pytest.raises(ClusterConnectionError) as err:
        ClusterLab(LabNotebook(), profile_dir=str(stale.profile_dir))  # default timeout and reconnections
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"took {elapsed:.1f} s to say the controller is not running"
    message = str(err.value)
    port = json.loads(stale.client_file.read_text())["registration"]
    assert "did not answer" in message and "probably not running" in message
    assert f"127.0.0.1:{port}" in message
    assert str(stale.client_file) in message
    assert f"ipcluster start --profile-dir={stale.profile_dir}" in message


def test_a_paused_controller_gets_the_patience_and_answers(tmp_path: Path) -> None:
    # Alive but not answering for 4 s (SIGSTOP): the lab must wait, not declare it dead.
    # No engines: a paused hub would count their missed heartbeats as deaths, which is not the point here.
    procs = HubProcesses(tmp_path / "profile", engines=0)
    try:
        procs.start()
        assert procs.controller is not None
        group = procs.controller.pid
        os.killpg(group, signal.SIGSTOP)
        resume = threading.Timer(4.0, os.killpg, (group, signal.SIGCONT))
        resume.start()
        try:
            started = time.monotonic()
            lab = ClusterLab(LabNotebook(), profile_dir=str(procs.profile_dir))
            waited = time.monotonic() - started
        finally:
            resume.join()
            os.killpg(group, signal.SIGCONT)
        assert waited >= 3.5
        # Connected, and the hub answers queries.
        assert lab.numberOfEngines() == 0
        lab.close()
    finally:
        procs.stop()
    assert procs.alive() == []


def test_probe_answers_only_for_a_refused_port(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        path = tmp_path / "client.json"
        path.write_text(json.dumps({"interface": "tcp://127.0.0.1", "registration": port, "ssh": ""}))
        assert controller_absent(path) is None  # someone listens: it may be a slow controller
        listener.close()
        reason = controller_absent(path, patience=0.5)
        assert reason is not None and f"127.0.0.1:{port}" in reason
        # Through ssh the port is not ours to probe; nor is a file we cannot read.
        assert controller_absent(path, sshserver="somehost") is None
        path.write_text("{ not json")
        assert controller_absent(path) is None
        assert controller_absent(tmp_path / "missing.json") is None
    finally:
        listener.close()


def test_a_controller_killed_alone_fails_within_10_s_though_its_schedulers_hold_its_ports(ipdir: Path) -> None:
    """Issue 11.6: started by `epyclab cluster start`, the controller's PID is known; dead, it is not running.

    Its schedulers outlive it and keep its registration port accepting
    connections, so the port alone would say "alive" (it took 54 s to fail).
    """
    assert cluster(ipdir, "-q", "init", "gone").exit_code == 0
    assert cluster(ipdir, "-q", "start", "gone", "--local", "-n", "1").exit_code == 0
    profile = ipdir / "profile_gone"
    controller, _ = controller_killed_alone(profile)
    started = time.monotonic()
    with pytest.raises(ClusterConnectionError) as err:
        ClusterLab(LabNotebook(), profile="gone", ipython_dir=str(ipdir))  # default timeout and reconnections
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"took {elapsed:.1f} s to say the controller is not running"
    message = str(err.value)
    assert "did not answer" in message and "probably not running" in message
    assert f"PID {controller}" in message and "has exited" in message
    assert str(profile / "security" / "ipcontroller-client.json") in message
    assert "epyclab cluster start gone" in message


def test_a_paused_controller_of_a_profile_gets_the_patience_and_answers(ipdir: Path) -> None:
    """Its PID is recorded and alive (SIGSTOP, 4 s): the lab waits for it, then connects."""
    assert cluster(ipdir, "-q", "init", "slow").exit_code == 0
    assert cluster(ipdir, "-q", "start", "slow", "--local", "-n", "1").exit_code == 0
    controller = int(loadProcesses(ipdir / "profile_slow").controller["pid"])
    os.kill(controller, signal.SIGSTOP)
    resume = threading.Timer(4.0, os.kill, (controller, signal.SIGCONT))
    resume.start()
    try:
        started = time.monotonic()
        lab = ClusterLab(LabNotebook(), profile="slow", ipython_dir=str(ipdir))
        waited = time.monotonic() - started
    finally:
        resume.join()
        os.kill(controller, signal.SIGCONT)
    try:
        assert waited >= 3.5
        assert lab.numberOfEngines() == 1
    finally:
        lab.close()


@pytest.mark.parametrize(
    "case",
    ["as recorded", "on another host", "on another machine", "no start time", "file written since", "in a batch job",
     "alive"],
)
def test_only_a_recorded_controller_of_this_machine_is_judged_by_its_pid(tmp_path: Path, case: str) -> None:
    """controllerExited says "exited" only for the controller that `start` recorded here for this very file.

    A controller elsewhere (another host, another machine sharing the profile,
    a batch job) or started since by other means (its file written again) is
    left to the port probe and the patience; so is one that still runs.
    """
    profile = tmp_path / "profile_p"
    client = profile / "security" / "ipcontroller-client.json"
    client.parent.mkdir(parents=True)
    client.write_text("{}")
    proc = subprocess.Popen(["sleep", "600"])
    try:
        # As `epyclab cluster start` records it (see epyclab/clustersetup/controllertree.py).
        record = {"host": "(local)", "pid": proc.pid, "started": _start_of(proc.pid), "machine": socket.gethostname(),
                  "client": client.stat().st_mtime_ns}
        assert processes.identified(Remote(), LOCAL, [[proc.pid, record["started"]]]) == [proc.pid]
        if case != "alive":
            proc.kill()
            proc.wait()
        if case == "on another host":
            record["host"] = "node7"
        elif case == "on another machine":
            record["machine"] = socket.gethostname() + "-not"
        elif case == "no start time":
            del record["started"]
        elif case == "in a batch job":
            record = {"role": "controller", "kind": "slurm", "launcher": {"job_id": "12"}}
        saveProcesses(profile, Processes(controller=record))
        if case == "file written since":
            time.sleep(0.01)
            client.write_text("{ }")
        reason = controllerExited(client)
        if case == "as recorded":
            assert reason is not None and f"PID {proc.pid}" in reason and "has exited" in reason
            assert str(profile / "pid") in reason
        else:
            assert reason is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_of(pid: int) -> str:
    """The start time of ``pid`` as `start` records it on Linux (boot id, clock ticks since boot)."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    return f"boot{boot}:{Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"
