"""Code travels as code: a worker that cannot import the user's module gets its source and imports that.

The user's helper module (beside the script) holds a ctypes handle made at
import, which cannot be pickled. A real second process that has no access to
the script's directory loads the experiment: the helper arrives as source and
runs there, so the handle is made on that side; nothing of the module's state
was pickled.

Tracebacks travel too: a failed row's traceback names the script's (or
notebook cell's, or helper's) file and line and shows the line, on every
transport that unpickles the experiment, and on a worker that has none of the
files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kernels import run_notebook
from test_jupyter import jupyter  # noqa: F401 (the fixture: a kernel of the tests' own)

HELPER = """
import ctypes

_libc = ctypes.CDLL(None)  # a handle made at import: ctypes objects holding pointers do not pickle
IMPORTED_HERE = True


def work(n):
    return _libc.abs(-n)
"""

MODEL = """
import helper
from epyclab import Experiment


class Model(Experiment):
    def do(self, params):
        return {"y": helper.work(params["x"]), "helper_from": helper.__file__}
"""

PACK = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import model
from epyclab.labs.engine.packaging import dumps
Path(sys.argv[2]).write_bytes(dumps(model.Model()))
"""

UNPACK = """
import json, sys
from pathlib import Path
from epyclab.labs.engine.packaging import loads
assert not any("project" in p for p in sys.path)
e = loads(Path(sys.argv[1]).read_bytes())
rc = e.set({"x": 7}).run()
import helper
print(json.dumps({"results": rc["results"], "handle": type(helper._libc).__name__, "here": helper.IMPORTED_HERE}))
"""


def test_a_helper_holding_a_ctypes_handle_travels_as_source_and_is_imported_on_the_worker(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "helper.py").write_text(textwrap.dedent(HELPER))
    (project / "model.py").write_text(textwrap.dedent(MODEL))
    blob = tmp_path / "blob"
    subprocess.run([sys.executable, "-c", PACK, str(project), str(blob)], check=True, cwd=tmp_path, timeout=120)
    # The worker's side: another process, elsewhere, that cannot import the project's files.
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-c", UNPACK, str(blob)], cwd=elsewhere, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["results"]["y"] == 7
    assert got["results"]["helper_from"] == str(project / "helper.py")  # its source, run under its own name
    assert got["handle"] == "CDLL" and got["here"] is True


# ---- tracebacks point at the user's code on every transport ------------------------------------------------------

FAILING_SCRIPT = '''
import json, multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
from epyclab import Experiment, LabNotebook, ParallelLab


class Fails(Experiment):
    def do(self, params):
        x = params["x"]
        raise ValueError("no good at %d" % x)  # the line a traceback must show


if __name__ == "__main__":
    how = json.loads(sys.argv[1])
    ex = None
    if how.get("executor"):
        ex = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(how["executor"]))
        lab = ParallelLab(LabNotebook(), executor=ex)
    else:
        lab = ParallelLab(LabNotebook(), cores=2, backend=how["backend"], profile_dir=how.get("profile_dir"))
    lab["x"] = range(4)
    lab.runExperiment(Fails(), progress=False)
    df = lab.dataframe(only_successful=False)
    print(json.dumps({"tracebacks": list(df[Experiment.TRACEBACK]), "ok": list(map(bool, df[Experiment.STATUS])),
                      "chosen": lab.lastBackend}))
    lab.shutdown()
    if ex is not None:
        ex.shutdown()
'''
RAISE_LINE = 'raise ValueError("no good at %d" % x)  # the line a traceback must show'


def _line_of(text: str, line: str) -> int:
    return text.splitlines().index(next(s for s in text.splitlines() if s.strip() == line)) + 1


@pytest.mark.parametrize("how", [
    {"backend": "workers"},
    {"executor": "spawn"},
    {"backend": "ipyparallel"},
], ids=["workers", "spawn-pool", "ipyparallel"])
def test_a_failed_rows_traceback_names_the_scripts_file_and_line_and_shows_it(tmp_path: Path, how: dict) -> None:
    # __main__'s classes travel by value: before, the traceback said <dynamic-code> and showed no line.
    script = tmp_path / "sweep.py"
    script.write_text(FAILING_SCRIPT)
    if how.get("backend") == "ipyparallel":
        how = {**how, "profile_dir": str(tmp_path / "profile")}
    out = subprocess.run([sys.executable, str(script), json.dumps(how)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"] == [False] * 4
    if "backend" in how:
        assert got["chosen"] == how["backend"]
    where = f'File "{script}", line {_line_of(FAILING_SCRIPT, RAISE_LINE)}, in do'
    for tb in got["tracebacks"]:
        assert where in tb and RAISE_LINE in tb and "<dynamic-code>" not in tb, tb


GONE_HELPER = """
def check(x):
    if x > 1:
        raise ArithmeticError("too big: %d" % x)  # the helper's failing line
    return x
"""

GONE_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import gonehelper
from epyclab import Experiment
from epyclab.labs.engine.packaging import dumps


class Checks(Experiment):
    def do(self, params):
        if params["x"] < 0:
            raise KeyError("negative")  # the script's failing line
        return {"y": gonehelper.check(params["x"])}


Path(sys.argv[2]).write_bytes(dumps(Checks()))
"""

GONE_UNPACK = """
import json, sys
from pathlib import Path
from epyclab.labs.engine.packaging import loads
e = loads(Path(sys.argv[1]).read_bytes())
print(json.dumps([e.set({"x": x}).run()["metadata"]["epyc.experiment.traceback"] for x in (-1, 5)]))
"""


def test_the_lines_travel_with_the_code_to_a_worker_that_has_no_file(tmp_path: Path) -> None:
    # A machine without the script or the helper (an ssh or batch engine): both are deleted before the worker loads.
    project = tmp_path / "project"
    project.mkdir()
    helper, script = project / "gonehelper.py", project / "job.py"
    helper.write_text(GONE_HELPER)
    script.write_text(GONE_SCRIPT)
    blob = tmp_path / "blob"
    subprocess.run([sys.executable, str(script), str(project), str(blob)], check=True, cwd=tmp_path, timeout=120)
    helper.unlink()
    script.unlink()
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-c", GONE_UNPACK, str(blob)], cwd=elsewhere, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    in_script, in_helper = json.loads(out.stdout)
    line = 'raise KeyError("negative")  # the script\'s failing line'
    assert f'File "{script}", line {_line_of(GONE_SCRIPT, line)}, in do' in in_script and line in in_script
    line = 'raise ArithmeticError("too big: %d" % x)  # the helper\'s failing line'
    assert f'File "{helper}", line {_line_of(GONE_HELPER, line)}, in check' in in_helper and line in in_helper


CELL = """
from epyclab import Experiment, LabNotebook, ParallelLab

class FailsInACell(Experiment):
    def do(self, params):
        raise ValueError("no good at %d" % params["x"])  # the cell's failing line

lab = ParallelLab(LabNotebook(), cores=2)
lab["x"] = range(4)
lab.runExperiment(FailsInACell(), progress=False)
print(json.dumps({"tracebacks": list(lab.dataframe(only_successful=False)[Experiment.TRACEBACK]),
                  "chosen": lab.lastBackend}))
"""


def test_a_failed_rows_traceback_shows_the_notebook_cells_line(jupyter: Path) -> None:  # noqa: F811
    # In a kernel the default runs on clean workers (the kernel runs threads); the cell's lines are in IPython's
    # linecache only, and travel with the experiment.
    outputs = run_notebook(["import json", CELL], jupyter)
    got = json.loads(outputs[1][0]["text"])
    assert got["chosen"] == "workers"
    line = 'raise ValueError("no good at %d" % params["x"])  # the cell\'s failing line'
    for tb in got["tracebacks"]:
        assert f"line {_line_of(CELL.lstrip(), line)}, in do" in tb and line in tb and "<dynamic-code>" not in tb, tb


LIB_HELPER = """
import ctypes

_lib = ctypes.CDLL({library!r})
"""

LIB_UNPACK = """
import sys
from pathlib import Path
from epyclab.errors import ModuleSourceImportError
from epyclab.labs.engine.packaging import loads
try:
    loads(Path(sys.argv[1]).read_bytes())
except ModuleSourceImportError as exc:
    print(exc)
"""


def test_a_module_whose_library_the_worker_lacks_is_named_with_the_library(tmp_path: Path) -> None:
    # The library is loaded on the client, then gone on the worker's side (a node without it).
    project = tmp_path / "project"
    project.mkdir()
    library = tmp_path / "libs" / "libwork.so"
    library.parent.mkdir()
    (library.parent / "work.c").write_text("int work(int n) { return n + 1; }\n")
    gcc = shutil.which("gcc")
    assert gcc is not None, "this test compiles a shared library: install gcc"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(library), str(library.parent / "work.c")], check=True)
    (project / "helper.py").write_text(LIB_HELPER.format(library=str(library)))
    (project / "model.py").write_text(textwrap.dedent(MODEL).replace("helper.work(params[\"x\"])", "1"))
    blob = tmp_path / "blob"
    subprocess.run([sys.executable, "-c", PACK, str(project), str(blob)], check=True, cwd=tmp_path, timeout=120)
    library.unlink()
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-c", LIB_UNPACK, str(blob)], cwd=elsewhere, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    message = out.stdout
    assert f"module helper ({project / 'helper.py'}, sent here as source) failed" in message
    assert f"OSError: {library}" in message and "available on the workers" in message
    assert "module model" not in message  # the module that failed, not the one importing it
