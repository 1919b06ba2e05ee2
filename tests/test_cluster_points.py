"""ClusterLab.pointCounts() and `epyclab cluster status PROFILE NOTEBOOK` count a sweep's points alike
(labs/remote/points.py): queued, running, finished not collected, done and failed, per result set, on a real
local cluster whose one engine holds points in each state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterhub import Square, WaitsForFile
from test_cluster_local import cluster
from waiting import wait_until

from epyclab.clustersetup.manage import clusterStatus, stopCluster
from epyclab.clustersetup.state import loadProcesses
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.remote.points import PointCounts
from epyclab.notebooks.hdf5 import HDF5LabNotebook


@pytest.fixture
def ipdir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "ipython"
    yield directory
    for profile in directory.glob("profile_*"):
        if not loadProcesses(profile).empty():
            stopCluster(profile.name.removeprefix("profile_"), ipython_dir=directory)


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
