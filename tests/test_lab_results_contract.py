"""Seeded sweeps and reruns of failed points, checked on every lab.

Labs: the sequential ``Lab``, ``ParallelLab`` on forked copies (any number of
them), on clean loky workers (the default where forking is unsafe), on a
``ProcessPoolExecutor`` of spawned processes (the executor transport), on its
own local ipyparallel cluster, and ``ClusterLab`` on a real
controller and engines (and, for a global bit generator the user chose, a Dask
``LocalCluster``). Clusters are started once for the module and stopped
(by PID) at its end.

What is checked: the same sweep seed gives the same rows as the sequential lab,
whatever the lab, the number of workers, the order of the points, after a
resume and after points are added (tests/test_seeding.py checks the seeds
themselves); rerunFailed reruns only the failed points (by exception type or
parameters), a point that fails again stays failed with its history, and the
replaced rows stay stored.
"""

from __future__ import annotations

import json
import multiprocessing
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clusterhub import HubProcesses, running_hub
from conftest_parallel import still_running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.lab import Lab
from epyclab.labs.parallel import ParallelLab
from epyclab.notebooks.labnotebook import LabNotebook

SEED = Experiment.SEED
SLOW = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
FAST = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


class Noisy(Experiment):
    """Draws from a generator it holds (pickled to every worker) and from numpy's global state."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng()

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"v": int(self.rng.integers(0, 2**62)), "g": float(np.random.random())}


def rows(nb: LabNotebook) -> dict[Any, tuple[Any, ...]]:
    df = nb.dataframe(only_successful=False)
    return {r["x"]: (r["v"], r["g"], r[SEED]) for _, r in df.iterrows()}


def reference(xs: list[int], seed: int) -> dict[Any, tuple[Any, ...]]:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = sorted(xs)
    lab.runExperiment(Noisy(), progress=False, seed=seed)
    return rows(nb)


# ---- the labs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcesses]:
    with running_hub(tmp_path_factory.mktemp("cluster-profile")) as procs:
        yield procs


@pytest.fixture(scope="module")
def ipyparallel_labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[ParallelLab]]]:
    """A profile directory for the ipyparallel backend's warm cluster; every cluster its labs started is stopped."""
    labs: list[ParallelLab] = []
    yield tmp_path_factory.mktemp("backend-profile"), labs
    procs = [p for lab in labs if lab.localCluster is not None for p in lab.localCluster.processes()]
    for lab in labs:
        lab.shutdown()
    assert still_running(procs) == []


@pytest.fixture(scope="module")
def spawn_pool() -> Iterator[ProcessPoolExecutor]:
    """Two spawned worker processes for the executor transport; shut down (and joined) at the module's end."""
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


class Labs:
    """Makes each kind of lab on a notebook, and waits for its results."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.clusterlabs: list[ClusterLab] = []

    def make(self, kind: str, nb: LabNotebook, workers: int = 2) -> Lab:
        if kind == "lab":
            return Lab(nb)
        if kind == "fork":
            return ParallelLab(nb, cores=workers, backend="fork")
        if kind == "workers":
            return ParallelLab(nb, cores=workers, backend="workers")
        if kind == "executor":
            return ParallelLab(nb, executor=self.request.getfixturevalue("spawn_pool"))
        if kind == "dask":
            return ParallelLab(nb, executor=self.request.getfixturevalue("dask_client"))
        if kind == "ipyparallel":
            profile, labs = self.request.getfixturevalue("ipyparallel_labs")
            lab = ParallelLab(nb, cores=2, backend="ipyparallel", profile_dir=str(profile))
            labs.append(lab)
            return lab
        assert kind == "cluster"
        hub = self.request.getfixturevalue("hub")
        cl = ClusterLab(nb, profile_dir=str(hub.profile_dir))
        self.clusterlabs.append(cl)
        return cl

    def run(self, lab: Lab, e: Experiment, **kwargs: Any) -> None:
        lab.runExperiment(e, progress=False, **kwargs)
        if isinstance(lab, ClusterLab):
            assert lab.wait(timeout=120, progress=False)

    def close(self) -> None:
        for cl in self.clusterlabs:
            cl.close()


@pytest.fixture
def labs(request: pytest.FixtureRequest) -> Iterator[Labs]:
    made = Labs(request)
    yield made
    made.close()


KINDS = ["lab", "fork", "workers", "executor", "ipyparallel", "cluster"]


# ---- the same sweep seed, the same rows -------------------------------------------------------------


def check_same_rows(labs: Labs, kind: str, xs: list[int], order: random.Random, first: int, workers: int,
                    seed: int) -> None:
    """Sweep ``first`` points of ``xs`` (shuffled), then resume over all of them and more; rows as on Lab."""
    shuffled = list(xs)
    order.shuffle(shuffled)
    nb = LabNotebook()
    lab = labs.make(kind, nb, workers)
    lab["x"] = shuffled[:first]
    labs.run(lab, Noisy(), seed=seed)
    lab["x"] = shuffled + [100, 101]
    # A resume without the seed goes on with the one the set recorded.
    labs.run(lab, Noisy(), resume=True)
    assert rows(nb) == reference(xs + [100, 101], seed)
    assert nb.numberOfResults() == len(xs) + 2
    # Any row, run again here from its recorded seed alone, gives the same numbers as it did on the workers.
    x = shuffled[-1]
    v, g, s = rows(nb)[x]
    again = Noisy()
    again.setPointSeed(int(s))
    res = again.set({"x": x}).run()["results"]
    assert (res["v"], res["g"]) == (v, g)


@FAST
@given(st.lists(st.integers(0, 60), min_size=1, max_size=16, unique=True), st.randoms(use_true_random=False),
       st.integers(1, 16), st.integers(1, 4), st.integers(0, 2**63 - 1))
def test_forked_copies_give_the_rows_of_the_sequential_lab(
    labs: Labs, xs: list[int], order: random.Random, first: int, workers: int, seed: int
) -> None:
    check_same_rows(labs, "fork", xs, order, min(first, len(xs)), workers, seed)


@pytest.mark.parametrize("kind", ["workers", "executor", "ipyparallel", "cluster"])
@SLOW
@given(st.lists(st.integers(0, 60), min_size=1, max_size=12, unique=True), st.randoms(use_true_random=False),
       st.integers(1, 12), st.integers(0, 2**63 - 1))
def test_engines_give_the_rows_of_the_sequential_lab(
    labs: Labs, kind: str, xs: list[int], order: random.Random, first: int, seed: int
) -> None:
    check_same_rows(labs, kind, xs, order, min(first, len(xs)), 2, seed)


@pytest.mark.parametrize("kind", KINDS)
def test_a_generator_held_by_the_experiment_never_repeats_across_workers(labs: Labs, kind: str) -> None:
    nb = LabNotebook()
    lab = labs.make(kind, nb)
    lab["x"] = range(24)
    labs.run(lab, Noisy())
    df = nb.dataframe()
    assert df["v"].nunique() == 24 and df["g"].nunique() == 24


@pytest.mark.parametrize("kind", ["fork", "workers", "executor", "dask"])
def test_a_global_bit_generator_the_user_chose_is_the_one_points_draw_from_on_every_worker(
    labs: Labs, kind: str
) -> None:
    # numpy.random.set_bit_generator(PCG64()) before the sweep: a clean worker process (loky, spawn,
    # Dask) has numpy's default MT19937 as its global one, and gave other numbers than Lab for the same
    # seed (found from outside on a Dask LocalCluster). The point draws from the kind the sweep began with.
    original = np.random.get_bit_generator()
    np.random.set_bit_generator(np.random.PCG64())
    try:
        expected = reference(list(range(8)), 21)
        nb = LabNotebook()
        lab = labs.make(kind, nb)
        lab["x"] = list(range(8))
        labs.run(lab, Noisy(), seed=21)
        assert rows(nb) == expected
        assert type(np.random.get_bit_generator()) is np.random.PCG64
    finally:
        np.random.set_bit_generator(original)
    # And a sweep begun with the default Mersenne Twister gets it back on workers that ran the above.
    nb = LabNotebook()
    lab = labs.make(kind, nb)
    lab["x"] = list(range(8))
    labs.run(lab, Noisy(), seed=21)
    assert rows(nb) == reference(list(range(8)), 21)


# ---- rerunning what failed --------------------------------------------------------------------------


class Flaky(Experiment):
    """y = 2x, except at the points in ``bad``, which raise ValueError or KeyError as ``bad`` says."""

    def __init__(self, bad: dict[int, str]) -> None:
        super().__init__()
        self.bad = bad
        self.rng = np.random.default_rng()

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        kind = self.bad.get(params["x"])
        if kind == "value":
            raise ValueError(f"x={params['x']} is bad")
        if kind == "key":
            raise KeyError(params["x"])
        return {"y": 2 * params["x"], "v": int(self.rng.integers(0, 2**62))}


def status(nb: LabNotebook) -> list[bool]:
    return nb.dataframe(only_successful=False)[Experiment.STATUS].astype(bool).tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_rerunFailed_reruns_only_the_failed_points_asked_for_and_one_that_fails_again_keeps_its_history(
    labs: Labs, kind: str
) -> None:
    nb = LabNotebook()
    lab = labs.make(kind, nb)
    lab["x"] = range(8)
    labs.run(lab, Flaky({2: "value", 5: "key", 6: "value"}), seed=3)
    first = nb.dataframe(only_successful=False)
    assert status(nb) == [x not in (2, 5, 6) for x in range(8)]

    # Only the ValueErrors: 2 now succeeds, 6 fails again, 5 (a KeyError) is left alone.
    assert lab.rerunFailed(Flaky({5: "key", 6: "value"}), exception=ValueError, progress=False) == 2
    if isinstance(lab, ClusterLab):
        assert lab.wait(timeout=120, progress=False)
    df = nb.dataframe(only_successful=False)
    assert df["x"].tolist() == list(range(8))
    assert status(nb) == [x not in (5, 6) for x in range(8)]
    assert df.loc[2, "y"] == 4
    # The rerun ran with the point's own seed: the same stream as the first time.
    assert df[SEED].tolist() == first[SEED].tolist()
    history = json.loads(df.loc[6, "epyclab.rerun.history"])
    assert [h["exception"] for h in history] == ["ValueError: x=6 is bad"]
    assert "ValueError" in history[0]["traceback"] and history[0]["seed"] == first.loc[6, SEED]
    assert df.loc[5, "epyclab.rerun.history"] == ""
    assert df.loc[6, Experiment.EXCEPTION] == "ValueError: x=6 is bad"
    assert nb.current().numberOfFailedResults() == 2
    # Nothing stored is lost: the replaced rows are still there.
    assert len(nb.current().storedFrame()) == 10

    # By parameters: 5 and 6 succeed now; 6's history holds both earlier failures.
    assert lab.rerunFailed(Flaky({}), where={"x": [5, 6, 7]}, progress=False) == 2
    if isinstance(lab, ClusterLab):
        assert lab.wait(timeout=120, progress=False)
    df = nb.dataframe(only_successful=False)
    assert all(status(nb)) and df["y"].tolist() == [2 * x for x in range(8)]
    assert [h["exception"] for h in json.loads(df.loc[6, "epyclab.rerun.history"])] == [
        "ValueError: x=6 is bad", "ValueError: x=6 is bad"]
    assert json.loads(df.loc[5, "epyclab.rerun.history"])[0]["exception"] == "KeyError: 5"
    # Every row, rerun or not, carries its point's position in the first sweep's design.
    assert df["epyclab.lab.point"].tolist() == list(range(8))
    stored = nb.current().storedFrame()
    assert (stored["epyclab.lab.point"] == stored["x"]).all()
    # Nothing failed, nothing to rerun.
    assert lab.rerunFailed(Flaky({}), progress=False) == 0
    assert len(nb.current().storedFrame()) == 12
