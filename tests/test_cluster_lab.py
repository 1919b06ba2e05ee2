"""ClusterLab against a real controller and two engines on 127.0.0.1, started (and stopped) by a fixture."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest
from clusterhub import AlwaysRaises, HubProcesses, Square, running_hub

from epyclab.errors import CancelledException, ClusterConnectionError, ExperimentSerializationError
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.remote.collect import SUBMITTED_ATTRIBUTE
from epyclab.labs.remote.hub import Hub
from epyclab.labs.remote.jobs import chunk_size, parse_job_id, split
from epyclab.notebooks.hdf5 import HDF5LabNotebook
from epyclab.notebooks.labnotebook import LabNotebook

STATUS = Experiment.STATUS
EXCEPTION = Experiment.EXCEPTION


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    """A controller with epyclab's durable task store and two engines, for the whole module."""
    with running_hub(tmp_path_factory.mktemp("profile")) as procs:
        yield procs


def hub_records(hub: HubProcesses, msg_ids: list[str]) -> dict[str, dict]:
    """What the controller still holds for these tasks, asked through a client of our own."""
    client = hub.connect()
    try:
        return Hub(client, 10).records(msg_ids, ["completed"])
    finally:
        client.close()


def test_a_sweep_of_2000_points_runs_on_both_engines_and_leaves_nothing_at_the_hub(hub, tmp_path):
    nb = HDF5LabNotebook(str(tmp_path / "sweep.h5"), create=True)
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    assert lab.numberOfEngines() == 2
    lab["x"] = range(2000)
    lab.runExperiment(Square())

    # runExperiment returned with every point pending, and nothing collected yet.
    jobs = nb.pendingResults()
    assert len(jobs) == 2000 and nb.numberOfResults() == 0
    tasks = {parse_job_id(j).msg_id for j in jobs}
    assert 1 < len(tasks) < 2000  # chunked: one task holds several points

    assert lab.wait(progress=False)
    df = nb.dataframe()
    assert sorted(df["x"]) == list(range(2000))
    assert (df["y"] == df["x"] ** 2).all()
    assert df["pid"].nunique() == 2
    assert nb.numberOfAllPendingResults() == 0
    lab.close()
    # Collected tasks were purged from the hub, so a long-lived controller does not fill up.
    assert hub_records(hub, sorted(tasks)) == {}


def test_submission_and_collection_in_two_other_processes(hub, tmp_path):
    """Disconnected operation: one process submits and exits; another, later, collects into the same notebook."""
    path = tmp_path / "disconnected.h5"
    submit = tmp_path / "submit.py"
    # The experiment is defined in the submitting script's __main__: it travels to the engines by value.
    submit.write_text(textwrap.dedent(f"""
        from epyclab import ClusterLab, Experiment, HDF5LabNotebook

        OFFSET = 1000

        def shifted(x):
            return x + OFFSET

        class Shift(Experiment):
            def do(self, params):
                return {{"z": shifted(params["x"])}}

        nb = HDF5LabNotebook({str(path)!r}, create=True)
        lab = ClusterLab(nb, profile_dir={str(hub.profile_dir)!r})
        lab["x"] = range(300)
        lab.runExperiment(Shift())
        lab.close()
    """))
    collect = tmp_path / "collect.py"
    collect.write_text(textwrap.dedent(f"""
        import json
        from epyclab import ClusterLab, HDF5LabNotebook

        nb = HDF5LabNotebook({str(path)!r})
        pending = nb.numberOfPendingResults()
        lab = ClusterLab(nb, profile_dir={str(hub.profile_dir)!r})
        done = lab.wait(timeout=120, progress=False)
        print(json.dumps({{"pending_before": pending, "done": done}}))
        lab.close()
    """))
    subprocess.run([sys.executable, str(submit)], check=True, timeout=120, cwd=tmp_path)

    # Between the two processes the notebook file holds the pending jobs, under their ids.
    between = HDF5LabNotebook(str(path), readonly=True)
    assert between.numberOfPendingResults() == 300
    assert between.numberOfResults() == 0
    between.close()

    out = subprocess.run([sys.executable, str(collect)], check=True, timeout=180, cwd=tmp_path,
                         capture_output=True, text=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"pending_before": 300, "done": True}

    nb = HDF5LabNotebook(str(path), readonly=True)
    df = nb.dataframe()
    assert sorted(df["x"]) == list(range(300))
    assert (df["z"] == df["x"] + 1000).all()
    assert nb.numberOfPendingResults() == 0
    nb.close()


def test_an_experiment_that_always_raises_gives_failed_results_and_no_hang(hub):
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    lab["x"] = range(40)
    lab.runExperiment(AlwaysRaises())
    assert lab.wait(timeout=120, progress=False)
    df = nb.dataframe(only_successful=False)
    assert len(df) == 40
    assert not df[STATUS].any()
    assert df[EXCEPTION].str.contains("ArithmeticError: no result at x=").all()
    assert nb.numberOfPendingResults() == 0
    lab.close()


def test_two_result_sets_pending_at_once_are_each_resolved_in_their_own_set(hub):
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    nb.addResultSet("squares")
    lab["x"] = range(100)
    lab.runExperiment(Square())
    nb.addResultSet("failures")
    lab["x"] = range(100, 130)
    lab.runExperiment(AlwaysRaises())
    assert nb.numberOfPendingResults("squares") == 100
    assert nb.numberOfPendingResults("failures") == 30

    assert lab.wait(timeout=120, progress=False)
    squares = nb.dataframe("squares", only_successful=False)
    failures = nb.dataframe("failures", only_successful=False)
    assert sorted(squares["x"]) == list(range(100)) and squares[STATUS].all()
    assert sorted(failures["x"]) == list(range(100, 130)) and not failures[STATUS].any()
    lab.close()


def test_update_results_returns_how_many_it_collected(hub):
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    assert lab.updateResults() == 0
    lab["x"] = range(50)
    lab.runExperiment(Square())
    collected = 0
    while nb.numberOfPendingResults():
        n = lab.updateResults()
        assert 0 <= n <= 50
        collected += n
    assert collected == 50 == nb.numberOfResults()
    assert lab.updateResults() == 0
    lab.close()


def test_resume_submits_only_the_points_without_a_result(hub):
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    lab["x"] = range(20)
    lab.runExperiment(Square())
    assert lab.wait(timeout=120, progress=False)
    lab["x"] = range(30)
    lab.runExperiment(Square(), resume=True)
    assert sorted(nb.pendingResultParameters(j)["x"] for j in nb.pendingResults()) == list(range(20, 30))
    assert lab.wait(timeout=120, progress=False)
    assert sorted(nb.dataframe()["x"]) == list(range(30))
    lab.close()


def test_purge_cancels_a_lost_job_but_never_one_that_can_still_be_fetched(hub):
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    # A job submitted an hour ago by another process, whose controller has forgotten it since.
    nb.addResultSet("old")
    nb.addPendingResult({"x": -1}, f"{uuid.uuid4()}_4242_7/0")
    nb.current()[SUBMITTED_ATTRIBUTE] = 0.0
    nb.addResultSet("new")
    lab["x"] = range(6)
    lab.runExperiment(Square(0.3))  # still queued or running when we purge

    lab.updateResults(purge=True)
    old = nb.dataframe("old", only_successful=False)
    assert len(old) == 1 and not old[STATUS].iloc[0]
    assert CancelledException.__name__ in old[EXCEPTION].iloc[0]
    assert nb.numberOfPendingResults("old") == 0

    assert lab.wait(timeout=120, progress=False)
    new = nb.dataframe("new", only_successful=False)
    assert sorted(new["x"]) == list(range(6)) and new[STATUS].all()
    lab.close()


def test_a_lost_job_of_another_process_becomes_a_failed_result_saying_why(hub):
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    nb.addPendingResult({"x": 7}, f"{uuid.uuid4()}_4242_9/0")
    nb.current()[SUBMITTED_ATTRIBUTE] = 0.0  # long ago
    assert lab.updateResults() == 1
    df = nb.dataframe(only_successful=False)
    message = df[EXCEPTION].iloc[0]
    assert "LostJobError" in message and "no record" in message and "resume=True" in message
    lab.close()


def test_an_experiment_that_cannot_be_serialized_fails_before_anything_is_submitted(hub):
    class Holding(Experiment):
        def __init__(self):
            super().__init__()
            self.source = (i for i in range(3))

        def do(self, params):
            return {}

    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    lab["x"] = range(3)
    submitted = len(lab.client().history)
    with pytest.raises(ExperimentSerializationError, match=r"Holding.*self\.source"):
        lab.runExperiment(Holding())
    assert nb.numberOfPendingResults() == 0
    assert len(lab.client().history) == submitted
    lab.close()


def test_wait_shows_a_progress_bar_when_asked(hub, capsys):
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    lab["x"] = range(30)
    lab.runExperiment(Square())
    assert lab.wait(timeout=120, progress=True)
    bar = capsys.readouterr().err
    assert "ClusterLab" in bar and "30/30" in bar
    lab.close()


def test_the_engines_and_a_lab_recreated_from_its_arguments(hub):
    nb = LabNotebook()
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    with lab.sync_imports(quiet=True):
        import math  # noqa: F401
    engines = lab.engines()
    engines.execute("root = math.sqrt(16.0)", block=True)  # math was imported there too
    assert engines.pull("root", block=True) == [4.0, 4.0]
    classname, kwargs = lab.recreate()
    assert classname == "epyclab.labs.clusterlab.ClusterLab"
    again = ClusterLab(LabNotebook(), **kwargs)
    assert again.numberOfEngines() == 2
    again.close()
    lab.close()


# ---- connecting ------------------------------------------------------------------------------------


class QuickLab(ClusterLab):
    Reconnections = 2
    ReconnectDelay = 0.1


def test_no_controller_names_the_profile_and_how_to_start_one(tmp_path):
    with pytest.raises(ClusterConnectionError) as err:
        QuickLab(LabNotebook(), profile="nosuch", ipython_dir=str(tmp_path), timeout=0.5)
    message = str(err.value)
    assert "'nosuch'" in message
    assert "epyclab cluster start nosuch" in message
    assert str(tmp_path / "profile_nosuch" / "security" / "ipcontroller-client.json") in message


def test_a_connection_file_without_a_controller_says_it_is_not_running(tmp_path):
    # A real connection file, left behind by a controller that has stopped.
    procs = HubProcesses(tmp_path / "profile", engines=0)
    try:
        procs.start_controller()
    finally:
        procs.stop()
    assert procs.alive() == []
    stale = procs.client_file
    assert stale.exists()
    with pytest.raises(ClusterConnectionError) as err:
        QuickLab(LabNotebook(), url_file=str(stale), timeout=0.5)
    message = str(err.value)
    assert str(stale) in message and "did not answer" in message and "not running" in message


def test_bad_options_are_refused_with_the_fix(hub):
    with pytest.raises(ValueError, match="chunkSize"):
        ClusterLab(LabNotebook(), profile_dir=str(hub.profile_dir), chunkSize=0)
    with pytest.raises(ValueError, match="lost must be one of"):
        ClusterLab(LabNotebook(), profile_dir=str(hub.profile_dir), lost="ignore")


def test_chunks_keep_every_engine_busy_and_stay_small():
    assert chunk_size(2000, 2) == 50  # capped
    assert chunk_size(100, 2) == 7  # ceil(100 / 16): 15 tasks for 2 engines
    assert chunk_size(5, 4) == 1
    assert chunk_size(0, 0) == 1
    items = [("a", {"x": i}) for i in range(5)] + [("b", {"x": i}) for i in range(3)]
    chunks = list(split(items, 2))
    assert [(k, [p["x"] for p in ps]) for k, ps in chunks] == [
        ("a", [0, 1]), ("a", [2, 3]), ("a", [4]), ("b", [0, 1]), ("b", [2])
    ]


def test_job_ids_name_the_task_and_the_place_in_its_chunk():
    ref = parse_job_id("abc-12_345_6/17")
    assert (ref.msg_id, ref.index, ref.attempt) == ("abc-12_345_6", 17, 0)
    ref = parse_job_id("abc-12_345_6/3/2")
    assert (ref.msg_id, ref.index, ref.attempt) == ("abc-12_345_6", 3, 2)
    # epyc used the bare task id: one point per task
    ref = parse_job_id("abc-12_345_6")
    assert (ref.msg_id, ref.index, ref.attempt) == ("abc-12_345_6", 0, 0)
