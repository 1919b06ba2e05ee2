"""How large HDF5 notebook files are: small notebooks, many small result sets, a large one.

Writes, with each package, the results of a real ``Experiment.run`` (two
parameters, three results, the standard metadata) into an HDF5 notebook,
committing after each result set (every 1,000 results for the large one),
closes it and reports the file's size:

* 1 result set of 1 row;
* 50 result sets of 5 rows each (besides the default set);
* 1 result set of 10,000 rows, and (epyclab only: epyc 1.7.2 takes about 315 s
  for it) 1 result set of 100,000 rows.

epyc 1.7.2 is measured when ``--epyc PYTHON`` (default ``/tmp/epycvenv/bin/python``)
is a Python with epyc installed; otherwise the table says it was not measured.
The sizes do not depend on the machine's load; the load average is printed anyway.

    python benchmarks/filesize.py [--epyc PYTHON] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: (label, result sets, rows per set, commit every; None: once per set), run by both packages.
CASES = [
    ("1 set x 1 row", 1, 1, None),
    ("50 sets x 5 rows", 50, 5, None),
    ("1 set x 10,000 rows", 1, 10_000, 1_000),
    ("1 set x 100,000 rows", 1, 100_000, 1_000),
]
#: Cases epyc is not run for (its time): their labels.
EPYC_SKIPS = {"1 set x 100,000 rows"}

# Run by each package's Python: argv[1] is the package, argv[2] the cases as JSON; prints sizes as JSON.
WRITER = r"""
import json, os, sys, tempfile
package, cases = sys.argv[1], json.loads(sys.argv[2])
if package == "epyc":
    from epyc import Experiment, HDF5LabNotebook
else:
    from epyclab import Experiment, HDF5LabNotebook


class Walk(Experiment):
    def do(self, params):
        return {"final": params["n"] % 17 - 8, "mean": params["n"] / 3.0, "label": f"walk {params['seed']}"}


e = Walk()
sizes = {}
with tempfile.TemporaryDirectory() as tmp:
    for label, sets, rows, every in cases:
        path = os.path.join(tmp, f"{len(sizes)}.h5")
        nb = HDF5LabNotebook(path, create=True)
        for s in range(sets):
            if sets > 1:
                nb.addResultSet(f"set{s}")
            for i in range(rows):
                nb.addResult(e.set({"n": i, "seed": i % 10}).run())
                if every and (i + 1) % every == 0:
                    nb.commit()
            nb.commit()
        if hasattr(nb, "close"):
            nb.close()
        sizes[label] = os.path.getsize(path)
print(json.dumps(sizes))
"""


def measure(python: str, package: str, cases: list[tuple]) -> dict[str, int]:
    """The file size (bytes) of each case written by ``package`` in ``python``."""
    env = dict(os.environ)
    if package == "epyclab":
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([python, "-c", WRITER, package, json.dumps(cases)], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def shown(size: int | None, rows: int) -> str:
    if size is None:
        return "not measured"
    kb = f"{size / 1024:,.1f} KB" if size < 1024 * 1024 else f"{size / 2**20:,.2f} MB"
    return f"{kb} ({size / rows:,.0f} B/row)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epyc", default="/tmp/epycvenv/bin/python", help="a Python with epyc 1.7.2")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args()

    from _report import machine, table, write_section

    load = os.getloadavg()[0]
    mine = measure(sys.executable, "epyclab", CASES)
    have_epyc = os.path.exists(args.epyc)
    theirs = measure(args.epyc, "epyc", [c for c in CASES if c[0] not in EPYC_SKIPS]) if have_epyc else {}
    rows = []
    for label, sets, per_set, _ in CASES:
        n = sets * per_set
        ratio = f"{mine[label] / theirs[label]:.2f}x" if label in theirs else ""
        rows.append([label, shown(mine[label], n), shown(theirs.get(label), n), ratio])
    text = table(["notebook", "epyclab", "epyc 1.7.2", "epyclab / epyc"], rows)
    print(text)
    print(f"load average (1 min): {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    epyc_note = (
        "epyc 1.7.2 ran in its own venv; it was not run for 100,000 rows (about 315 s on this machine)."
        if have_epyc else f"epyc 1.7.2 was not measured: no Python with epyc at {args.epyc}."
    )
    if not args.no_write:
        write_section(
            "filesize",
            "## HDF5 notebook file size (`benchmarks/filesize.py`)\n\n"
            "The results of a real `Experiment.run` (two parameters, three results, the standard metadata) "
            "written into an `HDF5LabNotebook`, committed after each result set (every 1,000 results for "
            "the large ones), closed; the file's size in bytes (B/row: per result). "
            f"{epyc_note} Before, epyclab chunked every column at 1,024 rows or more; this script measured "
            "it (2026-11-30, load average 10.4) at 238.8 KB for 1 set x 1 row, 11.31 MB for 50 sets x 5 "
            "rows, 3.84 MB for 10,000 rows and 29.70 MB (311 B/row) for 100,000 rows.\n\n"
            f"{text}\n\nLoad average (1 min) {load:.1f} at the start (sizes do not depend on it).\n\n{machine()}",
        )


if __name__ == "__main__":
    main()
