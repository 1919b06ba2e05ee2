"""epyclab in a real Jupyter kernel (nbclient + ipykernel): what a cell shows, and re-running cells.

Each test writes a notebook, runs it in a fresh kernel of this test run's
Python, and asserts on the cells' outputs as Jupyter would show them. The
local clusters the sweeps start live in the test's own IPython directory;
the test checks that none of their processes is left once the kernel is shut down.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kernels import CLUSTER_NOISE, all_text, install_kernel, processes_under, run_notebook, streams, text_bar_draws

from epyclab.labs.transports.localcluster import default_profile_dir
from epyclab.labs.transports.localclusterlog import cluster_log_path

pytestmark = pytest.mark.timeout(600)

SETUP = """
import epyclab
from epyclab import Experiment, ParallelLab

class Square(Experiment):
    def do(self, params):
        return {"y": params["x"] ** 2}
"""

SWEEP = """
lab = ParallelLab(cores=2)
lab["x"] = range(20)
lab.runExperiment(Square())
print(len(lab.dataframe()))
"""
# The same cell on the ipyparallel backend (the default is the fork backend on Linux).
SWEEP_IPP = SWEEP.replace("ParallelLab(cores=2)", 'ParallelLab(cores=2, backend="ipyparallel")')


@pytest.fixture
def jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory, with a kernel spec and an IPython directory of the test's own; checks cleanup."""
    work, ipython_dir, jupyter_path = tmp_path / "work", tmp_path / "ipython", tmp_path / "jupyter"
    work.mkdir()
    ipython_dir.mkdir()
    install_kernel(jupyter_path)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    yield work
    deadline = time.monotonic() + 15
    while processes_under(ipython_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = processes_under(ipython_dir)
    assert not left, f"processes left running after the kernel stopped: {[p.pid for p in left]}"


def _assert_no_cluster_noise(outputs: list[dict]) -> None:
    text = all_text(outputs)
    for noise in CLUSTER_NOISE:
        assert noise not in text, f"{noise!r} reached the cell:\n{text}"


@pytest.mark.parametrize("backend", ["fork", "ipyparallel"])
def test_sweep_cells_show_one_widget_bar_and_nothing_else(jupyter: Path, tmp_path: Path, backend: str) -> None:
    sweep = SWEEP if backend == "fork" else SWEEP_IPP
    outputs = run_notebook([SETUP, sweep, sweep], jupyter)
    for cell in outputs[1:]:
        _assert_no_cluster_noise(cell)
        widgets = [o for o in cell if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(widgets) == 1, f"expected one progress widget, got {len(widgets)}: {cell}"
        assert "ParallelLab" in widgets[0]["data"]["text/plain"]
        # Nothing on stderr at all: no text bar besides the widget, no warning, no cluster log.
        assert streams(cell, "stderr") == ""
        assert streams(cell, "stdout") == "20\n"
    log = cluster_log_path(default_profile_dir())  # under the test's IPYTHONDIR
    assert str(log).startswith(str(tmp_path / "ipython"))
    if backend == "fork":
        # The copies of the kernel ran every point: no cluster was ever started.
        assert not log.exists()
        return
    # What the cluster said went to the file the docs name.
    assert log.exists(), f"no cluster log at {log}"
    assert "engine set stopped" in log.read_text()


def test_without_ipywidgets_one_clean_text_bar(jupyter: Path) -> None:
    # As in a Jupyter without ipywidgets installed: the import fails.
    block = "import sys\nsys.modules['ipywidgets'] = None\n"
    outputs = run_notebook([block + SETUP, SWEEP, SWEEP], jupyter)
    for cell in outputs[1:]:
        _assert_no_cluster_noise(cell)
        assert not [o for o in cell if o["output_type"] == "display_data"]
        draws = text_bar_draws(streams(cell, "stderr"))
        assert draws, "no progress bar drawn"
        assert {(d, t) for d, _, t in draws} == {("ParallelLab", 20)}, f"more than one bar: {draws}"
        counts = [n for _, n, _ in draws]
        # Every redraw shows new counts (none printed twice), ending at all done.
        assert counts == sorted(set(counts)), f"a redraw was printed twice: {counts}"
        assert counts[-1] == 20
        assert streams(cell, "stdout") == "20\n"


# ---- re-running cells that open a notebook (same-process hand-over, issue 11.1) ------------------

OPEN_AND_SWEEP = """
nb = HDF5LabNotebook('study.h5')
lab = ParallelLab(notebook=nb, cores=2)
lab['x'] = range(6)
lab.runExperiment(Square(), progress=False)
print(nb.numberOfResults())
"""


def test_re_running_the_cell_that_opens_the_notebook_works(jupyter: Path) -> None:
    setup = SETUP + "from epyclab import HDF5LabNotebook\n"
    outputs = run_notebook([setup, OPEN_AND_SWEEP, OPEN_AND_SWEEP, OPEN_AND_SWEEP], jupyter)
    # Each run of the cell took the file over from the last one, saw every row, and added its sweep.
    assert [streams(cell, "stdout") for cell in outputs[1:]] == ["6\n", "12\n", "18\n"]
    for cell in outputs[1:]:
        assert not [o for o in cell if o["output_type"] == "error"]
        assert "NotebookInUseError" not in all_text(cell)
    for cell in outputs[2:]:
        assert "takes the file over" in streams(cell, "stderr")  # the warning the hand-over logs
    from epyclab import HDF5LabNotebook

    stored = HDF5LabNotebook(jupyter / "study.h5", readonly=True)
    assert stored.numberOfResults() == 18
    stored.close()


EPYC_PATTERN = """
from epyclab import HDF5LabNotebook, Lab

def first(lab):
    lab['x'] = range(4)
    lab.runExperiment(Square(), progress=False)

nb = HDF5LabNotebook('epyc.h5', create=True)
lab = Lab(nb)
lab.createWith('first', first)

# Later, on a second object for the same file: is the set there already?
nb2 = HDF5LabNotebook('epyc.h5')
print(nb2.already('first'), nb2.currentTag(), nb2.numberOfResults())
lab2 = Lab(nb2)
print(lab2.createWith('first', first), sorted(lab2.dataframe()['y']))
nb2.close()
"""


def test_epyc_create_with_then_already_on_a_second_object(jupyter: Path) -> None:
    outputs = run_notebook([SETUP, EPYC_PATTERN], jupyter)
    cell = outputs[1]
    assert not [o for o in cell if o["output_type"] == "error"]
    assert streams(cell, "stdout") == "True first 4\nTrue [0, 1, 4, 9]\n"
