"""ClusterLab: submission time, end-to-end throughput against raw ipyparallel, and wait() latency.

In one run, on a controller with epyclab's durable task store
(:class:`epyclab.clustersetup.taskstore.TaskStore`) and ``--engines`` engines on
127.0.0.1 (started here with ``ipyparallel.Cluster`` and stopped at the end):

(a) submission: the time ``runExperiment`` takes to submit 1,000 and 10,000
    trivial points and record them as pending results (in-memory notebook,
    and an HDF5 notebook for 10,000), best and median of ``--repeat``;
(b) end to end: points/s of ``runExperiment`` + ``wait()`` for 2,000 trivial
    points, against ``map_async`` on the same engines with the chunk size the
    lab chose: of the same experiment runs (``functools.partial(worker.run,
    e)``, what a hand-written ipyparallel sweep does, without a notebook) and
    of a bare ``2*x``; interleaved, best and median of ``--repeat``;
(c) latency: from the end of the last job (its END_TIME, written by the
    engine) to ``wait()`` returning, in the submitting process (which the
    tasks' futures wake) and in a lab that did not submit them (which polls
    the hub every ``WaitingTime``);
(d) 1,000 trivial points, ``runExperiment`` + ``wait()`` end to end on the
    running controller, points/s, best and median of ``--repeat``;
(e) 100,000 trivial points through a fresh durable controller, submitted
    and collected by one process of their own (an HDF5 notebook): its
    seconds and peak memory, the controller's (its process tree: CPU
    seconds used, peak resident memory of each process summed), and a check
    that every point has exactly one row (none lost, none duplicated).

Targets: 10,000 points submitted in under 2 s; (b) at least 60% of the
experiment-runs floor; (c) under 1 s; (d) at least 5,000 points/s; (e) no
lost or duplicated row. epyc 1.7.2 sleeps 10 ms per submitted job (10 s for
1,000 points) and polls every 30 s. The load average before and after is
printed with the tables (the machine may be shared).

    python benchmarks/cluster.py [--repeat 3] [--engines 2] [--no-write] [--big 100000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ipyparallel as ipp  # noqa: E402
import psutil  # noqa: E402
from _parallel_experiments import Trivial, double  # noqa: E402
from _report import compile_package, machine, table, write_section  # noqa: E402

from epyclab.experiment import Experiment  # noqa: E402
from epyclab.labs.clusterlab import ClusterLab  # noqa: E402
from epyclab.labs.engine import worker  # noqa: E402
from epyclab.labs.remote.jobs import chunk_size  # noqa: E402
from epyclab.notebooks.hdf5 import HDF5LabNotebook  # noqa: E402
from epyclab.notebooks.labnotebook import LabNotebook  # noqa: E402

TASKSTORE = "epyclab.clustersetup.taskstore.TaskStore"
END_TO_END_POINTS = 2000
LATENCY_POINTS = 20
LATENCY_SECONDS = 0.2


class Nap(Experiment):
    """Sleeps a little at each point, so that the last job ends while wait() is waiting."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        time.sleep(LATENCY_SECONDS)
        return {"y": params["x"]}


def timed(f: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    t0 = time.perf_counter()
    f(*args, **kwargs)
    return time.perf_counter() - t0


def best_median(ts: list[float]) -> tuple[float, float]:
    return min(ts), statistics.median(ts)


def lab_on(cluster: ipp.Cluster, nb: LabNotebook, **kwargs: Any) -> ClusterLab:
    return ClusterLab(nb, profile_dir=cluster.profile_dir, cluster_id=cluster.cluster_id, **kwargs)


def submission(cluster: ipp.Cluster, repeat: int, tmp: Path) -> list[list[Any]]:
    """(a) seconds to submit n points, then drain them so the next run starts clean."""
    rows = []
    for n, persistent in ((1000, False), (10_000, False), (10_000, True)):
        ts = []
        for i in range(repeat):
            nb = HDF5LabNotebook(str(tmp / f"submit-{n}-{i}.h5"), create=True) if persistent else LabNotebook()
            lab = lab_on(cluster, nb)
            lab["x"] = range(n)
            ts.append(timed(lab.runExperiment, Trivial()))
            assert nb.numberOfPendingResults() == n
            assert lab.wait(progress=False)
            lab.close()
        best, med = best_median(ts)
        rows.append([f"{n:,}", "HDF5" if persistent else "in memory", f"{best:.3f}", f"{med:.3f}",
                     f"{n / best:,.0f}"])
    return rows


def end_to_end(cluster: ipp.Cluster, client: ipp.Client, repeat: int) -> dict[str, Any]:
    """(b) points/s of submit + wait against map_async floors with the same chunk size."""
    engines = len(client.ids)
    chunk = chunk_size(END_TO_END_POINTS, engines)
    view = client.load_balanced_view()
    points = [{"x": x} for x in range(END_TO_END_POINTS)]
    lab_t, runs_t, bare_t = [], [], []

    def sweep() -> float:
        """Seconds of runExperiment + wait() on a connected lab (as map_async runs on a connected client)."""
        nb = LabNotebook()
        lab = lab_on(cluster, nb)
        lab["x"] = range(END_TO_END_POINTS)
        t0 = time.perf_counter()
        lab.runExperiment(Trivial())
        assert lab.wait(progress=False)
        seconds = time.perf_counter() - t0
        assert nb.numberOfResults() == END_TO_END_POINTS
        lab.close()
        return seconds

    for _ in range(repeat):
        lab_t.append(sweep())
        runs_t.append(timed(lambda: view.map_async(partial(worker.run, Trivial()), points, chunksize=chunk).get()))
        bare_t.append(timed(lambda: view.map_async(double, range(END_TO_END_POINTS), chunksize=chunk).get()))
    return {"engines": engines, "chunk": chunk, "lab": lab_t, "runs": runs_t, "bare": bare_t}


def thousand(cluster: ipp.Cluster, repeat: int, n: int = 1000) -> tuple[list[float], list[float]]:
    """(d) seconds of runExperiment + wait() for ``n`` trivial points on a connected lab, and the CPU seconds
    the submitting process used for them (its share, which a loaded machine does not inflate)."""
    ts, cpu = [], []
    for _ in range(repeat):
        nb = LabNotebook()
        lab = lab_on(cluster, nb)
        lab["x"] = range(n)
        t0, c0 = time.perf_counter(), time.process_time()
        lab.runExperiment(Trivial())
        assert lab.wait(progress=False)
        ts.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert nb.numberOfResults() == n
        lab.close()
    return ts, cpu


BIG_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, {here!r})
from _parallel_experiments import Trivial
from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.notebooks.hdf5 import HDF5LabNotebook

nb = HDF5LabNotebook({notebook!r}, create=True)
lab = ClusterLab(nb, profile_dir={profile!r}, cluster_id={cluster_id!r})
lab["x"] = range({n})
t0 = time.perf_counter()
lab.runExperiment(Trivial())
submitted = time.perf_counter() - t0
assert lab.wait(progress=False)
collected = time.perf_counter() - t0 - submitted
lab.close()
# Measured before the check below reads the whole notebook back into a DataFrame.
usage = resource.getrusage(resource.RUSAGE_SELF)
df = nb.dataframe(only_successful=False)
xs = df["x"].tolist()
print(json.dumps({{"submit": submitted, "wait": collected, "rows": len(xs), "distinct": len(set(xs)),
                  "missing": {n} - len(set(xs) & set(range({n}))), "failed": int((~df[Experiment.STATUS]).sum()),
                  "pending": nb.numberOfAllPendingResults(), "rss_mb": usage.ru_maxrss / 1024,
                  "cpu": usage.ru_utime + usage.ru_stime}}))
nb.close()
"""


def _peak_mb(proc: psutil.Process) -> float:
    """Peak resident memory of a process (VmHWM), in MB; 0 if it is gone."""
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def big(tmp: Path, engines: int, n: int) -> dict[str, Any]:
    """(e) ``n`` points through a fresh durable controller, by a process of their own; memory and time."""
    cluster = ipp.Cluster(
        n=engines, profile_dir=str(tmp / "big-profile"), controller_ip="127.0.0.1",
        controller_args=["--ping=500", f"--IPController.db_class={TASKSTORE}"], log_level=logging.WARNING,
    )
    cluster.start_cluster_sync()
    try:
        client = cluster.connect_client_sync()
        client.wait_for_engines(engines, timeout=60)
        client[:].apply_sync(sys.path.append, str(HERE))
        client.close()
        controller = psutil.Process(cluster.controller.process.pid)
        tree = [controller, *controller.children(recursive=True)]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in tree)
        script = tmp / "big.py"
        script.write_text(textwrap.dedent(BIG_SCRIPT.format(
            here=str(HERE), notebook=str(tmp / "big.h5"), profile=cluster.profile_dir,
            cluster_id=cluster.cluster_id, n=n)))
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"the {n:,}-point sweep failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(seconds=seconds, controller_cpu=sum(sum(p.cpu_times()[:2]) for p in tree) - cpu0,
                      controller_mb=sum(_peak_mb(p) for p in tree), controller_processes=len(tree),
                      store_mb=sum(f.stat().st_size for f in Path(cluster.profile_dir).rglob("*.db*")) / 2**20)
        return result
    finally:
        cluster.stop_engines_sync()
        cluster.stop_controller_sync()


def latency(cluster: ipp.Cluster, repeat: int) -> dict[str, list[float]]:
    """(c) seconds from the last job's END_TIME to wait() returning, submitter and another lab."""
    own, other = [], []
    for _ in range(repeat):
        for mode in ("own", "other"):
            nb = LabNotebook()
            lab = lab_on(cluster, nb, chunkSize=1)
            lab["x"] = range(LATENCY_POINTS)
            lab.runExperiment(Nap())
            collector = lab if mode == "own" else lab_on(cluster, nb)
            assert collector.wait(progress=False)
            returned = datetime.now()
            last_end = max(nb.dataframe()[Experiment.END_TIME])
            (own if mode == "own" else other).append((returned - last_end).total_seconds())
            if collector is not lab:
                collector.close()
            lab.close()
    return {"own": own, "other": other}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--big", type=int, default=100_000, help="points of (e); 0 skips it")
    args = parser.parse_args()
    compile_package()  # fresh processes measure an installed epyclab (see compile_package)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        cluster = ipp.Cluster(
            n=args.engines, profile_dir=str(tmp / "profile"), controller_ip="127.0.0.1",
            controller_args=["--ping=500", f"--IPController.db_class={TASKSTORE}"], log_level=logging.WARNING,
        )
        cluster.start_cluster_sync()
        try:
            client = cluster.connect_client_sync()
            client.wait_for_engines(args.engines, timeout=60)
            client[:].apply_sync(sys.path.append, str(HERE))  # engines import _parallel_experiments
            sub = submission(cluster, args.repeat, tmp)
            e2e = end_to_end(cluster, client, args.repeat)
            lat = latency(cluster, args.repeat)
            small, small_cpu = thousand(cluster, args.repeat)
            client.close()
        finally:
            cluster.stop_engines_sync()
            cluster.stop_controller_sync()
        large = big(tmp, args.engines, args.big) if args.big else None
    load_after = os.getloadavg()

    n = END_TO_END_POINTS
    lab_best, lab_med = best_median(e2e["lab"])
    runs_best, runs_med = best_median(e2e["runs"])
    bare_best, bare_med = best_median(e2e["bare"])
    body = "\n\n".join([
        "## ClusterLab (`benchmarks/cluster.py`)",
        f"A controller with epyclab's SQLite task store and {e2e['engines']} engines on 127.0.0.1; "
        f"best and median of {args.repeat} runs. Trivial experiment: `do` returns `{{'y': 2*x}}`.",
        "**Submission** (`runExperiment` until it returns: points serialized, chunked, submitted, "
        "recorded as pending and committed). Target: 10,000 points in under 2 s; epyc 1.7.2 sleeps "
        "10 ms per job, 10 s per 1,000 points.",
        table(["points", "notebook", "best (s)", "median (s)", "points/s (best)"], sub),
        f"**End to end**, {n:,} points: `runExperiment` + `wait()` on a connected lab against `map_async` on "
        f"the same engines with the lab's chunk size ({e2e['chunk']}). Target: at least 60% of the "
        "experiment-runs floor.",
        table(
            ["run", "best (s)", "median (s)", "points/s (best)", "lab / floor (best)", "lab / floor (median)"],
            [
                ["ClusterLab", f"{lab_best:.3f}", f"{lab_med:.3f}", f"{n / lab_best:,.0f}", "", ""],
                ["map_async, experiment runs", f"{runs_best:.3f}", f"{runs_med:.3f}", f"{n / runs_best:,.0f}",
                 f"{runs_best / lab_best:.0%}", f"{runs_med / lab_med:.0%}"],
                ["map_async, bare 2*x", f"{bare_best:.3f}", f"{bare_med:.3f}", f"{n / bare_best:,.0f}",
                 f"{bare_best / lab_best:.0%}", f"{bare_med / lab_med:.0%}"],
            ],
        ),
        f"**Latency** from the last job's end (its END_TIME) to `wait()` returning, {LATENCY_POINTS} jobs of "
        f"{LATENCY_SECONDS} s. Target: under 1 s; epyc 1.7.2 polls every 30 s.",
        table(
            ["collector", "best (s)", "median (s)", "worst (s)"],
            [
                ["the submitting lab (woken by the tasks' futures)", f"{min(lat['own']):.3f}",
                 f"{statistics.median(lat['own']):.3f}", f"{max(lat['own']):.3f}"],
                [f"another lab (polls every {ClusterLab.WaitingTime} s)", f"{min(lat['other']):.3f}",
                 f"{statistics.median(lat['other']):.3f}", f"{max(lat['other']):.3f}"],
            ],
        ),
        "**1,000 points end to end**: `runExperiment` + `wait()` on the running controller. "
        "Target: at least 5,000 points/s. The submitting process's CPU seconds (all threads) say what it "
        "costs itself, whatever else runs on the machine.",
        table(["points", "best (s)", "median (s)", "points/s (best)", "points/s (median)", "submitter CPU (s, median)"],
              [["1,000", f"{min(small):.3f}", f"{statistics.median(small):.3f}", f"{1000 / min(small):,.0f}",
                f"{1000 / statistics.median(small):,.0f}", f"{statistics.median(small_cpu):.3f}"]]),
        *([] if large is None else [
            f"**{args.big:,} points through a durable controller** (a fresh one, SQLite task store), submitted "
            "and collected into an HDF5 notebook by one process of their own; once. Target: no lost or "
            "duplicated row.",
            table(["", "value"], [
                ["submit (s)", f"{large['submit']:.1f}"],
                ["collect, wait() (s)", f"{large['wait']:.1f}"],
                ["whole process, start to exit (s)", f"{large['seconds']:.1f}"],
                ["points/s (submit + collect)", f"{args.big / (large['submit'] + large['wait']):,.0f}"],
                ["submitter, until the sweep is collected: peak memory (MB) / CPU (s)",
                 f"{large['rss_mb']:.0f} / {large['cpu']:.1f}"],
                [f"controller ({large['controller_processes']} processes): peak memory summed (MB) / CPU (s)",
                 f"{large['controller_mb']:.0f} / {large['controller_cpu']:.1f}"],
                ["task store on disk (MB)", f"{large['store_mb']:.0f}"],
                ["rows / distinct points / missing / failed / still pending",
                 f"{large['rows']:,} / {large['distinct']:,} / {large['missing']} / {large['failed']} / "
                 f"{large['pending']}"],
            ]),
        ]),
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in load_after)}.",
        machine(),
    ])
    print(body)
    if not args.no_write:
        write_section("cluster", body)


if __name__ == "__main__":
    main()
