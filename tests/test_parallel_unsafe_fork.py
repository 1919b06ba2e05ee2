"""The default never hangs on the user's process state, and code travels as code.

A script calls a function built here with ``gcc -fopenmp`` (GNU OpenMP, not
fork-safe) before its sweep, through a helper module beside the script that
holds the shared library in a ctypes handle, and its experiment's ``do()``
calls it again. Every local transport that does not fork the user's process
runs the sweep to the end: the default, clean workers, the local ipyparallel
cluster (no forked copy while its engines register) and a process pool given
as an executor. The helper module is imported on the workers (its ctypes
handle made there), never pickled.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from epyclab.labs.transports.cleanworkers import fork_safe, openmp_loaded, thread_count

OMP_C = """
double omp_work(int n) {
    double s = 0;
    #pragma omp parallel for reduction(+:s)
    for (int i = 0; i < n; i++) s += i * 0.5;
    return s;
}
"""

HELPER = """
import ctypes, os

# A compiled library, loaded when the module is imported: a ctypes handle cannot be pickled.
_lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), "libompwork.so"))
_lib.omp_work.restype = ctypes.c_double
_lib.omp_work.argtypes = [ctypes.c_int]


def work(n):
    return _lib.omp_work(n)
"""

SCRIPT = """
import json, os, sys
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

import helper
from epyclab import Experiment, ParallelLab
from epyclab.labs.transports.cleanworkers import fork_safe, openmp_loaded


class UsesOpenMP(Experiment):
    def do(self, params):
        return {"y": helper.work(1000 * (params["x"] + 1)), "pid": os.getpid()}


if __name__ == "__main__":
    how = json.loads(sys.argv[1])
    before = helper.work(100000)  # OpenMP's threads now exist in this process
    assert openmp_loaded() and not fork_safe()
    ex = None
    if how.get("executor"):
        ex = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(how["executor"]))
        lab = ParallelLab(cores=2, executor=ex)
    else:
        lab = ParallelLab(cores=2, backend=how.get("backend"), profile_dir=how.get("profile_dir"))
    lab["x"] = range(8)
    lab.runExperiment(UsesOpenMP(), progress=False)
    df = lab.dataframe()
    print(json.dumps({"rows": len(df), "ok": bool((df["y"] == [helper.work(1000 * (x + 1)) for x in df["x"]]).all()),
                      "pids": sorted(set(int(p) for p in df["pid"])), "me": os.getpid(),
                      "chosen": lab.lastBackend}))
    lab.shutdown()
    if ex is not None:
        ex.shutdown()
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc is not None, "these tests compile an OpenMP library: install gcc"
    where = tmp_path_factory.mktemp("omp")
    (where / "omp.c").write_text(OMP_C)
    subprocess.run([gcc, "-shared", "-fPIC", "-fopenmp", "-O1", "-o", str(where / "libompwork.so"),
                    str(where / "omp.c")], check=True)
    (where / "helper.py").write_text(HELPER)
    (where / "sweep.py").write_text(textwrap.dedent(SCRIPT))
    return where


def run(project: Path, how: dict[str, str]) -> dict[str, object]:
    proc = subprocess.Popen([sys.executable, "sweep.py", json.dumps(how)], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        for child in children:
            child.kill()
        proc.communicate()
        raise AssertionError(f"the sweep {how} hung (killed after 180 s)") from None
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("how", [
    {},
    {"backend": "workers"},
    {"backend": "ipyparallel"},
    {"executor": "spawn"},
    {"executor": "forkserver"},
], ids=["default", "workers", "ipyparallel", "spawn-pool", "forkserver-pool"])
def test_a_script_that_used_openmp_runs_its_sweep_on_every_safe_transport(
    project: Path, how: dict[str, str], tmp_path: Path
) -> None:
    if how.get("backend") == "ipyparallel":
        how = {**how, "profile_dir": str(tmp_path / "profile")}
    result = run(project, how)
    assert result["rows"] == 8 and result["ok"] is True
    assert result["me"] not in result["pids"]  # type: ignore[operator]
    if not how:
        assert result["chosen"] == "workers"  # the default saw OpenMP in the process and did not fork


def test_this_process_is_judged_by_its_threads_and_its_openmp() -> None:
    # The judgement is made from /proc: a thread started here makes a fork unsafe.
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert thread_count() >= 2 and not fork_safe()
    finally:
        stop.set()
        t.join()
    assert isinstance(openmp_loaded(), bool)


def test_a_fresh_process_with_numpy_may_fork_and_one_with_a_thread_may_not() -> None:
    # numpy's OpenBLAS starts a pool of its own at import, which is safe across a fork (it quiesces it with
    # pthread_atfork): a script that imported numpy still gets forked copies; one that started a thread does not.
    code = ("import threading, time, numpy\n"
            "from epyclab.labs.transports.cleanworkers import fork_safe\n"
            "print(fork_safe())\n"
            "t = threading.Thread(target=time.sleep, args=(2,)); t.start()\n"
            "print(fork_safe())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_a_second_sweep_in_the_same_process_forks_as_the_first_did() -> None:
    # Forking shuts numpy's OpenBLAS pool down (pthread_atfork) until its next parallel call: a pool that no
    # longer runs is not counted, so the second sweep (a Jupyter user's next cell) forks too, instead of starting
    # clean workers; a thread started after it still makes the third one use clean workers.
    code = ("import threading, numpy\n"
            "from epyclab import Experiment, ParallelLab\n"
            "class Twice(Experiment):\n"
            "    def do(self, params):\n"
            "        return {'y': 2 * params['x']}\n"
            "chosen = []\n"
            "def sweep():\n"
            "    lab = ParallelLab(cores=2)\n"
            "    lab['x'] = range(6)\n"
            "    lab.runExperiment(Twice(), progress=False)\n"
            "    assert sorted(lab.dataframe()['y']) == [0, 2, 4, 6, 8, 10]\n"
            "    chosen.append(lab.lastBackend)\n"
            "    lab.shutdown()\n"
            "sweep(); sweep()\n"
            "stop = threading.Event(); t = threading.Thread(target=stop.wait); t.start()\n"
            "sweep()\n"
            "stop.set(); t.join()\n"
            "print(' '.join(chosen))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["fork", "fork", "workers"]
