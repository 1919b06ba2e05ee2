"""ClusterLab.pointCounts() and `epyclab cluster status PROFILE NOTEBOOK` count a sweep's points alike
(labs/remote/points.py): queued, running, finished not collected, done and failed, per result set, on a real
local cluster whose one engine holds points in each state."""

from __future__ import annotations

from pathlib import Path

from clusterhub import Square, WaitsForFile
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cluster_local import cluster
from waiting import wait_until

from epyclab.clustersetup.manage import clusterStatus
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.remote.jobs import job_id
from epyclab.labs.remote.points import PointCounts, hubTasks, pointCounts
from epyclab.notebooks.hdf5 import HDF5LabNotebook
from epyclab.notebooks.labnotebook import LabNotebook


def test_the_lab_and_status_agree_on_every_state_of_a_point(ipdir: Path, tmp_path: Path) -> None:
    assert cluster(ipdir, "-q", "init", "agree").exit_code == 0
    assert cluster(ipdir, "-q", "start", "agree", "--local", "-n", "1").exit_code == 0
    path, release = tmp_path / "sweep.h5", tmp_path / "release"
    nb = HDF5LabNotebook(str(path), create=True)
    lab = ClusterLab(nb, profile="agree", ipython_dir=str(ipdir), chunkSize=2)
    try:
        nb.addResultSet("finished")
        lab["x"] = range(4)
        lab.runExperiment(Square())  # runs at once; not collected: its results wait at the controller
        wait_until(lambda: lab.pointCounts()["finished"].uncollected == 4, 60, "the quick set to finish")
        nb.addResultSet("held")
        lab["x"] = range(6)
        lab.runExperiment(WaitsForFile(str(release)))  # 3 chunks of 2 on one engine: one runs, two wait
        wait_until(lambda: lab.pointCounts()["held"].running == 2, 60, "a chunk of the held set to run")
        mine = lab.pointCounts()
        theirs = clusterStatus("agree", ipython_dir=ipdir, notebooks=[str(path)]).points[str(path)]
        assert mine == theirs == {"finished": PointCounts(queued=0, running=0, done=0, failed=0, uncollected=4),
                                  "held": PointCounts(queued=4, running=2, done=0, failed=0, uncollected=0)}
        status = cluster(ipdir, "status", "agree", str(path))
        assert "  finished: 0 queued, 0 running, 4 finished not collected, 0 done (0 failed)" in status.stdout
        assert "  held: 4 queued, 2 running, 0 done (0 failed)" in status.stdout
        release.touch()
        assert lab.wait(timeout=120, progress=False)
        done = {"finished": PointCounts(0, 0, 4, 0), "held": PointCounts(0, 0, 6, 0)}
        assert lab.pointCounts() == done
        assert clusterStatus("agree", ipython_dir=ipdir, notebooks=[str(path)]).points[str(path)] == done
    finally:
        release.touch()
        lab.close()


_STATE = st.sampled_from(["queued", "running", "finished", "finished, still listed"])


def _use(nb: LabNotebook, tag: str) -> None:
    if tag in nb.keys():
        nb.select(tag)
    else:
        nb.addResultSet(tag)


@settings(max_examples=100, deadline=None)
@given(tasks=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 3), _STATE, st.integers(0, 2)),
                      max_size=10),
       text_keys=st.booleans(), done=st.integers(0, 3))
def test_what_the_hub_says_is_read_into_one_count_per_point(tasks: list[tuple[str, int, str, int]], text_keys: bool,
                                                           done: int) -> None:
    """The hub's answers, as a Client gives them (engine ids as ints) or a raw request (as text), give each
    pending point exactly one of queued, running, finished not collected; a finished task the hub still lists
    at its engine for a moment is finished."""
    nb = LabNotebook()
    queues: dict[object, object] = {"unassigned": []}
    records = []
    for t, (tag, size, state, engine) in enumerate(tasks):
        msg = f"task-{t}"
        _use(nb, tag)
        for i in range(size):
            nb.addPendingResult({"t": t, "i": i}, job_id(msg, i))
        queue = queues.setdefault(str(engine) if text_keys else engine, {"queue": [], "completed": [], "tasks": []})
        if state == "queued":
            queues["unassigned"].append(msg)
        elif state in ("running", "finished, still listed"):
            queue["tasks" if engine % 2 else "queue"].append(msg)
        records.append({"msg_id": msg, "completed": None if state in ("queued", "running") else "2026-01-01"})
    if done:
        _use(nb, "a")
        for n in range(done):
            nb.addResult({Experiment.PARAMETERS: {"t": -1, "i": n}, Experiment.METADATA: {Experiment.STATUS: True},
                          Experiment.RESULTS: {"ok": 1}})
    running, finished = hubTasks(queues, records)
    counts = pointCounts(nb, running, finished)
    for tag in ("a", "b"):
        def points(*states: str, tag: str = tag) -> int:
            return sum(size for g, size, s, _ in tasks if g == tag and s in states)

        want = PointCounts(points("queued"), points("running"), done if tag == "a" else 0, 0,
                           points("finished", "finished, still listed"))
        assert counts.get(tag, PointCounts()) == want
