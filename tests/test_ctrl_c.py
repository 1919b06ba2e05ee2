"""Ctrl-C in any lab: what a user sees is one line, nothing finished is lost, no process is left.

Each test runs a real script (``conftest_parallel.CTRL_C_SCRIPT``) sweeping slow
points into a real HDF5 notebook, sends it a real SIGINT once results (or, for
a ClusterLab, pending results) are arriving, and reads what the user would:
the script's stderr, its exit status, and the notebook file afterwards. The
traceback must end at the user's own call (``runExperiment``'s ``raise`` is the
only epyclab line: Python shows the frame an exception is raised in, and
so does Jupyter: :func:`test_jupyter_shows_the_users_cell_and_the_one_line`), its last
line says how many points are saved where and how to go on, the file holds
exactly those rows, and every process the script started is gone.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterhub import HubProcesses, running_hub
from conftest_parallel import CTRL_C_SCRIPT, descendants, processes_of_profile, still_running, wait_for_file

from epyclab.notebooks.hdf5 import HDF5LabNotebook

LAB_PY = str(Path(__file__).resolve().parent.parent / "epyclab" / "labs" / "lab.py")
INTERRUPTS_PY = str(Path(LAB_PY).parent / "interrupts.py")
POINTS = 100_000
FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+, in (?P<function>\S+)$')


def interrupt(tmp_path: Path, kind: str, lab: dict, twice: bool = False, **how: object
              ) -> tuple[subprocess.CompletedProcess[str], dict, Path, list]:
    """Run the sweep script with ``kind`` of lab, SIGINT it once results arrive; its outcome, counts, file, children.

    ``twice``: a second SIGINT follows, as an impatient user's, while the lab stops. ``how``: more of the
    script's settings (``points``, ``wait``).
    """
    script, running, out, notebook = (tmp_path / "sweep.py", tmp_path / "running", tmp_path / "out.json",
                                      tmp_path / "nb.h5")
    script.write_text(CTRL_C_SCRIPT)
    how = {"lab": kind, "notebook": str(notebook), **how}
    proc = subprocess.Popen([sys.executable, str(script), str(running), str(out), json.dumps(lab), json.dumps(how)],
                            cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_file(running, timeout=120)
        children = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        if twice:
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return done, json.loads(out.read_text()), notebook, children


def assert_one_line_and_only_the_users_frame(stderr: str, script: Path, function: str = "runExperiment",
                                            raised_in: str = LAB_PY) -> str:
    """The traceback holds the user's frame and the raise of the line, nothing else; return its last line."""
    lines = stderr.rstrip("\n").split("\n")
    assert lines[0] == "Traceback (most recent call last):", stderr
    frames = [FRAME.match(line) for line in lines if line.startswith('  File "')]
    assert [(m["file"], m["function"]) for m in frames if m] == [(str(script), "<module>"),
                                                                  (raised_in, function)], stderr
    # Each frame shows one source line; then the one line the user reads, and nothing more.
    assert len(lines) == 6, stderr
    assert lines[4].strip() == "raise KeyboardInterrupt(note) from None"
    assert sum("Ctrl-C" in line for line in lines) == 1
    assert "During handling" not in stderr and "/epyclab/labs/transports/scheduler.py" not in stderr
    return lines[-1]


def assert_exited_as_interrupted(done: subprocess.CompletedProcess[str]) -> None:
    # Python ends a script whose KeyboardInterrupt nobody caught by SIGINT itself: a shell shows 130.
    assert done.returncode == -signal.SIGINT, done.stderr


@pytest.mark.parametrize("kind, lab", [
    ("Lab", {}),
    ("ParallelLab", {"backend": "fork"}),
])
def test_ctrl_c_in_a_sweep_ends_in_one_line_with_every_finished_row_saved(tmp_path: Path, kind: str,
                                                                          lab: dict) -> None:
    done, counts, notebook, children = interrupt(tmp_path, kind, lab)
    assert_exited_as_interrupted(done)
    last = assert_one_line_and_only_the_users_frame(done.stderr, tmp_path / "sweep.py")
    m = re.fullmatch(r"KeyboardInterrupt: Ctrl-C: ([\d,]+) of 100,000 points done, saved in (.+); "
                     r"run the other ([\d,]+) with runExperiment\(e, resume=True\)", last)
    assert m, last
    saved, others = int(m[1].replace(",", "")), int(m[3].replace(",", ""))
    assert Path(m[2]) == notebook
    assert saved >= 5 and saved + others == POINTS
    assert counts == {"added": saved, "committed": saved, "results": saved}
    nb = HDF5LabNotebook(str(notebook), readonly=True)
    try:
        assert nb.numberOfResults() == saved
        assert sorted(nb.dataframe()["y"]) == sorted(set(nb.dataframe()["y"]))  # each point once
    finally:
        nb.close()
    assert still_running(children) == []


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
def test_ctrl_c_in_a_sweep_on_the_local_ipyparallel_cluster_stops_it_and_saves_every_row(tmp_path: Path,
                                                                                          twice: bool) -> None:
    profile = tmp_path / "profile"
    done, counts, notebook, children = interrupt(tmp_path, "ParallelLab",
                                                 {"backend": "ipyparallel", "profile_dir": str(profile)}, twice)
    assert_exited_as_interrupted(done)
    last = assert_one_line_and_only_the_users_frame(done.stderr, tmp_path / "sweep.py")
    m = re.fullmatch(r"KeyboardInterrupt: Ctrl-C: ([\d,]+) of 100,000 points done, saved in (.+); "
                     r"run the other ([\d,]+) with runExperiment\(e, resume=True\)", last)
    assert m, last
    saved = int(m[1].replace(",", ""))
    assert Path(m[2]) == notebook and counts == {"added": saved, "committed": saved, "results": saved}
    nb = HDF5LabNotebook(str(notebook), readonly=True)
    try:
        assert nb.numberOfResults() == saved
    finally:
        nb.close()
    assert len(children) >= 3  # a controller and two engines at least
    assert still_running(children) == []
    assert processes_of_profile(profile, grace=5) == []


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcesses]:
    with running_hub(tmp_path / "profile") as procs:
        yield procs


def test_ctrl_c_while_a_cluster_lab_submits_says_what_is_pending_and_how_to_collect(tmp_path: Path,
                                                                                   hub: HubProcesses) -> None:
    done, counts, notebook, children = interrupt(tmp_path, "ClusterLab",
                                                 {"profile_dir": str(hub.profile_dir), "chunkSize": 1})
    assert_exited_as_interrupted(done)
    last = assert_one_line_and_only_the_users_frame(done.stderr, tmp_path / "sweep.py")
    m = re.fullmatch(r"KeyboardInterrupt: Ctrl-C: ([\d,]+) of 100,000 points submitted, recorded as pending in "
                     r"(.+); wait\(\) or updateResults\(\) collects them, here or in a later process; "
                     r"submit the other ([\d,]+) with runExperiment\(e, resume=True\)", last)
    assert m, last
    submitted, others = int(m[1].replace(",", "")), int(m[3].replace(",", ""))
    assert Path(m[2]) == notebook and submitted >= 5 and submitted + others == POINTS
    assert counts == {"added": submitted, "committed": submitted, "results": 0}
    assert children == [] or still_running(children) == []
    # As the line says: a later process collects every point submitted.
    from epyclab.labs.clusterlab import ClusterLab

    nb = HDF5LabNotebook(str(notebook))
    assert nb.numberOfPendingResults() == submitted
    lab = ClusterLab(nb, profile_dir=str(hub.profile_dir))
    try:
        assert lab.wait(timeout=120, progress=False)
        assert nb.numberOfResults() == submitted and nb.numberOfPendingResults() == 0
        assert sorted(nb.dataframe()["y"]) == list(range(submitted))
    finally:
        lab.close()


def test_ctrl_c_while_a_cluster_lab_waits_says_what_was_collected_and_what_is_pending(tmp_path: Path,
                                                                                     hub: HubProcesses) -> None:
    done, counts, notebook, children = interrupt(tmp_path, "ClusterLab",
                                                 {"profile_dir": str(hub.profile_dir), "chunkSize": 1},
                                                 points=400, wait=True)
    assert_exited_as_interrupted(done)
    last = assert_one_line_and_only_the_users_frame(done.stderr, tmp_path / "sweep.py", function="wait",
                                                    raised_in=INTERRUPTS_PY)
    m = re.fullmatch(r"KeyboardInterrupt: Ctrl-C: stopped waiting; ([\d,]+) of 400 pending results collected, "
                     r"saved in (.+); the other ([\d,]+) stay pending: wait\(\) or updateResults\(\) collects "
                     r"them, here or in a later process", last)
    assert m, last
    collected, left = int(m[1].replace(",", "")), int(m[3].replace(",", ""))
    assert Path(m[2]) == notebook and collected >= 5 and collected + left == 400
    assert counts == {"added": 400, "committed": 400, "results": collected}
    nb = HDF5LabNotebook(str(notebook), readonly=True)
    try:
        assert nb.numberOfResults() == collected and nb.numberOfPendingResults() == left
    finally:
        nb.close()
    assert children == [] or still_running(children) == []


# ---- in Jupyter ---------------------------------------------------------------------------------

JUPYTER_CELL = """
import os, signal, time
from epyclab import Experiment, HDF5LabNotebook, ParallelLab

class Slow(Experiment):
    def do(self, params):
        time.sleep(0.02)
        return {"y": params["x"]}

class Interrupting(HDF5LabNotebook):
    def addResult(self, rc, tag=None):
        super().addResult(rc, tag)
        if self.numberOfResults() == 5:
            os.kill(os.getpid(), signal.SIGINT)   # what Jupyter's interrupt button sends the kernel

lab = ParallelLab(Interrupting("nb.h5", create=True), cores=2, backend="fork")
lab["x"] = range(10000)
lab.runExperiment(Slow(), progress=False)
"""


def test_jupyter_shows_the_users_cell_and_the_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted in a Jupyter kernel, the cell's error is the user's line and the one line; rows are saved."""
    from kernels import install_kernel, run_notebook
    from nbclient.exceptions import CellExecutionError

    work, ipython_dir, jupyter_path = tmp_path / "work", tmp_path / "ipython", tmp_path / "jupyter"
    work.mkdir()
    ipython_dir.mkdir()
    install_kernel(jupyter_path)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    with pytest.raises(CellExecutionError) as raised:
        run_notebook([JUPYTER_CELL], work, timeout=120)
    error = raised.value
    assert error.ename == "KeyboardInterrupt"
    m = re.fullmatch(r"Ctrl-C: ([\d,]+) of 10,000 points done, saved in (.+); "
                     r"run the other ([\d,]+) with runExperiment\(e, resume=True\)", error.evalue)
    assert m, error.evalue
    shown = re.sub(r"\x1b\[[0-9;]*m", "", error.traceback)  # as the cell shows it, without colours
    assert "---> 17 lab.runExperiment(Slow(), progress=False)" in shown
    files = re.findall(r"^File (\S+):\d+, in (\S+)", shown, flags=re.MULTILINE)
    assert files == [(LAB_PY, "Lab.runExperiment(self,")], shown  # the raise, and no other epyclab frame
    assert "raise KeyboardInterrupt(note) from None" in shown
    assert shown.rstrip().endswith("KeyboardInterrupt: " + error.evalue)
    nb = HDF5LabNotebook(str(work / "nb.h5"), readonly=True)
    try:
        assert nb.numberOfResults() == int(m[1].replace(",", "")) >= 5
    finally:
        nb.close()
