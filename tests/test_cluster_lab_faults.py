"""ClusterLab when things go wrong: engines killed, the controller restarted, the hub's store overflowing.

Each test starts its own controller and engines (they are damaged on purpose)
and stops them; every process is checked to be gone.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterhub import HubProcesses, Killer, Square

from epyclab.errors import ClusterConnectionError
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.remote.jobs import HubCapacityError, parse_job_id
from epyclab.notebooks.hdf5 import HDF5LabNotebook
from epyclab.notebooks.labnotebook import LabNotebook

STATUS = Experiment.STATUS
EXCEPTION = Experiment.EXCEPTION


class QuickLab(ClusterLab):
    """Shorter periods than the defaults, so that a test sees lost jobs in seconds."""

    LostGrace = 3.0
    OrphanCheckSeconds = 1.0
    CheckSeconds = 0.5
    ReconnectDelay = 0.5


def hub_processes(path: Path, **kwargs) -> Iterator[HubProcesses]:
    procs = HubProcesses(path, **kwargs)
    try:
        yield procs
    finally:
        procs.stop()
    assert procs.alive() == []


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[HubProcesses]:
    """Two engines and a controller with epyclab's SQLite task store."""
    yield from hub_processes(tmp_path / "profile", engines=2, durable=True)


@pytest.fixture
def volatile(tmp_path: Path) -> Iterator[HubProcesses]:
    """Two engines and a controller with ipyparallel's default in-memory store (1024 records)."""
    yield from hub_processes(tmp_path / "profile", engines=2, durable=False)


def one_result_per_point(nb: LabNotebook, n: int) -> None:
    df = nb.dataframe(only_successful=False)
    assert sorted(df["x"]) == list(range(n))
    assert df[STATUS].all(), df.loc[~df[STATUS], EXCEPTION].tolist()[:3]
    assert (df["y"] == df["x"] ** 2).all()
    assert nb.numberOfAllPendingResults() == 0


def wait_for_results(lab: ClusterLab, n: int) -> None:
    """Collect until at least ``n`` results are in (the sweep is under way)."""
    while lab.notebook().numberOfResults() < n:
        lab.wait(timeout=0.2, progress=False)


def test_an_engine_killed_mid_sweep_loses_no_point(durable: HubProcesses, caplog: pytest.LogCaptureFixture):
    durable.start()
    nb = LabNotebook()
    lab = QuickLab(nb, profile_dir=str(durable.profile_dir), chunkSize=3)
    lab["x"] = range(90)
    lab.runExperiment(Square(0.1))  # 30 tasks of 0.3 s: both engines always busy
    wait_for_results(lab, 6)
    victim = durable.engine_pids()[0]
    durable.kill_engine(victim)

    with caplog.at_level(logging.WARNING, logger="epyclab"):
        assert lab.wait(timeout=300, progress=False)
    one_result_per_point(nb, 90)
    assert any("resubmitted" in r.getMessage() for r in caplog.records)
    lab.close()


def test_a_point_that_kills_its_engine_fails_alone_and_costs_two_engines(tmp_path: Path):
    for procs in hub_processes(tmp_path / "profile", engines=3):
        procs.start()
        nb = LabNotebook()
        lab = QuickLab(nb, profile_dir=str(procs.profile_dir), chunkSize=4)
        lab["x"] = range(12)
        lab.runExperiment(Killer(fatal=5))
        assert lab.wait(timeout=300, progress=False)
        df = nb.dataframe(only_successful=False)
        assert sorted(df["x"]) == list(range(12))
        ok = df[df[STATUS]]
        assert sorted(ok["x"]) == [x for x in range(12) if x != 5]  # its chunk-mates were run again alone
        assert (ok["y"] == ok["x"] ** 2).all()
        killer = df[df["x"] == 5]
        assert not killer[STATUS].iloc[0] and "EngineError" in killer[EXCEPTION].iloc[0]
        assert len(procs.engine_pids()) == 1
        lab.close()


def test_a_controller_restarted_mid_sweep_loses_no_point(durable: HubProcesses):
    durable.start()
    nb = LabNotebook()
    lab = QuickLab(nb, profile_dir=str(durable.profile_dir), chunkSize=4, timeout=3)
    lab["x"] = range(200)
    lab.runExperiment(Square(0.02))
    wait_for_results(lab, 20)
    durable.kill_controller()
    assert durable.alive() != []  # the engines live on, waiting for a controller
    durable.start_controller()  # the same ports and files, --restore: the engines come back

    assert lab.wait(timeout=300, progress=False)
    one_result_per_point(nb, 200)
    lab.close()


def test_a_controller_that_stops_answering_is_an_error_that_keeps_the_pending_jobs(durable: HubProcesses):
    class Impatient(QuickLab):
        Reconnections = 2

    durable.start()
    nb = LabNotebook()
    lab = Impatient(nb, profile_dir=str(durable.profile_dir), chunkSize=1, timeout=1)
    lab["x"] = range(12)
    lab.runExperiment(Square(0.5))
    durable.kill_controller()
    with pytest.raises(ClusterConnectionError) as err:
        lab.wait(timeout=120, progress=False)
    assert "not running" in str(err.value) and str(durable.profile_dir) in str(err.value)
    pending = nb.numberOfPendingResults()
    assert pending + nb.numberOfResults() == 12 and pending > 0

    # Once a controller runs again, the same lab picks up where it stopped.
    durable.start_controller()
    assert lab.wait(timeout=300, progress=False)
    one_result_per_point(nb, 12)
    lab.close()


def test_engines_that_join_after_submission_get_the_experiment_with_the_tasks(tmp_path: Path):
    for procs in hub_processes(tmp_path / "profile", engines=0):
        procs.start_controller()
        nb = LabNotebook()
        lab = ClusterLab(nb, profile_dir=str(procs.profile_dir))
        assert lab.numberOfEngines() == 0
        lab["x"] = range(40)
        lab.runExperiment(Square())
        procs.start_engine()
        assert lab.wait(timeout=300, progress=False)
        one_result_per_point(nb, 40)
        lab.close()


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[HubProcesses]:
    """Two engines and a controller whose in-memory store keeps only 100 records (culling past that)."""
    yield from hub_processes(tmp_path / "profile", engines=2, durable=False, record_limit=100)


def test_on_a_culling_store_a_too_small_chunk_size_is_refused_before_anything_is_submitted(
        small_store: HubProcesses) -> None:
    small_store.start()
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(small_store.profile_dir), chunkSize=1, hubRecordLimit=100)
    lab["x"] = range(300)
    with pytest.raises(HubCapacityError) as refused:
        lab.runExperiment(Square())
    message = str(refused.value)
    assert "in-memory store" in message and "beyond 100 records" in message
    assert "300 points in chunks of 1 are 300 tasks, more than the 90" in message
    assert "chunkSize=4 or more" in message
    assert "--IPController.db_class=epyclab.clustersetup.taskstore.TaskStore" in message
    assert "epyclab cluster start PROFILE" in message
    assert nb.numberOfAllPendingResults() == 0 and nb.numberOfResults() == 0
    client = small_store.connect()
    try:
        assert client.hub_history() == []  # nothing reached the hub
    finally:
        client.close()
    lab.close()


def test_on_a_culling_store_the_lab_sizes_chunks_so_that_no_task_is_culled(small_store: HubProcesses) -> None:
    small_store.start()
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(small_store.profile_dir), hubRecordLimit=100)
    lab["x"] = range(5000)  # 100 tasks of 50 by the usual rule: more than the store keeps
    lab.runExperiment(Square())
    tasks = {parse_job_id(j).msg_id for j in nb.pendingResults()}
    assert len(tasks) <= 90
    assert lab.wait(timeout=300, progress=False)
    one_result_per_point(nb, 5000)
    lab.close()


def test_a_durable_store_is_not_taken_for_a_culling_one(durable: HubProcesses) -> None:
    durable.start()
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(durable.profile_dir), chunkSize=1, hubRecordLimit=100)
    lab["x"] = range(300)
    lab.runExperiment(Square())  # 300 tasks: fine on SQLite, which never culls
    assert len({parse_job_id(j).msg_id for j in nb.pendingResults()}) == 300
    assert lab.wait(timeout=300, progress=False)
    one_result_per_point(nb, 300)
    lab.close()


def test_tasks_culled_by_the_hub_are_failed_with_the_reason_and_rerun_by_resume(volatile: HubProcesses,
                                                                                 tmp_path: Path):
    """Another process collects: what the hub culled is reported, never left pending or lost silently."""
    volatile.start()
    path = tmp_path / "culled.h5"
    script = tmp_path / "submit.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from clusterhub import Square
        from epyclab import ClusterLab, HDF5LabNotebook

        nb = HDF5LabNotebook({str(path)!r}, create=True)
        # Told the store keeps more than it does (as if other clients filled it meanwhile), the lab
        # submits more tasks than it keeps: what the hub culls must still be reported, never lost.
        lab = ClusterLab(nb, profile_dir={str(volatile.profile_dir)!r}, chunkSize=1, hubRecordLimit=100000)
        lab["x"] = range(1100)
        lab.runExperiment(Square())
        lab.close()
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=300, cwd=tmp_path)

    nb = HDF5LabNotebook(str(path))
    lab = QuickLab(nb, profile_dir=str(volatile.profile_dir))
    assert lab.wait(timeout=600, progress=False)
    df = nb.dataframe(only_successful=False)
    assert sorted(df["x"]) == list(range(1100))  # one result per point, some of them failures
    failed = df[~df[STATUS]]
    assert len(failed) >= 100  # the hub culls 102 records when it passes 1024
    # Every failure is a culled task, saying so and how to run it again.
    reasons = set(failed[EXCEPTION])
    assert [r for r in reasons if not ("LostJobError" in r and "culled" in r and "resume=True" in r)] == []

    lab["x"] = range(1100)
    lab.runExperiment(Square(), resume=True)
    assert nb.numberOfPendingResults() == len(failed)
    assert lab.wait(timeout=600, progress=False)
    ok = nb.dataframe()
    assert sorted(ok["x"]) == list(range(1100))
    lab.close()
