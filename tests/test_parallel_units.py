"""The parts of ParallelLab that need no engine: cores, chunk sizes, serialization, the worker's wire format."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest_parallel import Sleepy, Square

from epyclab.combinators import RepeatedExperiment
from epyclab.errors import ExperimentSerializationError
from epyclab.experiment import Experiment
from epyclab.labs.engine import worker
from epyclab.labs.engine.wire import package, serialize_experiment
from epyclab.labs.parallel import ParallelLab, machine_cores, resolve_cores
from epyclab.labs.transports.scheduler import ChunkSizer


class HoldsStream(Experiment):
    """An experiment holding something that cannot travel (a generator)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 3
        self.stream = (i for i in range(3))

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": next(self.stream)}


class PickyError(Exception):
    """An exception that pickles but does not unpickle (its __init__ wants two arguments)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


class RaisesPicky(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        raise PickyError(1, 2)


class BadConfigure(Experiment):
    def configure(self, params: dict[str, Any]) -> None:
        raise KeyError("no such setting")

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}


# ---- cores --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "available", "expected"),
    [(0, 8, 8), (3, 8, 3), (16, 8, 8), (-2, 8, 6), (-8, 8, 1), (-20, 8, 1), (0, 1, 1), (1, 2, 1)],
)
def test_cores_resolve_as_documented(cores: int, available: int, expected: int) -> None:
    assert resolve_cores(cores, available) == expected


def test_cores_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="cores must be an int"):
        resolve_cores(1.5)  # type: ignore[arg-type]


def test_lab_uses_the_machine_cores_without_starting_anything() -> None:
    before = psutil.Process().children(recursive=True)
    assert ParallelLab().numberOfCores() == machine_cores()
    assert ParallelLab(cores=1).numberOfCores() == 1
    assert ParallelLab(cores=-1).numberOfCores() == max(1, machine_cores() - 1)
    assert ParallelLab(cores=1000).numberOfCores() == machine_cores()
    assert psutil.Process().children(recursive=True) == before


def test_cluster_and_client_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not cluster and client"):
        ParallelLab(cluster=object(), client=object())  # type: ignore[arg-type]


# ---- chunk sizes ----------------------------------------------------------------------------


def test_first_chunks_have_the_largest_size_and_a_time_budget() -> None:
    sizer = ChunkSizer(10_000, 2)
    assert not sizer.estimated()
    assert sizer.size() == 10_000 // (4 * 2)
    assert sizer.budget == ChunkSizer.BudgetSeconds


def test_cheap_points_fill_the_target_time_up_to_a_quarter_share_per_engine() -> None:
    sizer = ChunkSizer(10_000, 2)
    sizer.record(1, 0.001)  # 1 ms per point: 100 fit in the 0.1 s target
    assert sizer.size() == 100
    sizer = ChunkSizer(10_000, 2)
    sizer.record(10, 0.0001)  # 10 µs per point: 10,000 would fit, but each engine gets at least 4 chunks
    assert sizer.size() == 10_000 // (4 * 2)


def test_expensive_points_go_one_per_chunk() -> None:
    sizer = ChunkSizer(10_000, 2)
    sizer.record(1, 0.25)
    assert sizer.size() == 1


def test_chunk_size_follows_points_that_grow_costlier() -> None:
    sizer = ChunkSizer(10_000, 2)
    sizer.record(100, 0.01)
    cheap = sizer.size()
    for _ in range(5):
        sizer.record(10, 2.0)  # 0.2 s per point
    assert sizer.size() < cheap
    assert sizer.size() == 1


def test_small_sweeps_are_never_batched_beyond_one_point_each() -> None:
    sizer = ChunkSizer(6, 2)
    sizer.record(1, 1e-6)
    assert sizer.size() == 1


# ---- serialization ---------------------------------------------------------------------------


def test_unserializable_experiment_names_its_class_and_attribute() -> None:
    with pytest.raises(ExperimentSerializationError) as info:
        serialize_experiment(HoldsStream())
    message = str(info.value)
    assert "HoldsStream" in message
    assert "self.stream" in message
    assert "generator" in message
    assert "self.n" not in message


def test_unserializable_attribute_is_found_inside_a_combinator() -> None:
    with pytest.raises(ExperimentSerializationError, match=r"RepeatedExperiment.*self\._experiment\.stream"):
        serialize_experiment(RepeatedExperiment(HoldsStream(), 2))


@pytest.mark.parametrize("backend", ["fork", "ipyparallel"])
def test_unserializable_experiment_fails_before_a_cluster_is_started(tmp_path: Path, backend: str) -> None:
    # The fork backend forks the process itself, yet refuses just as early: the experiment is packaged first.
    before = psutil.Process().children(recursive=True)
    lab = ParallelLab(cores=1, profile_dir=str(tmp_path / "profile"), backend=backend)
    lab["x"] = range(3)
    with pytest.raises(ExperimentSerializationError, match=r"HoldsStream.*self\.stream"):
        lab.runExperiment(HoldsStream(), progress=False)
    assert psutil.Process().children(recursive=True) == before
    assert not (tmp_path / "profile").exists()
    assert lab.notebook().numberOfResults() == 0


def test_each_distinct_experiment_is_serialized_once() -> None:
    e, f = Square(), Square(fail_at=(1,))
    items, payloads = package([(e, {"x": 1}), (e, {"x": 2}), (f, {"x": 3})])
    assert len(payloads) == 2
    assert [k for k, _ in items][:2] == [items[0][0]] * 2
    assert items[2][0] != items[0][0]
    assert [p for _, p in items] == [{"x": 1}, {"x": 2}, {"x": 3}]


def test_experiment_defined_in_a_script_travels_with_its_helper_and_constant(tmp_path: Path) -> None:
    # Serialized in a script's __main__, loaded in another process that has never seen the script.
    script = tmp_path / "defines.py"
    script.write_text(
        "import sys\n"
        "from epyclab.experiment import Experiment\n"
        "from epyclab.labs.engine.wire import serialize_experiment\n"
        "SCALE = 7\n"
        "def helper(x):\n"
        "    return x * SCALE\n"
        "class Scaled(Experiment):\n"
        "    def do(self, params):\n"
        "        return {'y': helper(params['x'])}\n"
        "sys.stdout.buffer.write(serialize_experiment(Scaled()))\n"
    )
    blob = subprocess.run([sys.executable, str(script)], check=True, capture_output=True).stdout
    loader = (
        "import sys\n"
        "from epyclab.labs.engine import worker\n"
        "worker.load_experiment('k', sys.stdin.buffer.read())\n"
        "codec, _, payload = worker.run_points('k', [{'x': 2}, {'x': 3}])\n"
        "print([rc['results']['y'] for rc in worker.decode_results(codec, payload)])\n"
    )
    out = subprocess.run([sys.executable, "-c", loader], input=blob, check=True, capture_output=True)
    assert out.stdout.decode().strip() == "[14, 21]"


# ---- the worker -------------------------------------------------------------------------------


def test_run_points_returns_one_result_per_point_in_order() -> None:
    worker.load_experiment("unit-1", serialize_experiment(Square(fail_at=(2,))))
    try:
        started = time.perf_counter()
        codec, seconds, payload = worker.run_points("unit-1", [{"x": 1}, {"x": 2}, {"x": 3}])
        wall = time.perf_counter() - started
    finally:
        assert worker.forget_experiment("unit-1")
    rcs = worker.decode_results(codec, payload)
    assert codec == worker.PICKLE
    # The engine's own time: at least the runs' time, at most the call's.
    assert sum(rc["metadata"][Experiment.ELAPSED_TIME] for rc in rcs) <= seconds <= wall
    assert [rc["parameters"]["x"] for rc in rcs] == [1, 2, 3]
    assert [rc["metadata"][Experiment.STATUS] for rc in rcs] == [True, False, True]
    assert rcs[2]["results"] == {"y": 9}
    assert "x=2 is bad" in rcs[1]["metadata"][Experiment.TRACEBACK]


def test_a_chunk_with_a_time_budget_stops_starting_points_when_it_is_spent() -> None:
    worker.load_experiment("unit-budget", serialize_experiment(Sleepy(0.05)))
    try:
        points = [{"x": x} for x in range(10)]
        codec, _, payload = worker.run_points("unit-budget", points, budget=0.08)
        # 0.05 s per point: the second point ends past the budget, and no third starts.
        assert [rc["parameters"]["x"] for rc in worker.decode_results(codec, payload)] == [0, 1]
        codec, _, payload = worker.run_points("unit-budget", points, budget=0.0)
        assert len(worker.decode_results(codec, payload)) == 1  # the first point always runs
    finally:
        worker.forget_experiment("unit-budget")


def test_engine_without_the_experiment_says_so_instead_of_raising() -> None:
    assert worker.run_points("never-loaded", [{"x": 1}]) == (worker.MISSING, 0.0, b"")


def test_chunk_with_the_experiment_loads_it_once() -> None:
    blob = serialize_experiment(Square())
    try:
        codec, _, payload = worker.run_points("unit-2", [{"x": 4}], blob)
        assert worker.decode_results(codec, payload)[0]["results"] == {"y": 16}
        codec, _, payload = worker.run_points("unit-2", [{"x": 5}])
        assert worker.decode_results(codec, payload)[0]["results"] == {"y": 25}
    finally:
        worker.forget_experiment("unit-2")


def test_unloadable_experiment_is_reported_not_raised() -> None:
    codec, _, payload = worker.run_points("unit-3", [{"x": 1}], b"not a pickle at all")
    assert codec == worker.UNLOADABLE
    assert payload


def test_failing_configure_is_a_failed_result() -> None:
    rc = worker.run_safely(BadConfigure(), {"x": 1})
    assert rc["metadata"][Experiment.STATUS] is False
    assert "no such setting" in str(rc["metadata"][Experiment.EXCEPTION])
    assert "KeyError" in rc["metadata"][Experiment.TRACEBACK]
    assert rc["parameters"] == {"x": 1}


def test_exception_that_cannot_unpickle_comes_back_as_its_text() -> None:
    import copyreg

    # Importing distributed (the Dask tests of this session) registers tblib's reducer for every exception
    # class that exists then, which makes this one unpickle; a user's process without Dask has none.
    copyreg.dispatch_table.pop(PickyError, None)
    rc = worker.run_safely(RaisesPicky(), {"x": 1})
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(rc["metadata"][Experiment.EXCEPTION]))
    codec, payload = worker.encode_results([rc])
    back = worker.decode_results(codec, payload)[0]
    assert back["metadata"][Experiment.EXCEPTION] == "test_parallel_units.PickyError: 1 and 2"
    assert back["metadata"][Experiment.STATUS] is False


def test_results_pickle_cannot_carry_go_by_cloudpickle() -> None:
    class Local:  # defined in a function: plain pickle cannot find it
        value = 5

    rc = worker.run_safely(Square(), {"x": 2})
    rc["results"]["obj"] = Local()
    codec, payload = worker.encode_results([rc])
    assert codec == worker.CLOUDPICKLE
    assert worker.decode_results(codec, payload)[0]["results"]["obj"].value == 5


def test_a_result_nothing_can_carry_becomes_a_failed_result() -> None:
    good = worker.run_safely(Square(), {"x": 2})
    bad = worker.run_safely(Square(), {"x": 3})
    bad["results"]["stream"] = (i for i in range(2))
    codec, payload = worker.encode_results([good, bad])
    back = worker.decode_results(codec, payload)
    assert back[0]["results"] == {"y": 4}
    assert back[1]["metadata"][Experiment.STATUS] is False
    assert back[1]["parameters"] == {"x": 3}
    assert "could not be serialized" in str(back[1]["metadata"][Experiment.EXCEPTION])


def test_unknown_codec_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown results codec"):
        worker.decode_results("json", b"{}")



_SCRIPT_WITH_A_GLOBAL = """
import sys
from epyclab.errors import ExperimentSerializationError
from epyclab.experiment import Experiment
from epyclab.labs.engine.wire import serialize_experiment

stream = (i for i in range(3))  # a script's global that cannot travel (as an open notebook, a file)


def next_from_global():
    return next(stream)


class UsesGlobalStream(Experiment):
    def do(self, params):
        return {"y": next_from_global()}


try:
    serialize_experiment(UsesGlobalStream())
except ExperimentSerializationError as e:
    print(e)
    sys.exit(3)
"""


def test_an_experiment_whose_code_uses_a_global_that_cannot_travel_names_the_global(tmp_path: Path) -> None:
    # A script's experiment has no attribute at fault, but its code, which travels by value, takes the
    # script's global along (reached from do() through a helper): the message names the global and the way.
    script = tmp_path / "sweep.py"
    script.write_text(_SCRIPT_WITH_A_GLOBAL)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    message = done.stdout
    assert "UsesGlobalStream" in message
    assert "global stream (generator), used by UsesGlobalStream.do -> next_from_global" in message, message
    assert "No single attribute is at fault" not in message
