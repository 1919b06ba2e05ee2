"""The experiment lifecycle: set, run (setUp, do, tearDown), timing, failures as data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime

import pytest

from epyclab.errors import ResultsStructureException
from epyclab.experiment import Experiment

# ---- experiments used below ---------------------------------------------------


class Square(Experiment):
    def do(self, params):
        return {"y": params["x"] ** 2}


class Recording(Experiment):
    """Records which lifecycle calls happened, and raises where asked."""

    def __init__(self, fail_in: str | None = None, exc: BaseException | None = None) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.fail_in = fail_in
        self.exc = exc if exc is not None else ValueError(f"boom in {fail_in}")

    def _maybe_fail(self, phase: str) -> None:
        self.calls.append(phase)
        if self.fail_in == phase:
            raise self.exc

    def configure(self, params):
        super().configure(params)
        self.calls.append(f"configure {dict(params)}")

    def deconfigure(self):
        super().deconfigure()
        self.calls.append("deconfigure")

    def setUp(self, params):
        super().setUp(params)
        self._maybe_fail("setUp")

    def do(self, params):
        self._maybe_fail("do")
        return {"y": params.get("x", 0) + 1}

    def tearDown(self):
        super().tearDown()
        self._maybe_fail("tearDown")


class Returns(Experiment):
    """do() returns whatever it was given."""

    def __init__(self, value) -> None:
        super().__init__()
        self.value = value

    def do(self, params):
        return self.value


# ---- results dicts ------------------------------------------------------------------


def test_resultsdict_is_empty_and_well_formed():
    rc = Experiment.resultsdict()
    assert rc == {"parameters": {}, "metadata": {}, "results": {}}
    assert Experiment.isResultsDict(rc)


def test_resultsdict_returns_a_new_dict_each_time():
    a = Experiment.resultsdict()
    a[Experiment.PARAMETERS]["x"] = 1
    assert Experiment.resultsdict()[Experiment.PARAMETERS] == {}


def test_part_keys_are_the_documented_strings():
    assert (Experiment.PARAMETERS, Experiment.METADATA, Experiment.RESULTS) == ("parameters", "metadata", "results")


@pytest.mark.parametrize(
    "rc",
    [
        None,
        [],
        {"parameters": {}, "metadata": {}},
        {"parameters": {}, "metadata": {}, "results": 3},
        {"parameters": [], "metadata": {}, "results": {}},
    ],
)
def test_is_results_dict_rejects_malformed(rc):
    assert not Experiment.isResultsDict(rc)


def test_standard_metadata_is_the_set_of_typed_keys():
    assert Experiment.StandardMetadata == set(Experiment.StandardMetadataTypes)
    for k in (Experiment.EXPERIMENT, Experiment.START_TIME, Experiment.END_TIME, Experiment.ELAPSED_TIME,
              Experiment.SETUP_TIME, Experiment.EXPERIMENT_TIME, Experiment.TEARDOWN_TIME,
              Experiment.STATUS, Experiment.EXCEPTION, Experiment.TRACEBACK):
        assert k in Experiment.StandardMetadata
        assert k.startswith("epyc.experiment.")


def test_host_and_pid_are_standard_metadata_in_the_epyclab_namespace():
    assert Experiment.HOST in Experiment.StandardMetadata
    assert Experiment.PID in Experiment.StandardMetadata
    assert Experiment.HOST.startswith("epyclab.")
    assert Experiment.PID.startswith("epyclab.")
    assert Experiment.StandardMetadataTypes[Experiment.HOST] is str
    assert Experiment.StandardMetadataTypes[Experiment.PID] is int


# ---- configuration ---------------------------------------------------------------------


def test_set_returns_the_experiment_and_configures_it():
    e = Square()
    assert e.set({"x": 3}) is e
    assert e.parameters() == {"x": 3}


def test_set_deconfigures_the_old_point_before_configuring_the_new():
    e = Recording()
    e.set({"x": 1})
    e.set({"x": 2})
    assert e.calls == ["configure {'x': 1}", "deconfigure", "configure {'x': 2}"]
    assert e.parameters() == {"x": 2}


def test_set_copies_the_parameters():
    point = {"x": 1}
    e = Square().set(point)
    point["x"] = 99
    assert e.run()[Experiment.RESULTS] == {"y": 1}


# ---- a successful run -----------------------------------------------------------------------


def test_run_calls_the_phases_in_order_and_returns_the_results():
    e = Recording()
    rc = e.set({"x": 4}).run()
    assert e.calls[1:] == ["setUp", "do", "tearDown"]
    assert rc[Experiment.PARAMETERS] == {"x": 4}
    assert rc[Experiment.RESULTS] == {"y": 5}
    assert rc[Experiment.METADATA][Experiment.STATUS] is True


def test_run_records_every_standard_metadata_key_with_its_type():
    rc = Square().set({"x": 2}).run()
    meta = rc[Experiment.METADATA]
    assert Experiment.StandardMetadata <= set(meta)
    for k, t in Experiment.StandardMetadataTypes.items():
        assert isinstance(meta[k], t), k
    # A success's exception and traceback are '', as epyc's notebooks show them.
    assert meta[Experiment.EXCEPTION] == "" and meta[Experiment.TRACEBACK] == ""


class Phased(Experiment):
    """Each phase takes a known least time (seconds), all different, so a swapped phase shows."""

    SETUP, DO, TEARDOWN = 0.01, 0.04, 0.02

    def setUp(self, params):
        super().setUp(params)
        time.sleep(self.SETUP)

    def do(self, params):
        time.sleep(self.DO)
        return {"y": params["x"]}

    def tearDown(self):
        time.sleep(self.TEARDOWN)
        super().tearDown()


def test_run_timing_is_consistent():
    before = datetime.now()
    meta = Phased().set({"x": 2}).run()[Experiment.METADATA]
    after = datetime.now()
    assert before <= meta[Experiment.START_TIME] <= meta[Experiment.END_TIME] <= after
    assert meta[Experiment.SETUP_TIME] >= Phased.SETUP
    assert meta[Experiment.EXPERIMENT_TIME] >= Phased.DO
    assert meta[Experiment.TEARDOWN_TIME] >= Phased.TEARDOWN
    phases = [meta[Experiment.SETUP_TIME], meta[Experiment.EXPERIMENT_TIME], meta[Experiment.TEARDOWN_TIME]]
    # The phases follow each other: together they are the elapsed time, which fits between start and end.
    assert meta[Experiment.ELAPSED_TIME] == pytest.approx(sum(phases), abs=1e-6)
    # (1 ms for the wall clock's microsecond rounding, against the monotonic clock's phases.)
    wall = (meta[Experiment.END_TIME] - meta[Experiment.START_TIME]).total_seconds()
    assert meta[Experiment.ELAPSED_TIME] <= wall + 1e-3


def test_run_names_the_experiment_class_with_its_module():
    meta = Square().set({"x": 2}).run()[Experiment.METADATA]
    assert meta[Experiment.EXPERIMENT] == f"{__name__}.Square"


def test_run_records_host_and_pid():
    meta = Square().set({"x": 2}).run()[Experiment.METADATA]
    assert meta[Experiment.HOST] == socket.gethostname()
    assert meta[Experiment.PID] == os.getpid()


CHILD = """
import os
from epyclab.experiment import Experiment

class Square(Experiment):
    def do(self, params):
        return {"y": params["x"] ** 2}

rc = Square().set({"x": 1}).run()
print(os.getpid(), rc[Experiment.METADATA][Experiment.PID], rc[Experiment.METADATA][Experiment.HOST])
"""


def test_pid_is_that_of_the_process_that_ran_the_experiment():
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True)
    child_pid, recorded, host = child.stdout.split()
    assert recorded == child_pid
    assert int(recorded) != os.getpid()
    assert host == socket.gethostname()


def test_access_to_the_last_run():
    e = Square()
    assert e.results() is None
    assert e.experimentalResults() is None
    assert e.metadata() is None
    assert not e.success() and not e.failed()
    rc = e.set({"x": 3}).run()
    assert e.results() is rc
    assert e.experimentalResults() == {"y": 9}
    assert e.metadata() is rc[Experiment.METADATA]
    assert e["y"] == 9
    assert e.success() and not e.failed()
    with pytest.raises(KeyError, match=r"^'z'$"):
        e["z"]


def test_results_are_those_of_the_latest_run():
    e = Square()
    e.set({"x": 2}).run()
    e.set({"x": 5}).run()
    assert e["y"] == 25
    assert e.parameters() == {"x": 5}


def test_report_override_adds_metadata():
    class Tagged(Square):
        def report(self, params, meta, res):
            rc = super().report(params, meta, res)
            rc[Experiment.METADATA]["who"] = "me"
            return rc

    rc = Tagged().set({"x": 1}).run()
    assert rc[Experiment.METADATA]["who"] == "me"
    assert rc[Experiment.METADATA][Experiment.STATUS] is True


def test_do_may_return_a_list_of_results_dicts():
    inner = Square().set({"x": 2}).run()
    rc = Returns([inner, inner]).set({"x": 2}).run()
    assert rc[Experiment.METADATA][Experiment.STATUS] is True
    assert rc[Experiment.RESULTS] == [inner, inner]


# ---- failures ---------------------------------------------------------------------------------


def _assert_failed(rc, exc_type, text):
    meta = rc[Experiment.METADATA]
    assert meta[Experiment.STATUS] is False
    assert isinstance(meta[Experiment.EXCEPTION], exc_type)
    assert text in str(meta[Experiment.EXCEPTION])
    assert exc_type.__name__ in meta[Experiment.TRACEBACK]
    assert rc[Experiment.RESULTS] == {}


def test_exception_in_setup_is_recorded_and_teardown_is_not_called():
    e = Recording("setUp")
    rc = e.set({"x": 1}).run()
    _assert_failed(rc, ValueError, "boom in setUp")
    assert e.calls[1:] == ["setUp"]
    assert e.failed() and not e.success()


def test_exception_in_do_is_recorded_and_teardown_still_runs():
    e = Recording("do")
    rc = e.set({"x": 1}).run()
    _assert_failed(rc, ValueError, "boom in do")
    assert e.calls[1:] == ["setUp", "do", "tearDown"]
    assert "_maybe_fail" in rc[Experiment.METADATA][Experiment.TRACEBACK]


def test_exception_in_teardown_is_recorded_and_discards_the_results():
    e = Recording("tearDown")
    rc = e.set({"x": 1}).run()
    _assert_failed(rc, ValueError, "boom in tearDown")
    assert e.calls[1:] == ["setUp", "do", "tearDown"]


def test_a_failed_do_is_reported_rather_than_a_later_teardown_failure():
    class Both(Recording):
        def tearDown(self):
            raise RuntimeError("teardown too")

    rc = Both("do").set({"x": 1}).run()
    _assert_failed(rc, ValueError, "boom in do")


def test_failed_run_keeps_parameters_and_metadata():
    rc = Recording("do").set({"x": 7, "s": "a"}).run()
    assert rc[Experiment.PARAMETERS] == {"x": 7, "s": "a"}
    meta = rc[Experiment.METADATA]
    assert Experiment.StandardMetadata <= set(meta)
    assert meta[Experiment.PID] == os.getpid()
    assert meta[Experiment.END_TIME] >= meta[Experiment.START_TIME]


@pytest.mark.parametrize("phase", ["setUp", "do", "tearDown"])
def test_fatal_reraises_after_recording(phase):
    e = Recording(phase)
    with pytest.raises(ValueError, match=f"boom in {phase}"):
        e.set({"x": 1}).run(fatal=True)
    assert e.failed()
    assert str(e.metadata()[Experiment.EXCEPTION]) == f"boom in {phase}"
    if phase != "setUp":
        assert e.calls[-1] == "tearDown"


def test_fatal_does_nothing_on_success():
    assert Square().set({"x": 3}).run(fatal=True)[Experiment.RESULTS] == {"y": 9}


def test_keyboard_interrupt_is_not_turned_into_a_failed_result():
    e = Recording("do", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        e.set({"x": 1}).run()


def test_an_experiment_without_do_fails_with_a_clear_message():
    rc = Experiment().set({"x": 1}).run()
    meta = rc[Experiment.METADATA]
    assert meta[Experiment.STATUS] is False
    assert isinstance(meta[Experiment.EXCEPTION], NotImplementedError)
    assert "must override do" in str(meta[Experiment.EXCEPTION])


@pytest.mark.parametrize(
    ("value", "what"),
    [(42, "int"), ("y", "str"), ((1, 2), "tuple"), ([{"y": 1}], "not all results dicts")],
)
def test_do_returning_a_non_dict_is_a_failed_result_naming_the_class(value, what):
    rc = Returns(value).set({"x": 1}).run()
    exc = rc[Experiment.METADATA][Experiment.EXCEPTION]
    assert rc[Experiment.METADATA][Experiment.STATUS] is False
    assert isinstance(exc, ResultsStructureException)
    assert "Returns.do()" in str(exc)
    assert what in str(exc)
    assert rc[Experiment.RESULTS] == {}


def test_do_returning_none_is_a_successful_run_with_no_results():
    rc = Returns(None).set({"x": 1}).run()
    assert rc[Experiment.METADATA][Experiment.STATUS] is True
    assert rc[Experiment.METADATA][Experiment.EXCEPTION] == ""
    assert rc[Experiment.RESULTS] == {}


def test_do_returning_a_non_dict_with_fatal_raises_naming_the_class():
    with pytest.raises(ResultsStructureException, match=r"Returns\.do\(\) returned int"):
        Returns(42).set({"x": 1}).run(fatal=True)


def test_do_returning_non_string_result_names_is_a_failed_result_naming_the_class():
    rc = Returns({1: 2.0}).set({"x": 1}).run()
    exc = rc[Experiment.METADATA][Experiment.EXCEPTION]
    assert isinstance(exc, ResultsStructureException)
    assert "Returns.do()" in str(exc) and "1" in str(exc)


def test_do_returning_nested_results_lists_is_accepted():
    leaf = Square().set({"x": 2}).run()
    nested = {**Experiment.resultsdict(), Experiment.RESULTS: [leaf, leaf]}
    rc = Returns([nested, leaf]).set({"x": 2}).run()
    assert rc[Experiment.METADATA][Experiment.STATUS] is True


def test_do_returning_a_malformed_nested_results_list_is_a_failed_result():
    nested = {**Experiment.resultsdict(), Experiment.RESULTS: [42]}
    rc = Returns([nested]).set({"x": 1}).run()
    exc = rc[Experiment.METADATA][Experiment.EXCEPTION]
    assert rc[Experiment.METADATA][Experiment.STATUS] is False
    assert isinstance(exc, ResultsStructureException)
    assert "Returns.do()" in str(exc)


def test_a_result_named_like_a_parameter_is_a_failed_result():
    rc = Returns({"x": 2, "y": 3}).set({"x": 1}).run()
    exc = rc[Experiment.METADATA][Experiment.EXCEPTION]
    assert isinstance(exc, ResultsStructureException)
    assert "'x'" in str(exc) and "parameter" in str(exc)
    assert rc[Experiment.PARAMETERS] == {"x": 1}


def test_a_forked_child_records_its_own_pid():
    """The pid is asked once per process: a child forked after a run (as engines may be) records its own."""
    e = Square()
    assert e.set({"x": 1}).run()[Experiment.METADATA][Experiment.PID] == os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens
        try:
            os.write(write, str(e.set({"x": 2}).run()[Experiment.METADATA][Experiment.PID]).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        recorded = os.read(read, 100).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert int(recorded) == pid != os.getpid()


class Renaming(Experiment):
    """Returns the result names it is told to, so that a later run can return other (bad) ones."""

    names: list[object] = ["y"]

    def do(self, params):
        return {k: 1 for k in self.names}


def test_result_names_are_checked_again_when_they_change():
    e = Renaming()
    assert e.set({"x": 1}).run()[Experiment.METADATA][Experiment.STATUS]
    assert e.set({"x": 2}).run()[Experiment.METADATA][Experiment.STATUS]
    e.names = ["x"]  # a parameter's name
    meta = e.set({"x": 3}).run()[Experiment.METADATA]
    assert not meta[Experiment.STATUS] and "same name as a parameter" in str(meta[Experiment.EXCEPTION])
    e.names = [7]
    meta = e.set({"x": 4}).run()[Experiment.METADATA]
    assert not meta[Experiment.STATUS] and "not strings" in str(meta[Experiment.EXCEPTION])
    e.names = ["y"]
    assert e.set({"y": 5}).run()[Experiment.METADATA][Experiment.STATUS] is False  # now 'y' is a parameter
