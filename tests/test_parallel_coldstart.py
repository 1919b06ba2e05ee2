"""A cold ParallelLab sweep starts at once, in a forked copy of the client, while its engines register (12.3).

The copy (:mod:`epyclab.labs.transports.forkedcopy`) is a real forked process; the sweeps run
on real local clusters, each in its own profile directory, checked by PID to
leave nothing behind.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest_parallel import ExitsAt, Sleepy, Square, still_running
from waiting import wait_until

from epyclab.errors import ClusterConnectionError
from epyclab.experiment import Experiment
from epyclab.labs.engine import worker
from epyclab.labs.engine.wire import decode_reply, package
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.forkedcopy import Interim, InterimDied
from epyclab.labs.transports.ipyparallelclient import ClientTransport
from epyclab.labs.transports.localcluster import LocalCluster, process_alive
from epyclab.notebooks.labnotebook import LabNotebook

STATUS = Experiment.STATUS
PID = Experiment.PID


def blobs_of(e: Experiment) -> tuple[str, dict[str, bytes]]:
    _, payloads = package([(e, {})])
    (key,) = payloads
    return key, {key: payloads[key].blob}


def test_the_copy_runs_chunks_like_an_engine_and_exits_when_closed() -> None:
    key, blobs = blobs_of(Square(fail_at=(2,)))
    replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
    copy = Interim(blobs, replies.put)
    try:
        assert copy.pid != os.getpid() and copy.alive()
        copy.submit(key, [{"x": x} for x in range(4)], None)
        rcs, _ = decode_reply(replies.get(timeout=30), "Square")
        assert [rc[Experiment.PARAMETERS]["x"] for rc in rcs] == [0, 1, 2, 3]
        assert [rc[Experiment.METADATA][STATUS] for rc in rcs] == [True, True, False, True]
        assert rcs[3][Experiment.RESULTS] == {"y": 9}
        assert {rc[Experiment.METADATA][PID] for rc in rcs} == {copy.pid}
    finally:
        copy.stop()
    assert not copy.alive() and replies.empty()


def test_a_copy_that_dies_holding_a_chunk_says_so() -> None:
    key, blobs = blobs_of(ExitsAt(1))
    replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
    copy = Interim(blobs, replies.put)
    try:
        copy.submit(key, [{"x": 0}, {"x": 1}, {"x": 2}], None)
        died = replies.get(timeout=30)
        assert isinstance(died, InterimDied) and str(copy.pid) in str(died)
        assert not copy.open() and not copy.busy()
    finally:
        copy.stop()
    assert not copy.alive()


def test_stopping_a_busy_copy_kills_it_at_once() -> None:
    key, blobs = blobs_of(Sleepy(60.0))
    replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
    copy = Interim(blobs, replies.put)
    copy.submit(key, [{"x": 0}], None)
    time.sleep(0.2)
    t0 = time.monotonic()
    copy.stop()
    assert time.monotonic() - t0 < 10
    assert not copy.alive()
    # The engines' worker in this process is untouched: the copy loaded its experiment in its own memory.
    assert worker.forget_experiment(key) is False


def test_a_cold_sweep_starts_in_the_copy_and_the_engines_take_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The copy is forked only where forking is judged safe (tests/test_parallel_unsafe_fork.py tests the
    # judgement on real processes); this test session runs threads of its own, so the judgement is given.
    from epyclab.labs.transports import cleanworkers

    monkeypatch.setattr(cleanworkers, "fork_safe", lambda: True)
    nb = LabNotebook()
    lab = ParallelLab(nb, cores=2, profile_dir=str(tmp_path / "profile"), backend="ipyparallel")
    # 20 s of sleeping for one process: the engines register long before the copies could finish alone.
    lab["x"] = range(400)
    seen: list[dict[str, Any]] = []
    try:
        lab.runExperiment(Sleepy(0.05), progress=False)
        local = lab.localCluster
        assert local is not None
        seen = local.processes()
        df = nb.dataframe(only_successful=False)
        assert df["x"].tolist() == list(range(400)) and df[STATUS].all()
        pids = df[PID].astype(int).tolist()
        # One copy per engine to come, recorded with the cluster.
        copies = set(lab.lastCopies)
        assert len(copies) == 2 and os.getpid() not in copies and copies <= set(local.pids())
        assert pids[0] in copies  # the first chunks go to the copies, before the cluster is even launched
        assert 0 < lab.lastSweep["run_by_interim"] == sum(p in copies for p in pids) < 400
        # As the engines registered, the copies finished their chunks and exited; the engines ran the rest.
        engines = set(pids) - copies
        assert len(engines) == 2 and engines <= set(local.pids())
        assert not any(process_alive(p) for p in seen if int(p["pid"]) in copies)
    finally:
        lab.shutdown()
    assert still_running(seen) == []


def test_a_sweep_on_a_borrowed_client_without_engines_ends_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wait for engines that start with the sweep must not hide an engine-less client.
    monkeypatch.setattr(ClientTransport, "EngineGrace", 1.0)
    local = LocalCluster(1, str(tmp_path / "profile"))
    client = local.start()
    procs = local.processes()
    try:
        (engine,) = local.engine_pids()
        os.kill(engine, signal.SIGKILL)
        wait_until(lambda: not client.ids, timeout=60, what="the hub to notice the engine's death")
        lab = ParallelLab(client=client)
        lab["x"] = range(5)
        with pytest.raises(ClusterConnectionError, match="no engine has been running"):
            lab.runExperiment(Square(), progress=False)
    finally:
        local.stop()
    assert still_running(procs) == []


FIRST_SCRIPT = """
import json, sys
from epyclab import Experiment, ParallelLab


class Looks(Experiment):
    def do(self, params):
        import os, time
        time.sleep(0.05)
        return {"ipython": "IPython" in sys.modules, "pid": os.getpid()}


lab = ParallelLab(cores=2, backend="ipyparallel")  # the default profile directory, under the test's IPYTHONDIR
lab["x"] = range(160)
lab.runExperiment(Looks(), progress=False)
df = lab.dataframe()
local = lab.localCluster
out = {"rows": len(df), "copies": lab.lastCopies, "cluster": local.pids(), "profile": local.profile_dir,
       "seen": local.processes(), "by_pid": {str(p): bool(g["ipython"].any()) for p, g in df.groupby("pid")},
       "first": int(df["pid"].iloc[0])}
lab.shutdown()
print(json.dumps(out))
"""


def test_a_cold_sweep_on_the_default_profile_forks_its_copies_before_importing_ipython(tmp_path: Path) -> None:
    # Finding the default profile directory imports IPython (0.1 s): the copies are forked, and run their
    # first points, before that, and are recorded with the cluster once it is made. A fresh process, as a
    # user's script is (this test session runs threads, so forking is not judged safe here).
    import json
    import subprocess
    import sys

    script = tmp_path / "sweep.py"
    script.write_text(FIRST_SCRIPT)
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rows"] == 160
    assert result["profile"].startswith(str(tmp_path / "ipython"))
    copies = set(result["copies"])
    assert len(copies) == 2 and result["first"] in copies and copies <= set(result["cluster"])
    # The copies were forked before IPython was imported here; the engines import it themselves.
    assert all(not result["by_pid"][str(p)] for p in copies if str(p) in result["by_pid"])
    engines = {p: flag for p, flag in result["by_pid"].items() if int(p) not in copies}
    assert engines and all(engines.values()), result
    assert still_running(result["seen"]) == []
