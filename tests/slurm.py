"""A real one-node Slurm for the tests: munged, slurmctld and slurmd in a temporary directory.

Not a test module. :func:`start_slurm` (run as root, with Debian's
``slurm-wlm`` and ``munge`` installed, as .ci/run does) writes a munge key and
a ``slurm.conf`` into the directory: this machine's host name and CPU count,
``proctrack/linuxproc`` and ``task/none`` (no cgroups), free ports on
127.0.0.1, state, spool, PID and log files all in the directory. It starts the
three daemons in the foreground, each in its own session, waits until the
node is idle, and returns a :class:`Slurm` whose :meth:`Slurm.close` stops
them by PID (never by name) and waits until they are gone. Commands find this
Slurm through ``SLURM_CONF`` (see :attr:`Slurm.env`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "srun", "mungekey")


def why_not() -> str | None:
    """Why a real Slurm cannot run here (None if it can)."""
    if os.geteuid() != 0:
        return "needs root to run slurmd (CI runs as root)"
    for tool in DAEMONS + COMMANDS:
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (.ci/run installs Debian's slurm-wlm and munge)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class Slurm:
    """The running daemons, and the environment that points Slurm's commands at them."""

    directory: Path
    conf: Path
    node: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> str:
        """Run a Slurm command against this Slurm; return its output."""
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, **self.env})
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def jobs(self) -> list[str]:
        """The ids of the jobs squeue lists (any state)."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _job_processes(self) -> list[psutil.Process]:
        """The processes of this Slurm's jobs (slurmstepd and what it started), found by their spool directory,
        or, for a step daemon (whose own environment does not name this Slurm), by what it started."""
        spool = str(self.directory / "spool")
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "name"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or ())
                ours = proc.environ().get("SLURM_CONF") == str(self.conf)
                if proc.info["name"] == "slurmstepd" and not ours:
                    ours = any(c.environ().get("SLURM_CONF") == str(self.conf) for c in proc.children(recursive=True))
                    if ours:
                        found += proc.children(recursive=True)
                if spool in cmdline or (ours and proc.info["name"] == "slurmstepd"):
                    found.append(proc)
            except psutil.Error:
                continue
        return list({p.pid: p for p in found}.values())

    def crash_node(self, timeout: float = 60.0) -> list[int]:
        """The node crashes and comes back: every process of its jobs and slurmd are frozen (SIGSTOP) and
        killed (SIGKILL) at once, so none of them gets a signal it can act on; slurmctld is told the node is
        down (as it finds by itself after SlurmdTimeout); slurmd starts again and the node returns to
        service. Returns the PIDs killed (slurmd's first).

        The jobs' final state is Slurm's: NODE_FAIL for a job submitted with ``--no-requeue``, else
        requeued (PENDING again).
        """
        slurmd = next(p for p in self.processes if Path(str(p.args[0])).name == "slurmd")
        victims = [psutil.Process(slurmd.pid), *self._job_processes()]
        for proc in victims:
            try:
                proc.suspend()
            except psutil.Error:
                continue
        for proc in victims:
            try:
                proc.kill()
            except psutil.Error:
                continue
        slurmd.wait(10)
        psutil.wait_procs(victims[1:], timeout=10)  # (step daemons, children of init, stay zombies a moment)
        self.run("scontrol", "update", f"nodename={self.node}", "state=down", "reason=crashed")
        with open(self.directory / "slurmd.out", "ab") as out:
            again = subprocess.Popen(slurmd.args, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env})
        self.processes[self.processes.index(slurmd)] = again
        _wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T", check=False)
              or "mixed" in self.run("sinfo", "-h", "-o", "%T", check=False), timeout,
              "the node did not return to service after its crash", self)
        return [v.pid for v in victims]

    def close(self) -> list[int]:
        """Cancel the jobs, stop the daemons by PID (TERM, then KILL); return the PIDs still alive (none).

        A test that failed mid-job leaves its job queued or running: it is
        cancelled here, and its step daemons (which detach from slurmd) and
        their children are stopped by PID, so no test leaves a process behind.
        """
        try:
            jobs = self.jobs() if all(p.poll() is None for p in self.processes) else []
        except RuntimeError:  # squeue failed: slurmctld is not answering, nothing to cancel through it
            jobs = []
        if jobs:
            self.run("scancel", *jobs, check=False)
            deadline = time.monotonic() + 30
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.2)  # polling squeue: Slurm offers no wait for a cancelled job
        steps = [p for p in self._job_processes() if p.pid not in {d.pid for d in self.processes}]
        for p in reversed(self.processes):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass  # exited meanwhile
        for p in reversed(self.processes):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        for proc in steps:
            try:
                proc.kill()
            except psutil.Error:
                continue  # gone meanwhile
        psutil.wait_procs(steps, timeout=10)
        return [p.pid for p in self.processes if p.poll() is None] + [p.pid for p in steps if p.is_running()]


def start_slurm(directory: Path, timeout: float = 60.0) -> Slurm:
    """Write the configuration, start munged, slurmctld and slurmd, and wait until the node is idle."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for sub in ("state", "spool", "munge"):
        (directory / sub).mkdir(mode=0o700, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    key = directory / "munge" / "munge.key"
    sock = directory / "munge" / "munge.socket"
    subprocess.run([_program("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
    conf = directory / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=epyclabtest",
        f"SlurmctldHost={node}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={sock}",
        f"StateSaveLocation={directory / 'state'}",
        f"SlurmdSpoolDir={directory / 'spool'}",
        f"SlurmctldPidFile={directory / 'slurmctld.pid'}",
        f"SlurmdPidFile={directory / 'slurmd.pid'}",
        f"SlurmctldLogFile={directory / 'slurmctld.log'}",
        f"SlurmdLogFile={directory / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "ReturnToService=2",
        "MpiDefault=none",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "KillWait=5",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4",
        "",
    ]))
    slurm = Slurm(directory, conf, node)
    env = {**os.environ, **slurm.env}
    try:
        for argv in (
            [_program("munged"), "-F", "--force", f"--socket={sock}", f"--key-file={key}",
             f"--pid-file={directory / 'munge' / 'munged.pid'}", f"--log-file={directory / 'munged.log'}",
             f"--seed-file={directory / 'munge' / 'munged.seed'}"],
            [_program("slurmctld"), "-D", "-i", "-f", str(conf)],
            [_program("slurmd"), "-D", "-f", str(conf)],
        ):
            with open(directory / f"{Path(argv[0]).name}.out", "ab") as out:
                slurm.processes.append(subprocess.Popen(argv, start_new_session=True, stdout=out,
                                                        stderr=subprocess.STDOUT, env=env))
            if argv[0].endswith("munged"):
                _wait(lambda: sock.exists(), timeout, "munged did not create its socket", slurm)
        _wait(lambda: "idle" in slurm.run("sinfo", "-h", "-o", "%T", check=False), timeout,
              "the node did not become idle", slurm)
    except BaseException:
        slurm.close()
        raise
    return slurm


def _wait(ready, timeout: float, what: str, slurm: Slurm) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [p.args[0] for p in slurm.processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}:\n{slurm.log(n)[-2000:]}" for n in ("slurmctld", "slurmd", "munged"))
            raise RuntimeError(f"{what} (exited: {dead}); logs:\n{logs}")
        time.sleep(0.2)


@pytest.fixture(scope="module", name="slurm")
def slurm_daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """munged, slurmctld and slurmd for the test module that uses it; stopped by PID afterwards.

    Skips where Slurm is not installed (CI installs it, so there a skip fails the run).
    """
    why = why_not()
    if why is not None:
        pytest.skip(why)
    running = start_slurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield running
    finally:
        assert running.close() == []


@pytest.fixture(name="slurm_env")
def slurm_environment(slurm: Slurm, monkeypatch: pytest.MonkeyPatch) -> Slurm:
    """The module's Slurm put in this test's environment, so that epyclab's launchers reach it.

    Use it with ``pytestmark = pytest.mark.usefixtures("slurm_env")`` beside conftest's ``ipdir``: being set up
    first, it is undone last, so a cluster ``ipdir`` stops afterwards can still cancel its Slurm jobs.
    """
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    return slurm
