"""Batch systems as rows of one table (clustersetup/batchsystems.py): a new system is a row, PBS's answers are read
through its row, and on the real one-node Slurm (tests/slurm.py) a job that dies at once stops `start` at once,
naming the job, its final state and the last lines of its output."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import slurm as slurm_fixture
from hypothesis import given, settings
from hypothesis import strategies as st
from slurm import slurm_daemons  # noqa: F401 (the fixture 'slurm')
from test_cluster_local import cluster

from epyclab.clustersetup import batchsystems
from epyclab.clustersetup.batchsystems import SYSTEMS, BatchSystem, jobInfo
from epyclab.clustersetup.launchers import BatchOptions, describeBatch
from epyclab.clustersetup.state import loadProcesses


def test_a_new_batch_system_is_one_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LSF, which epyclab does not ship, added as a row: ipyparallel's LSF class writes its script with the
    row's lines, split into jobs of --engines-per-job."""
    lsf = BatchSystem(
        name="lsf", engineClass="LSFEngineSetLauncher", controllerClass="LSFControllerLauncher", command="bsub",
        directive="#BSUB", perNodeLines=('#BSUB -R "span[ptile={perNode}]"',), accountLine="#BSUB -P {account}",
        walltimeLine="#BSUB -W {walltime}", queryCommand=("bjobs", "-noheader", "-o", "stat", "{job}"),
        statePattern=r"(\w+)", states={"PEND": "PENDING", "RUN": "RUNNING", "DONE": "COMPLETED", "EXIT": "FAILED"},
        jobVariable="LSB_JOBID",
    )
    monkeypatch.setitem(SYSTEMS, "lsf", lsf)
    options = BatchOptions(engines=10, enginesPerJob=4, enginesPerNode=2, account="proj9", walltime="02:00",
                           queue="short", directives=["-M 4000"])
    text = describeBatch(tmp_path, "lsf", options)
    assert text.startswith("3 jobs of 4, 4, 2 engine(s); the first:\nbsub ")
    for line in ('#BSUB -R "span[ptile=2]"', "#BSUB -P proj9", "#BSUB -W 02:00", "#BSUB -q short", "#BSUB -M 4000",
                 "#BSUB -J ipengine[1-4]"):
        assert line in text, text


PBS_QSTAT = """Job Id: 4242.pbsserver
    Job_Name = ipengine
    job_state = {state}
    exec_host = node17/0+node17/1
    Resource_List.walltime = 01:00:00
    Walltime.Remaining = 1234
"""


@pytest.mark.parametrize(("word", "state", "left"), [("R", "RUNNING", 1234.0), ("Q", "PENDING", None),
                                                      ("C", "COMPLETED", None)])
def test_pbs_answers_are_read_through_its_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, word: str,
                                              state: str, left: float | None) -> None:
    """No PBS server runs here: a `qstat` printing what Torque's `qstat -f` prints stands in for it."""
    qstat = tmp_path / "bin" / "qstat"
    qstat.parent.mkdir()
    qstat.write_text(f"#!/bin/sh\n[ \"$1 $2\" = '-f 4242.pbsserver' ] || exit 153\ncat <<'EOF'\n"
                     f"{PBS_QSTAT.format(state=word)}EOF\n")
    qstat.chmod(0o700)
    monkeypatch.setenv("PATH", f"{qstat.parent}{os.pathsep}{os.environ['PATH']}")
    info = jobInfo(SYSTEMS["pbs"], "4242.pbsserver")
    assert (info.state, info.node, info.left) == (state, "node17", left)
    assert info.ended == (state == "COMPLETED")
    assert jobInfo(SYSTEMS["pbs"], "999.other").state == batchsystems.GONE  # qstat: unknown job id


@pytest.mark.parametrize(("status", "state"), [(0, "COMPLETED"), (1, "FAILED"), (271, "CANCELLED"),
                                               (265, "CANCELLED"), (-11, "NODE_FAIL")])
def test_pbs_says_who_ended_a_job_by_its_exit_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int,
                                                    state: str) -> None:
    """Torque's finished job is `C` whatever ended it; its exit status says: 256 + a signal is the scheduler's
    kill (walltime, qdel), negative the execution host's abort. Those engines are marked as ended from outside."""
    from epyclab.clustersetup.outside import endedFromOutside
    from epyclab.clustersetup.witness import witnessJob

    qstat = tmp_path / "bin" / "qstat"
    qstat.parent.mkdir()
    qstat.write_text(f"#!/bin/sh\ncat <<'EOF'\n{PBS_QSTAT.format(state='C')}    exit_status = {status}\nEOF\n")
    qstat.chmod(0o700)
    monkeypatch.setenv("PATH", f"{qstat.parent}{os.pathsep}{os.environ['PATH']}")
    info = jobInfo(SYSTEMS["pbs"], "4242.pbsserver")
    assert info.state == state and info.ended
    profile = tmp_path / "profile"
    (profile / "engine-jobs").mkdir(parents=True)
    for uuid, job in (("e1", "4242.pbsserver"), ("e2", "4242.pbsserver"), ("e3", "4243.pbsserver")):
        (profile / "engine-jobs" / uuid).write_text(job + "\n")
    (profile / "ended").mkdir()  # e2 left its own marker, as an engine a SIGTERM ends does
    (profile / "ended" / "e2").write_text("SIGTERM 1700000000.000 4242.pbsserver\n")
    record = {"kind": "pbs", "launcher": {"job_id": "4242"}, "running": 1.0}
    marked = witnessJob(profile, record, info)
    outside = state in ("CANCELLED", "NODE_FAIL")
    assert marked == (["e1"] if outside else [])
    assert (endedFromOutside(profile, "e1") or "").startswith(f"{state} at ") == outside
    assert endedFromOutside(profile, "e2").startswith("SIGTERM at ")  # its own marker is kept
    assert endedFromOutside(profile, "e3") is None  # another job's engine


def test_a_job_that_dies_at_once_stops_start_at_once(ipdir: Path, tmp_path: Path, slurm: slurm_fixture.Slurm,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    template = tmp_path / "broken.sbatch"
    template.write_text("#!/bin/sh\n#SBATCH --ntasks={n}\n#SBATCH --output={output_file}\n"
                        "echo 'Lmod has detected the following error: unknown module python/9.9' >&2\nexit 3\n")
    assert cluster(ipdir, "-q", "init", "dies").exit_code == 0
    started = time.monotonic()
    result = cluster(ipdir, "-q", "start", "dies", "--engines", "slurm", "--total-engines", "2",
                     "--job-template", str(template), "--timeout", "120")
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert took < 60, took  # not the 120 s timeout
    (record,) = loadProcesses(ipdir / "profile_dies").launchers
    job = record["launcher"]["job_id"]
    assert f"the slurm job {job} ended (FAILED) before its engines registered" in result.output
    assert "unknown module python/9.9" in result.output
    assert record["output"] in result.output
    assert cluster(ipdir, "-q", "stop", "dies").exit_code == 0
    assert slurm.jobs() == []


def test_slurm_reports_state_node_and_time_left(ipdir: Path, slurm: slurm_fixture.Slurm,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    job = slurm.run("sbatch", "--parsable", "--time=00:10:00", "--output=/dev/null", "--wrap", "sleep 300").strip()
    try:
        deadline = time.monotonic() + 60
        while (info := jobInfo(SYSTEMS["slurm"], job)).state != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert info.state == "RUNNING"
        assert info.node == slurm.node
        assert info.left is not None and 500 < info.left <= 600
    finally:
        slurm.run("scancel", job)
    deadline = time.monotonic() + 60
    while (info := jobInfo(SYSTEMS["slurm"], job)).state in ("RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert info.ended and info.state == "CANCELLED"  # its final state, still known after it left the queue
    assert replace(info, state="RUNNING").running


FAKE_PBS = {
    # qsub SCRIPT: a new job, queued; prints its id as Torque does (ipyparallel keeps its number).
    "qsub": 'n=$(($(cat "$FAKEPBS/next" 2>/dev/null || echo 0) + 1)); echo "$n" > "$FAKEPBS/next"\n'
            'cp "$1" "$FAKEPBS/$n.sh"; echo Q > "$FAKEPBS/$n.state"; echo "$n.fakeserver"\n',
    # qstat -f ID: the job's state, as `qstat -f` shows it; unknown ids fail as qstat does.
    "qstat": 'n=${2%%.*}; [ -f "$FAKEPBS/$n.state" ] || { echo "qstat: Unknown Job Id $2" >&2; exit 153; }\n'
             'echo "Job Id: $2"; echo "    job_state = $(cat "$FAKEPBS/$n.state")"\n'
             'echo "    exec_host = node3/0"; echo "    Walltime.Remaining = 3000"\n',
    "qdel": 'n=${1%%.*}; echo C > "$FAKEPBS/$n.state"\n',
}


def test_the_keeper_drives_pbs_through_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No PBS server runs here: qsub/qstat/qdel stand-ins keep job states in files. Everything else is the code
    path of Slurm: ipyparallel's PBS launcher writes and submits the script, the keeper asks the row's command,
    replaces a job that ended, backs off after one that failed at once, and stop cancels with qdel."""
    from epyclab.clustersetup.keeper import QUICK_SECONDS, keeperRecord, keepOnce
    from epyclab.clustersetup.launchers import stopBatchJob
    from epyclab.clustersetup.profile import initProfile
    from epyclab.clustersetup.state import Processes

    bin_dir, state = tmp_path / "bin", tmp_path / "pbs"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in FAKE_PBS.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o700)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKEPBS", str(state))
    directory = initProfile("pbs", ipython_dir=tmp_path / "ipython")
    options = BatchOptions(engines=2, enginesPerJob=1, walltime="01:00:00", account="proj", keep=True)
    recorded = Processes(keeper=keeperRecord("pbs", options))

    keepOnce(directory, recorded, now=1000.0)
    assert [r["launcher"]["job_id"] for r in recorded.launchers] == ["1", "2"]
    script = (state / "1.sh").read_text()
    assert "#PBS -l walltime=01:00:00" in script and "#PBS -A proj" in script and "ipyparallel.engine" in script
    (state / "1.state").write_text("R\n")
    (state / "2.state").write_text("R\n")
    keepOnce(directory, recorded, now=1001.0)  # both run: nothing to do
    assert len(recorded.launchers) == 2 and recorded.keeper["replaced"] == 2
    (state / "1.state").write_text("C\n")  # ended after running long enough: replaced at once
    keepOnce(directory, recorded, now=1001.0 + QUICK_SECONDS + 1)
    assert [r["launcher"]["job_id"] for r in recorded.launchers] == ["2", "3"]
    assert recorded.keeper["failures"] == 0
    keepOnce(directory, recorded, now=1100.0)  # job 3 is queued, never ran
    (state / "3.state").write_text("C\n")  # ...and ends at once: a failure, then back-off
    keepOnce(directory, recorded, now=1101.0)
    assert recorded.keeper["failures"] == 1 and recorded.keeper["status"].startswith("backing off")
    assert [r["launcher"]["job_id"] for r in recorded.launchers] == ["2"]

    assert stopBatchJob(recorded.launchers[0]) == "cancelled job 2"
    assert (state / "2.state").read_text().strip() == "C"


@settings(max_examples=100, deadline=None)
@given(engines=st.integers(1, 500), per=st.none() | st.integers(1, 64))
def test_engines_come_in_jobs_of_the_size_asked(engines: int, per: int | None) -> None:
    sizes = BatchOptions(engines=engines, enginesPerJob=per).jobSizes()
    assert sum(sizes) == engines
    assert all(0 < n <= (per or engines) for n in sizes)
    assert sizes[:-1] == [per or engines] * (len(sizes) - 1)  # only the last job may be smaller
