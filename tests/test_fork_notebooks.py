"""A forked child never acts on its parent's notebooks (issue 19.3).

With each kind of fork (ParallelLab's fork backend, ``multiprocessing`` with the fork context, ``os.fork``
in ``do()``), in a real script: the parent holds ``aux`` open for writing with committed rows (in its
journal). In the child, opening it for writing is refused as for any other process (``NotebookInUseError``
naming the parent), reading it works, the inherited object refuses changes, and closing it, dropping it or
exiting (exit-time folds included) writes, folds, moves and removes nothing. Back in the parent: the journal
and the lock file are where they were, every row is kept, and ``aux.close()`` works.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r'''
import gc, json, multiprocessing, os, sys, time
import epyclab
from epyclab import Experiment, Lab, LabNotebook, NotebookInUseError, ParallelLab

# A module of its own (imported by the script), so that its experiments travel by reference, not by value.
kind, cls_name, path, report = sys.argv[1:5]
cls = getattr(epyclab, cls_name)
journal, lock = path + ".journal", path + ".lock"


def row(i):
    return {Experiment.PARAMETERS: {"i": i}, Experiment.RESULTS: {"y": 2 * i},
            Experiment.METADATA: {Experiment.STATUS: True}}


def files():
    """What is beside the notebook, and the journal's bytes (the parent's commits not yet folded)."""
    data = open(journal, "rb").read().hex() if os.path.exists(journal) else None
    return {"lock": os.path.exists(lock), "journal": data, "size": os.path.getsize(path)}


aux = cls(path, create=True)
for i in range(3):
    aux.addResult(row(i))
aux.commit()
before = files()


def attempts(inherited=True):
    """What a child of each kind tries on the parent's notebook."""
    out = {"pid": os.getpid()}
    try:
        cls(path).close()
        out["open"] = "opened"
    except NotebookInUseError as e:
        out["open"] = str(e)
    out["readonly_rows"] = cls(path, readonly=True).numberOfResults()
    if inherited:
        try:
            aux.addResult(row(100))
            out["add"] = "added"
        except NotebookInUseError as e:
            out["add"] = str(e)
        try:
            aux.commit()
            out["commit"] = "committed"
        except NotebookInUseError as e:
            out["commit"] = str(e)
    return out


children = []


class Touch(Experiment):
    def do(self, params):
        # Through sys.modules: the experiment travels by value, and must not take the notebook with it.
        here = sys.modules["forkcase"]
        return {"seen": json.dumps(here.attempts(inherited=params["x"] == 0))}


class ForkInDo(Experiment):
    def do(self, params):
        pid = os.fork()
        if pid == 0:
            out = attempts()
            with open(report + ".child", "w") as f:
                json.dump(out, f)
            sys.exit(0)  # through the lab's code in the copy, then the exit hooks (folds), as a user's would
        os.waitpid(pid, 0)
        return {"child": pid}


def mp_child(ready, go):
    out = attempts()
    aux.close()  # in a child: lets go of its copy, writes nothing
    out["closed"] = not aux.isOpen()
    with open(report + ".child", "w") as f:
        json.dump(out, f)
    ready.set()
    go.wait(60)  # still alive while the parent closes and opens its notebook again


def main():
    result = {"pid": os.getpid(), "before": before}
    if kind == "fork-backend":
        lab = ParallelLab(LabNotebook(), cores=2, backend="fork")
        lab["x"] = [0, 1, 2, 3]
        lab.runExperiment(Touch())
        df = lab.dataframe()
        result["children"] = [json.loads(s) for s in df["seen"]]
        result["ok"] = bool(df[Experiment.STATUS].all())
    elif kind == "multiprocessing":
        ctx = multiprocessing.get_context("fork")
        ready, go = ctx.Event(), ctx.Event()
        p = ctx.Process(target=mp_child, args=(ready, go))
        p.start()
        assert ready.wait(60)
        result["children"] = [json.load(open(report + ".child"))]
        result["while_child_lives"] = files()
        # The child still runs, holding copies of the parent's descriptors: they must not keep the file locked.
        aux.close()
        again = cls(path)
        again.addResult(row(7))
        again.close()
        aux.open()
        go.set()
        p.join(60)
        result["exitcode"] = p.exitcode
    else:
        lab = Lab(LabNotebook())
        lab["x"] = [0]
        lab.runExperiment(ForkInDo())
        result["children"] = [json.load(open(report + ".child"))]
        result["ok"] = bool(lab.dataframe()[Experiment.STATUS].all())
    gc.collect()
    result["after"] = files()
    aux.addResult(row(50))
    aux.close()
    result["rows"] = sorted(int(i) for i in cls(path, readonly=True).dataframe()["i"])
    result["left"] = sorted(os.listdir(os.path.dirname(path)))
    with open(report, "w") as f:
        json.dump(result, f)
'''


@pytest.mark.timeout(240)
@pytest.mark.parametrize("cls", ["HDF5LabNotebook", "JSONLabNotebook"])
@pytest.mark.parametrize("kind", ["fork-backend", "multiprocessing", "os.fork"])
def test_a_forked_child_never_acts_on_the_parents_notebook(kind: str, cls: str, tmp_path: Path) -> None:
    (tmp_path / "nb").mkdir()
    path = tmp_path / "nb" / ("aux.h5" if cls == "HDF5LabNotebook" else "aux.json")
    report = tmp_path / "report.json"
    (tmp_path / "forkcase.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "-c", "import forkcase; forkcase.main()", kind, cls, str(path),
                           str(report)], capture_output=True, text=True, timeout=200, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(report.read_text())
    assert result["children"]
    for child in result["children"]:
        assert child["pid"] != result["pid"]
        # Refused as for any other process, naming the parent that holds it.
        assert child["open"].startswith(f"notebook {path} is open for writing by process {result['pid']}"), child
        assert child["readonly_rows"] == 3
        if "add" in child:
            for what in ("add", "commit"):
                assert child[what].startswith(f"notebook {path} is open for writing in process "
                                              f"{result['pid']}, and this process ({child['pid']}) is a copy "
                                              f"of it made by fork"), child
    if kind == "multiprocessing":
        assert result["children"][0]["closed"]
        assert result["while_child_lives"] == result["before"]
        assert result["exitcode"] == 0
    else:
        assert result["ok"]
    # Nothing the children did (or their exit) committed, folded, moved or removed the parent's files.
    if kind != "multiprocessing":  # there the parent itself closed (folded) and opened again meanwhile
        assert result["after"] == result["before"]
        assert result["before"]["lock"]
        if cls == "HDF5LabNotebook":
            assert result["before"]["journal"] is not None
    # ...and the parent's rows are all there, with the row it added after.
    assert result["rows"] == ([0, 1, 2, 7, 50] if kind == "multiprocessing" else [0, 1, 2, 50])
    assert result["left"] == [path.name]
