"""A Lab sweep into an HDF5 notebook, killed half-way, completes on a resumed run with one result per point."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from waiting import wait_until

from epyclab import HDF5LabNotebook, NotebookInUseError

TESTS = Path(__file__).resolve().parent

SWEEP = """
import sys, time
from epyclab import Experiment, HDF5LabNotebook, Lab

class Slow(Experiment):
    def do(self, params):
        time.sleep(0.003)
        return {"y": params["x"] * 2, "tag": params["s"] * 2}

nb = HDF5LabNotebook(sys.argv[1])
lab = Lab(nb, commitEvery=10)
lab["x"] = range(150)
lab["s"] = ["a", "b"]
print("start", flush=True)
lab.runExperiment(Slow(), resume=sys.argv[2] == "resume", progress=False)
lab.close()
print("done", flush=True)
"""


def sweep(path: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SWEEP, str(path), mode], stdout=subprocess.PIPE, text=True, cwd=TESTS
    )


def committed_rows(path: Path) -> int:
    """How many results a reader sees (0 while the file is not there yet)."""
    if not path.exists():
        return 0
    try:
        return HDF5LabNotebook(path, readonly=True).numberOfResults()
    except NotebookInUseError:
        return 0


def test_a_killed_sweep_resumes_to_exactly_one_result_per_point(tmp_path):
    path = tmp_path / "sweep.h5"
    proc = sweep(path, "run")
    try:
        assert proc.stdout.readline().strip() == "start"
        wait_until(lambda: committed_rows(path) >= 40, 60, "40 committed rows", interval=0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    killed_at = committed_rows(path)
    assert 40 <= killed_at < 300, "the sweep was not killed half-way"

    proc = sweep(path, "resume")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.split()[-1] == "done"

    df = HDF5LabNotebook(path, readonly=True).dataframe()
    assert len(df) == 300
    assert sorted(zip(df["x"], df["s"])) == sorted((x, s) for x in range(150) for s in "ab")
    assert (df["y"] == 2 * df["x"]).all()
