"""How long a user waits for `import epyclab` and `epyclab show`, each in a fresh process.

Measures, in one run, the wall time of new processes (best and median of
``--repeat``, default 5) and their CPU time (user + system, best):

* ``python -c pass`` (the interpreter alone, for reference) and
  ``python -c "import epyclab"``;
* ``python -c "import epyclab.cli"`` (the command's imports, nothing run);
* ``epyclab show`` on a small HDF5 notebook (2 result sets of 10 rows written
  by a ``Lab``, one failed row, one pending result), on the same notebook as
  JSON, and on the epyc 1.7.2 fixtures (HDF5 and JSON, from
  ``shared/fixtures`` beside the repository or one of its parents).

For each case it lists which of the heavy packages (pandas, ipyparallel,
h5py, numpy, zmq, the cluster tooling) the process imported. Target (issue
12.6): `import epyclab` and `epyclab show` on a small notebook each under
0.5 s on the 2-core machine. The load average is printed and recorded: the
machine is shared, so compare figures of one run.

    python benchmarks/startup.py [--repeat 5] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent
HEAVY = ["pandas", "ipyparallel", "h5py", "numpy", "zmq", "epyclab.clustersetup"]

# Runs the command as the console script does, then says which modules it imported.
_RUNNER = """
import json, sys
from epyclab.cli import main
try:
    main(sys.argv[2:], prog_name="epyclab")
except SystemExit as e:
    if e.code:
        raise
with open(sys.argv[1], "w") as f:
    json.dump(sorted(sys.modules), f)
"""

_MAKE = """
import sys
from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook, Lab

class Square(Experiment):
    def do(self, params):
        if params["x"] == 3:
            raise ValueError("three")
        return {"y": params["x"] ** 2, "label": f"x={params['x']}"}

for path, cls in ((sys.argv[1], HDF5LabNotebook), (sys.argv[2], JSONLabNotebook)):
    nb = cls(path, create=True)
    lab = Lab(nb)
    lab["x"] = range(10)
    lab.runExperiment(Square())
    nb.addResultSet("second")
    lab["x"] = range(10, 20)
    lab.runExperiment(Square())
    nb.current()["note"] = "an attribute"
    nb.addPendingResult({"x": 99}, "job-1")
    nb.close()
"""


def fixture(name: str) -> Path | None:
    """An epyc 1.7.2 fixture from shared/fixtures beside the repository or a parent, if there."""
    for base in [REPO, *REPO.parents]:
        candidate = base.parent / "shared" / "fixtures" / name
        if candidate.exists():
            return candidate
    return None


def timed(argv: list[str], repeat: int, checkout: Path = REPO) -> tuple[list[float], list[float]]:
    """Wall seconds, and CPU seconds (user + system), of ``repeat`` fresh processes running ``argv``.

    The CPU time is what the process itself spent: on a shared machine it varies far less
    with the load than the wall time does. ``checkout``: the epyclab the processes import.
    """
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=checkout, env=env)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def imported(code_argv: list[str], out: Path) -> list[str]:
    """The heavy packages a process running ``code_argv`` (ending in a file to write sys.modules to) imported."""
    subprocess.run(code_argv, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    modules = set(json.loads(out.read_text()))
    return [h for h in HEAVY if h in modules]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--before", type=Path, help="another epyclab checkout (say, main) measured alongside")
    args = parser.parse_args()
    from _report import compile_package

    compile_package()  # fresh processes measure an installed epyclab (see compile_package)
    py = sys.executable
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        h5, js, mods = Path(tmp, "small.h5"), Path(tmp, "small.json"), Path(tmp, "modules.json")
        subprocess.run([py, "-c", _MAKE, str(h5), str(js)], check=True, cwd=REPO)
        dump = f"import json, sys\njson.dump(sorted(sys.modules), open({str(mods)!r}, 'w'))"
        cases: list[tuple[str, list[str], list[str]]] = [
            ("`python -c pass` (the interpreter alone)", [py, "-c", "pass"], [py, "-c", dump]),
            ('`python -c "import epyclab"`', [py, "-c", "import epyclab"], [py, "-c", "import epyclab\n" + dump]),
            ("`import epyclab.cli` (the command's imports)", [py, "-c", "import epyclab.cli"],
             [py, "-c", "import epyclab.cli\n" + dump]),
        ]
        shows = [("small HDF5 notebook (2 sets x 10 rows)", h5), ("the same notebook as JSON", js)]
        for name, label in (("epyc-1.7.2-notebook.h5", "epyc 1.7.2 HDF5 fixture"),
                            ("epyc-1.7.2-notebook.json", "epyc 1.7.2 JSON fixture")):
            path = fixture(name)
            if path is not None:
                shows.append((label, path))
        for label, path in shows:
            cases.append((f"`epyclab show`, {label}", [py, "-c", _RUNNER, os.devnull, "show", str(path)],
                          [py, "-c", _RUNNER, str(mods), "show", str(path)]))
        rows = []
        for label, argv, probe in cases:
            walls, cpus = timed(argv, args.repeat)
            heavy = imported(probe, mods)
            row = [label, f"{min(walls):.3f}", f"{statistics.median(walls):.3f}", f"{min(cpus):.3f}",
                   ", ".join(heavy) or "-"]
            print(f"{label}: wall best {min(walls):.3f} s, median {statistics.median(walls):.3f} s; "
                  f"CPU best {min(cpus):.3f} s; imports {heavy}")
            if args.before is not None:
                walls, cpus = timed(argv, args.repeat, args.before.resolve())
                row[4:4] = [f"{min(walls):.3f}", f"{min(cpus):.3f}"]
                print(f"  before ({args.before}): wall best {min(walls):.3f} s, CPU best {min(cpus):.3f} s")
            rows.append(row)
    load_after = os.getloadavg()
    from _report import machine, table, write_section

    load = f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)"
    print(load)
    if args.no_write:
        return
    headers = ["process", f"wall, best of {args.repeat} (s)", "wall, median (s)", "CPU, best (s)"]
    if args.before is not None:
        headers += ["before: wall, best (s)", "before: CPU, best (s)"]
    text = table(headers + ["heavy packages it imported"], rows)
    write_section(
        "startup",
        "## Start-up: `import epyclab` and `epyclab show` (`benchmarks/startup.py`)\n\n"
        f"Wall time of fresh processes, best and median of {args.repeat} each, output discarded, and the "
        "least CPU time (user + system) one of them took, which varies less with the machine's load. The "
        "small notebook holds 2 result sets of 10 rows written by a `Lab` (one failed row, one pending "
        "result). `epyclab show` reads the counts, names and attributes it prints without building a "
        "DataFrame, so it imports neither pandas nor ipyparallel, for epyc's files too (numpy reads their "
        "plain ISO times). " + ("The *before* columns are the same processes importing the epyclab of "
        f"`{args.before.name}` (the commit before this change), measured case by case in the same run. "
        if args.before is not None else "") + "Target (issue 12.6): `import epyclab` and `epyclab show` on "
        "a small notebook each under 0.5 s.\n\n"
        f"{text}\n\n{machine()} {load[0].upper() + load[1:]}.",
    )


if __name__ == "__main__":
    main()
