"""ParallelLab(executor=ex): a sweep on any concurrent.futures.Executor, and on a real Dask cluster.

Real process pools (spawn and forkserver) and a real ``distributed.LocalCluster``
of two worker processes; a worker killed mid-sweep by SIGKILL (its PID taken
from the point it was running) is a resubmitted point, never a hang.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest_parallel import Announces, ExitsAt, Square, wait_for_file

from epyclab.experiment import Experiment
from epyclab.labs.engine.capture import OUTPUT
from epyclab.labs.parallel import ParallelLab
from epyclab.notebooks.labnotebook import LabNotebook

STATUS, EXCEPTION = Experiment.STATUS, Experiment.EXCEPTION



class Talks(Experiment):
    """Prints one line per point, then y = x."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        print(f"point {params['x']} here")
        return {"y": params["x"], "pid": os.getpid()}



#: multiprocessing's own forkserver and resource tracker, and loky's tracker (their command lines), which serve
#: every pool for the life of the interpreter.
_MULTIPROCESSING_SERVERS = (
    "from multiprocessing.forkserver import main",
    "from multiprocessing.resource_tracker import main",
    "from loky.backend.resource_tracker import main",
)

def pool(method: str) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method))


def workers_started_since(before: set[int]) -> list[psutil.Process]:
    """This process's children started since ``before``.

    Aside: multiprocessing's forkserver and resource tracker, which serve every pool for the life of the interpreter.
    """
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            command = " ".join(p.cmdline())
            if p.pid not in before and not any(mp in command for mp in _MULTIPROCESSING_SERVERS):
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.fixture(params=["spawn", "forkserver", "dask-client", "dask-executor"])
def executor(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param.startswith("dask"):
        client = request.getfixturevalue("dask_client")
        yield client if request.param == "dask-client" else client.get_executor()
        return
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    ex = pool(request.param)
    try:
        yield ex
    finally:
        workers = workers_started_since(before)
        ex.shutdown(cancel_futures=True)
        # No process is left: neither the pool's nor those of a pool the lab made after a break.
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, alive


def test_a_sweep_on_an_executor_keeps_order_failures_and_output(executor: Any) -> None:
    nb = LabNotebook()
    lab = ParallelLab(nb, executor=executor)
    lab["x"] = range(40)
    lab.runExperiment(Square(fail_at=(3, 17)), progress=False)
    df = nb.dataframe(only_successful=False)
    assert df["x"].tolist() == list(range(40))
    assert df.loc[~df[STATUS].astype(bool), "x"].tolist() == [3, 17]
    assert all("ValueError: x=3 is bad" in m for m in df.loc[df["x"] == 3, EXCEPTION])
    ok = df[df[STATUS].astype(bool)]
    assert (ok["y"] == ok["x"] ** 2).all()
    assert lab.lastSweep["largest_chunk"] > 1  # chunks of several points, as on every transport

    lab2 = ParallelLab(LabNotebook(), executor=executor)
    lab2["x"] = range(6)
    lab2.runExperiment(Talks(), progress=False)
    df2 = lab2.notebook().dataframe()
    assert [o.strip() for o in df2[OUTPUT]] == [f"point {x} here" for x in range(6)]
    assert os.getpid() not in set(df2["pid"])


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_poison_point_on_a_process_pool_is_one_failed_row(method: str) -> None:
    # (On Dask a point that kills every worker also makes Dask lose results held by the workers it
    # kills and fail tasks queued behind it with KilledWorker: not one row's doing; see the report.)
    nb = LabNotebook()
    with pool(method) as ex:
        lab = ParallelLab(nb, executor=ex)
        lab["x"] = range(12)
        lab.runExperiment(ExitsAt(5), progress=False)
    df = nb.dataframe(only_successful=False)
    assert df["x"].tolist() == list(range(12))
    failed = df[~df[STATUS].astype(bool)]
    assert failed["x"].tolist() == [5]
    assert "died 2 times" in failed[EXCEPTION].iloc[0]


def test_a_worker_killed_mid_sweep_is_a_resubmitted_point(executor: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    killed: list[int] = []

    def kill() -> None:
        pid = int(wait_for_file(marker, timeout=120))
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    nb = LabNotebook()
    lab = ParallelLab(nb, executor=executor)
    lab["x"] = range(20)
    lab.runExperiment(Announces(str(marker), at=7), progress=False)
    killer.join(30)
    df = nb.dataframe(only_successful=False)
    assert killed and df["x"].tolist() == list(range(20))
    assert df[STATUS].astype(bool).all()
    assert int(df.loc[df["x"] == 7, "pid"].iloc[0]) != killed[0]  # run again, by another worker


def test_executor_and_cluster_or_backend_are_refused_together() -> None:
    with pytest.raises(ValueError, match="not client and executor"):
        ParallelLab(client=object(), executor=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend='fork'.*executor"):
        ParallelLab(backend="fork", executor=object())
    with pytest.raises(TypeError, match="needs a concurrent.futures.Executor"):
        ParallelLab(executor=object())
