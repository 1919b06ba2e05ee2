"""Local workers start with their share of the cores for native thread pools (BLAS, OpenMP, numba), as
joblib's do; a variable the user set is passed on. Real engines of a real local cluster, real loky workers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest_parallel import still_running
from hypothesis import given
from hypothesis import strategies as st

from epyclab.experiment import Experiment
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.cores import THREAD_VARIABLES, worker_thread_env
from epyclab.notebooks.labnotebook import LabNotebook

PID = Experiment.PID


@given(
    workers=st.integers(1, 64),
    cores=st.integers(1, 256),
    user=st.dictionaries(st.sampled_from(THREAD_VARIABLES), st.from_regex(r"[0-9]{1,3}", fullmatch=True)),
    other=st.dictionaries(st.from_regex(r"[A-Z_]{1,12}", fullmatch=True), st.text(max_size=5)),
)
def test_each_worker_gets_its_share_of_the_cores_unless_the_user_said_otherwise(
    workers: int, cores: int, user: dict[str, str], other: dict[str, str]
) -> None:
    environ = {**{k: v for k, v in other.items() if k not in THREAD_VARIABLES}, **user}
    env = worker_thread_env(workers, cores, environ)
    assert tuple(env) == THREAD_VARIABLES
    for name, value in env.items():
        if name in user:
            assert value == user[name]
        else:
            threads = int(value)
            # At least one thread each; no more threads than cores over all workers (where there are more
            # cores than workers); and no core left over that one more thread per worker would fit.
            assert threads >= 1
            assert workers * threads <= max(cores, workers)
            assert workers * (threads + 1) > cores


class Threads(Experiment):
    """Reports the thread-count variables its worker process started with."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {name.lower(): os.environ.get(name, "unset") for name in THREAD_VARIABLES}


def expected(monkeypatch: pytest.MonkeyPatch, workers: int) -> dict[str, str]:
    """The user sets OMP_NUM_THREADS=3 and nothing else: the rest are each worker's share."""
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    # A lab of n workers was given n cores: one thread each (see transports.cores).
    share = "1"
    return {name.lower(): ("3" if name == "OMP_NUM_THREADS" else share) for name in THREAD_VARIABLES}


def test_the_engines_of_a_local_cluster_start_with_their_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from epyclab.labs.transports import cleanworkers

    want = expected(monkeypatch, 2)
    # No forked copies of this process (they would carry its own environment): every point on an engine.
    monkeypatch.setattr(cleanworkers, "fork_safe", lambda: False)
    nb = LabNotebook()
    lab = ParallelLab(nb, cores=2, profile_dir=str(tmp_path / "profile"), backend="ipyparallel")
    lab["x"] = range(8)
    seen: list[dict[str, Any]] = []
    try:
        lab.runExperiment(Threads(), progress=False)
        local = lab.localCluster
        assert local is not None
        seen = local.processes()
        df = nb.dataframe()
        assert len(df) == 8 and set(df[PID].astype(int)) <= set(local.pids()) - {os.getpid()}
        for name, value in want.items():
            assert df[name].tolist() == [value] * 8, name
    finally:
        lab.shutdown()
    assert still_running(seen) == []


def test_clean_workers_start_with_their_share_and_a_changed_setting_gets_fresh_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def sweep() -> Any:
        nb = LabNotebook()
        lab = ParallelLab(nb, cores=2, backend="workers")
        lab["x"] = range(8)
        lab.runExperiment(Threads(), progress=False)
        df = nb.dataframe()
        assert len(df) == 8 and os.getpid() not in set(df[PID].astype(int))
        return lab, df

    # Warm workers from a sweep before the user set anything (as a notebook's earlier cell would leave).
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    first, _ = sweep()
    want = expected(monkeypatch, 2)
    lab = first
    try:
        lab, df = sweep()
        for name, value in want.items():
            assert df[name].tolist() == [value] * 8, name
    finally:
        first.shutdown()
        lab.shutdown()


def openblas_threads() -> list[int]:
    """The pool size of each OpenBLAS loaded in this process (numpy's), as threadpoolctl reads it."""
    from threadpoolctl import threadpool_info

    return [int(i["num_threads"]) for i in threadpool_info() if i["internal_api"] == "openblas"]


class BlasThreads(Threads):
    """Also reports the pool size of its process's OpenBLAS (numpy's), after multiplying matrices."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        a = np.ones((64, 64))
        return {**super().do(params), "product": float((a @ a).sum()), "blas": repr(openblas_threads())}


def test_forked_copies_size_the_openblas_they_inherited_to_their_share(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from threadpoolctl import threadpool_limits

    want = expected(monkeypatch, 2)
    np.ones((8, 8)) @ np.ones((8, 8))
    before = openblas_threads()
    assert before, "numpy here has no OpenBLAS to size"
    # The user's process runs a pool of 4 threads (numpy's default is one per core): each copy inherits
    # it, and two copies would run 8 threads on this machine's cores, unless they size it again.
    limits = threadpool_limits(limits=4, user_api="blas")
    nb = LabNotebook()
    lab = ParallelLab(nb, cores=2, backend="fork")
    lab["x"] = range(8)
    try:
        lab.runExperiment(BlasThreads(), progress=False)
        assert openblas_threads() == [4] * len(before)  # the user's own process keeps what it had
    finally:
        lab.shutdown()
        limits.restore_original_limits()
    df = nb.dataframe()
    assert len(df) == 8 and os.getpid() not in set(df[PID].astype(int)) and set(df["product"]) == {64.0 ** 3}
    for name, value in want.items():
        assert df[name].tolist() == [value] * 8, name
    share = int(want["openblas_num_threads"])
    assert df["blas"].tolist() == [repr([share] * len(before))] * 8


def test_a_warm_local_cluster_is_replaced_when_the_user_changed_a_thread_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from epyclab.labs.transports import cleanworkers

    monkeypatch.setattr(cleanworkers, "fork_safe", lambda: False)  # every point on an engine
    want = expected(monkeypatch, 2)
    labs: list[ParallelLab] = []
    seen: list[dict[str, Any]] = []

    def sweep() -> tuple[Any, Any]:
        nb = LabNotebook()
        lab = ParallelLab(nb, cores=2, profile_dir=str(tmp_path / "profile"), backend="ipyparallel")
        labs.append(lab)
        lab["x"] = range(6)
        lab.runExperiment(Threads(), progress=False)
        local = lab.localCluster
        assert local is not None
        seen.extend(local.processes())
        df = nb.dataframe()
        assert set(df[PID].astype(int)) <= set(local.pids()) - {os.getpid()}
        return df, local

    try:
        df, first = sweep()
        assert df["omp_num_threads"].tolist() == [want["omp_num_threads"]] * 6
        df, same = sweep()  # nothing changed: the warm cluster
        assert same is first
        started = set(first.pids())
        # Between two cells the user asks for 5 threads: the warm engines started with 3 cannot see it.
        monkeypatch.setenv("OMP_NUM_THREADS", "5")
        df, fresh = sweep()
        assert fresh is not first
        assert df["omp_num_threads"].tolist() == ["5"] * 6
        assert df["openblas_num_threads"].tolist() == [want["openblas_num_threads"]] * 6
        assert set(df[PID].astype(int)).isdisjoint(started)
    finally:
        for lab in labs:
            lab.shutdown()
    assert still_running(seen) == []



def test_a_lab_given_fewer_cores_than_the_machine_has_keeps_its_workers_to_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from epyclab.labs.transports import cores

    # The user leaves cores free for other work (cores=-n, or cores=n on a bigger machine): a machine of 8
    # cores whose lab has 2 workers. Dividing the machine's cores would give each worker 4 BLAS threads,
    # all 8 cores busy again.
    want = expected(monkeypatch, 2)
    monkeypatch.setattr(cores, "machine_cores", lambda: 8)
    nb = LabNotebook()
    lab = ParallelLab(nb, cores=2, backend="workers")
    lab["x"] = range(4)
    try:
        lab.runExperiment(Threads(), progress=False)
    finally:
        lab.shutdown()
    df = nb.dataframe()
    assert len(df) == 4
    for name, value in want.items():
        assert df[name].tolist() == [value] * 4, name
