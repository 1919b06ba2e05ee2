"""The cost the sequential Lab adds per experiment, and the cost of dataframe().

Runs a trivial experiment (``do`` returns ``{'y': 2 * x}``) at 20,000 points of
two parameters on a ``Lab`` with the in-memory notebook and, in the same run,
the floor: a plain loop calling the same ``do`` and appending dicts. The
overhead per experiment is (Lab time - floor time) / points. With
``--epyc-python PATH`` the same measurement is also made with epyc (the
package epyclab replaces) in the interpreter at PATH, e.g. a venv with
``pip install epyc==1.7.2``.

    python benchmarks/lab_overhead.py [--repeat 5] [--epyc-python PATH] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

POINTS_X, POINTS_Z = 200, 100  # 20,000 points


def measure(package: str, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` timings of the Lab sweep, the plain loop and dataframe()."""
    pkg = importlib.import_module(package)

    class Trivial(pkg.Experiment):
        def do(self, params):
            return {"y": 2 * params["x"]}

    lab_t, floor_t, df_t, lab_cpu, floor_cpu, unseeded_t, unseeded_cpu = [], [], [], [], [], [], []
    for _ in range(repeat):
        if package == "epyclab":
            # The same sweep without per-point seeding (seed=False, as epyc ran): what seeding costs.
            lab = pkg.Lab()
            lab["x"] = range(POINTS_X)
            lab["z"] = range(POINTS_Z)
            c0, t0 = time.process_time(), time.perf_counter()
            lab.runExperiment(Trivial(), progress=False, seed=False)
            unseeded_t.append(time.perf_counter() - t0)
            unseeded_cpu.append(time.process_time() - c0)
        lab = pkg.Lab()
        lab["x"] = range(POINTS_X)
        lab["z"] = range(POINTS_Z)
        kwargs = {"progress": False} if package == "epyclab" else {}
        c0, t0 = time.process_time(), time.perf_counter()
        lab.runExperiment(Trivial(), **kwargs)
        lab_t.append(time.perf_counter() - t0)
        lab_cpu.append(time.process_time() - c0)

        t0 = time.perf_counter()
        df = lab.notebook().dataframe()
        df_t.append(time.perf_counter() - t0)
        assert len(df) == POINTS_X * POINTS_Z

        e, rows = Trivial(), []
        c0, t0 = time.process_time(), time.perf_counter()
        for x in range(POINTS_X):
            for z in range(POINTS_Z):
                params = {"x": x, "z": z}
                rows.append({**params, **e.do(params)})
        floor_t.append(time.perf_counter() - t0)
        floor_cpu.append(time.process_time() - c0)
    out = {
        "lab": min(lab_t), "floor": min(floor_t), "dataframe": min(df_t),
        "lab_cpu": min(lab_cpu), "floor_cpu": min(floor_cpu),
    }
    if unseeded_t:
        out.update(unseeded=min(unseeded_t), unseeded_cpu=min(unseeded_cpu))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--epyc-python", help="a Python interpreter with epyc installed, to compare with")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.repeat)))
        return

    from _report import Load, table, write_section

    n = POINTS_X * POINTS_Z
    load = Load()
    runs = {"epyclab": measure("epyclab", args.repeat)}
    if args.epyc_python:
        out = subprocess.run(
            [args.epyc_python, __file__, "--worker", "epyc", "--repeat", "1"],
            check=True, capture_output=True, text=True,
        )
        runs["epyc"] = json.loads(out.stdout.strip().splitlines()[-1])

    rows = []
    for name, r in runs.items():
        overhead = (r["lab"] - r["floor"]) / n * 1e6
        cpu = f"{(r['lab_cpu'] - r['floor_cpu']) / n * 1e6:.1f}" if "lab_cpu" in r else "-"
        rows.append([
            name, f"{r['lab']:.3f}", f"{r['floor']:.3f}", f"{overhead:.1f}", cpu, f"{r['dataframe'] * 1e3:.1f}",
        ])
        if "unseeded" in r:
            rows.append([
                f"{name}, `seed=False`", f"{r['unseeded']:.3f}", f"{r['floor']:.3f}",
                f"{(r['unseeded'] - r['floor']) / n * 1e6:.1f}",
                f"{(r['unseeded_cpu'] - r['floor_cpu']) / n * 1e6:.1f}", "",
            ])
    headers = [
        "package", "Lab sweep (s)", "plain loop (s)", "overhead per experiment (µs)",
        "... in CPU time of the process (µs)", "dataframe() (ms)",
    ]
    text = table(headers, rows)
    footer = load.footer()
    print(text)
    print(footer)
    if not args.no_write:
        write_section(
            "lab_overhead",
            "## Sequential Lab overhead (`benchmarks/lab_overhead.py`)\n\n"
            f"{n:,} points of a trivial experiment (two parameters, `do` returns `{{'y': 2*x}}`), "
            "in-memory notebook, best of "
            f"{args.repeat} runs (epyc, when present, one run of epyc 1.7.2 from PyPI in its own venv); "
            "the plain loop calls the same `do` and appends dicts. "
            "The overhead is wall-clock time; the column after it is the same difference in the process's "
            "CPU time, which other processes on a shared machine disturb less. epyclab seeds every point "
            "(numpy's global state, `random`, the experiment's generators; see `epyclab.seeding`); the "
            "`seed=False` row is the same sweep without it, as epyc ran. "
            "Targets: overhead at most 10 µs per experiment, `dataframe()` of 20,000 rows within 50 ms.\n\n"
            f"{text}\n\n{footer}",
        )


if __name__ == "__main__":
    main()
