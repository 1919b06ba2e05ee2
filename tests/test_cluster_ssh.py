"""The cluster commands for real, over ssh: a private sshd on 127.0.0.1 and two fresh local users
as the workers (see tests/sshd.py). init, sync from a wheelhouse (twice: the second changes nothing),
start with one engine per worker, a ClusterLab sweep through that cluster (submitted, then collected
by a second lab on the reopened notebook), status, stop, and nothing left running; then an unreachable worker;
then a controller on a worker, killed alone (its schedulers hold its ports there): start and stop over ssh.

The workers' venvs are made with Debian's Python of the same minor version as
the one running the tests: the users cannot run root's interpreter (under
/root, mode 0700), and the wheelhouse built here fits any CPython of the same
minor version. Skipped, with the reason, without root, sshd, rsync or that Python.
"""

from __future__ import annotations

import json
import os
import platform
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import ipyparallel
import pytest
import sshd
from click.testing import CliRunner, Result
from test_cluster_local import controller_killed_alone, wait_gone

from epyclab.cli import main
from epyclab.clustersetup.state import loadProcesses
from epyclab.clustersetup.wheelhouse import Wheelhouse, buildWheelhouse, epyclabSource, requirementsText
from epyclab.designs import PointwiseDesign
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.remote.placement import mapfilePoints, readMapfile
from epyclab.notebooks.hdf5 import HDF5LabNotebook
from epyclab.notebooks.labnotebook import LabNotebook

pytestmark = pytest.mark.skipif(sshd.why_not() is not None, reason=sshd.why_not() or "")


def cluster(ipdir: Path, *args: str) -> Result:
    """Run ``epyclab cluster ARGS`` in this process, as a user would from the shell."""
    return CliRunner().invoke(main, ["cluster", "--ipython-dir", str(ipdir), *args])


@pytest.fixture(scope="module")
def worker_python() -> str:
    """A Python the workers' users can run, of this Python's minor version (the wheelhouse's)."""
    candidate = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if not os.access(candidate, os.X_OK):
        pytest.skip(f"{candidate} is missing: the worker venvs need it (.ci/run installs python3-venv)")
    done = subprocess.run([candidate, "-c", "import venv, ensurepip"], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"{candidate} cannot make venvs: install Debian's python3-venv")
    return candidate


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshd.SshWorkers]:
    """The sshd and its two users; afterwards sshd is stopped by PID and the users are removed."""
    running = sshd.start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield running
    finally:
        leftovers = running.close()
        assert running.process is not None and running.process.poll() is not None, "sshd still runs"
        for user in running.users:
            with pytest.raises(KeyError):
                pwd.getpwnam(user)
            assert not Path(f"/home/{user}").exists()
        assert not leftovers, f"processes of the test users were left running: {leftovers}"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    """The wheelhouse, built once: the project's requirements-cluster.txt plus epyclab."""
    source = epyclabSource()
    assert source is not None, "the tests run from epyclab's source tree"
    requirements = requirementsText(source / "requirements-cluster.txt")
    return buildWheelhouse(tmp_path_factory.mktemp("wheels") / "wheelhouse", requirements)



# The experiment as a user writes it: a module beside the script, with a helper in a second
# module. The workers' venvs have neither (and their users cannot read this machine's temporary
# directory): the modules travel by value with the experiment (epyclab.labs.engine.packaging).
EXPERIMENT_MODULE = """
from epyclab.experiment import Experiment
from sshhelpers import square


class SquareWhere(Experiment):
    def do(self, params):
        import getpass

        return {"y": square(params["x"]), "user": getpass.getuser()}
"""
HELPER_MODULE = """
def square(x):
    return x ** 2
"""


def make_experiment(directory: Path) -> Experiment:
    """An instance of the user's experiment class, imported from files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sshmodel.py").write_text(EXPERIMENT_MODULE)
    (directory / "sshhelpers.py").write_text(HELPER_MODULE)
    sys.path.insert(0, str(directory))
    try:
        import sshmodel  # type: ignore[import-not-found]

        return sshmodel.SquareWhere()
    finally:
        sys.path.remove(str(directory))


def process_owner(pid: int) -> str:
    return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name


def wait_no_processes(users: list[str], pids: list[int], timeout: float = 20.0) -> list[str]:
    """Wait until the users run nothing and ``pids`` are gone (zombies reaped); return what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = [f"{u}: {line}" for u in users for line in sshd.user_processes(u)]
        left += [f"pid {p}" for p in pids if Path(f"/proc/{p}").exists()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_init_sync_start_sweep_status_stop(
    ipdir: Path, workers: sshd.SshWorkers, wheelhouse: Wheelhouse, worker_python: str
) -> None:
    w1, w2 = workers.aliases
    u1, u2 = workers.users

    # init
    assert cluster(ipdir, "-q", "init", "lab").exit_code == 0

    # sync: venvs made, wheels installed, profile files copied; all without a package index
    args = ["--workers", f"{w1},{w2}", "--ssh-option", workers.ssh_option, "--python", worker_python]
    args += ["--wheelhouse", str(wheelhouse.directory), "--no-rebuild"]
    first = cluster(ipdir, "sync", "lab", "-v", *args)  # -v: every remote command is shown
    assert first.exit_code == 0, first.output
    for alias in (w1, w2):
        assert f"{alias}: created venv ~/epyclab-venv, installed {len(wheelhouse.wheels)} wheels" in first.stdout
    assert "--no-index --find-links" in first.stderr  # every remote command is logged
    for user in (u1, u2):
        venv = workers.home(user) / "epyclab-venv"
        assert process_owner_of_path(venv) == user
        assert (venv / ".epyclab-sync").read_text().strip() == wheelhouse.fingerprint

    # sync again, remembered workers and options: nothing to do, and it says so per worker
    second = cluster(ipdir, "-q", "sync", "lab", "--wheelhouse", str(wheelhouse.directory), "--no-rebuild")
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines() == [f"{w1}: unchanged", f"{w2}: unchanged"]

    # start: the controller here, one engine per worker, each running as its worker's user
    started = cluster(ipdir, "-q", "start", "lab", "--engines-per-worker", "1")
    assert started.exit_code == 0, started.output
    assert f"  {w1}: 1" in started.stdout and f"  {w2}: 1" in started.stdout
    profile = ipdir / "profile_lab"
    recorded = loadProcesses(profile)
    controller = int(recorded.controller["pid"])
    engines = {alias: recorded.engines[alias][0] for alias in (w1, w2)}
    assert {process_owner(engines[w1]), process_owner(engines[w2])} == {u1, u2}
    assert process_owner(engines[w1]) == u1
    for user in (u1, u2):  # the engine connection file holds the key: private to its user
        copied = workers.home(user) / ".ipython" / "profile_lab" / "security" / "ipcontroller-engine.json"
        assert oct(copied.stat().st_mode & 0o777) == oct(0o600)
        assert process_owner_of_path(copied) == user
    assert oct((profile / "security" / "ipcontroller-client.json").stat().st_mode & 0o777) == oct(0o600)

    # a ClusterLab sweep through that controller: submit, then collect from a fresh lab on the notebook
    notebook = ipdir.parent / "sweep.h5"
    nb = HDF5LabNotebook(str(notebook), create=True)
    lab = ClusterLab(nb, profile="lab", ipython_dir=str(ipdir), chunkSize=1)
    lab["x"] = range(12)
    lab.runExperiment(make_experiment(ipdir.parent / "usercode"), progress=False)
    assert nb.numberOfPendingResults() == 12
    lab.close()
    nb.close()
    nb = HDF5LabNotebook(str(notebook))
    lab = ClusterLab(nb, profile="lab", ipython_dir=str(ipdir))
    assert lab.numberOfEngines() == 2
    assert lab.wait(timeout=120, progress=False)
    df = nb.dataframe(only_successful=False)
    rs = nb.current()
    engines_seen = json.loads(rs["epyclab.provenance.engines"])
    differ = rs["epyclab.provenance.engines.differ"] if "epyclab.provenance.engines.differ" in rs else ""
    lab.close()
    nb.close()
    # Provenance: the workers' Python is Debian's (worker_python), recorded, and any difference named.
    workers_python = subprocess.run([worker_python, "-c", "import platform; print(platform.python_version())"],
                                    capture_output=True, text=True, check=True).stdout.strip()
    assert [(k["engines"], k["python"]) for k in engines_seen] == [(2, workers_python)]
    if workers_python != platform.python_version():
        assert f"python: {workers_python} on engines, {platform.python_version()} here" in differ
    else:
        assert "python:" not in differ
    assert sorted(df["x"]) == list(range(12))  # exactly one result per point
    assert df[Experiment.STATUS].all()
    assert list(df.sort_values("x")["y"]) == [x * x for x in range(12)]
    assert set(df[Experiment.PID]) <= set(engines.values())
    assert set(df["user"]) <= {u1, u2}

    # status: engines per worker; the sweep's tasks are done (collected tasks are purged from the hub)
    status = cluster(ipdir, "status", "lab")
    assert status.exit_code == 0, status.output
    assert f"  {w1}: 1 / 1" in status.stdout and f"  {w2}: 1 / 1" in status.stdout
    assert "tasks at the controller: 0 queued, 0 running" in status.stdout

    # stop: engines on every worker, then the controller; nothing of theirs is left
    stopped = cluster(ipdir, "-q", "stop", "lab")
    assert stopped.exit_code == 0, stopped.output
    assert f"{w1}: stopped 1 engine(s)" in stopped.stdout
    assert f"{w2}: stopped 1 engine(s)" in stopped.stdout
    assert "(local): stopped the controller" in stopped.stdout
    assert wait_no_processes([u1, u2], [controller, *engines.values()]) == []
    assert loadProcesses(profile).empty()


def process_owner_of_path(path: Path) -> str:
    return pwd.getpwuid(path.stat().st_uid).pw_name


# Which worker ran the point (its engine's EPYCLAB_WORKER), and when. In a module of its own, as a
# user's experiment is: a worker imports the user's module from the source that travels with it, so
# the module must not import what the workers lack (this test module imports pytest).
WHEN_MODULE = """
import os
import time

from epyclab.experiment import Experiment


class WhereAndWhen(Experiment):
    def do(self, params):
        start = time.time()
        time.sleep(0.3)
        return {"worker": os.environ.get("EPYCLAB_WORKER", ""), "start": start, "end": time.time()}
"""


def where_and_when(directory: Path) -> Experiment:
    """An instance of WhereAndWhen, imported from its module written in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sshwhen.py").write_text(WHEN_MODULE)
    sys.path.insert(0, str(directory))
    try:
        import sshwhen  # type: ignore[import-not-found]

        return sshwhen.WhereAndWhen()
    finally:
        sys.path.remove(str(directory))


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_points_run_on_the_host_their_mapfile_names_within_the_cap(
    ipdir: Path, tmp_path: Path, workers: sshd.SshWorkers, wheelhouse: Wheelhouse, worker_python: str
) -> None:
    """Issue 13.7: the LOFAR mapfile pattern on two real workers, two engines each, at most one point at once."""
    w1, w2 = workers.aliases
    cluster(ipdir, "-q", "init", "data")
    args = ["--workers", f"{w1},{w2}", "--ssh-option", workers.ssh_option, "--python", worker_python]
    synced = cluster(ipdir, "-q", "sync", "data", *args, "--wheelhouse", str(wheelhouse.directory), "--no-rebuild")
    assert synced.exit_code == 0, synced.output
    started = cluster(ipdir, "-q", "start", "data", "--engines-per-worker", "2")
    assert started.exit_code == 0, started.output
    assert f"  {w1}: 2" in started.stdout and f"  {w2}: 2" in started.stdout

    mapfile = tmp_path / "inputs.map"
    mapfile.write_text("".join(f"{w} /data/{w}/SB{i:03d}.MS\n" for w in (w1, w2) for i in range(5)))
    hosts, files = mapfilePoints(readMapfile(mapfile))
    lab = ClusterLab(LabNotebook(), profile="data", ipython_dir=str(ipdir), design=PointwiseDesign(),
                     maxPerNode=1, chunkSize=1)
    lab["host"], lab["file"] = hosts, files
    lab.runExperiment(where_and_when(tmp_path / "model"), progress=False)
    assert lab.wait(timeout=300, progress=False)
    df = lab.dataframe(only_successful=False)
    lab.close()
    assert df[Experiment.STATUS].all()
    assert sorted(df["file"]) == sorted(files)
    assert (df["worker"] == df["host"]).all()  # each point ran on the host its mapfile names
    for w in (w1, w2):
        mine = df[df["host"] == w]
        assert most_at_once(list(zip(mine["start"], mine["end"]))) == 1  # never more than maxPerNode

    stopped = cluster(ipdir, "-q", "stop", "data")
    assert stopped.exit_code == 0, stopped.output


def test_an_unreachable_worker_is_named_and_the_others_finish(
    ipdir: Path, workers: sshd.SshWorkers, wheelhouse: Wheelhouse, worker_python: str
) -> None:
    cluster(ipdir, "-q", "init", "half")
    dead = f"nobody@127.0.0.1:{sshd.free_port()}"  # nothing listens there
    args = ["--workers", workers.aliases[0], "--workers", dead, "--ssh-option", workers.ssh_option]
    args += ["--python", worker_python, "--wheelhouse", str(wheelhouse.directory), "--no-rebuild"]

    # The workers are the module's: the other test may have installed the wheelhouse on this one
    # already; this profile's files are new there either way.
    stamp = workers.home(workers.users[0]) / "epyclab-venv" / ".epyclab-sync"
    changes = ["profile files updated"]
    if not (stamp.exists() and stamp.read_text().strip() == wheelhouse.fingerprint):
        changes = ["created venv ~/epyclab-venv", f"installed {len(wheelhouse.wheels)} wheels", *changes]
    expected = f"{workers.aliases[0]}: {', '.join(changes)}"
    synced = cluster(ipdir, "-q", "sync", "half", *args)
    assert synced.exit_code == 1
    assert [line for line in synced.stdout.splitlines() if line.startswith(f"{workers.aliases[0]}: ")] == [expected]
    assert "sync failed on 1 of 2 host(s)" in synced.stderr
    assert f"{dead}: `ssh -n " in synced.stderr  # the host, and the command that failed
    assert "exited with status 255" in synced.stderr

    # start: the reachable worker's engine starts and registers; the dead one is named
    started = cluster(ipdir, "-q", "start", "half", "--engines-per-worker", "1", "--timeout", "30")
    assert started.exit_code == 1
    assert f"{workers.aliases[0]}: 1" in started.stdout
    assert "start engines failed on 1 of 2 host(s)" in started.stderr
    assert dead in started.stderr
    recorded = loadProcesses(ipdir / "profile_half")
    pids = [int(recorded.controller["pid"]), *recorded.engines[workers.aliases[0]]]
    assert dead not in recorded.engines

    stopped = cluster(ipdir, "-q", "stop", "half")
    assert stopped.exit_code == 0, stopped.output
    assert wait_no_processes(workers.users[:1], pids) == []


def test_controller_on_a_worker(
    ipdir: Path, workers: sshd.SshWorkers, wheelhouse: Wheelhouse, worker_python: str
) -> None:
    """--controller-host: the controller runs as the first worker's user, its connection files come back here."""
    w1, w2 = workers.aliases
    u1, u2 = workers.users
    cluster(ipdir, "-q", "init", "remote")
    args = ["--workers", w2, "--controller-host", w1, "--ssh-option", workers.ssh_option, "--python", worker_python]
    synced = cluster(ipdir, "-q", "sync", "remote", *args, "--wheelhouse", str(wheelhouse.directory), "--no-rebuild")
    assert synced.exit_code == 0, synced.output
    assert sorted(line.split(":")[0] for line in synced.stdout.splitlines()) == [w1, w2]
    assert (workers.home(u1) / ".ipython" / "profile_remote" / "ipcontroller_config.py").exists()
    assert not (workers.home(u2) / ".ipython" / "profile_remote" / "ipcontroller_config.py").exists()

    started = cluster(ipdir, "-q", "start", "remote", "-n", "1")
    assert started.exit_code == 0, started.output
    assert f"  {w2}: 1" in started.stdout
    profile = ipdir / "profile_remote"
    recorded = loadProcesses(profile)
    assert recorded.controller["host"] == w1
    controller = int(recorded.controller["pid"])
    assert process_owner(controller) == u1
    engine = recorded.engines[w2][0]
    for name in ("ipcontroller-client.json", "ipcontroller-engine.json"):  # fetched from the controller's host
        assert oct((profile / "security" / name).stat().st_mode & 0o777) == oct(0o600)
    assert (workers.home(u1) / ".ipython" / "profile_remote" / "tasks.db").exists()  # its store is there

    client = ipyparallel.Client(str(profile / "security" / "ipcontroller-client.json"), timeout=10)
    try:
        assert client.load_balanced_view().apply_async(os.getpid).get(60) == engine
    finally:
        client.close()
    status = cluster(ipdir, "status", "remote")
    assert status.exit_code == 0, status.output
    assert f"PID {controller} on {w1}, answering" in status.stdout

    # Issue 11.6 on the controller's host: killed alone, it leaves its schedulers there, holding its ports;
    # start (over ssh) stops them by PID and start time, and starts it again on the same connection files.
    _, schedulers = controller_killed_alone(profile)
    again = cluster(ipdir, "-q", "start", "remote", "-n", "1")
    assert again.exit_code == 0, again.output
    assert wait_gone(schedulers) == []
    assert loadProcesses(profile).engines[w2] == [engine]  # the engine came back to the new controller
    client = ipyparallel.Client(str(profile / "security" / "ipcontroller-client.json"), timeout=10)
    try:
        assert client.load_balanced_view().apply_async(os.getpid).get(60) == engine
    finally:
        client.close()
    # Killed alone again: stop leaves nothing of it (nor anything else) running on either worker.
    controller, schedulers = controller_killed_alone(profile)

    stopped = cluster(ipdir, "-q", "stop", "remote")
    assert stopped.exit_code == 0, stopped.output
    assert (f"{w1}: the controller had already exited; stopped the {len(schedulers)} process(es) "
            "it left running") in stopped.stdout
    assert f"{w2}: stopped 1 engine(s)" in stopped.stdout
    assert wait_no_processes([u1, u2], [controller, *schedulers, engine]) == []
