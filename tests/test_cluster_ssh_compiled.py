"""A helper module holding a compiled library travels as source to ssh workers that cannot import it.

Issue 20's case on real remote engines: the user's helper module, beside the
experiment's module in a directory the workers cannot read (the tests' own
temporary directory, private to root), loads a shared library compiled here
with gcc at import (a ctypes handle, which cannot be pickled) and ``do()``
calls it. The engines run as two other users over ssh (tests/sshd.py), so
they cannot import either module from the client's files: the modules'
source travels with the experiment and is imported there, and the library is
loaded there. Where the library itself is not readable by the workers, the
error names the module and the library, and says what to do.

The library that works lies in a world-readable directory, as on a cluster's
shared file system; the one that fails lies in the private one.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sshd
from test_cluster_ssh import cluster, wheelhouse, worker_python, workers  # noqa: F401 (fixtures)

from epyclab.clustersetup.wheelhouse import Wheelhouse
from epyclab.errors import ExperimentSerializationError
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.notebooks.labnotebook import LabNotebook

pytestmark = pytest.mark.skipif(sshd.why_not() is not None, reason=sshd.why_not() or "")

LIBRARY_C = """
int sshwork(int n) { return 3 * n + 1; }
"""

# {library} is the library's absolute path, as a user's module names it (or finds it beside itself).
HELPER = """
import ctypes
import os

_lib = ctypes.CDLL({library!r})  # at import: a handle holding a pointer, which cannot be pickled
_lib.sshwork.argtypes = [ctypes.c_int]
_lib.sshwork.restype = ctypes.c_int
LOADED_IN = os.getpid()


def work(n):
    if n < 0:
        raise ValueError("no work below zero: %d" % n)  # the helper's failing line
    return _lib.sshwork(n)
"""

MODEL = """
import getpass
import os

import {helper}
from epyclab.experiment import Experiment


class UsesLibrary(Experiment):
    def do(self, params):
        return {{"y": {helper}.work(params["x"]), "user": getpass.getuser(), "loaded_in": {helper}.LOADED_IN,
                "helper_file": {helper}.__file__, "readable_here": os.access({helper}.__file__, os.R_OK)}}
"""


@pytest.fixture(scope="module")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The library compiled twice: in a directory every user reads (a shared file system), and in a private one."""
    gcc = shutil.which("gcc")
    assert gcc is not None, "this test compiles a shared library: install gcc"
    private = tmp_path_factory.mktemp("private-lib")
    (private / "work.c").write_text(LIBRARY_C)
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(private / "libsshwork.so"), str(private / "work.c")],
                   check=True)
    shared = Path(tempfile.mkdtemp(prefix="epyclab-shared-lib-"))
    try:
        shared.chmod(0o755)
        shutil.copy(private / "libsshwork.so", shared / "libsshwork.so")
        (shared / "libsshwork.so").chmod(0o755)
        yield shared / "libsshwork.so", private / "libsshwork.so"
    finally:
        shutil.rmtree(shared)


def user_code(directory: Path, name: str, library: Path) -> Experiment:
    """The user's two modules (``{name}model`` imports ``{name}helper``) written in ``directory``; an experiment."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}helper.py").write_text(HELPER.format(library=str(library)))
    (directory / f"{name}model.py").write_text(MODEL.format(helper=f"{name}helper"))
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(f"{name}model").UsesLibrary()  # type: ignore[no-any-return]
    finally:
        sys.path.remove(str(directory))


def test_a_helper_holding_a_compiled_library_is_imported_on_ssh_workers_that_lack_it(
    ipdir: Path, tmp_path: Path, workers: sshd.SshWorkers, wheelhouse: Wheelhouse, worker_python: str,  # noqa: F811
    libraries: tuple[Path, Path],
) -> None:
    shared, private = libraries
    w1, w2 = workers.aliases
    u1, u2 = workers.users
    assert cluster(ipdir, "-q", "init", "compiled").exit_code == 0
    args = ["--workers", f"{w1},{w2}", "--ssh-option", workers.ssh_option, "--python", worker_python]
    synced = cluster(ipdir, "-q", "sync", "compiled", *args, "--wheelhouse", str(wheelhouse.directory),
                     "--no-rebuild")
    assert synced.exit_code == 0, synced.output
    started = cluster(ipdir, "-q", "start", "compiled", "--engines-per-worker", "1")
    assert started.exit_code == 0, started.output
    try:
        # Every point succeeds: the modules came as source, and the library was loaded by each engine itself.
        code = tmp_path / "usercode"  # under the tests' private temporary directory: no worker can read it
        lab = ClusterLab(LabNotebook(), profile="compiled", ipython_dir=str(ipdir), chunkSize=1)
        lab["x"] = range(10)
        lab.runExperiment(user_code(code, "sshlib", shared), progress=False)
        assert lab.wait(timeout=300, progress=False)
        df = lab.dataframe(only_successful=False)
        lab.close()
        assert df[Experiment.STATUS].all(), list(df[Experiment.EXCEPTION])
        assert sorted(df["x"]) == list(range(10))
        assert list(df.sort_values("x")["y"]) == [3 * x + 1 for x in range(10)]
        assert set(df["user"]) <= {u1, u2}
        assert (df["loaded_in"] == df[Experiment.PID]).all()  # imported (and the library loaded) in the engine
        assert set(df["helper_file"]) == {str(code / "sshlibhelper.py")}  # its source, under its own name
        assert not df["readable_here"].any()  # ...though the engine could not read that file

        # A point failing in the helper: its traceback names the helper's file and line, and shows the line.
        lab = ClusterLab(LabNotebook(), profile="compiled", ipython_dir=str(ipdir), chunkSize=1)
        lab["x"] = [-1]
        lab.runExperiment(user_code(code, "sshtb", shared), progress=False)
        assert lab.wait(timeout=300, progress=False)
        (traceback,) = lab.dataframe(only_successful=False)[Experiment.TRACEBACK]
        lab.close()
        line = 'raise ValueError("no work below zero: %d" % n)  # the helper\'s failing line'
        number = HELPER.splitlines().index("        " + line) + 1  # the file starts with HELPER's first line
        assert f'File "{code / "sshtbhelper.py"}", line {number}, in work' in traceback and line in traceback, traceback

        # The library where the workers cannot read it: the error names the module and the library.
        lab = ClusterLab(LabNotebook(), profile="compiled", ipython_dir=str(ipdir), chunkSize=1)
        lab["x"] = range(4)
        try:
            lab.runExperiment(user_code(code, "privlib", private), progress=False)
            lab.wait(timeout=300, progress=False)
            errors = list(lab.dataframe(only_successful=False)[Experiment.EXCEPTION])
        except ExperimentSerializationError as exc:
            errors = [str(exc)]
        finally:
            lab.close()
        assert errors
        for error in errors:
            assert "module privlibhelper" in error and str(code / "privlibhelper.py") in error, error
            assert str(private) in error and "OSError" in error, error
            assert "available on the workers" in error and "module privlibmodel" not in error, error
    finally:
        stopped = cluster(ipdir, "-q", "stop", "compiled")
        assert stopped.exit_code == 0, stopped.output
