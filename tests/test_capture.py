"""What do() prints and logs comes back: stored with each result, replayed when results come from engines.

Lab runs in this process; ParallelLab on a real local cluster; ClusterLab on
a real controller and engines (tests/clusterhub.py), collecting in this
process. Unit tests of the capture itself (caps, threads, nesting) use
:func:`epyclab.labs.engine.capture.captured` directly.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterhub import HubProcesses, running_hub
from hypothesis import given
from hypothesis import strategies as st

from epyclab.combinators import RepeatedExperiment
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.engine import capture
from epyclab.labs.engine.capture import CAPTURE, OUTPUT, Limit
from epyclab.labs.lab import Lab
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.localcluster import LocalCluster
from epyclab.notebooks.labnotebook import LabNotebook

log = logging.getLogger("mystudy")


class Noisy(Experiment):
    """Prints to stdout and stderr and logs at INFO and WARNING; fails at x in ``fail_at`` after printing."""

    def __init__(self, fail_at: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.fail_at = set(fail_at)

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        x = params["x"]
        print(f"out {x}")
        print(f"err {x}", file=sys.stderr)
        log.info("info %d", x)
        log.warning("warn %d", x)
        if x in self.fail_at:
            raise ValueError(f"bad {x}")
        return {"y": x}


class Quiet(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": params["x"]}


def expected(x: int) -> str:
    return f"out {x}\nerr {x}\nWARNING:mystudy:warn {x}\n"


def outputs(lab: Lab) -> dict[int, str]:
    df = lab.notebook().dataframe(only_successful=False)
    return dict(zip(df["x"], df[OUTPUT]))


# ---- Lab: stored, and shown as it is written ------------------------------------------------


def test_lab_stores_stdout_stderr_and_warnings_of_each_run(capsys: pytest.CaptureFixture[str]) -> None:
    lab = Lab()
    lab["x"] = range(4)
    lab.runExperiment(Noisy(fail_at=(2,)), progress=False)
    assert outputs(lab) == {x: expected(x) for x in range(4)}
    # The failed run keeps its output too, and nothing in transit is left in the rows.
    assert CAPTURE not in lab.notebook().dataframe(only_successful=False).columns
    # A sequential lab shows the output as it is written (not replayed a second time).
    out, err = capsys.readouterr()
    assert out == "".join(f"out {x}\n" for x in range(4))
    assert "[x=" not in out + err
    assert err.count("err 1\n") == 1


def test_lab_with_store_output_off_keeps_no_output() -> None:
    lab = Lab()
    lab.StoreOutput = False
    lab["x"] = range(3)
    lab.runExperiment(Noisy(), progress=False)
    assert OUTPUT not in lab.notebook().dataframe().columns
    assert CAPTURE not in lab.notebook().dataframe().columns


def test_a_quiet_run_gets_no_output_key() -> None:
    lab = Lab()
    lab["x"] = range(3)
    lab.runExperiment(Quiet(), progress=False)
    assert OUTPUT not in lab.notebook().dataframe().columns


def test_repetitions_each_row_carries_the_output_of_its_point() -> None:
    lab = Lab()
    lab["x"] = [5]
    lab.runExperiment(RepeatedExperiment(Noisy(), 3), progress=False)
    df = lab.dataframe()
    assert len(df) == 3
    text = df[OUTPUT].iloc[0]
    assert text.count("out 5\n") == 3 and text.count("WARNING:mystudy:warn 5") == 3
    assert set(df[OUTPUT]) == {text}


def test_a_terminal_sees_lab_output_once_with_no_logging_configured(tmp_path: Path) -> None:
    # Without logging configured Python prints WARNINGs to stderr; capturing must not swallow (or double) them.
    script = tmp_path / "noisy.py"
    script.write_text(textwrap.dedent("""
        import logging, sys
        from epyclab import Experiment, Lab
        log = logging.getLogger("mystudy")
        class Noisy(Experiment):
            def do(self, params):
                print("out", params["x"])
                log.warning("warn %d", params["x"])
                return {"y": params["x"]}
        lab = Lab()
        lab["x"] = range(2)
        lab.runExperiment(Noisy(), progress=False)
        print(list(lab.dataframe()["epyclab.experiment.output"]))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "warn 0\nwarn 1\n"
    assert done.stdout.splitlines() == [
        "out 0", "out 1", repr(["out 0\nWARNING:mystudy:warn 0\n", "out 1\nWARNING:mystudy:warn 1\n"]),
    ]


# ---- the capture itself ---------------------------------------------------------------------------


def _rc() -> dict[str, Any]:
    return Experiment.resultsdict() | {Experiment.PARAMETERS: {"x": 1}}


def _printing(text: str) -> Any:
    def run() -> dict[str, Any]:
        sys.stdout.write(text)
        return _rc()

    return run


@given(st.text(max_size=3000), st.integers(min_value=0, max_value=3 * Limit))
def test_stored_output_is_the_last_64_kib(text: str, padding: int) -> None:
    whole = "p" * padding + text
    rc = capture.settle(capture.captured(_printing(whole)))
    stored = rc[Experiment.METADATA].get(OUTPUT, "")
    assert len(stored.encode()) <= Limit
    if len(whole.encode()) <= Limit and padding <= Limit:
        assert stored == whole
    else:
        assert stored.startswith("[... earlier output dropped ...]\n")
        kept = stored[len("[... earlier output dropped ...]\n"):]
        assert whole.endswith(kept)
        # Only what did not fit was dropped (a character cut in two bytes at most).
        assert len(kept.encode()) >= Limit - len("[... earlier output dropped ...]\n") - 3


def test_other_threads_output_is_not_captured(capsys: pytest.CaptureFixture[str]) -> None:
    def run() -> dict[str, Any]:
        t = threading.Thread(target=lambda: print("from another thread"))
        t.start()
        t.join()
        print("from the run")
        return _rc()

    rc = capture.settle(capture.captured(run))
    assert rc[Experiment.METADATA][OUTPUT] == "from the run\n"
    assert "from another thread" in capsys.readouterr().out


def test_capture_restores_streams_and_logging_even_when_the_run_raises() -> None:
    stdout, stderr, handlers = sys.stdout, sys.stderr, list(logging.getLogger().handlers)

    def run() -> dict[str, Any]:
        raise KeyError("configure failed")

    with pytest.raises(KeyError):
        capture.captured(run)
    assert (sys.stdout, sys.stderr) == (stdout, stderr)
    assert logging.getLogger().handlers == handlers


def test_output_of_a_run_that_raised_is_not_given_to_the_next() -> None:
    """Runs of a sweep share one capture: what a raising run wrote goes with it, not into the next row."""

    def raising() -> dict[str, Any]:
        print("lost with the exception")
        raise KeyError("configure failed")

    def quiet() -> dict[str, Any]:
        return {Experiment.PARAMETERS: {}, Experiment.METADATA: {}, Experiment.RESULTS: {}}

    def speaking() -> dict[str, Any]:
        print("mine")
        return quiet()

    with capture.Capturing() as capturing:
        with pytest.raises(KeyError):
            capturing.run(raising)
        assert CAPTURE not in capturing.run(quiet)[Experiment.METADATA]
        first = capture.settle(capturing.run(speaking))[Experiment.METADATA][OUTPUT]
        assert CAPTURE not in capturing.run(quiet)[Experiment.METADATA]
        second = capture.settle(capturing.run(speaking))[Experiment.METADATA][OUTPUT]
    assert first == second == "mine\n"


def test_unreadable_capture_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rc = _rc()
    rc[Experiment.METADATA][CAPTURE] = "not json"
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        capture.settle(rc, replay=True)
    assert CAPTURE not in rc[Experiment.METADATA] and OUTPUT not in rc[Experiment.METADATA]
    assert "could not be read" in caplog.text


# ---- ParallelLab: stored and replayed ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(2, str(tmp_path_factory.mktemp("profile")))
    local.start()
    yield local
    local.stop()


def _replayed(out: str, err: str, records: list[logging.LogRecord], xs: range) -> None:
    for x in xs:
        assert f"[x={x}] out {x}\n" in out
        assert f"[x={x}] err {x}\n" in err
    replayed = sorted(r.getMessage() for r in records if r.name == "epyclab" and r.levelno == logging.WARNING)
    assert replayed == sorted(f"[x={x}] mystudy: warn {x}" for x in xs)


def test_parallel_lab_stores_and_replays_with_the_point(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    lab = ParallelLab(LabNotebook(), client=cluster.client)
    lab["x"] = range(6)
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        lab.runExperiment(Noisy(fail_at=(4,)), progress=False)
    assert outputs(lab) == {x: expected(x) for x in range(6)}
    out, err = capsys.readouterr()
    _replayed(out, err, caplog.records, range(6))
    # INFO records are neither stored nor replayed.
    assert "info" not in out + err + caplog.text


def test_parallel_lab_settings_turn_each_path_off(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    lab = ParallelLab(LabNotebook(), client=cluster.client)
    lab.ReplayOutput = False
    lab["x"] = range(3)
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        lab.runExperiment(Noisy(), progress=False)
    assert outputs(lab) == {x: expected(x) for x in range(3)}
    out, err = capsys.readouterr()
    assert "[x=" not in out + err + caplog.text

    lab = ParallelLab(LabNotebook(), client=cluster.client)
    lab.StoreOutput = False
    lab["x"] = range(3)
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        lab.runExperiment(Noisy(), progress=False)
    assert OUTPUT not in lab.dataframe().columns and CAPTURE not in lab.dataframe().columns
    out, err = capsys.readouterr()
    _replayed(out, err, caplog.records, range(3))


def test_parallel_lab_on_forked_copies_stores_and_replays_with_the_point(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # ParallelLab's default backend on Linux: the points run in forked copies of this process, which
    # capture like engines, so each line reaches this console once, replayed with its point.
    lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
    lab["x"] = range(6)
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        lab.runExperiment(Noisy(fail_at=(4,)), progress=False)
    assert outputs(lab) == {x: expected(x) for x in range(6)}
    df = lab.notebook().dataframe(only_successful=False)
    assert set(df[Experiment.PID].astype(int)) <= set(lab.lastCopies)
    out, err = capsys.readouterr()
    _replayed(out, err, caplog.records, range(6))
    for x in range(6):
        assert out.count(f"out {x}\n") == 1 and err.count(f"err {x}\n") == 1
    assert "info" not in out + err + caplog.text


# ---- ClusterLab: stored and replayed when collected ---------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcesses]:
    with running_hub(tmp_path_factory.mktemp("hubprofile")) as procs:
        yield procs


def test_cluster_lab_stores_and_replays_on_collection(
    hub: HubProcesses, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    lab = ClusterLab(LabNotebook(), profile_dir=str(hub.profile_dir))
    lab["x"] = range(5)
    lab.runExperiment(Noisy(fail_at=(1,)))
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        assert lab.wait(timeout=120, progress=False)
    assert outputs(lab) == {x: expected(x) for x in range(5)}
    out, err = capsys.readouterr()
    _replayed(out, err, caplog.records, range(5))
    lab.close()


def test_cluster_lab_collecting_in_a_later_process_replays_there(hub: HubProcesses, tmp_path: Path) -> None:
    from epyclab.notebooks.hdf5 import HDF5LabNotebook

    path = tmp_path / "later.h5"
    lab = ClusterLab(HDF5LabNotebook(str(path), create=True), profile_dir=str(hub.profile_dir))
    lab["x"] = range(3)
    lab.runExperiment(Noisy())
    lab.close()
    script = textwrap.dedent(f"""
        from epyclab import ClusterLab, HDF5LabNotebook
        lab = ClusterLab(HDF5LabNotebook({str(path)!r}), profile_dir={str(hub.profile_dir)!r})
        assert lab.wait(timeout=120, progress=False)
        print(sorted(lab.dataframe()["epyclab.experiment.output"]))
        lab.close()
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    for x in range(3):
        assert f"[x={x}] out {x}\n" in done.stdout
        assert f"[x={x}] err {x}\n" in done.stderr
        assert f"[x={x}] mystudy: warn {x}\n" in done.stderr  # the epyclab logger, printed as a last resort
    assert done.stdout.splitlines()[-1] == repr(sorted(expected(x) for x in range(3)))


class _ChattyNotebook(LabNotebook):
    """Prints when a result is added: output of the lab's own loop, between runs."""

    def addResult(self, rc: Any, tag: str | None = None) -> None:
        print("between runs")
        super().addResult(rc, tag)


def test_output_between_runs_of_a_sweep_passes_through_and_is_not_stored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lab = Lab(_ChattyNotebook("chatty"))
    lab["x"] = range(3)
    lab.runExperiment(Noisy(), progress=False)
    assert outputs(lab) == {x: expected(x) for x in range(3)}
    out, _ = capsys.readouterr()
    assert out.count("between runs\n") == 3


class _Stops(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["x"] == 2:
            raise KeyboardInterrupt
        print("ran", params["x"])
        return {"y": params["x"]}


def test_a_sweep_interrupted_mid_way_puts_back_streams_and_logging() -> None:
    stdout, stderr, handlers = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
    lab = Lab()
    lab["x"] = range(5)
    with pytest.raises(KeyboardInterrupt):
        lab.runExperiment(_Stops(), progress=False)
    assert (sys.stdout, sys.stderr) == (stdout, stderr)
    assert logging.getLogger().handlers == handlers
    assert sorted(outputs(lab)) == [0, 1]
