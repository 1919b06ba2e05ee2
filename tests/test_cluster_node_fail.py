"""Engines lost with their node cost their points nothing: the batch system is the witness (issue 21).

On the real one-node Slurm of tests/slurm.py, the node crashes under a running point: slurmd and every
process of its jobs are frozen and killed at once (no signal any of them could act on, so no engine leaves
its own marker), Slurm is told the node is down, and the node comes back. Submitted with --no-requeue, the
jobs end NODE_FAIL: the keeper marks their engines as ended from outside and submits replacements. Submitted
as Slurm's default has it, they are requeued (pending again, then run again): their engines are marked as
ended from outside all the same. Either way the point runs again uncounted (Retries = 0: a counted death
would fail it) and ends successful.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import slurm as slurm_fixture
from clusterhub import WaitsToBeKilled
from slurm import slurm_daemons, slurm_environment  # noqa: F401 (the fixtures 'slurm', 'slurm_env')
from test_cluster_local import cluster, wait_gone
from waiting import wait_until

from epyclab.clustersetup.outside import ENDED_DIRECTORY, endedFromOutside, enginesOfJob
from epyclab.clustersetup.state import loadProcesses
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.notebooks.labnotebook import LabNotebook

pytestmark = pytest.mark.usefixtures("slurm_env")  # with conftest's ipdir


@pytest.mark.parametrize("requeue", [False, True], ids=["NODE_FAIL", "requeued"])
def test_a_point_whose_node_failed_runs_again_uncounted(ipdir: Path, tmp_path: Path, slurm: slurm_fixture.Slurm,
                                                         requeue: bool) -> None:
    assert cluster(ipdir, "-q", "init", "nf").exit_code == 0
    started = cluster(ipdir, "-q", "start", "nf", "--engines", "slurm", "--total-engines", "2",
                      "--engines-per-job", "1", "--walltime", "00:10:00", "--keep",
                      *([] if requeue else ["--directive=--no-requeue"]), "--timeout", "180")
    assert started.exit_code == 0, started.output
    profile = ipdir / "profile_nf"
    keeper = int(loadProcesses(profile).keeper["pid"])
    controller = int(loadProcesses(profile).controller["pid"])
    runs = tmp_path / "runs"
    runs.mkdir()
    nb = LabNotebook()
    lab = ClusterLab(nb, profile="nf", ipython_dir=str(ipdir), chunkSize=1)
    lab.Retries = 0  # a death counted against the point fails it at once
    try:
        lab["x"] = [3]
        lab.runExperiment(WaitsToBeKilled(str(runs), 1))
        wait_until(lambda: (runs / "3.0.pid").exists(), 180, "the point to start on an engine")
        engine = int((runs / "3.0.pid").read_text())
        crashed = [str(r["launcher"]["job_id"]) for r in loadProcesses(profile).launchers]
        wait_until(lambda: all(enginesOfJob(profile, job) for job in crashed), 60,
                   "the engines to say which job they run in")
        before = {uuid for job in crashed for uuid in enginesOfJob(profile, job)}
        killed = slurm.crash_node()
        assert engine in killed
        # A requeued job runs again after Slurm's requeue delay (its BeginTime, about two minutes: moving it to
        # now let the restarted slurmd cancel the new run as a leftover of the crash).
        assert lab.wait(timeout=420, progress=False)
        df = nb.dataframe(only_successful=False)
    finally:
        lab.close()

    # One successful row, from an engine of a replacement job.
    assert len(df) == 1 and bool(df[Experiment.STATUS].iloc[0]), df[Experiment.EXCEPTION].tolist()
    assert int(df["pid"].iloc[0]) != engine and int(df["y"].iloc[0]) == 9
    # Every engine of the crashed jobs is marked by the witness, not by a signal of its own.
    state = "REQUEUED" if requeue else "NODE_FAIL"
    for job in crashed:
        for uuid in enginesOfJob(profile, job):
            said = endedFromOutside(profile, uuid)
            if uuid in before:  # (a requeued job's engines of its second run are alive)
                assert said is not None and said.startswith(f"{state} at ") and said.endswith(f"in batch job {job}")
    assert not [p for p in (profile / ENDED_DIRECTORY).iterdir() if p.read_text().startswith("SIGTERM")]
    log = (profile / "log" / "epyclab-keeper.log").read_text()
    said = "was requeued" if requeue else "ended (NODE_FAIL)"
    assert all(f"slurm job {job} {said}" in log for job in crashed), log

    stopped = cluster(ipdir, "-q", "stop", "nf")
    assert stopped.exit_code == 0, stopped.output
    assert wait_gone([keeper, controller], 30) == []
    wait_until(lambda: slurm.jobs() == [], 60, "the engine jobs to leave the queue")
    wait_until(lambda: slurm._job_processes() == [], 60, "the jobs' processes to end")


def test_the_engines_of_a_requeued_jobs_earlier_runs_are_marked(tmp_path: Path) -> None:
    """A job requeued and already running again (Slurm's Restarts=1, seen by no pass while it was pending):
    the engines of its first run are marked as ended from outside, those of its second run are not."""
    from epyclab.clustersetup.batchsystems import JobInfo
    from epyclab.clustersetup.witness import witnessJob

    profile = tmp_path / "profile"
    (profile / "engine-jobs").mkdir(parents=True)
    # As engines write it at start-up: "<job>" in the first run, "<job> <restarts>" in later ones.
    for uuid, said in (("first", "12"), ("second", "12 1"), ("other", "13")):
        (profile / "engine-jobs" / uuid).write_text(said + "\n")
    record = {"kind": "slurm", "launcher": {"job_id": "12"}, "running": 1.0}
    assert witnessJob(profile, record, JobInfo("RUNNING", "vm", 500.0, restarts=0)) == []
    assert witnessJob(profile, record, JobInfo("RUNNING", "vm", 500.0, restarts=1)) == ["first"]
    assert endedFromOutside(profile, "first").startswith("REQUEUED at ")
    assert endedFromOutside(profile, "second") is None and endedFromOutside(profile, "other") is None
    # Pending again (requeued once more): every engine of the job, of any run.
    assert witnessJob(profile, record, JobInfo("PENDING", restarts=2)) == ["second"]
