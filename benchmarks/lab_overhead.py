"""The cost the sequential Lab adds per experiment, and the cost of dataframe().

Runs a trivial experiment (``do`` returns ``{'y': 2 * x}``) at 20,000 points of
two parameters on a ``Lab`` with the in-memory notebook and, in the same run,
the floor: a plain loop calling the same ``do`` and appending dicts. The
overhead per experiment is (Lab time - floor time) / points. A second table
splits what seeding a point costs into its parts, each timed alone with
``timeit`` in the process's CPU time (so other processes disturb it less). With
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
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

POINTS_X, POINTS_Z = 200, 100  # 20,000 points

SEEDING_FLOOR = (
    "The floor of seeding: numpy's global state and Python's `random` are each a Mersenne Twister "
    "with 2.5 KB of state, and each point needs a new one. Their keys are one draw of 4,992 bytes from a "
    "Philox4x64-10 in counter mode (the point seed in its counter: distinct seeds, distinct keys; about "
    "2.4 µs, of which 0.4 µs is `random_raw`'s call and its array), written in place: numpy's through its "
    "generator's ctypes interface, Python's at the layout of CPython's `_random.Random` (checked once "
    "against `getstate()`), where `random.seed` took 4 µs and `setstate` takes 3. A faster generator "
    "(SFC64, PCG64) would save about 0.9 µs of the draw but give no such guarantee. A sweep's points go "
    "through one seeder made for the sweep (`seeding.SweepSeeder`): the sweep's keyed hash and the layout "
    "of its points (an all-int point's bytes are one format), the Philox, both states' views and the view "
    "of the normal deviate numpy keeps between draws (dropped by a 16-byte write where "
    "`set_bit_generator` took 0.25-0.45 µs) are found once, and each point checks by identity only what "
    "user code can change between points (numpy's global bit generator, the instance `random`'s functions "
    "are bound to, the sweep's class of bit generator, the thread). What remains per seeded point is about "
    "6 µs timed alone (load 2-3): the draw 2.4-2.8 µs, the point's seed (its bytes by the layout's format "
    "and a keyed BLAKE2b) 0.9 µs, the rest of the global states (counter, checks, writes) 1.3 µs, the "
    "experiment's own states 0.25 µs. Inside "
    "`Experiment.run` and a sweep each part costs more than alone (the draw's output and both 2.5 KB "
    "states are then cold in the caches, and the interpreter runs the sweep's other work between), and "
    "the seed is stored in each row, as the first table's two rows show."
)


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


def seeding_parts() -> list[tuple[str, float]]:
    """What seeding one point of the trivial sweep costs, part by part: ``(part, µs of CPU time)``.

    Each part is timed alone (best of 7 repeats of 20,000 calls); in a sweep the
    parts cost somewhat more (the caches hold the sweep's other work too), which
    the first table's difference between the seeded and ``seed=False`` rows shows.
    The rows marked "for comparison" are the routes epyclab does not take.
    """
    import hashlib
    import random

    import numpy as np

    from epyclab import Experiment, globalstates, seeding

    class Trivial(Experiment):
        def do(self, params):
            return {"y": 2 * params["x"]}

    params, sweep_seed = {"x": 17, "z": 42}, 123456789
    seed = seeding.pointSeed(sweep_seed, params)
    numpy_key, python_key = globalstates.global_keys(seed)
    words = np.frombuffer(numpy_key, dtype="<u4")
    python_state = (3, (*np.frombuffer(python_key, dtype="<u4").tolist(), 624), None)
    e = Trivial()
    e.setSweepSeed(sweep_seed)
    e.set(params).run()
    # A sweep's seeder, as its points use it (its routes found at a first point).
    kind = seeding.globalKind()
    seeder = seeding.SweepSeeder(sweep_seed)
    seeder.seed(e, seeder.point_seed(params), kind)
    globals_seeder = globalstates.GlobalsSeeder()
    globals_seeder.put(seed, kind)
    held = seeding.HeldStates()
    view = memoryview(bytearray(2496))
    view16 = memoryview(bytearray(16))
    draws = globalstates._draws()
    philox = np.random.Philox(1)
    bg = np.random.get_bit_generator()
    keys = draws.keys(seed)
    unseeded = Trivial()
    unseeded.set(params)
    parts = [
        ("the point's seed: canonical bytes of its parameters", lambda: seeding.canonicalBytes(params)),
        ("the point's seed: those bytes and a keyed BLAKE2b (`pointSeed`)",
         lambda: seeding.point_seed(sweep_seed, params)),
        ("the point's seed as a sweep takes it: its int layout formatted at once (`SweepSeeder.point_seed`)",
         lambda: seeder.point_seed(params)),
        ("both keys: 4,992 bytes of Philox4x64-10, its counter written in place", lambda: draws.keys(seed)),
        ("... of which `Philox.random_raw(624)`", lambda: philox.random_raw(624)),
        ("... of which `random_raw(1)` (the call and its array)", lambda: philox.random_raw(1)),
        ("... for comparison, not used: 2,496 bytes of SHAKE-128 (numpy's key before)", lambda: hashlib.shake_128(
            seed.to_bytes(8, "little")).digest(2496)),
        ("numpy's global state: the key in place, the kept normal dropped", lambda: globalstates._numpy_global.put(
            keys[:2496])),
        ("... of which `numpy.random.set_bit_generator(its own)` (drops the kept normal deviate)",
         lambda: np.random.set_bit_generator(bg)),
        ("... a sweep's route drops it in place instead (16 bytes written through a memoryview)",
         lambda: view16.__setitem__(slice(None), globalstates._NO_KEPT_NORMAL)),
        ("... of which the key written in place (a slice of a memoryview)",
         lambda: view.__setitem__(slice(None), numpy_key)),
        ("... for comparison, not used: `numpy.random.seed(0)` (dropped the kept normal before)",
         lambda: np.random.seed(0)),
        ("... for comparison, not used: `numpy.random.set_state` of a key", lambda: np.random.set_state(
            ("MT19937", words, 624, 0, 0.0))),
        ("Python's `random`: the key and index in place", lambda: globalstates._python_global.put(
            keys[2496:])),
        ("... for comparison, not used: `random.seed(int of 3 words)` (init_by_array, before)",
         lambda: random.seed(seed | 1 << 64)),
        ("... for comparison, not used: `random.setstate` of a key", lambda: random.setstate(python_state)),
        ("both global states, each call finding its route (`seed_globals`)", lambda: seeding.seed_globals(seed)),
        ("both global states as a sweep's points take them: its route checked by identity "
         "(`GlobalsSeeder.put`)", lambda: globals_seeder.put(seed, kind)),
        ("random states held on the experiment (none here: `HeldStates.seed`)", lambda: held.seed(e, seed)),
        ("all of a point's seeding in a sweep: the point's seed, both global states, the held ones "
         "(`SweepSeeder`)", lambda: seeder.seed(e, seeder.point_seed(params), kind)),
        ("`Experiment.run()`, seeded", e.run),
        ("`Experiment.run()`, `seed=False`", unseeded.run),
    ]
    out = []
    for name, f in parts:
        best = min(timeit.repeat(f, number=20_000, repeat=7, timer=time.process_time))
        out.append((name, best / 20_000 * 1e6))
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
    parts = table(["part of seeding one point", "CPU time (µs)"], [[n, f"{t:.2f}"] for n, t in seeding_parts()])
    footer = load.footer()
    print(text)
    print()
    print(parts)
    print()
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
            f"{text}\n\n"
            "What seeding a point costs, part by part, each timed alone (`timeit`, CPU time, best of 7); "
            "in the sweep the parts cost more, as the difference of the first two rows above shows:\n\n"
            f"{parts}\n\n{SEEDING_FLOOR}\n\n{footer}",
        )


if __name__ == "__main__":
    main()
