"""Cluster users pointed the right way: the batch launchers named by `init` and `--help`, option names that say
what they mean for each launcher, points (not tasks) counted per result set by `status` and `ClusterLab`, a
missing profile refused at once, and each thing printed once."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from clusterhub import Square
from test_cluster_local import cluster
from waiting import wait_until

from epyclab.clustersetup.manage import clusterStatus
from epyclab.clustersetup.state import loadProcesses
from epyclab.errors import ClusterConnectionError
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.remote.points import PointCounts
from epyclab.notebooks.hdf5 import HDF5LabNotebook


def test_init_prints_the_path_once_and_names_the_batch_launchers(ipdir: Path) -> None:
    result = cluster(ipdir, "init", "g")
    assert result.exit_code == 0, result.output
    path = str(ipdir / "profile_g")
    assert result.stdout.count(path) == 1
    assert path not in result.stderr
    hint = result.stdout.split("next", 1)[1]
    for words in ("--engines slurm", "pbs", "mpi", "--total-engines", "--walltime", "sync g --workers", "--local"):
        assert words in hint, hint


def test_help_names_the_batch_launchers_and_what_n_means() -> None:
    from click.testing import CliRunner

    from epyclab.cli import main

    top = CliRunner().invoke(main, ["cluster", "--help"])
    assert top.exit_code == 0
    assert "--engines slurm --total-engines" in top.stdout and "pbs" in top.stdout and "mpi" in top.stdout
    start = CliRunner().invoke(main, ["cluster", "start", "--help"])
    text = " ".join(start.stdout.split())
    assert "--total-engines N slurm, pbs, mpi: engines in all." in text
    assert "--engines-per-worker N ssh, local: engines on each worker" in text
    assert "in all (slurm, pbs, mpi)" in text


@pytest.mark.parametrize("given", [["--total-engines", "3"], ["-n", "3"], ["--engines-per-worker", "3"]])
def test_every_spelling_of_the_total_reaches_the_job_script(ipdir: Path, given: list[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    assert cluster(ipdir, "-q", "init", "spell").exit_code == 0
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        result = cluster(ipdir, "start", "spell", "--engines", "slurm", *given, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "#SBATCH --ntasks=3" in result.stdout
    # The old spelling still works, and says what it means here.
    warned = "say --total-engines 3" in caplog.text
    assert warned == (given[0] == "--engines-per-worker")


@pytest.mark.parametrize(("args", "words"), [
    (["--local", "--total-engines", "2"], "--total-engines applies to slurm, pbs and mpi"),
    (["--engines", "slurm", "-n", "2", "--total-engines", "3"], "give the number of engines once"),
    (["--engines", "slurm"], "needs --total-engines N"),
    (["--local", "-n", "2", "--engines-per-worker", "3"], "give the engines per worker once"),
])
def test_counts_that_contradict_or_do_not_apply_are_refused(ipdir: Path, args: list[str], words: str) -> None:
    assert cluster(ipdir, "-q", "init", "bad").exit_code == 0
    result = cluster(ipdir, "start", "bad", *args, "--dry-run")
    assert result.exit_code == 2
    assert words in result.output
    assert loadProcesses(ipdir / "profile_bad").empty()


def test_a_missing_profile_fails_at_once(ipdir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ClusterConnectionError) as error:
        ClusterLab(profile="nosuchprofile", ipython_dir=str(ipdir))
    assert time.monotonic() - started < 2.0  # not the 10 s connection timeout
    assert "epyclab cluster init nosuchprofile" in str(error.value)
    assert str(ipdir / "profile_nosuchprofile") in str(error.value)


def test_status_and_the_lab_count_points_per_result_set(ipdir: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    assert cluster(ipdir, "-q", "init", "pts").exit_code == 0
    assert cluster(ipdir, "-q", "start", "pts", "--local", "-n", "1").exit_code == 0
    path = tmp_path / "sweep.h5"
    nb = HDF5LabNotebook(str(path), create=True)
    lab = ClusterLab(nb, profile="pts", ipython_dir=str(ipdir), chunkSize=2)
    try:
        nb.addResultSet("quick")
        lab["x"] = range(4)
        lab.runExperiment(Square())
        assert lab.wait(timeout=60, progress=False)
        nb.addResultSet("slow")
        lab["x"] = range(6)
        lab.runExperiment(Square(1.0))  # 3 chunks of 2 on one engine: one runs, two wait
        wait_until(lambda: lab.pointCounts()["slow"].running == 2, 30, "a chunk of the slow set to run")
        counts = lab.pointCounts()
        assert counts["quick"] == PointCounts(0, 0, 4, 0)
        assert counts["slow"].running + counts["slow"].queued + counts["slow"].done == 6
        # From another shell: the notebook is read, read-only, while this lab holds it for writing.
        status = cluster(ipdir, "status", "pts", str(path))
        assert status.exit_code == 0, status.output
        assert f"points of {path}:" in status.stdout
        assert "  quick: 0 queued, 0 running, 4 done (0 failed)" in status.stdout
        assert "  slow: " in status.stdout and " 2 running, " in status.stdout
        with caplog.at_level(logging.INFO, logger="epyclab"):
            assert lab.wait(timeout=60, progress=False)
        assert "  slow: 0 queued, 0 running, 6 done (0 failed)" in caplog.text
    finally:
        lab.close()
    state = clusterStatus("pts", ipython_dir=ipdir, notebooks=[str(path)])
    assert state.points[str(path)] == {"quick": PointCounts(0, 0, 4, 0), "slow": PointCounts(0, 0, 6, 0)}
    missing = cluster(ipdir, "status", "pts", str(tmp_path / "nosuch.h5"))
    assert missing.exit_code == 1 and "no notebook" in missing.output
