"""The keeper (`cluster start --keep`) on the real one-node Slurm of tests/slurm.py: it replaces a job cancelled
from outside, lives detached from the shell that started it, is stopped by `stop` (nothing left), is started again
by `start` after it died, and backs off (saying so) when jobs fail at once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import slurm as slurm_fixture
from slurm import slurm_daemons, slurm_environment  # noqa: F401 (the fixtures 'slurm', 'slurm_env')
from test_cluster_local import cluster, running, wait_gone
from waiting import wait_until

from epyclab.clustersetup.keeper import keeperRecord, keepOnce
from epyclab.clustersetup.launchers import BatchOptions, batchInfo
from epyclab.clustersetup.manage import clusterStatus
from epyclab.clustersetup.profile import initProfile
from epyclab.clustersetup.state import Processes, loadProcesses, saveProcesses

pytestmark = pytest.mark.usefixtures("slurm_env")  # with conftest's ipdir


def job_ids(profile: Path) -> list[str]:
    return [str(r["launcher"]["job_id"]) for r in loadProcesses(profile).launchers]


def test_the_keeper_replaces_jobs_outlives_its_shell_and_stops_with_the_cluster(
    ipdir: Path, slurm: slurm_fixture.Slurm
) -> None:
    assert cluster(ipdir, "-q", "init", "kept").exit_code == 0
    started = cluster(ipdir, "-q", "start", "kept", "--engines", "slurm", "--total-engines", "2",
                      "--engines-per-job", "1", "--walltime", "00:10:00", "--keep", "--timeout", "120")
    assert started.exit_code == 0, started.output
    # Kept up, start returns once the first job's engines are up; the keeper watches the rest.
    assert "  slurm: 1" in started.stdout or "  slurm: 2" in started.stdout
    profile = ipdir / "profile_kept"
    first = job_ids(profile)
    assert len(first) == 2 and sorted(slurm.jobs()) == sorted(first)  # two jobs of one engine each
    keeper = loadProcesses(profile).keeper
    assert keeper is not None and running(int(keeper["pid"]))
    pid = int(keeper["pid"])
    # Detached: a session of its own, not a child of this process (it outlives the shell that ran start).
    assert os.getsid(pid) != os.getsid(0)
    with open(f"/proc/{pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) != os.getpid()

    # A job cancelled from outside is replaced; the state names the new job at once.
    slurm.run("scancel", first[0])
    wait_until(lambda: len(set(job_ids(profile)) - set(first)) == 1 and first[0] not in job_ids(profile), 60,
               "the keeper to replace the cancelled job")
    status = cluster(ipdir, "status", "kept")
    assert status.exit_code == 0, status.output
    assert f"keeper: PID {pid}, " in status.stdout and "1 job(s) submitted since start" in status.stdout
    assert f"last ended: slurm job {first[0]} ended (CANCELLED)" in status.stdout
    wait_until(lambda: clusterStatus("kept", ipython_dir=ipdir).engines.get("slurm") == 2, 120,
               "the replacement's engine to register")
    status = cluster(ipdir, "status", "kept")
    for job in job_ids(profile):
        assert f"slurm job {job}: RUNNING on {slurm.node}, 0:0" in status.stdout  # time left: under 10 min
        assert f"slurm job {job}: " in status.stdout and "1 of 1 engine(s) up" in status.stdout

    # The keeper dies (as on a reboot of the login node): status says so, start starts it again.
    os.kill(pid, signal.SIGKILL)
    assert wait_gone([pid]) == []
    status = cluster(ipdir, "status", "kept")
    assert f"keeper: NOT RUNNING (PID {pid})" in status.stdout
    again = cluster(ipdir, "-q", "start", "kept")
    assert again.exit_code == 0, again.output
    restarted = loadProcesses(profile).keeper
    assert restarted is not None and int(restarted["pid"]) != pid and running(int(restarted["pid"]))
    refused = cluster(ipdir, "-q", "start", "kept")
    assert refused.exit_code == 1 and "kept up by its keeper" in refused.output

    # A reboot of the login node: the controller and the keeper die together; the jobs' engines wait for their
    # controller. start restarts both; the running jobs' engines register again, no job is submitted.
    jobs = job_ids(profile)
    controller = int(loadProcesses(profile).controller["pid"])
    os.killpg(controller, signal.SIGKILL)
    os.kill(int(restarted["pid"]), signal.SIGKILL)
    assert wait_gone([controller, int(restarted["pid"])]) == []
    rebooted = cluster(ipdir, "-q", "start", "kept", "--timeout", "120")
    assert rebooted.exit_code == 0, rebooted.output
    assert "  slurm: 2" in rebooted.stdout
    after = loadProcesses(profile)
    assert job_ids(profile) == jobs and sorted(slurm.jobs()) == sorted(jobs)
    assert int(after.controller["pid"]) != controller and running(int(after.controller["pid"]))
    restarted = after.keeper
    assert restarted is not None and running(int(restarted["pid"]))

    controller = int(after.controller["pid"])
    stopped = cluster(ipdir, "-q", "stop", "kept")
    assert stopped.exit_code == 0, stopped.output
    assert f"keeper: stopped the keeper (PID {restarted['pid']})" in stopped.stdout
    assert wait_gone([int(restarted["pid"]), controller], 30) == []
    wait_until(lambda: slurm.jobs() == [], 60, "the cancelled jobs to leave the queue")
    assert loadProcesses(profile).empty()


def test_the_keeper_backs_off_when_jobs_fail_at_once(ipdir: Path, tmp_path: Path,
                                                     slurm: slurm_fixture.Slurm) -> None:
    directory = initProfile("broken", ipython_dir=ipdir)
    template = tmp_path / "broken.sbatch"
    template.write_text("#!/bin/sh\n#SBATCH --ntasks={n}\n#SBATCH --output={output_file}\n"
                        "echo 'module: command not found' >&2\nexit 1\n")
    recorded = Processes(keeper=keeperRecord("slurm", BatchOptions(engines=1, template=str(template), keep=True)))
    keepOnce(directory, recorded)
    (job,) = recorded.launchers
    assert recorded.keeper["replaced"] == 1
    wait_until(lambda: batchInfo(job).state == "FAILED", 60, "the broken job to fail")
    now = time.time()
    keepOnce(directory, recorded, now)
    keeper = recorded.keeper
    assert recorded.launchers == [] and keeper["failures"] == 1
    assert keeper["next"] == pytest.approx(now + 30)
    assert keeper["status"].startswith("backing off: 1 job(s) in a row failed at once; next submission at ")
    assert "module: command not found" in keeper["lastFailure"] and "(FAILED)" in keeper["lastFailure"]
    # Within the back-off nothing is submitted; the queue stays empty.
    keepOnce(directory, recorded, now + 29)
    assert recorded.launchers == [] and slurm.jobs() == []
    # After it, one job again; failing again doubles the wait.
    keepOnce(directory, recorded, now + 31)
    (job,) = recorded.launchers
    wait_until(lambda: batchInfo(job).state == "FAILED", 60, "the broken job to fail")
    keepOnce(directory, recorded, now + 32)
    assert recorded.keeper["failures"] == 2 and recorded.keeper["next"] == pytest.approx(now + 32 + 60)
    # status, from any shell, says so.
    saveProcesses(directory, recorded)
    status = cluster(ipdir, "status", "broken")
    assert "keeper: NOT RUNNING" in status.stdout and "backing off: 2 job(s) in a row failed at once" in status.stdout
    assert "module: command not found" in status.stdout
    saveProcesses(directory, Processes())
