"""A notebook writer for the crash tests: checks what it finds, then adds and commits rows until killed.

Run as ``python crash_writer.py <class> <path> <rows per commit>``. It prints
one line per step, flushed, so the test can kill it at a chosen moment:

    checking            about to open the notebook read-only (and recover it)
    check <n> <ok>      it holds n rows, numbered 0..n-1 (ok=1) or not (ok=0)
    opening             about to open it for writing (recovery, journal replay)
    ready <n>           open for writing, holding n rows
    commit-start        a commit begins
    checkpoint-start    a checkpoint (the in-place change of the HDF5 file) begins
    checkpoint-end
    committed <n>       the commit returned: n rows are committed
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

import h5py
import numpy as np

import epyclab
from epyclab.experiment import Experiment


def say(*words: object) -> None:
    print(*words, flush=True)


def results(i: int) -> dict:
    now = datetime.now()
    return {
        Experiment.PARAMETERS: {"i": i, "group": i % 7},
        Experiment.METADATA: {
            Experiment.STATUS: i % 11 != 0,
            Experiment.START_TIME: now,
            Experiment.END_TIME: now,
            Experiment.ELAPSED_TIME: 0.001,
            Experiment.EXCEPTION: None if i % 11 else ValueError(f"row {i}"),
            Experiment.TRACEBACK: "",
        },
        Experiment.RESULTS: {"x": i * 0.5, "label": f"row {i} " + "é" * (i % 50), "v": np.arange(i % 4)}
        if i % 11
        else {},
    }


def main() -> None:
    cls = getattr(epyclab, sys.argv[1])
    path, batch = sys.argv[2], int(sys.argv[3])

    def traced(method, name):
        def wrapper(self, *args, **kwargs):
            say(f"{name}-start")
            out = method(self, *args, **kwargs)
            say(f"{name}-end")
            return out

        return wrapper

    if hasattr(cls, "_checkpoint"):
        cls._checkpoint = traced(cls._checkpoint, "checkpoint")

    if os.path.exists(path):
        say("checking")
        reader = cls(path, readonly=True)
        n = reader.numberOfResults()
        ok = reader.dataframe(only_successful=False)["i"].tolist() == list(range(n)) if n else True
        reader.close()
        if cls is epyclab.HDF5LabNotebook:
            with h5py.File(path, "r"):
                pass  # plain h5py opens it too
        say("check", n, int(ok))
    say("opening")
    nb = cls(path)
    nb.CheckpointRows = 2 * batch
    n = nb.numberOfResults()
    say("ready", n)
    while True:
        for j in range(batch):
            nb.addResult(results(n + j))
        say("commit-start")
        nb.commit()
        n += batch
        say("committed", n)


if __name__ == "__main__":
    main()
