"""Submit a sweep to a running ipyparallel cluster, and exit without waiting.

The points become pending results in the notebook; collect them later, from
this machine or another one with the same notebook and profile, with
``examples/cluster_collect.py``. Start a cluster first, e.g. on this machine:

    epyclab cluster init demo && epyclab cluster start demo --local -n 2
    python examples/cluster_submit.py --profile demo
    python examples/cluster_collect.py --profile demo

Each point estimates pi from ``n`` random points with a given seed.
"""

from __future__ import annotations

import argparse

import numpy as np

from epyclab import ClusterLab, Experiment, HDF5LabNotebook


class Pi(Experiment):
    """Estimate pi as 4 x the fraction of random points in the unit square inside the quarter circle."""

    def do(self, params):
        rng = np.random.default_rng(params["seed"])
        xy = rng.random((params["n"], 2))
        inside = np.count_nonzero((xy**2).sum(axis=1) <= 1.0)
        return {"pi": 4.0 * inside / params["n"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", help="the IPython profile of the cluster")
    parser.add_argument("--notebook", default="cluster.h5")
    parser.add_argument("--samples", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)

    nb = HDF5LabNotebook(args.notebook, create=True, description="pi by Monte Carlo, on a cluster")
    lab = ClusterLab(nb, profile=args.profile)
    lab["n"] = args.samples
    lab["seed"] = range(args.seeds)
    lab.runExperiment(Pi())
    print(f"submitted {nb.numberOfPendingResults()} points to {lab.numberOfEngines()} engine(s); "
          f"collect them with: python examples/cluster_collect.py --profile {args.profile} "
          f"--notebook {args.notebook}")
    lab.close()


if __name__ == "__main__":
    main()
