"""Engines started by a real one-node Slurm (tests/slurm.py) and under a real mpiexec, through ipyparallel's
launcher classes: init, start, a ClusterLab sweep submitted in one process and collected in another, status
showing the job, stop, and then no job and no process left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import slurm as slurm_fixture
from slurm import slurm_daemons  # noqa: F401 (the fixture 'slurm')
from test_cluster_local import cluster, running, wait_gone

from epyclab.clustersetup.state import loadProcesses
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.notebooks.hdf5 import HDF5LabNotebook

TESTS = Path(__file__).parent
POINTS = 20



def submit_in_another_process(ipdir: Path, profile: str, notebook: Path) -> None:
    script = notebook.with_suffix(".submit.py")
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from clusterhub import Square
        from epyclab import ClusterLab, HDF5LabNotebook

        nb = HDF5LabNotebook({str(notebook)!r}, create=True)
        lab = ClusterLab(nb, profile={profile!r}, ipython_dir={str(ipdir)!r}, chunkSize=1)
        lab["x"] = range({POINTS})
        lab.runExperiment(Square(0.05))
        lab.close()
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=300, cwd=notebook.parent)


def collect_here(ipdir: Path, profile: str, notebook: Path) -> list[int]:
    """Collect the sweep in this process; check one successful row per point; return the engines' PIDs."""
    nb = HDF5LabNotebook(str(notebook))
    lab = ClusterLab(nb, profile=profile, ipython_dir=str(ipdir))
    assert lab.wait(timeout=300, progress=False)
    df = nb.dataframe(only_successful=False)
    lab.close()
    nb.close()
    assert sorted(df["x"]) == list(range(POINTS))
    assert df[Experiment.STATUS].all()
    assert list(df.sort_values("x")["y"]) == [x * x for x in range(POINTS)]
    return sorted(set(df["pid"]))


def engine_pids(profile: Path) -> list[int]:
    return sorted({pid for pids in loadProcesses(profile).enginePids.values() for pid in pids[:1]})


def test_engines_in_a_slurm_job(ipdir: Path, tmp_path: Path, slurm: slurm_fixture.Slurm,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    assert cluster(ipdir, "-q", "init", "sl").exit_code == 0
    started = cluster(ipdir, "-q", "start", "sl", "--engines", "slurm", "-n", "2", "--walltime", "00:30:00",
                      "--directive", "--job-name=epyclab-test", "--timeout", "120")
    assert started.exit_code == 0, started.output + slurm.log("slurmctld")[-2000:]
    assert "  slurm: 2" in started.stdout
    # A one-node Slurm reaches a loopback controller: warned about (for other nodes), not refused.
    assert "epyclab cluster init sl --ip ADDRESS-the-nodes-can-reach" in " ".join(started.stderr.split())
    profile = ipdir / "profile_sl"
    recorded = loadProcesses(profile)
    (record,) = recorded.launchers
    job = record["launcher"]["job_id"]
    assert record["class"] == "SlurmEngineSetLauncher"
    assert slurm.jobs() == [job]
    script = (profile / "batch" / "slurm_engine.sbatch").read_text()
    assert "#SBATCH --ntasks=2" in script and "#SBATCH --time=00:30:00" in script
    assert "#SBATCH --job-name=epyclab-test" in script
    engines = engine_pids(profile)
    assert len(engines) == 2

    # Status from a "later shell": only the profile's state is used.
    status = cluster(ipdir, "status", "sl")
    assert status.exit_code == 0, status.output
    assert f"slurm job {job}: RUNNING" in status.stdout
    assert "  slurm: 2 / 2" in status.stdout

    notebook = tmp_path / "sweep.h5"
    submit_in_another_process(ipdir, "sl", notebook)

    # The controller dies (SIGKILL, its whole group); `start` restarts it, and the job's engines, still
    # running, register again: no second job.
    os.killpg(int(recorded.controller["pid"]), signal.SIGKILL)
    assert wait_gone([int(recorded.controller["pid"])]) == []
    again = cluster(ipdir, "-q", "start", "sl", "--timeout", "120")
    assert again.exit_code == 0, again.output
    assert "  slurm: 2" in again.stdout
    assert slurm.jobs() == [job]
    recorded = loadProcesses(profile)
    assert engine_pids(profile) == engines

    assert set(collect_here(ipdir, "sl", notebook)) <= set(engines)

    stopped = cluster(ipdir, "-q", "stop", "sl")
    assert stopped.exit_code == 0, stopped.output
    assert f"slurm job {job}: cancelled job {job}" in stopped.stdout
    assert "(local): stopped the controller" in stopped.stdout
    deadline = time.monotonic() + 60
    while slurm.jobs() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm.jobs() == []
    assert wait_gone([*engines, int(recorded.controller["pid"])], 30) == []
    assert loadProcesses(profile).empty()


def test_engines_that_never_register_on_a_loopback_controller_are_told_about_ip(
        ipdir: Path, slurm: slurm_fixture.Slurm, monkeypatch: pytest.MonkeyPatch) -> None:
    """A held job never starts its engines: the timeout's message names --ip too, for whoever missed the warning."""
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    assert cluster(ipdir, "-q", "init", "held").exit_code == 0
    result = cluster(ipdir, "-q", "start", "held", "--engines", "slurm", "-n", "1", "--directive", "--hold",
                     "--timeout", "10")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "did not register within 10 s" in text
    assert "listens on 127.0.0.1" in text and "epyclab cluster init held --ip ADDRESS-the-nodes-can-reach" in text
    controller = int(loadProcesses(ipdir / "profile_held").controller["pid"])
    assert cluster(ipdir, "-q", "stop", "held").exit_code == 0
    assert wait_gone([controller], 30) == []
    deadline = time.monotonic() + 60
    while slurm.jobs() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm.jobs() == []


def test_a_failed_submission_names_the_job_command(ipdir: Path, slurm: slurm_fixture.Slurm,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    assert cluster(ipdir, "-q", "init", "bad").exit_code == 0
    result = cluster(ipdir, "-q", "start", "bad", "--engines", "slurm", "-n", "2", "--queue", "nosuchpartition")
    assert result.exit_code == 1
    assert "slurm: starting 2 engine(s) failed: `sbatch " in result.output
    assert "exited with status 1" in result.output and "slurm_engine.sbatch" in result.output
    assert "invalid partition" in capfd.readouterr().err  # sbatch's own words, on the user's terminal
    assert cluster(ipdir, "-q", "stop", "bad").exit_code == 0
    assert slurm.jobs() == []


@pytest.fixture
def mpi(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not installed (.ci/run installs Debian's openmpi-bin)")
    pytest.importorskip("mpi4py", reason="ipengine --mpi needs mpi4py (the dev extra installs it)")
    if os.geteuid() == 0:
        # Open MPI refuses to run as root unless told that it is meant (CI runs as root).
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")


def test_engines_under_mpiexec(ipdir: Path, tmp_path: Path, mpi: None) -> None:
    assert cluster(ipdir, "-q", "init", "mp").exit_code == 0
    started = cluster(ipdir, "-q", "start", "mp", "--engines", "mpi", "-n", "2", "--directive", "--oversubscribe",
                      "--timeout", "120")
    assert started.exit_code == 0, started.output
    assert "  mpi: 2" in started.stdout
    profile = ipdir / "profile_mp"
    recorded = loadProcesses(profile)
    (record,) = recorded.launchers
    mpiexec = int(record["launcher"]["pid"])
    assert running(mpiexec)
    engines = engine_pids(profile)

    status = cluster(ipdir, "status", "mp")
    assert status.exit_code == 0, status.output
    assert f"mpi mpiexec PID {mpiexec}: running" in status.stdout

    notebook = tmp_path / "sweep.h5"
    submit_in_another_process(ipdir, "mp", notebook)
    assert set(collect_here(ipdir, "mp", notebook)) <= set(engines)

    stopped = cluster(ipdir, "-q", "stop", "mp")
    assert stopped.exit_code == 0, stopped.output
    assert f"stopped mpiexec (PID {mpiexec}) and its engines" in stopped.stdout
    assert wait_gone([mpiexec, *engines, int(recorded.controller["pid"])], 30) == []
    assert loadProcesses(profile).empty()


def test_pbs_and_slurm_job_scripts_carry_the_options(tmp_path: Path) -> None:
    """The scripts ipyparallel's PBS and Slurm launchers write from epyclab's options (no scheduler needed)."""
    from epyclab.clustersetup.launchers import BatchOptions, _configure

    options = BatchOptions(engines=8, enginesPerNode=4, queue="batch", account="proj1", walltime="01:00:00",
                           directives=["-l mem=8gb", "#PBS -m abe"])
    pbs = _configure("pbs", tmp_path, options)
    pbs.write_batch_script(8)
    script = Path(pbs.batch_file).read_text()
    for line in ("#PBS -l nodes=2:ppn=4", "#PBS -A proj1", "#PBS -l walltime=01:00:00", "#PBS -q batch",
                 "#PBS -l mem=8gb", "#PBS -m abe", "#PBS -t 1-8"):
        assert line in script, script
    assert f"--profile-dir={tmp_path}" in script and "ipyparallel.engine" in script

    slurm_options = BatchOptions(engines=8, enginesPerNode=4, queue="compute", account="proj1",
                                 walltime="01:00:00", directives=["--mem-per-cpu=2G"])
    sl = _configure("slurm", tmp_path, slurm_options)
    sl.write_batch_script(8)
    script = Path(sl.batch_file).read_text()
    for line in ("#SBATCH --ntasks=8", "#SBATCH --ntasks-per-node=4", "#SBATCH --partition=compute",
                 "#SBATCH --account=proj1", "#SBATCH --time=01:00:00", "#SBATCH --mem-per-cpu=2G"):
        assert line in script, script
    assert os.stat(sl.batch_file).st_mode & 0o077 == 0  # the script is the user's alone

    template = tmp_path / "job.tmpl"
    template.write_text("#!/bin/sh\n#SBATCH --ntasks={n}\n#SBATCH --constraint=bigmem\nsrun {program_and_args}\n")
    own = _configure("slurm", tmp_path, BatchOptions(engines=3, template=str(template)))
    own.write_batch_script(3)
    script = Path(own.batch_file).read_text()
    assert "#SBATCH --ntasks=3" in script and "#SBATCH --constraint=bigmem" in script


def test_a_dry_run_prints_the_job_script_and_starts_nothing(ipdir: Path) -> None:
    assert cluster(ipdir, "-q", "init", "dry").exit_code == 0
    result = cluster(ipdir, "start", "dry", "--engines", "slurm", "-n", "4", "--queue", "short", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "ipyparallel.controller --profile-dir=" in result.stdout  # the controller's command, not run
    assert "sbatch " in result.stdout and "slurm_engine.sbatch" in result.stdout
    assert "#SBATCH --ntasks=4" in result.stdout and "#SBATCH --partition=short" in result.stdout
    assert loadProcesses(ipdir / "profile_dry").empty()
