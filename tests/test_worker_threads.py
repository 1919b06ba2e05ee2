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
from epyclab.labs.transports.cores import THREAD_VARIABLES, machine_cores, worker_thread_env
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
    share = str(max(machine_cores() // workers, 1))
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
