"""A sweep that outlives its batch jobs, on the real one-node Slurm of tests/slurm.py (issue 21.6).

Engines in two jobs of one engine with Slurm's smallest walltime (one minute), kept up by the keeper; 200 points
of a second each submitted by a process that then exits; one engine job cancelled mid-sweep; a collector in another
process. The sweep lasts several walltimes: the keeper replaces jobs (drained before their end, or cut by
the walltime or the scancel), and every point ends with exactly one successful row, none failed for an engine's
death. Afterwards no job is queued and no process is left. It takes about three minutes on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import slurm as slurm_fixture
from slurm import slurm_daemons, slurm_environment  # noqa: F401 (the fixtures 'slurm', 'slurm_env')
from test_cluster_local import cluster, wait_gone
from waiting import wait_until

from epyclab.clustersetup.state import loadProcesses
from epyclab.experiment import Experiment
from epyclab.notebooks.hdf5 import HDF5LabNotebook

TESTS = Path(__file__).parent
POINTS = 200


pytestmark = pytest.mark.usefixtures("slurm_env")  # with conftest's ipdir


def script(path: Path, body: str) -> Path:
    path.write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n" + textwrap.dedent(body))
    return path


def test_a_sweep_outlives_its_engine_jobs(ipdir: Path, tmp_path: Path, slurm: slurm_fixture.Slurm) -> None:
    assert cluster(ipdir, "-q", "init", "long").exit_code == 0
    started = cluster(ipdir, "-q", "start", "long", "--engines", "slurm", "--total-engines", "2",
                      "--engines-per-job", "1", "--walltime", "00:01:00", "--keep", "--timeout", "180")
    assert started.exit_code == 0, started.output
    profile = ipdir / "profile_long"
    keeper = int(loadProcesses(profile).keeper["pid"])
    controller = int(loadProcesses(profile).controller["pid"])
    notebook = tmp_path / "sweep.h5"
    submit = script(tmp_path / "submit.py", f"""
        from clusterhub import Square
        from epyclab import ClusterLab, HDF5LabNotebook

        nb = HDF5LabNotebook({str(notebook)!r}, create=True)
        lab = ClusterLab(nb, profile="long", ipython_dir={str(ipdir)!r}, chunkSize=1)
        lab["x"] = range({POINTS})
        lab.runExperiment(Square(1.0))
        lab.close()
    """)
    subprocess.run([sys.executable, str(submit)], check=True, timeout=300, cwd=tmp_path)
    collect = script(tmp_path / "collect.py", f"""
        from epyclab import ClusterLab, HDF5LabNotebook

        nb = HDF5LabNotebook({str(notebook)!r})
        lab = ClusterLab(nb, profile="long", ipython_dir={str(ipdir)!r})
        done = lab.wait(timeout=900, progress=False)
        lab.close()
        sys.exit(0 if done else 3)
    """)
    with open(tmp_path / "collect.log", "wb") as log:
        collector = subprocess.Popen([sys.executable, str(collect)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        # Mid-sweep, one engine job is cancelled from outside.
        time.sleep(25)
        running = [r["launcher"]["job_id"] for r in loadProcesses(profile).launchers]
        slurm.run("scancel", running[0])
        # From another shell, mid-sweep: points per result set, jobs with engines and time left.
        status = cluster(ipdir, "status", "long", str(notebook))
        assert status.exit_code == 0, status.output
        assert f"points of {notebook}:" in status.stdout and " done (" in status.stdout
        assert "keeper: PID" in status.stdout and " left" in status.stdout
        assert collector.wait(timeout=900) == 0, (tmp_path / "collect.log").read_text()[-3000:]
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()

    nb = HDF5LabNotebook(str(notebook), readonly=True)
    df = nb.dataframe(only_successful=False)
    nb.close()
    assert sorted(df["x"]) == list(range(POINTS))  # exactly one row per point
    assert df[Experiment.STATUS].all(), df[~df[Experiment.STATUS]][Experiment.EXCEPTION].tolist()[:3]
    assert list(df.sort_values("x")["y"]) == [x * x for x in range(POINTS)]

    log = (profile / "log" / "epyclab-keeper.log").read_text()
    assert "ended (CANCELLED)" in log and f"slurm job {running[0]} ended" in log
    replaced = loadProcesses(profile).keeper["replaced"]
    assert replaced >= 3, log  # the cancelled job, and at least two ended by (or drained before) their walltime
    assert log.count("its engines drain, replacing them") + log.count("ended (TIMEOUT)") >= 2, log
    # Engines that drained said so (outside.py's markers): a chunk sent to one as it stopped was not counted.
    marks = [p.read_text().split()[0] for p in (profile / "ended").iterdir()]
    assert marks.count("DRAINED") >= log.count("its engines drain, replacing them") - 1, marks

    stopped = cluster(ipdir, "-q", "stop", "long")
    assert stopped.exit_code == 0, stopped.output
    assert wait_gone([keeper, controller], 30) == []
    wait_until(lambda: slurm.jobs() == [], 60, "the engine jobs to leave the queue")
    wait_until(lambda: slurm._job_processes() == [], 60, "the jobs' processes to end")
    assert loadProcesses(profile).empty()
    assert os.getpid() not in [p.ppid() for p in slurm._job_processes()]
