"""Byte flips in real notebook files (issue 19.2): every opening of a damaged ``.h5`` or ``.json`` either
succeeds with the result sets and rows that were written, or raises NotebookFormatError; never a crash, a
hang or unbounded memory.

A fixed seed gives 100 flips per format (50 for each of epyc 1.7.2's files, tests/fixtures): one byte
XORed with a random non-zero value, anywhere in the file. Each damaged file is opened read-only with every
DataFrame built, then for writing, 25 files per process. Each process runs under a memory limit (1 GiB past
what it uses once everything is imported) and a time limit, so a reader that believes a damaged count fails
with MemoryError, a hang with a timeout, a crash with a signal. (The one hang found so far, seed 24: HDF5
itself looping on a damaged global heap collection, byte 20675 XOR 35; tests/test_heapcheck.py damages
collections field by field, and keeps that flip as a regression test.)

What a flip inside the bytes of a value or a text does is not checked: neither HDF5 (without a checksum
filter) nor JSON can tell a changed value from a written one, so such an opening succeeds with that value
(or, in JSON, that tag) changed.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from epyclab import HDF5LabNotebook, JSONLabNotebook
from epyclab.experiment import Experiment

FLIPS = 100
PER_PROCESS = 25

OPEN_EACH = r"""
import json, os, resource, sys, traceback
# pandas keeps text in pyarrow when it is installed; pyarrow's own allocator reserves address space
# that the memory limit below would refuse: the system allocator counts only what is used.
os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
import epyclab
from epyclab import NotebookFormatError, NotebookVersionException
import pandas, h5py
cls = getattr(epyclab, sys.argv[1])
with open("/proc/self/status") as f:
    size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, size + 2**30))
for path in sys.argv[2:]:
    print(json.dumps(["start", path]), flush=True)
    out = []
    for kwargs in ({"readonly": True}, {}):
        try:
            nb = cls(path, **kwargs)
            counts = [[t, len(nb.resultSet(t).dataframe())] for t in nb.resultSets()]
            nb.close()
            out.append(["ok", counts])
        except (NotebookFormatError, NotebookVersionException) as e:
            # (A version number damaged into another reads as that version: NotebookVersionException.)
            out.append([type(e).__name__, str(e)])
        except BaseException:
            out.append(["other", traceback.format_exc()])
    print(json.dumps(["done", path, out]), flush=True)
"""


def _row(i: int) -> dict:
    return {Experiment.PARAMETERS: {"i": i, "name": f"p{i}"},
            Experiment.RESULTS: {"y": i / 7, "a": np.arange(i % 4 + 1.0), "m": None if i % 3 else i,
                                 "t": datetime(2024, 1, 1 + i % 28), "l": [i, i + 1], "c": complex(i, -i)},
            Experiment.METADATA: {Experiment.STATUS: i % 5 != 0}}


def _written(cls: type, path: Path) -> list[list]:
    with cls(path, create=True, description="to be damaged") as nb:
        for i in range(12):
            nb.addResult(_row(i))
        nb.current()["note"] = {"k": [1, 2.5]}
        nb.addResultSet("second")
        for i in range(12, 20):
            nb.addResult(_row(i))
        nb.addPendingResult({"i": 99}, "job-99")
    return [[nb.DEFAULT_RESULTSET, 12], ["second", 8]]


FIXTURES = Path(__file__).parent / "fixtures"


def _epyc(cls: type, path: Path) -> list[list]:
    """An epyc 1.7.2 notebook (tests/fixtures), and what it holds."""
    shutil.copyfile(FIXTURES / f"epyc-1.7.2-notebook{path.suffix}", path)
    nb = cls(path, readonly=True)
    return [[t, len(nb.resultSet(t).dataframe())] for t in nb.resultSets()]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("cls", "make", "flips"), [
    (HDF5LabNotebook, _written, FLIPS), (JSONLabNotebook, _written, FLIPS),
    (HDF5LabNotebook, _epyc, FLIPS // 2), (JSONLabNotebook, _epyc, FLIPS // 2),
], ids=["hdf5", "json", "epyc-hdf5", "epyc-json"])
def test_every_opening_of_a_flipped_notebook_succeeds_or_says_it_is_damaged(cls: type, make: Callable, flips: int,
                                                                            tmp_path: Path) -> None:
    original = tmp_path / f"original.{'h5' if cls is HDF5LabNotebook else 'json'}"
    expected = make(cls, original)
    data = original.read_bytes()
    rng = random.Random(19)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    paths, flipped = [], {}
    for n in range(flips):
        at, by = rng.randrange(len(data)), rng.randrange(1, 256)
        copy = bytearray(data)
        copy[at] ^= by
        path = damaged / f"flip{n:03d}-at{at}{original.suffix}"
        path.write_bytes(bytes(copy))
        paths.append(str(path))
        flipped[str(path)] = (at, by)
    outcomes: dict[str, list] = {}
    for start in range(0, flips, PER_PROCESS):
        batch = paths[start:start + PER_PROCESS]
        proc = subprocess.Popen([sys.executable, "-c", OPEN_EACH, cls.__name__, *batch], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        finally:
            if proc.poll() is None:  # the test was stopped (its time limit, ^C): never leave a hung child
                proc.kill()
                proc.wait()
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("[")]
        started = [line[1] for line in lines if line[0] == "start"]
        last = started[-1] if started else batch[0]
        assert proc.returncode == 0, (
            f"the process opening {last} (flip {flipped[last]}) ended with {proc.returncode} (a negative code is "
            f"a signal; -9 after the time limit: a hang): {err[-2000:]}"
        )
        outcomes.update({line[1]: line[2] for line in lines if line[0] == "done"})
    assert sorted(outcomes) == sorted(paths)
    tally = {"ok": 0, "NotebookFormatError": 0, "NotebookVersionException": 0}
    for path, results in outcomes.items():
        for outcome, what in results:
            assert outcome in tally, f"{path} (byte {flipped[path][0]} XOR {flipped[path][1]}): {what}"
            tally[outcome] += 1
            if outcome == "ok":
                # The result sets that were written, each with the rows that were written. (A tag in a JSON
                # file or, in an epyc file, a group's name is text like any other: a flip in it reads as
                # another tag. epyclab's HDF5 files keep a tag twice, as an attribute and a name.)
                tags = cls is HDF5LabNotebook and make is _written
                got = what if tags else [n for _, n in what]
                want = expected if tags else [n for _, n in expected]
                assert got == want, f"{path} (byte {flipped[path][0]} XOR {flipped[path][1]}) opened as {what}"
            else:
                assert what.startswith(path) or path in what, what
    # Both outcomes occur: the flips reach what is checked, and a flip in unused bytes costs nothing.
    assert tally["ok"] and tally["NotebookFormatError"], tally
