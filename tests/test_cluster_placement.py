"""Data locality on a local controller: mapfiles read back, a point runs only where its host says, at most
maxPerNode at once, and a host no engine runs on is refused before anything is submitted. (The two-worker
case, over real ssh, is in test_cluster_ssh.py.)"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterhub import HubProcesses, running_hub
from hypothesis import given
from hypothesis import strategies as st

from epyclab.designs import PointwiseDesign
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.remote.placement import PlacementError, mapfilePoints, readMapfile

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-/", min_size=1, max_size=12)


@given(st.dictionaries(NAMES, st.lists(NAMES, min_size=1, max_size=5), max_size=6))
def test_a_text_mapfile_reads_back(tmp_path_factory: pytest.TempPathFactory, mapping: dict) -> None:
    path = tmp_path_factory.mktemp("map") / "inputs.map"
    lines = ["# host file"] + [f"{h} {f}" for h, files in mapping.items() for f in files]
    path.write_text("\n".join(lines) + "\n\n")
    assert readMapfile(path) == mapping
    hosts, files = mapfilePoints(mapping)
    assert list(zip(hosts, files)) == [(h, f) for h, fs in mapping.items() for f in fs]


def test_a_lofar_mapfile_reads_back_and_is_never_executed(tmp_path: Path) -> None:
    path = tmp_path / "lofar.map"
    path.write_text("[{'host': 'locus001', 'file': '/data/L1_SB000.MS', 'skip': False},\n"
                    " {'host': 'locus002', 'file': '/data/L1_SB001.MS', 'skip': True},\n"
                    " {'host': 'locus001', 'file': '/data/L1_SB002.MS', 'skip': False}]\n")
    assert readMapfile(path) == {"locus001": ["/data/L1_SB000.MS", "/data/L1_SB002.MS"]}
    path.write_text("[__import__('os').system('touch pwned')]")
    with pytest.raises(PlacementError, match="not a literal list"):
        readMapfile(path)
    path.write_text("locus001\n")
    with pytest.raises(PlacementError, match=r"lofar.map, line 1: expected 'HOST FILE'"):
        readMapfile(path)


class Where(Experiment):
    """Records which process ran the point, and when."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        start = time.time()
        time.sleep(0.2)
        return {"pid": os.getpid(), "start": start, "end": time.time(), "ran_on": socket.gethostname()}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcesses]:
    with running_hub(tmp_path / "profile") as procs:
        yield procs


def most_at_once(rows: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in rows] + [(e, -1) for _, e in rows])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_placed_points_run_on_their_host_within_the_cap(hub: HubProcesses) -> None:
    here = socket.gethostname()
    lab = ClusterLab(profile_dir=str(hub.profile_dir), design=PointwiseDesign(), maxPerNode=1, chunkSize=1)
    lab["host"], lab["file"] = mapfilePoints({here: [f"/data/{i}.ms" for i in range(6)]})
    lab.runExperiment(Where())
    assert lab.wait(timeout=120, progress=False)
    df = lab.dataframe()
    assert sorted(df["file"]) == sorted(f"/data/{i}.ms" for i in range(6))
    assert set(df["ran_on"]) == {here}
    assert len(set(df["pid"])) == 1  # the cap: one engine of the two on this host
    assert most_at_once(list(zip(df["start"], df["end"]))) == 1

    # Without a cap, both engines of the host take points.
    lab2 = ClusterLab(profile_dir=str(hub.profile_dir), design=PointwiseDesign(), chunkSize=1)
    lab2["host"], lab2["file"] = mapfilePoints({here: [f"/data/{i}.ms" for i in range(8)]})
    lab2.runExperiment(Where())
    assert lab2.wait(timeout=120, progress=False)
    assert set(lab2.dataframe()["pid"]) == set(hub.engine_pids())
    lab2.close()
    lab.close()


def test_a_host_no_engine_runs_on_is_refused_before_anything_is_submitted(hub: HubProcesses) -> None:
    lab = ClusterLab(profile_dir=str(hub.profile_dir), design=PointwiseDesign())
    lab["host"], lab["file"] = ["nowhere01", socket.gethostname()], ["/a", "/b"]
    with pytest.raises(PlacementError, match="no engine runs on host 'nowhere01'"):
        lab.runExperiment(Where())
    assert lab.notebook().numberOfAllPendingResults() == 0
    with pytest.raises(ValueError, match="maxPerNode"):
        ClusterLab(profile_dir=str(hub.profile_dir), maxPerNode=0)
    lab.close()
