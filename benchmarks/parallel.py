"""ParallelLab against raw ipyparallel and the sequential Lab, and its cluster's start and stop.

In one run, on a local cluster of ``--engines`` engines (default: every core):

(a) 2,000 trivial points (``do`` returns ``{'y': 2*x}``): points/s of a
    ParallelLab sweep on a running cluster, against two floors on the same
    engines with the same chunk size as the lab chose: ``map_async`` of the
    same experiment runs (``functools.partial(worker.run, e)`` over the points:
    what a hand-written ipyparallel sweep does, without a notebook), the same
    runs seeded per point as a sweep seeds them (the lab's runs are), and
    ``map_async`` of a bare ``2*x``; and against the sequential ``Lab``.
    Best and median of ``--repeat`` interleaved runs, after a warm-up.
(b) 40 CPU-bound points of ~0.25 s each (pure Python, calibrated here): the
    speedup of ParallelLab over the sequential Lab, on a running cluster (best
    of ``--cpu-repeat`` interleaved runs of each) and end to end (starting and
    stopping its own cluster, one run).
(c) the local cluster's start (until every engine is registered) and stop.
(d) cold: each case a new Python process, as a user's script is. ``ParallelLab()``
    with defaults (on Linux the ``"fork"`` backend: each sweep forks copies of
    the process), and ``ParallelLab(backend="ipyparallel")`` (it starts the
    process's local cluster on first use and stops it at exit), against a
    sequential ``Lab`` and joblib ``Parallel(n_jobs=engines)`` running the same
    experiment runs: 40 CPU-bound points, and 2,000 trivial points; the time
    inside the process (``runExperiment`` or ``Parallel(...)``) and the whole
    process (start to exit). And a second ``runExperiment`` in the same process
    (a Jupyter user's next cell), for each backend (the ipyparallel one on the
    cluster the first sweep left warm).

    python benchmarks/parallel.py [--repeat 9] [--cpu-repeat 2] [--cold-repeat 2] [--engines N]
                                  [--only-cold] [--no-write] [--timeline]

``--timeline`` runs each cold case of (d) once, and the second sweep on the warm
local cluster, and prints per worker process its points, chunks (counted by the
gaps over 1 ms between its points), first start, last end, busy time and gaps
(all, and between chunks); the core-seconds the sweep left idle and the spans in which
it did; and, on the local cluster, the CPU-seconds its controller, engines,
copies and reaper used: where a sweep loses time, readable on a busy machine too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _parallel_experiments import CpuBound, Trivial, burn, double  # noqa: E402
from _report import Load, compile_package, table, write_section  # noqa: E402

from epyclab.experiment import Experiment  # noqa: E402
from epyclab.labs.engine import worker  # noqa: E402
from epyclab.labs.lab import Lab  # noqa: E402
from epyclab.labs.parallel import ParallelLab, resolve_cores  # noqa: E402
from epyclab.labs.transports.localcluster import LocalCluster  # noqa: E402

TRIVIAL_POINTS = 2000
CPU_POINTS = 40
CPU_SECONDS = 0.25


def timed(f: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    t0 = time.perf_counter()
    f(*args, **kwargs)
    return time.perf_counter() - t0


def map_and_get(view: Any, f: Callable[..., Any], seq: Any, chunk: int) -> list[Any]:
    return view.map_async(f, seq, chunksize=chunk).get()


SEQUENTIAL_SCRIPT = """
import sys, time
sys.path.insert(0, {here!r})
from _parallel_experiments import CpuBound
from epyclab.labs.lab import Lab
lab = Lab()
lab["x"] = range({points})
t0 = time.perf_counter()
lab.runExperiment(CpuBound({n}), progress=False)
print(time.perf_counter() - t0)
"""


def sequential_in_own_process(n: int) -> float:
    """The sequential Lab's time on the CPU-bound points, in a fresh process, as a user's script runs it.

    Not in this process: it holds a connected ipyparallel client, whose threads
    share the interpreter with the sweep, and a script using ``Lab`` has none.
    """
    code = SEQUENTIAL_SCRIPT.format(here=str(HERE), points=CPU_POINTS, n=n)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def pool_map(f: Callable[[int], Any], args: list[int], processes: int) -> list[Any]:
    """``f`` over ``args`` on a multiprocessing pool: what the hardware allows, with no framework."""
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(f, args, chunksize=1)


def calibrate(seconds: float) -> int:
    """Iterations of :func:`burn` that take about ``seconds`` here."""
    n = 100_000
    while True:
        t = min(timed(burn, n) for _ in range(3))
        if t > 0.05:
            return int(n * seconds / t)
        n *= 4


def trivial(client: Any, repeat: int) -> dict[str, Any]:
    """(a): ParallelLab vs map_async floors vs Lab on 2,000 trivial points."""
    view = client.load_balanced_view()
    points = [{"x": x} for x in range(TRIVIAL_POINTS)]
    lab_t, floor_t, seeded_t, bare_t, seq_t, chunks = [], [], [], [], [], []
    # The same runs seeded per point as a sweep seeds them (numpy's and Python's global states, ...).
    seeded = Trivial()
    seeded.setSweepSeed(1)
    # Warm up: the engines import epyclab's worker and dill the first time.
    warm = ParallelLab(client=client)
    warm["x"] = range(100)
    warm.runExperiment(Trivial(), progress=False)
    map_and_get(view, partial(worker.run, Trivial()), points[:100], 10)
    for _ in range(repeat):
        lab = ParallelLab(client=client)
        lab["x"] = range(TRIVIAL_POINTS)
        lab_t.append(timed(lab.runExperiment, Trivial(), progress=False))
        assert len(lab.dataframe()) == TRIVIAL_POINTS
        chunk = lab.lastSweep["largest_chunk"]
        chunks.append(chunk)
        floor_t.append(timed(map_and_get, view, partial(worker.run, Trivial()), points, chunk))
        seeded_t.append(timed(map_and_get, view, partial(worker.run, seeded), points, chunk))
        bare_t.append(timed(map_and_get, view, double, range(TRIVIAL_POINTS), chunk))
        seq = Lab()
        seq["x"] = range(TRIVIAL_POINTS)
        seq_t.append(timed(seq.runExperiment, Trivial(), progress=False))
    return {"lab": lab_t, "floor": floor_t, "seeded": seeded_t, "bare": bare_t, "seq": seq_t, "chunk": max(chunks)}


def cpu_bound(client: Any, n: int, profile: str, engines: int, repeat: int) -> dict[str, float]:
    """(b): 40 CPU-bound points, sequential vs parallel (running cluster; best of ``repeat``), and end to end."""
    t_seq, t_par, t_raw, t_pool, busy = [], [], [], [], []
    view = client.load_balanced_view()
    points = [{"x": x} for x in range(CPU_POINTS)]
    for _ in range(repeat):
        t_seq.append(sequential_in_own_process(n))
        lab = ParallelLab(client=client)
        lab["x"] = range(CPU_POINTS)
        t_par.append(timed(lab.runExperiment, CpuBound(n), progress=False))
        assert len(lab.dataframe()) == CPU_POINTS
        busy.append(lab.dataframe()[Experiment.ELAPSED_TIME].sum())
        # The same runs by hand on the same engines, and the machine's own ceiling:
        # the bare work on a process pool of as many processes, no ipyparallel at all.
        t_raw.append(timed(map_and_get, view, partial(worker.run, CpuBound(n)), points, 1))
        t_pool.append(timed(pool_map, burn, [n] * CPU_POINTS, engines))
    own = ParallelLab(cores=engines, profile_dir=profile, backend="ipyparallel")
    own["x"] = range(CPU_POINTS)
    t_own = timed(own.runExperiment, CpuBound(n), progress=False)
    own.shutdown()
    best = t_par.index(min(t_par))
    return {
        "seq": min(t_seq), "par": min(t_par), "own": t_own, "per_point": min(t_seq) / CPU_POINTS,
        "raw": min(t_raw), "pool": min(t_pool),
        # The fraction of the sweep's wall time the engines spent inside experiments: how
        # well ParallelLab keeps them busy, whatever else the machine is doing.
        "occupancy": busy[best] / (t_par[best] * engines),
    }


def start_stop(engines: int, profile: str, repeat: int) -> dict[str, list[float]]:
    """(c): start (engines registered) and stop of a local cluster."""
    starts, stops = [], []
    for _ in range(repeat):
        local = LocalCluster(engines, profile)
        starts.append(timed(local.start))
        stops.append(timed(local.stop))
    return {"start": starts, "stop": stops}


COLD_SCRIPT = """
import json, os, sys, time
from datetime import datetime
T0 = time.perf_counter()
sys.path.insert(0, {here!r})
from _parallel_experiments import CpuBound, Trivial
from epyclab.experiment import Experiment
ELAPSED, START, END, PID = Experiment.ELAPSED_TIME, Experiment.START_TIME, Experiment.END_TIME, Experiment.PID
case, points, n, engines, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
kwargs = {{"backend": "ipyparallel"}} if case.endswith("_ipp") else {{}}
case = case.removesuffix("_ipp")
e = CpuBound(n) if n else Trivial()
out = {{"measuring": 0.0}}


def timeline(starts, ends, pids):
    # Each point's start and end (seconds after the sweep's call) and the process that ran it, and this
    # process's CPU seconds during the sweep: to see where a sweep loses time (--timeline).
    out["rows"] = [[(a - W0).total_seconds(), (b - W0).total_seconds(), int(p)] for a, b, p in zip(starts, ends, pids)]
    out["parent_cpu"] = sum(CPU1[:2]) - sum(CPU0[:2])


def called():
    global W0, CPU0
    W0, CPU0 = datetime.now(), os.times()
    return time.perf_counter()


def returned():
    global CPU1
    CPU1 = os.times()
    return time.perf_counter()


def cluster_cpu(lab):
    # CPU-seconds used so far by the local cluster's processes (controller and schedulers, engines, copies
    # still running) and by its reaper, from /proc: what the cluster costs the cores beside the points.
    local = lab.localCluster
    if local is None:
        return {{}}
    tick = os.sysconf("SC_CLK_TCK")
    used = {{"fork server": 0.0, "controller": 0.0, "engines": 0.0, "copies": 0.0, "reaper": 0.0}}
    for pid in [int(i["pid"]) for i in local.processes()] + [local.reaper_pid()]:
        try:
            with open(f"/proc/{{pid}}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
            fields = tail.split()
            with open(f"/proc/{{pid}}/cmdline") as f:
                # The fork server's children have its command line, and name themselves (comm).
                command = head.split("(", 1)[1] + " " + f.read()
        except (OSError, TypeError):
            continue
        kind = next((k for k, word in (("controller", "epyclab-control"), ("engines", "epyclab-engine"),
                                       ("controller", "ipyparallel.controller"), ("engines", "ipyparallel.engine"),
                                       ("fork server", "transports.forkserver"),
                                       ("reaper", "transports.reaper")) if word in command), "copies")
        used[kind] += (int(fields[11]) + int(fields[12])) / tick
    return used


def measured(f):
    # The benchmark's own checks and statistics (a DataFrame: pandas' import) are not the user's work: their
    # time is taken out of the whole process's.
    t = time.time()
    f()
    out["measuring"] += time.time() - t


if case == "lab":
    from epyclab import Lab
    lab = Lab()
    lab["x"] = range(points)
    t = called(); lab.runExperiment(e, progress=False); out["inside"] = returned() - t

    def stats():
        df = lab.dataframe()
        assert len(df) == points
        out["busy"] = float(df[ELAPSED].sum())
        timeline(df[START], df[END], df[PID])
    measured(stats)
elif case in ("parallel", "twice"):
    from epyclab import ParallelLab
    # With defaults, as a user writes it (unless --engines asked for another size).
    lab = ParallelLab(**kwargs) if cores == 0 else ParallelLab(cores=cores, **kwargs)
    lab["x"] = range(points)
    t = called(); lab.runExperiment(e, progress=False); out["inside"] = returned() - t

    def stats():
        df = lab.dataframe()
        assert len(df) == points
        out["busy"] = float(df[ELAPSED].sum())
        out["backend"] = lab.lastBackend
        timeline(df[START], df[END], df[PID])
    measured(stats)
    if case == "twice":
        lab2 = ParallelLab(**kwargs) if cores == 0 else ParallelLab(cores=cores, **kwargs)
        lab2["x"] = range(points)
        cluster0 = cluster_cpu(lab)
        t = called(); lab2.runExperiment(e, progress=False); out["second"] = returned() - t
        out["second_backend"] = lab2.lastBackend

        def stats2():
            df = lab2.dataframe()
            assert len(df) == points
            # The second sweep's timeline (--timeline's warm case) replaces the first's.
            timeline(df[START], df[END], df[PID])
            out["inside"], out["busy"] = out["second"], float(df[ELAPSED].sum())
            out["cluster_cpu"] = {{k: v - cluster0.get(k, 0.0) for k, v in cluster_cpu(lab2).items()}}
        measured(stats2)
    elif kwargs:
        measured(lambda: out.update(cluster_cpu=cluster_cpu(lab)))
elif case == "joblib":
    from joblib import Parallel, delayed
    from epyclab.labs.engine.worker import run
    t = called()
    rcs = Parallel(n_jobs=engines)(delayed(run)(e, {{"x": x}}) for x in range(points))
    out["inside"] = returned() - t

    def stats():
        assert len(rcs) == points
        out["busy"] = sum(rc["metadata"][ELAPSED] for rc in rcs)
        meta = [rc["metadata"] for rc in rcs]
        timeline([m[START] for m in meta], [m[END] for m in meta], [m[PID] for m in meta])
    measured(stats)
out["import"] = t - T0
print(json.dumps(out), flush=True)
"""


def cold_case(case: str, points: int, n: int, engines: int, cores: int) -> dict[str, float]:
    """One cold case in a new process: times inside it, and the whole process from start to exit."""
    code = COLD_SCRIPT.format(here=str(HERE))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, case, str(points), str(n), str(engines), str(cores)],
                         check=True, capture_output=True, text=True, timeout=600)
    whole = time.perf_counter() - t0
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["whole"] = whole - report["measuring"]
    return report


DASK_SCRIPT = """
import json, sys, time
from functools import partial
sys.path.insert(0, {here!r})
from _parallel_experiments import CpuBound
from distributed import Client, LocalCluster
from epyclab import ParallelLab
from epyclab.labs.engine.worker import run
n, points, repeat = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
e = CpuBound(n)
out = {{"lab": [], "raw": []}}
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \\
        Client(cluster) as client:
    client.gather(client.map(partial(run, e), [{{"x": -1 - i}} for i in range(4)], pure=False))  # warm up
    for _ in range(repeat):
        lab = ParallelLab(executor=client)
        lab["x"] = range(points)
        t = time.perf_counter(); lab.runExperiment(e, progress=False); out["lab"].append(time.perf_counter() - t)
        assert len(lab.dataframe()) == points
        t = time.perf_counter()
        rcs = client.gather(client.map(partial(run, e), [{{"x": x}} for x in range(points)], pure=False))
        out["raw"].append(time.perf_counter() - t)
        assert len(rcs) == points
print(json.dumps(out))
"""


def dask_case(n: int, repeat: int) -> dict[str, list[float]]:
    """(e): on one Dask LocalCluster of 2 worker processes, ParallelLab(executor=client) and client.map, interleaved."""
    code = DASK_SCRIPT.format(here=str(HERE))
    out = subprocess.run([sys.executable, "-c", code, str(n), str(CPU_POINTS), str(repeat)],
                         check=True, capture_output=True, text=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def dask_text(d: dict[str, list[float]]) -> str:
    lab, raw = min(d["lab"]), min(d["raw"])
    text = table(["(e) Dask LocalCluster, 2 worker processes, 40 CPU-bound points", "best (s)", "median (s)"],
                 [["`ParallelLab(executor=client)`", f"{lab:.2f}", f"{statistics.median(d['lab']):.2f}"],
                  ["raw `client.map(partial(worker.run, e), points)` + `gather`", f"{raw:.2f}",
                   f"{statistics.median(d['raw']):.2f}"]])
    return text + (f"\n\nTarget: within 10% of the raw map (measured {lab / raw:.0%} of its time: "
                   f"{_met(lab <= raw * 1.1)}).")


def cold(n: int, engines: int, repeat: int, cores: int = 0) -> dict[str, dict[str, list[dict[str, float]]]]:
    """(d): every case in a new process, interleaved, ``repeat`` times."""
    results: dict[str, dict[str, list[dict[str, float]]]] = {"cpu": {}, "trivial": {}}
    for _ in range(repeat):
        for case in ("lab", "parallel", "parallel_ipp", "joblib", "twice", "twice_ipp"):
            results["cpu"].setdefault(case, []).append(cold_case(case, CPU_POINTS, n, engines, cores))
        for case in ("lab", "parallel", "parallel_ipp", "joblib"):
            results["trivial"].setdefault(case, []).append(cold_case(case, TRIVIAL_POINTS, 0, engines, cores))
    return results


def idle_core_seconds(rows: list[list[float]], inside: float, engines: int) -> float:
    """Core-seconds of the sweep's call during which fewer than ``engines`` points were running."""
    events = sorted([(max(0.0, a), 1) for a, _, _ in rows] + [(min(inside, b), -1) for _, b, _ in rows])
    idle, running, at = 0.0, 0, 0.0
    for t, step in events:
        idle += max(0, engines - running) * max(0.0, t - at)
        running, at = running + step, max(at, t)
    return idle + engines * max(0.0, inside - at)


def idle_spans(rows: list[list[float]], inside: float, engines: int,
               least: float = 0.02) -> list[tuple[float, float, int]]:
    """Spans of the sweep's call over ``least`` s with fewer than ``engines`` points running: (from, to, running)."""
    events = sorted([(max(0.0, a), 1) for a, _, _ in rows] + [(min(inside, b), -1) for _, b, _ in rows])
    spans, running, at = [], 0, 0.0
    for t, step in events + [(inside, 0)]:
        if running < engines and t - at > least:
            spans.append((at, t, running))
        running, at = running + step, max(at, t)
    return spans


#: Seconds between two points of a worker above which they were in different chunks (see timeline_text).
CHUNK_GAP = 0.001


def timeline_text(case: str, r: dict[str, Any], engines: int) -> str:
    """Per worker: points, first start, last end, busy, gaps between points; and what the sweep left idle."""
    workers: dict[int, list[tuple[float, float]]] = {}
    for a, b, pid in r["rows"]:
        workers.setdefault(pid, []).append((a, b))
    lines = []
    for pid, spans in sorted(workers.items(), key=lambda w: min(w[1])):
        spans.sort()
        gaps = [spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1)]
        # Between two points of one chunk a worker spends well under a millisecond; between chunks, the
        # round trip: so the gaps over CHUNK_GAP count (and measure) the chunks.
        between = [g for g in gaps if g > CHUNK_GAP]
        lines.append([str(pid), str(len(spans)), str(len(between) + 1), f"{spans[0][0]:.3f}", f"{spans[-1][1]:.3f}",
                      f"{sum(b - a for a, b in spans):.2f}", f"{1000 * sum(gaps) / max(1, len(gaps)):.1f}",
                      f"{1000 * sum(between) / max(1, len(between)):.1f}", f"{sum(between):.3f}"])
    text = table([f"{case}: worker", "points", "chunks", "first start (s)", "last end (s)", "busy (s)",
                  "mean gap (ms)", "mean gap between chunks (ms)", "between chunks (s)"], lines)
    idle = idle_core_seconds(r["rows"], r["inside"], engines)
    # The last `engines` workers to finish (not copies that gave way to engines): the cores left idle at the end.
    lasts = sorted((max(b for _, b in spans) for spans in workers.values()), reverse=True)[:engines]
    tail = sum(r["inside"] - b for b in lasts)
    text += (f"\n\n{case}: inside {r['inside']:.2f} s; the first point started at "
             f"{min(a for a, _, _ in r['rows']):.3f} s, the last points ended {tail:.2f} "
             f"core-seconds before the sweep returned; left {idle:.2f} "
             f"core-seconds idle (fewer than {engines} points running); this process used "
             f"{r['parent_cpu']:.2f} CPU-s during the sweep.")
    spans = idle_spans(r["rows"], r["inside"], engines)
    if spans:
        text += " Idle spans over 20 ms (from-to s: points running): " + ", ".join(
            f"{a:.2f}-{b:.2f}: {k}" for a, b, k in spans) + "."
    if r.get("cluster_cpu"):
        text += " CPU-s of the cluster's processes: " + ", ".join(
            f"{k} {v:.2f}" for k, v in r["cluster_cpu"].items()) + (
            f" (the points' own time: {r['busy']:.2f} s)." if "busy" in r else ".")
    return text


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def cold_text(d: dict[str, dict[str, list[dict[str, float]]]], engines: int) -> str:
    cpu, triv = d["cpu"], d["trivial"]

    def best(rows: list[dict[str, float]], key: str) -> float:
        return min(r[key] for r in rows)

    def busy(rows: list[dict[str, float]], workers: int) -> float:
        # Of the fastest run: the time its workers spent inside do(), over the sweep's time on every worker.
        fastest = min(rows, key=lambda r: r["inside"])
        return fastest["busy"] / (fastest["inside"] * workers)

    seq_in, seq_whole = best(cpu["lab"], "inside"), best(cpu["lab"], "whole")
    rows = []
    chosen = sorted({str(r.get("backend")) for r in cpu["parallel"]})
    for name, case in [("sequential `Lab`", "lab"),
                       (f"`ParallelLab()`, cold (default \"auto\", which ran on: {', '.join(chosen)})", "parallel"),
                       ("`ParallelLab(backend=\"ipyparallel\")`, cold (starts the process's local cluster)",
                        "parallel_ipp"),
                       (f"joblib `Parallel(n_jobs={engines})`, cold", "joblib")]:
        t_in, t_whole = best(cpu[case], "inside"), best(cpu[case], "whole")
        rows.append([name, f"{t_in:.2f}", f"{seq_in / t_in:.2f}", f"{t_whole:.2f}", f"{seq_whole / t_whole:.2f}",
                     f"{busy(cpu[case], 1 if case == 'lab' else engines):.0%}"])
    second = best(cpu["twice"], "second")
    chosen2 = sorted({str(r.get("second_backend")) for r in cpu["twice"]})
    rows.append([f"`ParallelLab()`, second sweep in the same process (ran on: {', '.join(chosen2)})", f"{second:.2f}",
                 f"{seq_in / second:.2f}", "", "", ""])
    second_ipp = best(cpu["twice_ipp"], "second")
    rows.append(["`ParallelLab(backend=\"ipyparallel\")`, second sweep in the same process (warm cluster)",
                 f"{second_ipp:.2f}", f"{seq_in / second_ipp:.2f}", "", "", ""])
    text = table(["(d) cold, 40 CPU-bound points", "inside (s)", "speedup", "whole process (s)", "speedup",
                  "workers busy"], rows)
    par, job = best(cpu["parallel"], "inside"), best(cpu["joblib"], "inside")
    ipp = best(cpu["parallel_ipp"], "inside")
    text += (
        f"\n\nTargets: the default cold at least 1.85 (measured {seq_in / par:.2f}: {_met(seq_in / par >= 1.85)}) "
        f"and at least joblib's ({(seq_in / par) / (seq_in / job):.0%} of it: {_met(job / par >= 1.0)}); the "
        f"local ipcluster at least 1.7 cold (measured {seq_in / ipp:.2f}: {_met(seq_in / ipp >= 1.7)}) and 1.85 "
        f"warm (measured {seq_in / second_ipp:.2f}: {_met(seq_in / second_ipp >= 1.85)})."
    )
    rows_t = []
    for name, case in [("sequential `Lab`", "lab"), ("`ParallelLab()`, cold", "parallel"),
                       ("`ParallelLab(backend=\"ipyparallel\")`, cold", "parallel_ipp"),
                       (f"joblib `Parallel(n_jobs={engines})`, cold", "joblib")]:
        rows_t.append([name, f"{best(triv[case], 'inside'):.2f}", f"{best(triv[case], 'whole'):.2f}"])
    text += "\n\n" + table(["(d) cold, 2,000 trivial points", "inside (s)", "whole process (s)"], rows_t)
    trivial_in = best(triv["parallel"], "inside")
    text += (f"\n\nTarget: `ParallelLab()` cold at most 1.5 s inside "
             f"(measured {trivial_in:.2f}: {_met(trivial_in <= 1.5)}).")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="interleaved runs of (a)")
    parser.add_argument("--cpu-repeat", type=int, default=2, help="interleaved runs of (b)")
    parser.add_argument("--cold-repeat", type=int, default=2, help="interleaved runs of (d)")
    parser.add_argument("--only-cold", action="store_true",
                        help="run (d) only, and write only its section (parallel_cold) of docs/performance.md")
    parser.add_argument("--engines", type=int, default=0, help="as ParallelLab's cores (0: every core)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--no-dask", action="store_true", help="skip (e), the Dask transport")
    parser.add_argument("--timeline", action="store_true",
                        help="one cold run of each case of (d), 40 CPU-bound points: each worker's timeline; no write")
    args = parser.parse_args()
    compile_package()  # fresh processes measure an installed epyclab (see compile_package)
    engines = resolve_cores(args.engines)
    if args.timeline:
        load = Load()
        n = calibrate(CPU_SECONDS)
        for case in ("lab", "parallel", "parallel_ipp", "joblib", "twice_ipp"):
            name = "second sweep, warm cluster (ipp)" if case == "twice_ipp" else case
            print(timeline_text(name, cold_case(case, CPU_POINTS, n, engines, args.engines),
                                1 if case == "lab" else engines) + "\n")
        print(load.footer())
        return

    load = Load()
    if args.only_cold:
        n = calibrate(CPU_SECONDS)
        text_d = cold_text(cold(n, engines, args.cold_repeat, args.engines), engines)
        if not args.no_dask:
            text_d += "\n\n" + dask_text(dask_case(n, args.cold_repeat))
        footer = load.footer()
        print(f"{text_d}\n\n{footer}")
        if not args.no_write:
            write_section(
                "parallel_cold",
                "## ParallelLab from a cold start (`benchmarks/parallel.py --only-cold`)\n\n"
                f"Each case is a new Python process, as a user's script is: `ParallelLab()` with defaults (\"auto\": "
                f"forked copies of the process when forking is safe, else clean loky workers; the table says which "
                f"ran), `ParallelLab(backend=\"ipyparallel\")` (its first sweep starts the process's local "
                f"cluster, and runs points in forked copies of the process while the engines register), the "
                f"sequential `Lab`, and joblib `Parallel(n_jobs={engines})` on "
                f"the same `do`, interleaved, best of {args.cold_repeat}. \"workers busy\": the time spent "
                f"inside `do()` over the sweep's time on every worker (a measure of the scheduling that the "
                f"machine's other load changes less than the speedup). \"inside\" is the time of the sweep "
                f"call; \"whole process\" includes imports, the cluster's start and the exit, but not the "
                f"benchmark's own checks (a DataFrame of the results: pandas' import, which joblib's case would "
                f"not pay). epyclab's modules are compiled to bytecode first, as installing it does (on a "
                f"machine with `PYTHONDONTWRITEBYTECODE` set, each engine would compile them again).\n\n"
                f"{text_d}\n\n{footer}",
            )
        return
    with tempfile.TemporaryDirectory(prefix="epyclab-bench-") as tmp:
        profile = str(Path(tmp) / "profile")
        n = calibrate(CPU_SECONDS)
        cs = start_stop(engines, profile, 3)
        local = LocalCluster(engines, profile)
        client = local.start()
        try:
            client[:].execute(f"import sys; sys.path.insert(0, {str(HERE)!r})", block=True)
            a = trivial(client, args.repeat)
            b = cpu_bound(client, n, profile, engines, args.cpu_repeat)
        finally:
            local.stop()
    d = cold(n, engines, args.cold_repeat, args.engines)

    def rate(ts: list[float], f: Callable[[list[float]], float]) -> float:
        return TRIVIAL_POINTS / f(ts)

    rows_a = []
    for name, key in [
        ("ParallelLab (running cluster)", "lab"),
        ("raw `map_async` of the same experiment runs (floor)", "floor"),
        ("... each run seeded per point, as a sweep seeds it", "seeded"),
        ("raw `map_async` of a bare `2*x`", "bare"),
        ("sequential `Lab`", "seq"),
    ]:
        rows_a.append([name, f"{rate(a[key], min):,.0f}", f"{rate(a[key], statistics.median):,.0f}"])
    ratio_best = min(a["floor"]) / min(a["lab"])
    ratio_med = statistics.median(a["floor"]) / statistics.median(a["lab"])
    bare_best = min(a["bare"]) / min(a["lab"])
    bare_med = statistics.median(a["bare"]) / statistics.median(a["lab"])
    text_a = table(["(a) 2,000 trivial points", "points/s (best)", "points/s (median)"], rows_a)
    text_a += (
        f"\n\nChunk size chosen by ParallelLab: {a['chunk']}. ParallelLab reaches {ratio_best:.0%} (best) / "
        f"{ratio_med:.0%} (median) of the floor (target: at least 70%), and {bare_best:.0%} / {bare_med:.0%} "
        f"of the bare-function map; {min(a['seeded']) / min(a['lab']):.0%} / "
        f"{statistics.median(a['seeded']) / statistics.median(a['lab']):.0%} of the floor whose runs are seeded "
        f"per point, as the lab's are."
    )

    text_b = table(
        ["(b) 40 CPU-bound points", "seconds", "speedup over Lab"],
        [
            [f"sequential `Lab`, in its own process ({b['per_point']:.2f} s per point)", f"{b['seq']:.2f}",
             "1.00"],
            [f"ParallelLab, running cluster of {engines}", f"{b['par']:.2f}", f"{b['seq'] / b['par']:.2f}"],
            ["ParallelLab, own cluster (start included; left warm, stopped after)", f"{b['own']:.2f}",
             f"{b['seq'] / b['own']:.2f}"],
            ["raw `map_async` of the same runs, chunk 1, same engines", f"{b['raw']:.2f}",
             f"{b['seq'] / b['raw']:.2f}"],
            [f"the bare work on `multiprocessing.Pool({engines})` (the machine's ceiling)", f"{b['pool']:.2f}",
             f"{b['seq'] / b['pool']:.2f}"],
        ],
    )
    text_b += (
        f"\n\nTarget: speedup at least 1.8 on 2 cores (limit {engines:.1f}). On the running cluster the "
        f"engines spent {b['occupancy']:.0%} of the sweep's wall time inside experiments (the rest is "
        f"ParallelLab's scheduling and the other processes on the machine)."
    )

    text_c = table(
        [f"(c) local cluster, {engines} engines", "best (s)", "median (s)", "worst (s)"],
        [
            ["start (until every engine is registered)", *(f"{f(cs['start']):.2f}" for f in (min, statistics.median,
                                                                                          max))],
            ["stop (engines, then controller; all processes gone)", *(f"{f(cs['stop']):.2f}" for f in (
                min, statistics.median, max))],
        ],
    )
    text_c += "\n\nTarget: start at most 3 s."

    footer = load.footer()
    body = f"{text_a}\n\n{text_b}\n\n{text_c}\n\n{cold_text(d, engines)}"
    print(f"{body}\n\n{footer}")
    if not args.no_write:
        write_section(
            "parallel",
            "## ParallelLab (`benchmarks/parallel.py`)\n\n"
            f"A local cluster of {engines} engines on this machine; {args.repeat} interleaved runs of (a). "
            "The floor of (a) is a hand-written ipyparallel sweep of the same experiment runs "
            "(`view.map_async(partial(worker.run, e), points, chunksize=...)` with the chunk size ParallelLab "
            "chose), without notebook, progress or commits; ParallelLab adds serializing and shipping the "
            "experiment, timing the chunks, adding every result to the notebook and committing. The client "
            "and the engines share the machine's cores, so work done by the client slows the engines.\n\n"
            f"{body}\n\n{footer}",
        )


if __name__ == "__main__":
    main()
