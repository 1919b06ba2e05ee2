"""What surviving a power cut costs: HDF5 notebook writing and reading, before and after, in one run.

Since issue 19.6 a commit flushes its journal record to the disk (``fdatasync``)
before it returns, and a checkpoint flushes its undo log, the file and the
directory. This script measures, in one run and on the same disk, the code
before that change (``BEFORE``, extracted with ``git archive``) and the code of
this checkout, each in its own processes:

* 100,000 results committed every 1,000, then closed (goal: at most 10% slower);
* 20,000 results committed after every result, and committed once;
* opening the 100,000-row notebook in a new process and building its DataFrame
  (goal: at most 0.3 s), and writing it (goal: at most 2 s).

    python benchmarks/durability.py [--repeat 7] [--quick 3] [--before 57cd1b5] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import epyclab
assert epyclab.__file__.startswith(sys.argv[1]), epyclab.__file__
from epyclab import Experiment, HDF5LabNotebook
if os.environ.get("DURABILITY_UNFLUSHED"):
    # This checkout with its flushes made no-ops: what waiting for the disk costs, apart from the rest.
    from epyclab.notebooks import fileio
    fileio.flush = lambda fd: None
    fileio.flush_dir = lambda path: None

class Walk(Experiment):
    def do(self, params):
        return {"final": params["n"] % 17 - 8, "mean": params["n"] / 3.0, "label": f"walk {params['seed']}"}

tmp, what = sys.argv[2], sys.argv[3]
e = Walk()
rcs = [e.set({"n": i, "seed": i % 10}).run() for i in range(100_000 if what == "big" else 20_000)]

# The notebook imports pandas when first opened (0.3-0.5 s here, varying with the load): not a cost of the
# writing, and noise a third of its size, so imported before the clock starts, and timed on its own.
t0 = time.perf_counter()
import pandas
imports = time.perf_counter() - t0

def write(path, rcs, every):
    t0, c0 = time.perf_counter(), time.process_time()
    nb = HDF5LabNotebook(path, create=True)
    for i, rc in enumerate(rcs, 1):
        nb.addResult(rc)
        if i % every == 0:
            nb.commit()
    nb.close()
    # Wall time, and CPU time (this process's: a loaded machine changes it less than the wall time).
    return [time.perf_counter() - t0, time.process_time() - c0, imports]

if what == "big":
    print(json.dumps(write(os.path.join(tmp, "big.h5"), rcs, 1_000)))
elif what == "each":
    print(json.dumps(write(os.path.join(tmp, "each.h5"), rcs, 1)))
else:
    print(json.dumps(write(os.path.join(tmp, "once.h5"), rcs, 20_000)))
"""

READER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from epyclab import HDF5LabNotebook
import pandas
t0, c0 = time.perf_counter(), time.process_time()
df = HDF5LabNotebook(sys.argv[2], readonly=True).dataframe(only_successful=False)
print(json.dumps({"open": [time.perf_counter() - t0, time.process_time() - c0], "rows": len(df)}))
"""


#: Where the 100,000-row case's extra time went, and what was cut (measured by CPU time, which the machine's
#: load changes little, and by timing each flush; 2026-12-07, load 4-9, so re-take on a quiet machine).
WHERE_IT_GOES = """What the 100,000-row case asks of the disk (strace, 2026-12-07). The code before: no flush at all;
14.3 MB written to the journal, 31.4 MB to the file, 3.4 MB to undo logs. This checkout: 101 `fdatasync` of
the journal (one per commit, and its making), 5 of undo logs, 5 of the file, 1 of the file made, and 13
`fsync` of the directory (two per checkpoint: the undo log's name before the file changes, its removal
before the journal is emptied); the same bytes, except that until now the journal's room for records was
written as zeros (21 MB more, flushed with the next record), now allocated (`posix_fallocate`, 15 calls).
Every flush is one the power-cut test needs: without the record's, a returned commit is lost
(tests/test_power_cut.py::test_the_cut_model_catches_a_commit_that_was_not_flushed); without the undo
log's (or its name's), pages of the file written back early leave a half-changed file and no log; without
the file's, removing the log commits a file not on the disk; without the directory's after the removal,
a cut after the next commit brings the log back, which rolls the file back to before the checkpoint while
the journal no longer holds what it folded. Timed inside the writer (8 rounds, interleaved, load 2.7-3.5,
the disk shared): the flushes 102-114 ms (median), the writes 47 ms with zeros and 32 ms allocated.
Until now the writers' clocks also took in the import of pandas (0.3-0.5 s, the same on both sides),
which made the ratio look smaller and noisier than the writing's own.

Where the extra time of the 100,000-row case goes (2026-12-07): the flushes themselves, on a quiet
moment of this disk, 0.3 ms per commit's record (1-2 ms for the three per checkpoint cycle that also flush
the journal's newly made room) and about 6.5 ms per checkpoint (undo log, file, directory twice): about
0.08 s of waiting in all, which no change can cut without giving up a guarantee (every commit's record and
every checkpoint's file are on the disk before they count). The rest was CPU time, about +0.18 s against
the code before: addResult +0.06 s (the forked-copy check on every row, the row buffer), the commit
+0.04 s, the checkpoint +0.08 s. Cut since: the checkpoint's CRC-32 of the original file (named in each
undo log) is kept in 16 KiB blocks by the writer instead of read whole each time (57 MB read and
CRC'd over the five checkpoints, now 26 MB; a checkpoint of a 1,000,000-row notebook no longer reads the
whole 300 MB file); the bytes a checkpoint appends are kept as one run instead of 4 KiB pages until the
undo log is flushed, and the file layer no longer copies every write when no test records it (the
checkpoints' undo-file work, replayed alone: 0.13-0.15 s CPU, now 0.09 s; the code before: 0.02 s,
when it wrote the file before the log was safe); addResult's forked-copy check asks the OS only when
the at-fork hook says the process changed (-0.03 s). Together: +0.18 s CPU to about +0.12 s. Then
the per-row path (profiled against the code before: 2.17 s, then 2.78 s, now 2.12 s under cProfile):
three calls fewer in addResult (the row buffer appends itself; the notebook and lock checks inline, the
raising checks called only when they raise); at a checkpoint, text cells stored without a pandas round
trip, whole int/bool/str/datetime columns found to have no missing cell in C, and the first checkpoint's
new columns written from their cells instead of a DataFrame. What CPU remains above the code before is
mostly the two metadata columns every row now carries (the host and PID of the process that ran it).
Checkpointing less often does not help: one checkpoint of 100,000 rows costs the CPU of five of 20,000."""


def run(code: str, *args: str, env: dict[str, str] | None = None) -> object:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    s = sorted(xs)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def spread(xs: list[float], unit: str = " s") -> str:
    """``median (min-max)`` of ``xs``."""
    return f"{median(xs):.2f}{unit} ({min(xs):.2f}-{max(xs):.2f})"


def measure(roots: dict[str, str], tmp: str, repeat: int, quick: int) -> dict[str, dict[str, list[float]]]:
    """Each measure ``repeat`` (the 100,000-row writing) or ``quick`` times per side, interleaved.

    Every figure comes from a fresh process. In each round the sides run one after the other, the
    order rotating from round to round, so a drift in the machine's load (or the disk's write-back)
    falls on all alike; the ratio of a round's pair is one sample of after / before. The side
    "unflushed" (this checkout, its flushes made no-ops) only writes the 100,000 rows.
    """
    measures = ("big", "big_cpu", "big_imports", "once", "once_cpu", "open", "open_cpu", "each")
    sides = [*roots, "unflushed"]
    figures: dict[str, dict[str, list[float]]] = {k: {m: [] for m in measures} for k in sides}
    for r in range(repeat):
        for name in sides[r % 3 :] + sides[: r % 3]:
            root = roots.get(name, roots["after"])
            env = {"DURABILITY_UNFLUSHED": "1"} if name == "unflushed" else None
            work = os.path.join(tmp, f"{name}-work")
            os.makedirs(work, exist_ok=True)
            wall, cpu, imports = run(WORKER, root, work, "big", env=env)
            figures[name]["big"].append(wall)
            figures[name]["big_cpu"].append(cpu)
            figures[name]["big_imports"].append(wall + imports)
            if r < quick and name in roots:
                read = run(READER, root, os.path.join(work, "big.h5"))
                assert read["rows"] == 100_000, read
                figures[name]["open"].append(read["open"][0])
                figures[name]["open_cpu"].append(read["open"][1])
                wall, cpu, _ = run(WORKER, root, work, "once")
                figures[name]["once"].append(wall)
                figures[name]["once_cpu"].append(cpu)
    for name, root in roots.items():  # slow (20,000 flushes after): once each
        figures[name]["each"].append(run(WORKER, root, os.path.join(tmp, f"{name}-work"), "each")[0])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds of the 100,000-row writing (each side)")
    parser.add_argument("--quick", type=int, default=3, help="rounds of the smaller measures (each side)")
    parser.add_argument("--before", default="57cd1b5", help="the commit to compare with")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args()

    from _report import Load, table, write_section

    load = Load()
    # On the disk the notebooks of a user live on (not a tmpfs: flushes cost nothing there).
    with tempfile.TemporaryDirectory(dir=REPO) as tmp:
        before = os.path.join(tmp, "before")
        os.mkdir(before)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before, "epyclab"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", before], input=archive, check=True)
        figures = measure({"before": before, "after": str(REPO)}, tmp, args.repeat, min(args.quick, args.repeat))
    footer = load.footer()
    b, a, u = figures["before"], figures["after"], figures["unflushed"]
    # One sample of after / before per round: the two ran back to back, under the same load.
    pairs = {m: [x / y for x, y in zip(a[m], b[m])] for m in ("big", "big_cpu", "big_imports", "once", "once_cpu")}

    def row(label: str, m: str, goal: str) -> list[str]:
        ratio = (f"{median(pairs[m]):.2f}x ({min(pairs[m]):.2f}-{max(pairs[m]):.2f})" if m in pairs
                 else f"{median(a[m]) / median(b[m]):.2f}x")
        return [label, spread(b[m]), spread(a[m]), ratio, goal]

    rows = [
        row("write 100,000 results, commit every 1,000, close: wall", "big", "<= 1.10x; after <= 2 s"),
        row("... CPU time of the writing process", "big_cpu", "(less changed by the load than the wall time)"),
        row("... wall, with the notebook's first import of pandas (a fresh process's first notebook)", "big_imports",
            "(how the goal was first measured)"),
        ["... wall, this checkout with its flushes made no-ops", spread(b["big"]), spread(u["big"]),
         f"{median([x / y for x, y in zip(u['big'], b['big'])]):.2f}x; flushed / unflushed "
         f"{median([x / y for x, y in zip(a['big'], u['big'])]):.2f}x "
         f"({min(x / y for x, y in zip(a['big'], u['big'])):.2f}-{max(x / y for x, y in zip(a['big'], u['big'])):.2f})",
         "(what the flushes alone cost, apart from the other changes since before)"],
        ["... CPU time, flushes made no-ops", spread(b["big_cpu"]), spread(u["big_cpu"]),
         f"{median([x / y for x, y in zip(u['big_cpu'], b['big_cpu'])]):.2f}x", ""],
        row("20,000 results, commit once: wall", "once", ""),
        row("... CPU time", "once_cpu", ""),
        row("open the 100,000-row notebook in a new process + dataframe(): wall", "open", "after <= 0.3 s"),
        row("20,000 results, commit after each: wall (one run)", "each",
            "none: one flush per commit is the point (issue 19.6)"),
    ]
    text = table(["measure", f"before ({args.before})", "after (this checkout)", "after / before", "goal"], rows)
    print(text)
    print(footer)
    if not args.no_write:
        write_section(
            "durability",
            "## What a power-cut-safe commit costs (`benchmarks/durability.py`)\n\n"
            "The code before flushes were added (`--before`, extracted with `git archive`) against this "
            "checkout, on the same ext4 disk, every figure from a fresh process. They alternate: in each "
            f"round one run of each, the order rotating ({args.repeat} rounds of the 100,000-row writing, "
            f"{min(args.quick, args.repeat)} of the others, commit-after-each once); a third side, this "
            "checkout with its flushes made no-ops, separates what waiting for the disk costs from the "
            "other changes made since `--before`. "
            "Each cell is the median (and in brackets the fastest and slowest run); after / before is the "
            "median of the rounds' own ratios (and their range), each round's pair having run back to back "
            "under the same load. The writers import pandas (which a notebook imports when first opened: "
            "0.3-0.5 s, varying with the load) before their clock starts; the third row adds it back. "
            "The reader is a new process; its time excludes imports. Flushes cost what "
            "the disk makes them cost: on a loaded machine (see the load average) re-take the figures on a "
            "quiet one before relying on them.\n\n"
            f"{text}\n\nA commit after each result costs one flush more than before: "
            f"{(a['each'][0] - b['each'][0]) / 20_000 * 1e3:.2f} ms per commit here.\n\n{WHERE_IT_GOES}\n\n{footer}",
        )


if __name__ == "__main__":
    main()
