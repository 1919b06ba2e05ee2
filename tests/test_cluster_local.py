"""A real single-machine cluster from an epyclab profile: start, results, a controller killed and
restarted (results kept, engines back), status, stop with nothing left behind. No ssh needed."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import time
from contextlib import closing
from pathlib import Path

import ipyparallel
import pytest
from click.testing import CliRunner, Result
from waiting import wait_until

from epyclab.cli import main
from epyclab.clustersetup.manage import clusterStatus
from epyclab.clustersetup.state import loadProcesses


def cluster(ipdir: Path, *args: str) -> Result:
    """Run ``epyclab cluster ARGS`` in this process, as a user would from the shell."""
    return CliRunner().invoke(main, ["cluster", "--ipython-dir", str(ipdir), *args])


def running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found


def stored_tasks(profile: Path) -> set[str]:
    """The ids of the finished tasks that the controller's task store has committed to its tasks.db."""
    try:
        with closing(sqlite3.connect(f"file:{profile / 'tasks.db'}?mode=ro", uri=True, timeout=1)) as db:
            rows = db.execute('SELECT msg_id FROM "ipython-tasks" WHERE completed IS NOT NULL').fetchall()
    except sqlite3.OperationalError:  # not created yet, or locked by a commit right now
        return set()
    return {row[0] for row in rows}


def names_profile(pid: int, profile: Path) -> bool:
    """True if process ``pid`` (not this one, not init) names ``profile`` in its command line or environment."""
    if pid <= 1 or pid == os.getpid():
        return False
    want = str(profile.resolve()).encode()
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return want in cmdline or want in environ


def processes_of(profile: Path, timeout: float = 20.0) -> list[int]:
    """PIDs of live processes whose command line or environment names ``profile``, after at most ``timeout`` s.

    Found by walking /proc, not from any record: a controller's scheduler no
    record names still has the profile in its command line (it is a fork of
    the controller). A leftover is SIGKILLed, so a failing test leaves nothing
    running on the shared machine.
    """
    def find() -> list[int]:
        return [int(e) for e in os.listdir("/proc") if e.isdigit() and names_profile(int(e), profile)
                and running(int(e))]

    deadline = time.monotonic() + timeout
    left = find()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = find()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return left


def wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    """Wait for ``pids`` (and their process groups) to end; return those still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if running(p) or group_members(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_controller_restart_keeps_results_and_engines(ipdir: Path) -> None:
    assert cluster(ipdir, "-q", "init", "loc").exit_code == 0
    started = cluster(ipdir, "-q", "start", "loc", "--local", "-n", "1")
    assert started.exit_code == 0, started.output
    assert "(local): 1" in started.stdout

    profile = ipdir / "profile_loc"
    for name in ("ipcontroller-client.json", "ipcontroller-engine.json"):
        assert stat.S_IMODE((profile / "security" / name).stat().st_mode) == 0o600
    recorded = loadProcesses(profile)
    controller = int(recorded.controller["pid"])
    engine = recorded.engines["(local)"][0]

    client = ipyparallel.Client(str(profile / "security" / "ipcontroller-client.json"), timeout=10)
    try:
        view = client.load_balanced_view()
        submitted = [view.apply_async(pow, x, 2) for x in range(5)]
        assert [r.get(30) for r in submitted] == [0, 1, 4, 9, 16]
        ids = [r.msg_ids[0] for r in submitted]
        whose = view.apply_async(os.getpid)
        assert whose.get(30) == engine
    finally:
        client.close()
    # The hub stores a result when it arrives, after the client has it: kill the controller only once all
    # six are on disk.
    done = [*ids, whose.msg_ids[0]]
    wait_until(lambda: stored_tasks(profile) >= set(done), 30, "the task store to commit the finished tasks")

    # The controller dies with its schedulers (its whole process group), as in a crash.
    os.killpg(controller, signal.SIGKILL)
    assert wait_gone([controller]) == []
    down = cluster(ipdir, "status", "loc")
    assert down.exit_code == 1
    assert "exited" in down.stdout
    assert running(engine)  # engines wait for their controller

    restarted = cluster(ipdir, "-q", "start", "loc")
    assert restarted.exit_code == 0, restarted.output
    assert "(local): 1" in restarted.stdout
    after = loadProcesses(profile)
    assert int(after.controller["pid"]) != controller
    assert after.engines == {"(local)": [engine]}  # no new engine: the old one came back

    client = ipyparallel.Client(str(profile / "security" / "ipcontroller-client.json"), timeout=10)
    try:
        # Results of tasks finished before the crash, fetched from the restarted controller's store.
        assert [client.get_result(i).get(10) for i in ids] == [0, 1, 4, 9, 16]
        # And the engine that registered again takes new work.
        assert client.load_balanced_view().apply_async(os.getpid).get(30) == engine
    finally:
        client.close()

    state = clusterStatus("loc", ipython_dir=ipdir)
    assert state.answering
    assert state.engines == {"(local)": 1}
    assert (state.queued, state.running, state.finished) == (0, 0, 7)

    # Two slow tasks on the one engine: while the first runs, status says one running and one queued.
    client = ipyparallel.Client(str(profile / "security" / "ipcontroller-client.json"), timeout=10)
    try:
        slow = [client.load_balanced_view().apply_async(time.sleep, 2) for _ in range(2)]
        wait_until(lambda: clusterStatus("loc", ipython_dir=ipdir).running == 1, 30, "status to show a running task")
        state = clusterStatus("loc", ipython_dir=ipdir)
        assert (state.queued, state.running, state.finished) in {(1, 1, 7), (0, 1, 8)}
        for r in slow:
            r.get(30)
    finally:
        client.close()
    wait_until(lambda: clusterStatus("loc", ipython_dir=ipdir).finished == 9, 30, "the two slow tasks to be stored")
    state = clusterStatus("loc", ipython_dir=ipdir)
    assert (state.queued, state.running, state.finished) == (0, 0, 9)

    stopped = cluster(ipdir, "-q", "stop", "loc")
    assert stopped.exit_code == 0, stopped.output
    assert "(local): stopped 1 engine(s), stopped the controller" in stopped.stdout
    assert wait_gone([engine, int(after.controller["pid"])]) == []
    assert loadProcesses(profile).empty()
    assert not (profile / "pid" / "epyclab-processes.json").exists()


def test_a_start_after_a_stop_takes_new_ports_when_another_process_took_an_old_one(
    ipdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The controller keeps its connection files (ports) from run to run; one taken meanwhile would leave
    ipyparallel running without the scheduler that serves it (with the task port: not one task would run)."""
    assert cluster(ipdir, "-q", "init", "ports").exit_code == 0
    assert cluster(ipdir, "-q", "start", "ports", "--local", "-n", "1").exit_code == 0
    assert cluster(ipdir, "-q", "stop", "ports").exit_code == 0
    client_file = ipdir / "profile_ports" / "security" / "ipcontroller-client.json"
    port = json.loads(client_file.read_text())["task"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the stopped controller's TIME_WAIT
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        again = cluster(ipdir, "-q", "start", "ports", "--local", "-n", "1")
        assert again.exit_code == 0, again.output
        assert f"{port} (task, held by PID {os.getpid()})" in caplog.text
        assert json.loads(client_file.read_text())["task"] != port
        client = ipyparallel.Client(str(client_file))
        try:
            # A task through the task scheduler: it serves the new port.
            assert client.load_balanced_view().apply_async(os.getpid).get(timeout=60) > 0
        finally:
            client.close()
    assert cluster(ipdir, "-q", "stop", "ports").exit_code == 0
    assert processes_of(ipdir / "profile_ports") == []


def test_start_refuses_a_running_cluster_and_stop_is_idempotent(ipdir: Path) -> None:
    cluster(ipdir, "-q", "init", "twice")
    assert cluster(ipdir, "-q", "start", "twice", "--local", "-n", "1").exit_code == 0
    again = cluster(ipdir, "start", "twice", "--local", "-n", "1")
    assert again.exit_code == 1
    assert "is running" in again.output and "epyclab cluster stop twice" in again.output
    recorded = loadProcesses(ipdir / "profile_twice")
    pids = [int(recorded.controller["pid"]), *recorded.engines["(local)"]]
    dry = cluster(ipdir, "-q", "stop", "twice", "--dry-run")
    assert dry.exit_code == 0
    assert f"(local): would stop 1 engine(s), would stop the controller (PID {pids[0]})" in dry.stdout
    assert all(running(p) for p in pids) and loadProcesses(ipdir / "profile_twice") == recorded
    assert cluster(ipdir, "-q", "stop", "twice").exit_code == 0
    assert wait_gone(pids) == []
    second = cluster(ipdir, "stop", "twice")
    assert second.exit_code == 0
    assert "nothing was running" in second.stdout


def test_a_controller_that_cannot_start_is_reported_with_its_log(ipdir: Path) -> None:
    cluster(ipdir, "-q", "init", "broken")
    profile = ipdir / "profile_broken"
    config = profile / "ipcontroller_config.py"
    config.write_text(config.read_text() + "c.IPController.db_class = 'no.such.module.Store'\n")
    result = cluster(ipdir, "-q", "start", "broken", "--local", "-n", "1", "--timeout", "30")
    assert result.exit_code == 1
    assert "the controller (PID" in result.output and "exited" in result.output
    assert "No module named 'no'" in result.output  # the end of its log says why
    assert json.loads((profile / "pid" / "epyclab-processes.json").read_text())["engines"] == {}
    assert cluster(ipdir, "-q", "stop", "broken").exit_code == 0


def test_engines_that_do_not_register_are_named(ipdir: Path) -> None:
    cluster(ipdir, "-q", "init", "mute")
    profile = ipdir / "profile_mute"
    # Engines with a broken config exit at once and never register.
    config = profile / "ipengine_config.py"
    config.write_text(config.read_text() + "c.IPEngine.timeout = 'soon'\n")
    result = cluster(ipdir, "-q", "start", "mute", "--local", "-n", "1", "--timeout", "5")
    assert result.exit_code == 1
    assert "engines did not register within 5 s on: (local) (0 of 1)" in result.output
    recorded = loadProcesses(profile)  # what did start is recorded, so stop finds it
    pids = [int(recorded.controller["pid"]), *recorded.engines["(local)"]]
    assert len(pids) == 2
    assert cluster(ipdir, "-q", "stop", "mute").exit_code == 0
    assert wait_gone(pids) == []


def controller_killed_alone(profile: Path) -> tuple[int, list[int]]:
    """SIGKILL the recorded controller by its PID alone, as a crash or the OOM killer would; its schedulers stay.

    Returns the controller's PID and the PIDs of the schedulers it left running
    (found in /proc, its process group, not from epyclab's records).
    """
    controller = int(loadProcesses(profile).controller["pid"])
    schedulers = [p for p in group_members(controller) if p != controller]
    assert len(schedulers) >= 2, "an ipyparallel controller forks its schedulers"
    os.kill(controller, signal.SIGKILL)
    wait_until(lambda: not running(controller), 20, "the killed controller to end")
    # What makes this case hard: they live on, and the controller's registration port still accepts.
    assert all(running(p) for p in schedulers)
    port = json.loads((profile / "security" / "ipcontroller-client.json").read_text())["registration"]
    assert accepts(port)
    return controller, schedulers


def accepts(port: int) -> bool:
    """True if something accepts a TCP connection on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("record", ["this epyclab's", "an older epyclab's"])
def test_stop_after_the_controller_was_killed_alone_leaves_no_process(ipdir: Path, record: str) -> None:
    """Issue 11.6: stop finds the schedulers of a controller that died alone, by PID and start time.

    An older epyclab recorded the controller's host and PID only (a cluster it
    started may still run after an upgrade): its schedulers are then found as
    its process group, whose ID no other process can have while they live.
    """
    assert cluster(ipdir, "-q", "init", "alone").exit_code == 0
    assert cluster(ipdir, "-q", "start", "alone", "--local", "-n", "2").exit_code == 0
    profile = ipdir / "profile_alone"
    recorded = loadProcesses(profile)
    # The controller and its schedulers, recorded by start when it answered.
    assert [int(recorded.controller["pid"]), recorded.controller["started"]] in recorded.controller["tree"]
    assert len(recorded.controller["tree"]) > 2
    if record == "an older epyclab's":
        state = profile / "pid" / "epyclab-processes.json"
        data = json.loads(state.read_text())
        data["controller"] = {"host": "(local)", "pid": data["controller"]["pid"]}
        state.write_text(json.dumps(data))
    engines = recorded.engines["(local)"]
    controller, schedulers = controller_killed_alone(profile)
    port = json.loads((profile / "security" / "ipcontroller-client.json").read_text())["registration"]
    status = cluster(ipdir, "status", "alone")
    assert status.exit_code == 1
    assert f"PID {controller} on (local), exited ({len(schedulers)} process(es) it started still run" in status.stdout

    stopped = cluster(ipdir, "-q", "stop", "alone")
    assert stopped.exit_code == 0, stopped.output
    assert (f"(local): stopped 2 engine(s), the controller had already exited; "
            f"stopped the {len(schedulers)} process(es) it left running") in stopped.stdout
    assert wait_gone([controller, *schedulers, *engines]) == []
    assert processes_of(profile) == []  # not only those the test found: every process of the profile
    assert not accepts(port)
    assert loadProcesses(profile).empty()
