"""The cluster helpers' parts that need no running cluster: hosts, ssh command lines, failures
collected per host, profile files, the task store, the wheelhouse fingerprint, dry runs; and processes
named by PID and start time (real processes of this machine, stopped by PID)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import assume, given
from hypothesis import strategies as st
from waiting import wait_until

from epyclab.cli import main
from epyclab.clustersetup import processes
from epyclab.clustersetup.engines import engineCount
from epyclab.clustersetup.errors import ClusterSetupError, HostFailures, HostSpecError, RemoteCommandError
from epyclab.clustersetup.hosts import LOCAL, Host, parseHost, parseHosts, readWorkersFile
from epyclab.clustersetup.profile import CONTROLLER_CONFIG, ENGINE_CONFIG, initProfile, requireProfile
from epyclab.clustersetup.ssh import Remote, rsyncPath, shellPath
from epyclab.clustersetup.sync import syncHost
from epyclab.clustersetup.taskstore import TaskStore
from epyclab.clustersetup.wheelhouse import Wheelhouse, _content_hash, requirementsText

# ---- hosts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "user", "host", "port"),
    [
        ("node1", None, "node1", None),
        ("alice@node1", "alice", "node1", None),
        ("alice@node1:2222", "alice", "node1", 2222),
        ("10.0.0.5:22", None, "10.0.0.5", 22),
        ("bob@[::1]:2200", "bob", "[::1]", 2200),
    ],
)
def test_host_specs_parse(spec: str, user: str | None, host: str, port: int | None) -> None:
    parsed = parseHost(spec)
    assert (parsed.user, parsed.host, parsed.port) == (user, host, port)
    assert str(parsed) == spec


def test_ipv6_destinations() -> None:
    h = parseHost("bob@[::1]:2200")
    assert h.destination == "bob@::1"  # ssh's form
    assert h.rsyncDestination == "bob@[::1]"  # rsync needs the brackets before ':path'


@pytest.mark.parametrize("spec", ["", "a b", "node:port", "-oProxyCommand=x", "u@-h", "@h", "node:0", "node:70000"])
def test_bad_host_specs_name_the_spec(spec: str) -> None:
    with pytest.raises(HostSpecError) as info:
        parseHost(spec)
    if spec in ("node:0", "node:70000"):
        port = spec.split(":")[1]
        assert str(info.value) == f"worker {spec!r} has port {port}, which is not between 1 and 65535"
    else:
        assert str(info.value) == (
            f"cannot read worker {spec!r}: write it as [user@]host[:port], e.g. alice@node1:2222 or node2"
        )


def test_duplicate_workers_are_dropped() -> None:
    assert parseHosts(["a", "u@b", "a", "u@b:22"]) == [Host("a"), Host("b", "u"), Host("b", "u", 22)]


def test_workers_file(tmp_path: Path) -> None:
    f = tmp_path / "workers"
    f.write_text("# the lab's machines\nnode1\n\n  alice@node2:2222   # the big one\n")
    assert readWorkersFile(f) == ["node1", "alice@node2:2222"]
    f.write_text("node1 node2\n")
    with pytest.raises(HostSpecError, match="line 1"):
        readWorkersFile(f)
    with pytest.raises(HostSpecError, match="cannot read the workers file"):
        readWorkersFile(tmp_path / "missing")


# ---- command lines -----------------------------------------------------------------------------


def test_ssh_command_line_passes_user_options_first() -> None:
    remote = Remote(["-F /home/me/.ssh/cluster", "-o ProxyJump=gw"])
    argv = remote.sshCommand(parseHost("alice@node1:2222"), "echo hi")
    assert argv == [
        "ssh",
        "-n",  # never read the caller's stdin
        "-F",
        "/home/me/.ssh/cluster",
        "-o",
        "ProxyJump=gw",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=15",
        "-p",
        "2222",
        "alice@node1",
        "sh -c 'echo hi'",
    ]


def test_rsync_command_line_uses_the_same_ssh() -> None:
    remote = Remote(["-F cfg"])
    argv = remote.rsyncCommand(parseHost("bob@[::1]:2200"), ["/a/b"], "~/x/", ["--times"])
    assert argv == [
        "rsync",
        "-e",
        "ssh -F cfg -o BatchMode=yes -o ConnectTimeout=15 -p 2200",
        "--times",
        "/a/b",
        "bob@[::1]:x/",
    ]


def test_remote_paths() -> None:
    assert shellPath("~/epyclab venv") == "\"$HOME\"/'epyclab venv'"
    assert shellPath("/opt/v") == "/opt/v"
    assert rsyncPath("~/v/") == "v/"
    assert rsyncPath("/opt/v") == "/opt/v"


# ---- failures collected per host -----------------------------------------------------------------


def test_one_failing_host_does_not_stop_the_others() -> None:
    remote = Remote()
    hosts = [Host("good1"), Host("bad"), Host("good2")]

    def step(host: Host) -> str:
        code = 3 if host.host == "bad" else 0
        return remote.run(str(host), ["sh", "-c", f"echo done on {host.host}; echo oops >&2; exit {code}"]).strip()

    with pytest.raises(HostFailures) as info:
        remote.forEachHost("test", hosts, step)
    error = info.value
    assert error.outcomes == {"good1": "done on good1", "good2": "done on good2"}
    assert list(error.failures) == ["bad"]
    failure = error.failures["bad"]
    assert isinstance(failure, RemoteCommandError)
    assert failure.returncode == 3
    assert "sh -c" in failure.command
    assert str(error).splitlines()[1].strip().startswith("bad: `sh -c")
    assert "oops" in str(error)


def test_a_missing_program_is_a_clear_failure() -> None:
    with pytest.raises(RemoteCommandError, match="cannot run no-such-program-here"):
        Remote().run("h", ["no-such-program-here"])


def test_dry_run_records_and_echoes_without_running(tmp_path: Path) -> None:
    echoed: list[str] = []
    remote = Remote(dryRun=True, echo=echoed.append)
    marker = tmp_path / "ran"
    assert remote.run("h", ["touch", str(marker)]) == ""
    assert not marker.exists()
    assert echoed == [f"[h] touch {marker}"]
    assert remote.commands == [f"touch {marker}"]


def test_engine_count() -> None:
    assert engineCount(4) == "4"
    assert engineCount(None, 1) == "$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN) - 1"
    with pytest.raises(ClusterSetupError, match="at least 1"):
        engineCount(0)
    with pytest.raises(ClusterSetupError, match="--leave-free"):
        engineCount(None, -1)


# ---- profile -----------------------------------------------------------------------------------


def test_init_writes_the_settings_and_keeps_user_lines(tmp_path: Path) -> None:
    directory = initProfile("p", ipython_dir=tmp_path)
    assert directory == tmp_path / "profile_p"
    config = (directory / CONTROLLER_CONFIG).read_text()
    for line in (
        "c.IPController.ip = '127.0.0.1'",
        "c.IPController.reuse_files = True",
        "c.IPController.restore_engines = True",
        "c.IPController.db_class = 'epyclab.clustersetup.taskstore.TaskStore'",
        "c.HeartMonitor.period = 500",
    ):
        assert line in config
    assert "max_heartbeat_misses" in (directory / ENGINE_CONFIG).read_text()
    assert stat.S_IMODE((directory / "security").stat().st_mode) == 0o700
    # A user's own line outside the block survives a second init, which updates the block.
    (directory / CONTROLLER_CONFIG).write_text(config + "c.TaskScheduler.hwm = 4\n")
    initProfile("p", ip="10.1.2.3", ipython_dir=tmp_path)
    config = (directory / CONTROLLER_CONFIG).read_text()
    assert "c.TaskScheduler.hwm = 4" in config
    assert "c.IPController.ip = '10.1.2.3'" in config
    assert config.count("c.IPController.ip =") == 1


def test_init_on_another_address_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    initProfile("p", ip="0.0.0.0", ipython_dir=tmp_path)
    assert "can reach it" in caplog.text
    assert "--curve" in caplog.text


def test_curve_keys_are_private_and_kept(tmp_path: Path) -> None:
    directory = initProfile("p", curve=True, ipython_dir=tmp_path)
    config = directory / CONTROLLER_CONFIG
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds the secret key
    first = config.read_text()
    assert "c.IPController.enable_curve = True" in first
    initProfile("p", curve=True, ipython_dir=tmp_path)
    assert config.read_text() == first  # same keys: connection files stay valid


def test_changed_address_drops_stale_connection_files(tmp_path: Path) -> None:
    directory = initProfile("p", ipython_dir=tmp_path)
    engine = directory / "security" / "ipcontroller-engine.json"
    engine.write_text(json.dumps({"interface": "tcp://127.0.0.1", "curve_serverkey": None}))
    initProfile("p", ipython_dir=tmp_path)
    assert engine.exists()  # same settings: kept
    initProfile("p", ip="10.1.2.3", ipython_dir=tmp_path)
    assert not engine.exists()


def test_missing_profile_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(ClusterSetupError, match="epyclab cluster init nope"):
        requireProfile("nope", tmp_path)
    with pytest.raises(ClusterSetupError, match="not usable as a directory name"):
        requireProfile("../x", tmp_path)


# ---- task store ------------------------------------------------------------------------------------


def test_task_store_keeps_records_over_a_restart(tmp_path: Path) -> None:
    store = TaskStore(location=str(tmp_path), session="first")
    record = store._defaults()
    record.update(msg_id="m1", submitted=datetime.now(), client_uuid="c", engine_uuid="e", queue="task")
    store.add_record("m1", record)
    store.close()
    # A new controller (a new session) opens the same file: same table, same records.
    again = TaskStore(location=str(tmp_path), session="second")
    try:
        assert again.table == "ipython-tasks"
        assert again.get_record("m1")["engine_uuid"] == "e"
    finally:
        again.close()


# ---- wheelhouse ------------------------------------------------------------------------------------


def _wheel(path: Path, when: tuple[int, ...], body: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in (
            ("pkg/__init__.py", body),
            ("pkg-1.0.dist-info/RECORD", f"pkg/__init__.py,{hash(body)},1\n"),
        ):
            archive.writestr(zipfile.ZipInfo(name, date_time=when), text)
    return path


def test_fingerprint_ignores_build_time_but_not_content(tmp_path: Path) -> None:
    a = _wheel(tmp_path / "a.whl", (2024, 1, 1, 0, 0, 0), "x = 1\n")
    b = _wheel(tmp_path / "b.whl", (2025, 6, 1, 12, 0, 0), "x = 1\n")
    c = _wheel(tmp_path / "c.whl", (2024, 1, 1, 0, 0, 0), "x = 2\n")
    assert a.read_bytes() != b.read_bytes()
    assert _content_hash(a) == _content_hash(b)
    assert _content_hash(a) != _content_hash(c)


def test_requirements_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert requirementsText() == ""  # no requirements-cluster.txt here: epyclab and its dependencies only
    (tmp_path / "requirements-cluster.txt").write_text("numpy\n")
    assert requirementsText() == "numpy\n"
    (tmp_path / "other.txt").write_text("scipy\n")
    assert requirementsText("other.txt") == "scipy\n"
    frozen = requirementsText(freeze=True)
    assert "ipyparallel==" in frozen
    assert "epyclab" not in frozen.split("\n", 1)[1].lower()
    with pytest.raises(ClusterSetupError, match="not both"):
        requirementsText("other.txt", freeze=True)
    with pytest.raises(ClusterSetupError, match="cannot read the requirements file"):
        requirementsText("missing.txt")


# ---- the command line, without running anything remote ----------------------------------------------


def test_sync_dry_run_prints_every_command_and_changes_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    ipdir = str(tmp_path / "ipython")
    assert runner.invoke(main, ["cluster", "-q", "--ipython-dir", ipdir, "init", "p"]).exit_code == 0
    result = runner.invoke(
        main,
        [
            "cluster", "-q", "--ipython-dir", ipdir, "sync", "p", "--workers", "alice@node1:2222,node2",
            "--ssh-option", "-F /etc/cluster_ssh", "--dry-run",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # One entry per command; an ssh command's script spans several lines.
    lines = [entry for entry in re.split(r"^(?=\[)", result.stdout, flags=re.M) if entry]
    assert any(line.startswith("[local] ") and " -m pip wheel " in line for line in lines)
    for host, target in (("alice@node1:2222", "alice@node1"), ("node2", "node2")):
        mine = [line for line in lines if line.startswith(f"[{host}] ")]
        assert any(
            line.startswith(f"[{host}] ssh -n -F /etc/cluster_ssh") and f" {target} sh -c " in line for line in mine
        )
        assert any("rsync -e" in line and "pip" not in line for line in mine)
        assert any("pip --disable-pip-version-check --no-input install --no-index" in line for line in mine)
    assert any("-p 2222" in line for line in lines if line.startswith("[alice@node1:2222]"))
    profile = tmp_path / "ipython" / "profile_p"
    assert not (profile / "wheelhouse").exists()
    assert not (profile / "epyclab-cluster.json").exists()


def test_start_and_stop_dry_run_start_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    ipdir = str(tmp_path / "ipython")
    runner.invoke(main, ["cluster", "-q", "--ipython-dir", ipdir, "init", "p"])
    result = runner.invoke(
        main, ["cluster", "-q", "--ipython-dir", ipdir, "start", "p", "--local", "-n", "2", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "ipyparallel.controller --profile-dir=" in result.stdout
    assert "ipyparallel.engine --profile-dir=" in result.stdout
    assert "n=$(( 2 ))" in result.stdout
    assert not (tmp_path / "ipython" / "profile_p" / "pid" / "epyclab-processes.json").exists()
    result = runner.invoke(main, ["cluster", "--ipython-dir", ipdir, "stop", "p"])
    assert result.exit_code == 0
    assert "nothing was running" in result.stdout


def test_cli_refuses_contradictory_or_missing_input(tmp_path: Path) -> None:
    runner = CliRunner()
    ipdir = str(tmp_path / "ipython")
    result = runner.invoke(main, ["cluster", "--ipython-dir", ipdir, "start", "nope", "--local"])
    assert result.exit_code == 1
    assert "epyclab cluster init nope" in result.output
    runner.invoke(main, ["cluster", "-q", "--ipython-dir", ipdir, "init", "p"])
    result = runner.invoke(main, ["cluster", "--ipython-dir", ipdir, "start", "p", "-n", "2", "--leave-free", "1"])
    assert result.exit_code == 2
    assert "not both" in result.output
    result = runner.invoke(main, ["cluster", "--ipython-dir", ipdir, "sync", "p", "--dry-run"])
    assert result.exit_code == 1
    assert "no workers given" in result.output
    result = runner.invoke(main, ["cluster", "--ipython-dir", ipdir, "sync", "p", "--workers", "a b:x", "--dry-run"])
    assert result.exit_code == 1
    assert "b:x" in result.output


def test_sync_refuses_a_worker_python_of_another_version(tmp_path: Path) -> None:
    # The probe is the same shell script sync runs over ssh; here it runs with sh, on this machine.
    house = Wheelhouse(tmp_path / "wheels", "2.7", "f" * 32, ("epyclab-0-py3-none-any.whl",))
    with pytest.raises(ClusterSetupError) as info:
        syncHost(Remote(), LOCAL, house, tmp_path / "profile", str(tmp_path / "remote-profile"), str(tmp_path / "venv"))
    message = str(info.value)
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert message.startswith(f"{LOCAL}: `python3` is Python {here}, but the wheelhouse was built for Python 2.7")
    assert "pass --python with a Python 2.7" in message
    assert not (tmp_path / "venv").exists()  # refused before anything was made


# ---- processes named by PID and start time ------------------------------------------------------


@pytest.fixture(scope="module")
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process with a child, in a process group of its own; stopped by PID afterwards."""
    proc = subprocess.Popen(["sh", "-c", "sleep 600 & wait"], start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_process_is_identified_with_its_descendants_and_stopped_only_as_itself() -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 600 & wait"], start_new_session=True)
    try:
        remote = Remote()
        start = _start_of(proc.pid)
        tree = wait_until(lambda: [i for i in processes.identify(remote, LOCAL, proc.pid, start) if i[0] != proc.pid],
                          10, "the shell's sleep to be listed") and processes.identify(remote, LOCAL, proc.pid, start)
        assert [proc.pid, start] in tree and len(tree) == 2  # the shell and its sleep
        # Not an ipyparallel program, and no start time recorded: not taken for ours.
        assert processes.identify(remote, LOCAL, proc.pid, "") == []
        assert processes.identified(remote, LOCAL, [[proc.pid, ""]]) == []
        assert processes.identified(remote, LOCAL, tree) == [p for p, _ in tree]
        assert sorted(processes.stopIdentified(remote, LOCAL, tree, grace=5)) == sorted(p for p, _ in tree)
        assert proc.wait(10) == -signal.SIGTERM
        assert processes.identified(remote, LOCAL, tree) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _boot() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")


@given(start=st.one_of(st.text(max_size=40), st.integers(0, 2**40).map(lambda ticks: f"boot{_boot()}:{ticks}")))
def test_a_reused_pid_is_never_signalled(sleeper: subprocess.Popen[bytes], start: str) -> None:
    """A recorded start time other than the process's own (its PID reused) names no process, whatever its text."""
    assume(start and start != _start_of(sleeper.pid))
    remote = Remote()
    assert processes.identify(remote, LOCAL, sleeper.pid, start) == []
    assert processes.identified(remote, LOCAL, [[sleeper.pid, start]]) == []
    assert processes.stopIdentified(remote, LOCAL, [[sleeper.pid, start]], grace=0.2) == []
    assert sleeper.poll() is None


def _start_of(pid: int) -> str:
    """The start time of ``pid`` as the records keep it on Linux: the boot's id, and clock ticks since it."""
    ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return f"boot{_boot()}:{ticks}"
