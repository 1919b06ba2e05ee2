"""A cluster that survives its controller's death, and a full reboot, with a sweep in flight.

Real processes throughout: `epyclab cluster start --local` starts a controller
and engines; a sweep is submitted by one process that then exits; the
controller (and, for a reboot, every engine) is killed with SIGKILL by PID;
`start` brings the cluster back; and another process collects. Every point
must end with exactly one successful row. Everything under the profile is
private to the user.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from clusterhub import Square, running_hub
from test_cluster_local import cluster, controller_killed_alone, names_profile, processes_of, wait_gone
from waiting import wait_until

from epyclab.clustersetup.manage import clusterStatus
from epyclab.clustersetup.state import loadProcesses
from epyclab.errors import ClusterConnectionError
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.engine.wire import decode_reply
from epyclab.labs.remote.hub import Hub
from epyclab.labs.remote.jobs import parse_job_id
from epyclab.notebooks.hdf5 import HDF5LabNotebook

POINTS = 40
TESTS = Path(__file__).parent



def a_sweep_under_way(ipdir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Profile "rb" started locally with 2 engines, a sweep submitted by a process that exited, 4 points finished.

    Returns the profile directory and the sweep's notebook.
    """
    assert cluster(ipdir, "-q", "init", "rb").exit_code == 0
    assert cluster(ipdir, "-q", "start", "rb", "--local", "-n", "2").exit_code == 0
    notebook = tmp_path / "sweep.h5"
    submit_in_another_process(ipdir, "rb", notebook)
    wait_finished(ipdir, "rb", 4)
    return ipdir / "profile_rb", notebook


def submit_in_another_process(ipdir: Path, profile: str, notebook: Path, kill_controller: bool = False) -> None:
    """Submit a sweep of POINTS slow points, one per task, from a process that then exits.

    With ``kill_controller`` that process SIGKILLs the controller's process
    group the moment ``runExperiment`` returns.
    """
    script = notebook.with_suffix(".submit.py")
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(TESTS)!r})
        from clusterhub import Square
        from epyclab import ClusterLab, HDF5LabNotebook
        from epyclab.clustersetup.state import loadProcesses

        nb = HDF5LabNotebook({str(notebook)!r}, create=True)
        lab = ClusterLab(nb, profile={profile!r}, ipython_dir={str(ipdir)!r}, chunkSize=1)
        lab["x"] = range({POINTS})
        lab.runExperiment(Square(0.25))
        if {kill_controller!r}:
            os.killpg(int(loadProcesses({str(ipdir / f"profile_{profile}")!r}).controller["pid"]), signal.SIGKILL)
        lab.close()
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=300, cwd=notebook.parent)


def wait_finished(ipdir: Path, profile: str, at_least: int, timeout: float = 120) -> None:
    """Wait until the controller reports ``at_least`` finished tasks (so the sweep is mid-way)."""
    deadline = time.monotonic() + timeout
    while clusterStatus(profile, ipython_dir=ipdir).finished < at_least:
        assert time.monotonic() < deadline, f"fewer than {at_least} tasks finished within {timeout} s"
        time.sleep(0.2)


def kill(profile_dir: Path, engines: bool) -> list[int]:
    """SIGKILL the controller's process group (and every engine's, for a reboot); return the PIDs killed."""
    recorded = loadProcesses(profile_dir)
    groups = [int(recorded.controller["pid"])]
    if engines:
        groups += [pid for pids in recorded.engines.values() for pid in pids]
    for pgid in groups:
        os.killpg(pgid, signal.SIGKILL)
    if engines:
        # An engine's kernel runs apart from its launcher (the nanny's session): kill it by its own PID.
        # The record holds each engine's PID and its parent's, which may since be init (PID 1) or a
        # reused PID: only a process that names this profile is killed.
        for pids in recorded.enginePids.values():
            for pid in pids:
                if names_profile(pid, profile_dir):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass  # already gone with its group
    assert wait_gone(groups) == []
    return groups


def assert_private(root: Path) -> None:
    """Every directory under ``root`` is 0700 and every file 0600 (symlinks none)."""
    for top, _dirs, files in os.walk(root):
        assert stat.S_IMODE(os.lstat(top).st_mode) == 0o700, top
        for name in files:
            path = os.path.join(top, name)
            assert not os.path.islink(path), path
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600, path


def one_successful_row_per_point(notebook: Path) -> None:
    nb = HDF5LabNotebook(str(notebook))
    try:
        assert nb.numberOfPendingResults() == 0
        df = nb.dataframe(only_successful=False)
        failed = df[~df[Experiment.STATUS]]
        assert failed.empty, list(failed[Experiment.EXCEPTION])
        assert sorted(df["x"]) == list(range(POINTS))
        assert list(df["y"]) == [x * x for x in df["x"]]
    finally:
        nb.close()


@pytest.mark.parametrize("what", ["controller", "reboot", "controller at once", "controller alone"])
def test_a_sweep_is_finished_by_another_process_after_the_cluster_restarts(ipdir: Path, tmp_path: Path,
                                                                           what: str) -> None:
    """Issue 13.4 (a reboot: controller and every engine killed) and 14.2 (the controller with its schedulers).

    "controller alone" (issue 11.6): the controller's PID alone is SIGKILLed,
    as the OOM killer would; its schedulers live on, holding its ports, and
    `start` stops them before it starts the controller again.

    "at once": the submitting process kills the controller the moment
    runExperiment returns, before any task finished: runExperiment returned only once the
    hub's durable store held every task, so none is lost (CI saw a Slurm run
    lose all 20 when the store committed every 500 ms).
    """
    assert cluster(ipdir, "-q", "init", "rb").exit_code == 0
    first = cluster(ipdir, "-q", "start", "rb", "--local", "-n", "2")
    assert first.exit_code == 0, first.output
    profile = ipdir / "profile_rb"
    notebook = tmp_path / "sweep.h5"
    submit_in_another_process(ipdir, "rb", notebook, kill_controller=what == "controller at once")
    if what != "controller at once":
        wait_finished(ipdir, "rb", 4)
    before = loadProcesses(profile)
    old_engines = [pid for pids in before.engines.values() for pid in pids]
    if what == "controller alone":
        controller, schedulers = controller_killed_alone(profile)
        killed = [controller, *schedulers]
    else:
        killed = kill(profile, engines=what == "reboot") if what != "controller at once" else []

    again = cluster(ipdir, "-q", "start", "rb", "--local", "-n", "2")
    assert again.exit_code == 0, again.output
    assert "(local): 2" in again.stdout and "2 engine(s) ready" in again.stdout
    after = loadProcesses(profile)
    engines = after.engines["(local)"]
    # Nothing of the dead controller is left (its schedulers held the ports the new one took).
    assert wait_gone(killed) == []
    if what == "reboot":
        assert not set(engines) & set(old_engines)  # two new engines
    else:
        assert engines == old_engines  # the same two came back
    state = clusterStatus("rb", ipython_dir=ipdir)
    # Stale records of dead engines do not count: exactly the two engines that answer.
    assert state.answering and state.engines == {"(local)": 2}

    # This process never submitted anything: it collects from the notebook's job ids alone.
    nb = HDF5LabNotebook(str(notebook))
    lab = ClusterLab(nb, profile="rb", ipython_dir=str(ipdir))
    assert lab.numberOfEngines() == 2
    assert lab.wait(timeout=300, progress=False)
    lab.close()
    one_successful_row_per_point(notebook)

    assert_private(profile)
    assert (profile / "tasks.db").exists()
    stopped = cluster(ipdir, "-q", "stop", "rb")
    assert stopped.exit_code == 0, stopped.output
    assert wait_gone([*killed, *engines, int(after.controller["pid"])]) == []
    assert processes_of(profile) == []


def task_scheduler(profile: Path) -> int:
    """The PID of the process that serves the clients' task port of the profile's controller: its task scheduler."""
    port = json.loads((profile / "security" / "ipcontroller-client.json").read_text())["task"]
    pids = {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert len(pids) == 1, f"the task port {port} is served by {pids}"
    return pids.pop()


def points_done_and_pending(notebook: Path) -> tuple[int, int]:
    """The successful rows and the pending results of the sweep; fails the test if any row failed."""
    nb = HDF5LabNotebook(str(notebook))
    try:
        df = nb.dataframe(only_successful=False)
        failed = df[~df[Experiment.STATUS]] if len(df) else df
        assert failed.empty, list(failed[Experiment.EXCEPTION])
        return len(df), nb.numberOfPendingResults()
    finally:
        nb.close()


def test_a_restarted_controller_whose_task_scheduler_died_fails_no_point(ipdir: Path, tmp_path: Path) -> None:
    """CI saw every resubmission after a reboot go nowhere, three times, and 36 points fail as lost.

    The hub sends what it resubmits to its task scheduler on a socket of its
    own and never hears whether it arrived. Here the restarted controller's
    task scheduler is SIGKILLed (as one that could not bind its port when the
    controller restarted is gone): the hub and the engines still answer. The
    collector must not burn the points' retries on resubmissions that cannot
    arrive: it tries a test task of its own, says the scheduler takes none,
    and leaves every point pending; once the cluster is restarted, the sweep finishes.
    """
    profile, notebook = a_sweep_under_way(ipdir, tmp_path)
    kill(profile, engines=True)
    assert cluster(ipdir, "-q", "start", "rb", "--local", "-n", "2").exit_code == 0
    scheduler = task_scheduler(profile)
    os.kill(scheduler, signal.SIGKILL)
    assert wait_gone([scheduler]) == []

    lab = ClusterLab(HDF5LabNotebook(str(notebook)), profile="rb", ipython_dir=str(ipdir))
    try:
        with pytest.raises(ClusterConnectionError, match="task scheduler of .* takes no tasks"):
            lab.wait(timeout=300, progress=False)
    finally:
        lab.close()
    done, pending = points_done_and_pending(notebook)
    assert done >= 4 and done + pending == POINTS  # nothing failed, nothing lost

    assert cluster(ipdir, "-q", "stop", "rb").exit_code == 0
    assert cluster(ipdir, "-q", "start", "rb", "--local", "-n", "2").exit_code == 0
    lab = ClusterLab(HDF5LabNotebook(str(notebook)), profile="rb", ipython_dir=str(ipdir))
    assert lab.wait(timeout=300, progress=False)
    lab.close()
    one_successful_row_per_point(notebook)
    assert cluster(ipdir, "-q", "stop", "rb").exit_code == 0
    assert processes_of(profile) == []


@pytest.mark.parametrize("what", ["reboot", "controller"])
def test_a_restart_finishes_the_sweep_when_another_process_took_a_port_of_the_controller(
    ipdir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, what: str
) -> None:
    """The likely cause of CI's lost sweep: a restarted controller binds its old ports, picked from the range the
    system also gives outgoing connections; one taken meanwhile leaves ipyparallel running without that part
    (without the task port: no task ever runs, the hub and engines answer). `start` picks new ports, and
    replaces the engines still running (they know only the old ones; their tasks are orphans of the restart)."""
    profile, notebook = a_sweep_under_way(ipdir, tmp_path)
    before = loadProcesses(profile)
    # Each engine's own PID (the first it answered with: the second is its parent's) and its launcher's.
    old_engines = [pids[0] for pids in before.enginePids.values()] + [p for ps in before.engines.values() for p in ps]
    kill(profile, engines=what == "reboot")
    client_file = profile / "security" / "ipcontroller-client.json"
    port = json.loads(client_file.read_text())["task"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        # Listening, as another program's server would (SO_REUSEADDR: the killed controller's port is in TIME_WAIT).
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        again = cluster(ipdir, "-q", "start", "rb", "--local", "-n", "2")
        assert again.exit_code == 0, again.output
        assert f"{port} (task, held by PID {os.getpid()})" in caplog.text
        assert json.loads(client_file.read_text())["task"] != port
        assert wait_gone(old_engines) == []
        lab = ClusterLab(HDF5LabNotebook(str(notebook)), profile="rb", ipython_dir=str(ipdir))
        assert lab.numberOfEngines() == 2
        assert lab.wait(timeout=300, progress=False)
        lab.close()
    one_successful_row_per_point(notebook)
    assert cluster(ipdir, "-q", "stop", "rb").exit_code == 0
    assert processes_of(profile) == []


def test_a_task_is_sent_again_from_another_client_from_the_request_the_hub_stored(tmp_path: Path) -> None:
    """What a collector without the experiment does when the hub's own resubmission never arrived."""
    with running_hub(tmp_path / "profile") as procs:
        nb = HDF5LabNotebook(str(tmp_path / "a.h5"), create=True)
        lab = ClusterLab(nb, profile_dir=str(procs.profile_dir), chunkSize=3)
        lab["x"] = range(3)
        lab.runExperiment(Square())  # submitted, not collected: the hub keeps the task
        (msg_id,) = {parse_job_id(j).msg_id for j in nb.allPendingResults()}
        lab.close()
        client = procs.connect()
        try:
            hub = Hub(client, 10)
            wait_until(lambda: hub.records([msg_id], ["completed"])[msg_id]["completed"] is not None, 60,
                       "the sweep's task to finish")
            ar = hub.resend(msg_id)  # through this client, from the request the hub stored
            assert ar.msg_ids[0] != msg_id
            rcs, _ = decode_reply(ar.get(timeout=60))
            assert [rc[Experiment.PARAMETERS]["x"] for rc in rcs] == [0, 1, 2]
            assert [rc[Experiment.RESULTS]["y"] for rc in rcs] == [0, 1, 4]
            with pytest.raises(KeyError, match="no record"):
                hub.resend("no-such-task")
        finally:
            client.close()


def test_start_after_a_reboot_fails_naming_the_host_when_engines_do_not_register(ipdir: Path) -> None:
    assert cluster(ipdir, "-q", "init", "mute").exit_code == 0
    assert cluster(ipdir, "-q", "start", "mute", "--local", "-n", "1").exit_code == 0
    profile = ipdir / "profile_mute"
    kill(profile, engines=True)
    # Engines with a broken config exit at once and never register.
    config = profile / "ipengine_config.py"
    config.write_text(config.read_text() + "c.IPEngine.timeout = 'soon'\n")
    result = cluster(ipdir, "-q", "start", "mute", "--local", "-n", "1", "--timeout", "10")
    assert result.exit_code == 1
    assert "engines did not register within 10 s on: (local) (0 of 1)" in result.output
    assert cluster(ipdir, "-q", "stop", "mute").exit_code == 0


def test_everything_under_a_profile_is_private(ipdir: Path) -> None:
    old = os.umask(0o022)  # a usual umask: files would be world-readable if epyclab did not see to it
    try:
        assert cluster(ipdir, "-q", "init", "priv").exit_code == 0
        profile = ipdir / "profile_priv"
        assert_private(profile)
        assert cluster(ipdir, "-q", "start", "priv", "--local", "-n", "1").exit_code == 0
        lab = ClusterLab(HDF5LabNotebook(str(ipdir.parent / "p.h5"), create=True), profile="priv",
                         ipython_dir=str(ipdir))
        lab["x"] = range(3)
        lab.runExperiment(_Double())
        assert lab.wait(timeout=120, progress=False)
        lab.close()
        assert (profile / "tasks.db").exists() and list((profile / "log").glob("*.log"))
        assert_private(profile)
        assert cluster(ipdir, "-q", "stop", "priv").exit_code == 0
        assert_private(profile)
    finally:
        os.umask(old)


class _Double(Experiment):
    def do(self, params: dict) -> dict:
        return {"y": 2 * params["x"]}
