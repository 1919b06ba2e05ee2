"""ParallelLab's default backend on Linux: every point on forked copies of the user's process (12.3, 12.4).

Real forked processes, real poison points (``os._exit``), real SIGINT and
SIGKILL sent to real scripts; every copy is checked gone by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest_parallel import CTRL_C_SCRIPT, ExitsAt, Logged, descendants, still_running, wait_for_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab.errors import ClusterConnectionError
from epyclab.experiment import Experiment
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.contract import defaultTransport, registerTransport, transportNames, unregisterTransport
from epyclab.labs.transports.forkedcopy import fork_allowed
from epyclab.labs.transports.localcluster import process_alive
from epyclab.notebooks.labnotebook import LabNotebook

STATUS, EXCEPTION, PID = Experiment.STATUS, Experiment.EXCEPTION, Experiment.PID

pytestmark = pytest.mark.skipif(not fork_allowed(), reason="the fork backend needs Linux")


def gone(pids: list[int], grace: float = 10.0) -> bool:
    """True once no process in ``pids`` (children of this process, so never reused meanwhile) runs."""
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs.append({"pid": pid, "created": p.create_time()})
        except psutil.Error:
            continue
    return still_running(procs, grace) == []


def run_script(path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(path), *args], cwd=path.parent, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ---- the default, and what it does not load ------------------------------------------------


def test_auto_is_the_default_and_every_backend_is_registered() -> None:
    assert defaultTransport() == "auto"
    assert {"auto", "workers", "fork", "ipyparallel"} <= set(transportNames())
    assert ParallelLab().backend() == "auto"
    assert ParallelLab(backend="ipyparallel").backend() == "ipyparallel"
    assert ParallelLab(backend="ipyparallel").recreate()[1]["backend"] == "ipyparallel"
    with pytest.raises(ValueError, match=r"no backend 'loky'.*'fork', 'ipyparallel'.*'workers'"):
        ParallelLab(backend="loky")
    with pytest.raises(ValueError, match=r"backend='fork'.*client to run on, not both"):
        ParallelLab(backend="fork", client=object())  # type: ignore[arg-type]


def test_a_registered_transport_is_chosen_by_name() -> None:
    from epyclab.labs.transports.contract import Settings
    from epyclab.labs.transports.copies import ForkTransport

    made: list[Settings] = []

    class Recording(ForkTransport):
        def __init__(self, settings: Settings) -> None:
            made.append(settings)
            super().__init__(settings)

    registerTransport("recording", Recording)
    try:
        lab = ParallelLab(LabNotebook(), cores=1, backend="recording")
        lab["x"] = range(5)
        lab.runExperiment(ExitsAt(-1), progress=False)
        assert lab.backend() == "recording" and len(lab.dataframe()) == 5
        assert [s.n for s in made] == [1] and len(lab.lastCopies) == 1
    finally:
        unregisterTransport("recording")
    with pytest.raises(ValueError, match="must be a word"):
        registerTransport("", Recording)
    with pytest.raises(ValueError, match="'module:Class'"):
        registerTransport("bad", "no.colon.here")
    # Named lazily: the module is imported only when a lab asks for the transport.
    registerTransport("lazy", "epyclab_no_such_module:Transport")
    try:
        with pytest.raises(ModuleNotFoundError, match="epyclab_no_such_module"):
            ParallelLab(backend="lazy")
    finally:
        unregisterTransport("lazy")


NO_IPYPARALLEL_SCRIPT = """
import os, sys
from epyclab import Experiment, ParallelLab

class Square(Experiment):
    def do(self, params):
        return {"y": params["x"] ** 2, "pid": os.getpid()}

lab = ParallelLab(cores=2, backend="fork")
lab["x"] = range(50)
lab.runExperiment(Square(), progress=False)
df = lab.dataframe()
print(len(df), (df["y"] == df["x"] ** 2).all(), len(set(df["pid"]) - {os.getpid()}),
      sorted(m for m in sys.modules if m.split(".")[0] in ("ipyparallel", "zmq", "IPython")))
"""


def test_a_sweep_in_a_fresh_process_never_imports_ipyparallel(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(NO_IPYPARALLEL_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["50", "True", "2", "[]"]


# ---- deaths: a point that kills its copy fails alone, the copy is replaced --------------------


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(min_value=0, max_value=39))
def test_a_poison_point_anywhere_in_40_on_2_copies_is_one_failed_row(at: int) -> None:
    nb = LabNotebook()
    lab = ParallelLab(nb, cores=2, backend="fork")
    lab["x"] = range(40)
    lab.runExperiment(ExitsAt(at), progress=False)
    df = nb.dataframe(only_successful=False)
    assert df["x"].tolist() == list(range(40))  # design order, whatever order the points finished in
    failed = df[~df[STATUS].astype(bool)]
    assert failed["x"].tolist() == [at]
    message = failed[EXCEPTION].iloc[0]
    assert message.startswith("epyclab.errors.EngineDied: the engines running this point died 2 times"), message
    ok = df[df[STATUS].astype(bool)]
    assert len(ok) == 39 and (ok["y"] == ok["x"]).all()
    # The point killed two copies, each replaced by a fresh fork: the sweep kept its 2 workers.
    assert lab.lastSweep["replaced"] == 2 and lab.lastSweep["forked"] == 4
    assert len(set(lab.lastCopies)) == 4 and os.getpid() not in lab.lastCopies
    assert set(ok["pid"].astype(int)) <= set(lab.lastCopies)
    assert gone(lab.lastCopies)


def test_a_copy_that_dies_once_is_replaced_and_every_point_succeeds(tmp_path: Path) -> None:
    # x=7 kills its copy the first time only (a marker file says it happened).
    marker = tmp_path / "died"

    class DiesOnce(Experiment):
        def do(self, params: dict[str, Any]) -> dict[str, Any]:
            if params["x"] == 7 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return {"y": params["x"], "pid": os.getpid()}

    nb = LabNotebook()
    lab = ParallelLab(nb, cores=2, backend="fork")
    lab["x"] = range(40)
    lab.runExperiment(DiesOnce(), progress=False)
    df = nb.dataframe(only_successful=False)
    assert df["x"].tolist() == list(range(40)) and df[STATUS].all()
    dead = int(marker.read_text())
    pids = set(df["pid"].astype(int))
    # Three distinct copies: the two first (the dead one's results were lost with it, and run again)
    # and the fresh fork that replaced it, which then ran points.
    assert len(set(lab.lastCopies)) == 3 and dead in lab.lastCopies[:2] and dead not in pids
    assert lab.lastCopies[2] in pids and pids <= set(lab.lastCopies) - {dead}
    assert lab.lastSweep["forked"] == 3 and lab.lastSweep["replaced"] == 1 and lab.lastSweep["resubmitted"] >= 1
    assert gone(lab.lastCopies)


def test_each_point_runs_exactly_once_on_the_copies(tmp_path: Path) -> None:
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(30)
    lab.runExperiment(Logged(str(tmp_path), fail_at=(3,)), progress=False)
    runs = {x: (tmp_path / str(x)).read_text().split() for x in range(30)}
    assert all(len(r) == 1 for r in runs.values())
    assert {int(r[0]) for r in runs.values()} <= set(lab.lastCopies)
    df = lab.notebook().dataframe(only_successful=False)
    assert df[~df[STATUS].astype(bool)]["x"].tolist() == [3]


def test_a_second_sweep_forks_fresh_copies_and_leaves_none_between_sweeps() -> None:
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(20)
    lab.runExperiment(ExitsAt(-1), progress=False)
    first = list(lab.lastCopies)
    assert gone(first)
    lab.runExperiment(ExitsAt(-1), progress=False)
    assert len(lab.notebook().dataframe()) == 40
    assert set(lab.lastCopies).isdisjoint(first) and gone(lab.lastCopies)


def test_a_sweep_whose_copies_cannot_start_ends_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from epyclab.labs.transports import copies

    def no_fork(*args: Any, **kwargs: Any) -> Any:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(copies, "Interim", no_fork)
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(5)
    with pytest.raises(ClusterConnectionError, match="could not fork a copy of this process"):
        lab.runExperiment(ExitsAt(-1), progress=False)
    assert lab.notebook().numberOfResults() == 0


# ---- no process outlives the sweep, or the user's process --------------------------------------


def test_ctrl_c_mid_sweep_commits_stops_every_copy_and_propagates(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(CTRL_C_SCRIPT)
    running, out = tmp_path / "running", tmp_path / "out.json"
    proc = run_script(script, str(running), str(out), json.dumps({"backend": "fork"}))
    try:
        wait_for_file(running)
        procs = descendants(proc.pid)
        assert len(procs) == 2  # the two copies, and nothing else (no cluster)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    counts = json.loads(out.read_text())
    assert counts["added"] >= 5 and counts["committed"] == counts["added"]
    assert still_running(procs) == []


KILLED_SCRIPT = """
import os, sys, time
from epyclab import Experiment, ParallelLab

RUNNING = sys.argv[1]

class Slow(Experiment):
    def do(self, params):
        if params["x"] == 1:
            open(RUNNING, "w").close()   # tell the test that points are running
        time.sleep(0.2)
        return {"y": params["x"]}

lab = ParallelLab(cores=2, backend="fork")
lab["x"] = range(2000)
lab.runExperiment(Slow(), progress=False)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_script_killed_mid_sweep_leaves_no_copy(tmp_path: Path, sig: int) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(KILLED_SCRIPT)
    running = tmp_path / "running"
    proc = run_script(script, str(running))
    procs: list[dict[str, Any]] = []
    try:
        wait_for_file(running)
        procs = descendants(proc.pid)
        assert len(procs) == 2 and all(process_alive(p) for p in procs)
        os.kill(proc.pid, sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -sig
    # The kernel kills each copy as its parent dies (PR_SET_PDEATHSIG): nobody had to stop them.
    assert still_running(procs) == []


def test_a_sweep_run_in_a_thread_works_and_leaves_no_copy() -> None:
    # A copy dies when the thread that forked it ends (PR_SET_PDEATHSIG), so the sweep forks its
    # copies (and their replacements) from its own thread: a sweep run in a thread works there.
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(20)
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            lab.runExperiment(ExitsAt(-1), progress=False)
        except BaseException as exc:  # noqa: BLE001 (reported to the test's thread)
            errors.append(exc)

    t = threading.Thread(target=sweep)
    t.start()
    t.join(120)
    assert not errors and len(lab.notebook().dataframe()) == 20
    assert gone(lab.lastCopies)


# ---- the pool itself ----------------------------------------------------------------------------


def test_the_pool_replaces_a_dead_copy_but_stops_forking_copies_that_die_before_any_work() -> None:
    import queue

    from epyclab.labs.engine.wire import package
    from epyclab.labs.transports.copies import CopyPool
    from epyclab.labs.transports.forkedcopy import InterimDied

    _, payloads = package([(ExitsAt(-1), {})])
    blobs = {k: p.blob for k, p in payloads.items()}
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    pool = CopyPool(blobs, lambda copy, reply: events.put((copy, reply)), 2)
    try:
        assert len(pool.copies()) == 2 and pool.forked == 2
        # Copies killed while idle, before they ever replied: replaced StartFailures times, then no more.
        for i in range(CopyPool.StartFailures + 1):
            victim = pool.copies()[0]
            os.kill(victim.pid, signal.SIGKILL)
            copy, died = events.get(timeout=30)
            assert copy is victim and isinstance(died, InterimDied) and not died.lost_chunk
            fresh = pool.replace(copy, idle=True)
            if i < CopyPool.StartFailures:
                assert fresh is not None and fresh.pid != victim.pid and len(pool.copies()) == 2
            else:
                assert fresh is None and len(pool.copies()) == 1
        assert pool.open()  # one copy still works
        assert pool.forked == 2 + CopyPool.StartFailures and pool.replaced == CopyPool.StartFailures
    finally:
        pool.stop()
    assert not pool.open() and gone(pool.pids())


class UsesAPool(Experiment):
    """Runs a multiprocessing pool of its own, as a do() may on an engine."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(2) as pool:
            return {"y": sum(pool.map(abs, range(-params["x"], 0)))}


def test_a_do_that_starts_processes_of_its_own_works_in_a_copy() -> None:
    # A copy is not a "daemonic" process to multiprocessing (which refuses to let those have children).
    nb = LabNotebook()
    lab = ParallelLab(nb, cores=2, backend="fork")
    lab["x"] = range(5)
    lab.runExperiment(UsesAPool(), progress=False)
    df = nb.dataframe(only_successful=False)
    assert df[STATUS].all(), df[EXCEPTION].tolist()
    assert df["y"].tolist() == [x * (x + 1) // 2 for x in range(5)]
    assert gone(lab.lastCopies)


class Draws(Experiment):
    """Draws from numpy's and Python's global random states, seeded by no one."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        import random

        import numpy as np

        return {"np": float(np.random.random()), "py": random.random()}


def test_copies_do_not_share_the_parents_random_state() -> None:
    import numpy as np

    np.random.seed(1234)  # the user's process has drawn, or seeded, before the sweep
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(40)
    # seed=False: without epyclab's per-point seeds (which draw the sweep seed from the parent's state),
    # the copies' own reseeding is what keeps them apart.
    lab.runExperiment(Draws(), progress=False, seed=False)
    lab.runExperiment(Draws(), progress=False, seed=False)  # a second sweep's copies start from the same parent
    df = lab.notebook().dataframe()
    assert len(df) == 80
    # Copies with the parent's state would draw the same sequence: repeated values across copies and sweeps.
    assert df["np"].nunique() == 80 and df["py"].nunique() == 80
    assert float(np.random.random()) == np.random.RandomState(1234).random_sample()  # the parent's untouched


class Allocates(Experiment):
    """Builds many small containers, as most experiments do, and says how many objects the collector skips."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        import gc

        rows = [{"k": [j, (j,)]} for j in range(20_000)]
        gc.collect()
        return {"frozen": gc.get_freeze_count(), "rows": len(rows)}


def test_the_copies_collect_garbage_without_walking_the_users_objects() -> None:
    import gc

    data = [{"i": [i]} for i in range(50_000)]  # the user's own data, in the process that forks
    before = gc.get_freeze_count()
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(4)
    lab.runExperiment(Allocates(), progress=False)
    df = lab.notebook().dataframe()
    # Every object the copy inherited (the user's data among them) is frozen there, so that a collection
    # in the copy neither walks them nor writes to their pages; this process's collector is untouched.
    assert (df["frozen"] > len(data)).all() and (df["rows"] == 20_000).all()
    assert gc.get_freeze_count() == before


class ExitsAlways(Experiment):
    """Every point ends its process on the spot."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        os._exit(3)


def test_points_that_all_kill_their_copies_end_as_failed_rows_without_a_hang() -> None:
    nb = LabNotebook()
    lab = ParallelLab(nb, cores=2, backend="fork")
    lab["x"] = range(6)
    lab.runExperiment(ExitsAlways(), progress=False)
    df = nb.dataframe(only_successful=False)
    assert df["x"].tolist() == list(range(6)) and not df[STATUS].astype(bool).any()
    assert all("EngineDied" in m and "died 2 times" in m for m in df[EXCEPTION])
    # Each point cost exactly two copies (MaxDeaths), each replaced by a fresh fork.
    assert lab.lastSweep["forked"] - 2 == lab.lastSweep["replaced"]
    assert lab.lastSweep["replaced"] == 2 * 6  # 6 points in tasks of one point each
    assert gone(lab.lastCopies)


HELPERS = """
def sq(x):
    return x * x
"""

POOL_SCRIPT = """
import multiprocessing, sys
from epyclab import Experiment, LabNotebook, ParallelLab
import helpers

def cube(x):
    return x ** 3

class PoolOfMyOwn(Experiment):
    def do(self, params):
        with multiprocessing.get_context("fork").Pool(2) as pool:
            return {"sq": sum(pool.map(helpers.sq, range(params["x"]))),
                    "cube": sum(pool.map(cube, range(params["x"])))}

nb = LabNotebook()
lab = ParallelLab(nb, cores=2, backend="fork")
lab["x"] = range(1, 7)
lab.runExperiment(PoolOfMyOwn(), progress=False)
df = nb.dataframe(only_successful=False)
print(df["epyc.experiment.status"].tolist(), df["epyc.experiment.exception"].tolist())
print(df["sq"].tolist(), df["cube"].tolist())
"""


def test_a_pool_in_do_runs_the_users_own_functions_from_the_script_and_a_module_beside_it(tmp_path) -> None:
    # Seen: "Can't pickle <function sq>: it's not the same object as helpers.sq" (epyc 1.7.2 ran it):
    # the copies ran a by-value copy of the experiment, whose functions were other objects.
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "sweep.py").write_text(POOL_SCRIPT)
    done = subprocess.run([sys.executable, "sweep.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    statuses, sums = done.stdout.splitlines()
    assert statuses == f"{[True] * 6} {[''] * 6}"
    xs = range(1, 7)
    assert sums == f"{[sum(i * i for i in range(x)) for x in xs]} {[sum(i ** 3 for i in range(x)) for x in xs]}"


class DiesOnceAt(Experiment):
    """Ends its process the first time it runs each point in ``at`` (a marker file says it has), else y = x."""

    def __init__(self, directory: str, at: tuple[int, ...]) -> None:
        super().__init__()
        self.directory, self.at = directory, set(at)

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        x = params["x"]
        marker = os.path.join(self.directory, f"died-at-{x}")
        if x in self.at and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(7)
        return {"y": x}


def test_each_death_of_a_point_alone_in_its_chunk_is_one_resubmission(tmp_path: Path) -> None:
    # 10 points on 2 copies: chunks of one point. Two points each kill their copy once: run again, they
    # succeed; the sweep counts exactly two resubmissions and two replaced copies.
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(10)
    lab.runExperiment(DiesOnceAt(str(tmp_path), (3, 5)), progress=False)
    df = lab.notebook().dataframe(only_successful=False)
    assert df[STATUS].all(), df[EXCEPTION].tolist()
    assert df["y"].tolist() == list(range(10))
    assert lab.lastSweep["largest_chunk"] == 1
    assert (lab.lastSweep["resubmitted"], lab.lastSweep["replaced"]) == (2, 2)


def test_a_chunk_of_two_points_whose_copy_dies_is_split_and_only_the_poison_point_fails(tmp_path: Path) -> None:
    # 16 points on 2 copies: the first chunks hold exactly 2 points (16 // (4 chunks x 2 copies)). The
    # point x=0 kills every copy that runs it: its chunk [0, 1] is split, x=1 runs alone and succeeds,
    # x=0 dies once more alone and is the one failed row.
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(16)
    lab.runExperiment(ExitsAt(0), progress=False)
    df = lab.notebook().dataframe(only_successful=False)
    assert len(df) == 16 and df["x"].tolist() == list(range(16))
    assert df[STATUS].tolist() == [False] + [True] * 15, df[EXCEPTION].tolist()
    assert "died 2 times" in df[EXCEPTION][0]
    assert lab.lastSweep["largest_chunk"] == 2
    # One resubmission: the split of [0, 1] (x=0's second death fails it, it is not sent again).
    assert lab.lastSweep["resubmitted"] == 1


def test_every_chunk_split_by_a_death_is_counted(tmp_path: Path) -> None:
    # 16 points on 2 copies: chunks of 2. x=0 and x=2 each kill their copy once, in the chunks [0, 1] and
    # [2, 3]: each chunk is split (two resubmissions), and every point then succeeds.
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(16)
    lab.runExperiment(DiesOnceAt(str(tmp_path), (0, 2)), progress=False)
    df = lab.notebook().dataframe(only_successful=False)
    assert df[STATUS].all(), df[EXCEPTION].tolist()
    assert df["y"].tolist() == list(range(16))
    assert lab.lastSweep["largest_chunk"] == 2
    assert (lab.lastSweep["resubmitted"], lab.lastSweep["replaced"]) == (2, 2)
