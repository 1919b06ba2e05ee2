"""Code travels with the experiment: an experiment from the user's own files runs on engines that never saw them.

The user's module and package are written to a temporary directory, imported
by a script, and deleted before anything is submitted, so no engine can
import them from any path: they reach the engines inside the pickled
experiment or not at all. Installed modules (numpy here) go by reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy
import pytest
from clusterhub import HubProcesses, running_hub

from epyclab.labs.engine.packaging import isUsersOwn, usersModules

MODEL = '''
import numpy
from mypkg.helpers import scale

from epyclab import Experiment

OFFSET = 7


class Model(Experiment):
    """y = scale(x) + OFFSET, computed where it runs."""

    def do(self, params):
        import os
        return {"y": int(scale(params["x"]) + OFFSET), "pid": os.getpid(),
                "numpy": numpy.__version__}
'''

PKG_INIT = "FACTOR = 3\n"
PKG_HELPERS = '''
from mypkg import FACTOR


def scale(x):
    return FACTOR * x
'''


def write_users_code(directory: Path) -> None:
    (directory / "mypkg").mkdir(parents=True)
    (directory / "mymodel.py").write_text(MODEL)
    (directory / "mypkg" / "__init__.py").write_text(PKG_INIT)
    (directory / "mypkg" / "helpers.py").write_text(PKG_HELPERS)


def run_script(tmp_path: Path, lab: str) -> list[dict]:
    """Import the user's code from a directory, delete the directory, run a sweep on ``lab``; return the rows."""
    code = tmp_path / "usercode"
    write_users_code(code)
    script = tmp_path / "sweep.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, shutil, sys
        sys.path.insert(0, {str(code)!r})
        import mymodel
        # The files are gone before anything is submitted: engines cannot import them from anywhere.
        shutil.rmtree({str(code)!r})
        sys.path.remove({str(code)!r})
        from epyclab import ClusterLab, LabNotebook, ParallelLab

        nb = LabNotebook()
        lab = {lab}
        lab["x"] = range(12)
        lab.runExperiment(mymodel.Model())
        if isinstance(lab, ClusterLab):
            assert lab.wait(timeout=300, progress=False)
        df = nb.dataframe(only_successful=False)
        print(json.dumps({{"rows": df[["x", "y", "pid", "epyc.experiment.status"]].to_dict("records"),
                           "me": os.getpid()}}))
        lab.close()
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    rows = out["rows"]
    assert all(r["pid"] != out["me"] for r in rows)  # run elsewhere, on engines
    return rows


def assert_all_ran(rows: list[dict]) -> None:
    assert sorted(r["x"] for r in rows) == list(range(12))
    assert all(r["epyc.experiment.status"] for r in rows), rows
    assert all(r["y"] == 3 * r["x"] + 7 for r in rows)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcesses]:
    with running_hub(tmp_path / "profile") as procs:
        yield procs


def test_a_cluster_lab_runs_an_experiment_whose_files_the_engines_never_saw(hub: HubProcesses,
                                                                           tmp_path: Path) -> None:
    rows = run_script(tmp_path, f"ClusterLab(nb, profile_dir={str(hub.profile_dir)!r})")
    assert_all_ran(rows)
    assert len({r["pid"] for r in rows}) >= 1


@pytest.mark.parametrize("backend", ["fork", "ipyparallel"])
def test_a_parallel_lab_runs_an_experiment_whose_files_the_engines_never_saw(tmp_path: Path, backend: str) -> None:
    # The fork backend's copies unpack the same bytes an engine would get, so they too run what was packed.
    assert_all_ran(run_script(tmp_path, f"ParallelLab(nb, cores=2, backend={backend!r})"))


def test_users_own_modules_are_told_from_installed_ones(tmp_path: Path) -> None:
    write_users_code(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        import mymodel  # type: ignore[import-not-found]
        import mypkg.helpers  # type: ignore[import-not-found]

        assert isUsersOwn(mymodel) and isUsersOwn(mypkg) and isUsersOwn(mypkg.helpers)
        own = {m.__name__ for m in usersModules()}
        assert {"mymodel", "mypkg", "mypkg.helpers"} <= own
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("mymodel", "mypkg.helpers", "mypkg"):
            sys.modules.pop(name, None)
    import epyclab.experiment

    assert not isUsersOwn(numpy) and not isUsersOwn(json) and not isUsersOwn(pytest)
    assert not isUsersOwn(epyclab.experiment)  # every engine has epyclab, even in development mode
    assert not isUsersOwn(sys)  # built in
