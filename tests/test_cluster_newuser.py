"""What a new user of `epyclab cluster` meets first (issue 18's trial): the controller's address for
batch engines, points finished but not collected, starting with no engines named, and a lab on a
profile that was never started."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cluster_local import cluster
from waiting import wait_until

from epyclab.clustersetup.manage import clusterStatus
from epyclab.clustersetup.state import loadProcesses
from epyclab.errors import ClusterConnectionError
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.remote.jobs import job_id
from epyclab.labs.remote.points import PointCounts, describeCounts, pointCounts
from epyclab.notebooks.hdf5 import HDF5LabNotebook
from epyclab.notebooks.labnotebook import LabNotebook

TESTS = Path(__file__).parent
DOCS = TESTS.parent / "docs"



# ---- the controller's address, for engines on other nodes ------------------------------------


def test_init_help_and_the_cli_page_name_ip_for_engines_on_other_nodes(ipdir: Path) -> None:
    result = cluster(ipdir, "init", "lo")
    assert result.exit_code == 0, result.output
    assert "epyclab cluster init lo --ip ADDRESS" in result.stdout
    assert "127.0.0.1" in result.stdout
    # A profile that already listens on a reachable address is not told to change it.
    result = cluster(ipdir, "init", "net", "--ip", "10.1.0.5")
    assert result.exit_code == 0, result.output
    assert "--ip ADDRESS" not in result.stdout
    top = cluster(ipdir, "--help")
    assert "init PROFILE --ip ADDRESS" in top.stdout
    init = " ".join(cluster(ipdir, "init", "--help").stdout.split())
    assert "--ip ADDRESS" in init and "other nodes" in init
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    section = page.split("## cluster", 1)[1]
    assert "--ip ADDRESS" in section and "epyclab cluster init hpc --ip" in section


@pytest.mark.parametrize("launcher", ["slurm", "pbs", "mpi"])
def test_batch_engines_on_a_loopback_controller_are_warned_about_in_the_dry_run(ipdir: Path, launcher: str) -> None:
    assert cluster(ipdir, "-q", "init", "lo").exit_code == 0
    result = cluster(ipdir, "start", "lo", "--engines", launcher, "--total-engines", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "127.0.0.1" in text and f"--engines {launcher}" in text
    assert "epyclab cluster init lo --ip ADDRESS-the-nodes-can-reach" in text
    # Warned, not refused: the job script is still printed.
    assert "ipyparallel" in result.stdout or "mpiexec" in result.stdout


def test_no_warning_when_the_controller_is_reachable_or_the_engines_are_here(ipdir: Path) -> None:
    assert cluster(ipdir, "-q", "init", "net", "--ip", "10.1.0.5").exit_code == 0
    result = cluster(ipdir, "start", "net", "--engines", "slurm", "--total-engines", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "ADDRESS-the-nodes-can-reach" not in result.output
    assert cluster(ipdir, "-q", "init", "lo").exit_code == 0
    result = cluster(ipdir, "start", "lo", "--local", "-n", "1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "ADDRESS-the-nodes-can-reach" not in result.output


@pytest.mark.parametrize("command", ["init", "sync", "start", "stop", "status"])
def test_every_option_value_is_named_for_what_it_is(ipdir: Path, command: str) -> None:
    """Metavars say what to give (N, SECONDS, HOSTS, ...), never click's type names."""
    text = cluster(ipdir, command, "--help").stdout
    options = [line for line in text.splitlines() if line.lstrip().startswith("-")]
    assert options
    for line in options:
        assert not re.search(r"\b(TEXT|INTEGER|FLOAT)\b", line), line
    if command == "start":
        for option in ("-n N", "--total-engines N", "--timeout SECONDS", "--drain SECONDS", "--leave-free K",
                       "--walltime HH:MM:SS"):
            assert option in text, option


# ---- starting with no engines named ------------------------------------------------------------


def test_start_with_no_engines_named_names_every_way_to_give_them(ipdir: Path) -> None:
    assert cluster(ipdir, "-q", "init", "bare").exit_code == 0
    result = cluster(ipdir, "start", "bare")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    for words in ("--engines slurm|pbs", "--engines mpi", "--workers HOST", "--local", "sync bare"):
        assert words in text, text
    assert loadProcesses(ipdir / "profile_bare").empty()
    # sync still says what it needs: workers.
    result = cluster(ipdir, "sync", "bare", "--dry-run")
    assert result.exit_code == 1 and "no workers given" in result.output


# ---- a lab on a profile that has no controller -------------------------------------------------


def test_a_lab_on_a_profile_never_started_fails_at_once_naming_start(ipdir: Path) -> None:
    assert cluster(ipdir, "-q", "init", "myprof").exit_code == 0
    began = time.monotonic()
    with pytest.raises(ClusterConnectionError) as error:
        ClusterLab(profile="myprof", ipython_dir=str(ipdir))
    assert time.monotonic() - began < 2.0  # not the 10 s wait for a connection file
    assert "epyclab cluster start myprof" in str(error.value)
    assert "no controller is recorded as started" in str(error.value)


def test_a_lab_on_a_stopped_profile_without_a_connection_file_fails_at_once(ipdir: Path) -> None:
    assert cluster(ipdir, "-q", "init", "gone").exit_code == 0
    assert cluster(ipdir, "-q", "start", "gone", "--local", "-n", "1").exit_code == 0
    assert cluster(ipdir, "-q", "stop", "gone").exit_code == 0
    (ipdir / "profile_gone" / "security" / "ipcontroller-client.json").unlink(missing_ok=True)
    began = time.monotonic()
    with pytest.raises(ClusterConnectionError) as error:
        ClusterLab(profile="gone", ipython_dir=str(ipdir))
    assert time.monotonic() - began < 2.0
    assert "epyclab cluster start gone" in str(error.value)


# ---- points finished on the engines but not collected ------------------------------------------


def test_status_counts_points_finished_but_not_collected_apart_from_queued(ipdir: Path, tmp_path: Path) -> None:
    assert cluster(ipdir, "-q", "init", "fin").exit_code == 0
    assert cluster(ipdir, "-q", "start", "fin", "--local", "-n", "1").exit_code == 0
    path = tmp_path / "sweep.h5"
    # Submitted by a process that exits at once, as a sweep submitted from a login node: nobody collects.
    submit = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from clusterhub import Square
        from epyclab.labs.clusterlab import ClusterLab
        from epyclab.notebooks.hdf5 import HDF5LabNotebook
        nb = HDF5LabNotebook({str(path)!r}, create=True)
        lab = ClusterLab(nb, profile="fin", ipython_dir={str(ipdir)!r}, chunkSize=2)
        lab["x"] = range(6)
        lab.runExperiment(Square())
        lab.close()
    """)
    done = subprocess.run([sys.executable, "-c", submit], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    def finished() -> bool:
        counts = clusterStatus("fin", ipython_dir=ipdir, notebooks=[str(path)]).points[str(path)]
        return sum(c.uncollected for c in counts.values()) == 6

    wait_until(finished, 60, "the three chunks to finish on the engine")
    status = cluster(ipdir, "status", "fin", str(path))
    assert status.exit_code == 0, status.output
    assert "  epyc.resultset.default: 0 queued, 0 running, 6 finished not collected, 0 done (0 failed)" in status.stdout
    assert re.search(r"finished, not collected: .*wait\(\).*updateResults\(\).*collector", status.stdout)
    # Collected: done, and the hint is gone.
    nb = HDF5LabNotebook(str(path))
    lab = ClusterLab(nb, profile="fin", ipython_dir=str(ipdir))
    try:
        assert lab.wait(timeout=60, progress=False)
    finally:
        lab.close()
    state = clusterStatus("fin", ipython_dir=ipdir, notebooks=[str(path)])
    assert state.points[str(path)] == {"epyc.resultset.default": PointCounts(0, 0, 6, 0)}
    status = cluster(ipdir, "status", "fin", str(path))
    assert "  epyc.resultset.default: 0 queued, 0 running, 6 done (0 failed)" in status.stdout
    assert "not collected" not in status.stdout



# ---- the counting itself, over every way tasks can be split ------------------------------------

_STATES = st.sampled_from(["queued", "running", "finished", "running+finished"])


@settings(max_examples=60, deadline=None)
@given(tasks=st.lists(st.tuples(st.integers(1, 4), _STATES), min_size=0, max_size=8))
def test_every_pending_point_is_counted_once_a_finished_task_before_a_running_one(
        tasks: list[tuple[int, str]]) -> None:
    nb = LabNotebook()
    running, finished = set(), set()
    for t, (size, state) in enumerate(tasks):
        msg = f"task-{t}"
        for i in range(size):
            nb.addPendingResult({"x": t, "i": i}, job_id(msg, i))
        if "running" in state:
            running.add(msg)
        if "finished" in state:
            finished.add(msg)
    counts = pointCounts(nb, running, finished)
    if not tasks:
        assert counts == {}
        return
    (c,) = counts.values()
    # The hub may still list a finished task in an engine's queue for a moment: finished wins.
    assert c.uncollected == sum(size for size, state in tasks if "finished" in state)
    assert c.running == sum(size for size, state in tasks if state == "running")
    assert c.queued == sum(size for size, state in tasks if state == "queued")
    assert c.done == 0
    lines = describeCounts(counts)
    assert any("finished, not collected" in line for line in lines) == (c.uncollected > 0)
