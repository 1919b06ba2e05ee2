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
    the hub every ``WaitingTime``).

Targets: 10,000 points submitted in under 2 s; (b) at least 60% of the
experiment-runs floor; (c) under 1 s. epyc 1.7.2 sleeps 10 ms per submitted
job (10 s for 1,000 points) and polls every 30 s.

    python benchmarks/cluster.py [--repeat 3] [--engines 2] [--no-write]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ipyparallel as ipp  # noqa: E402
from _parallel_experiments import Trivial, double  # noqa: E402
from _report import machine, table, write_section  # noqa: E402

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
    args = parser.parse_args()

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
            client.close()
        finally:
            cluster.stop_engines_sync()
            cluster.stop_controller_sync()

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
        machine(),
    ])
    print(body)
    if not args.no_write:
        write_section("cluster", body)


if __name__ == "__main__":
    main()
