"""Quickstart: a Monte Carlo estimate of the volume of the unit ball in d dimensions.

Sweeps the dimension ``d`` and the number of random samples ``n`` on every
core of this machine (a ``ParallelLab``: on Linux it forks one copy of this
process per core; elsewhere it runs on a local ipyparallel cluster), keeps the
results in an HDF5 notebook, and prints, for each point, the estimate, the
exact volume and the relative error, read back from the notebook file.

Run it with ``python examples/quickstart.py`` (``--help`` lists the options).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from epyclab import Experiment, HDF5LabNotebook, ParallelLab


class BallVolume(Experiment):
    """Estimate the volume of the unit d-ball by sampling the cube [-1, 1]^d."""

    def do(self, params):
        d, n = params["d"], params["n"]
        rng = np.random.default_rng(params.get("seed", 0))
        points = rng.uniform(-1.0, 1.0, size=(n, d))
        inside = np.count_nonzero((points**2).sum(axis=1) <= 1.0)
        estimate = (2.0**d) * inside / n
        exact = math.pi ** (d / 2) / math.gamma(d / 2 + 1)
        return {"estimate": estimate, "exact": exact, "error": abs(estimate - exact) / exact}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3, 5, 8])
    parser.add_argument("--samples", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--seeds", type=int, default=4, help="independent estimates per point")
    parser.add_argument("--cores", type=int, default=0, help="0 all, n that many, -n all but n")
    parser.add_argument("--notebook", default="quickstart.h5")
    args = parser.parse_args(argv)

    with HDF5LabNotebook(args.notebook, create=True, description="volume of the unit d-ball") as nb:
        lab = ParallelLab(nb, cores=args.cores)
        lab["d"] = args.dims
        lab["n"] = args.samples
        lab["seed"] = range(args.seeds)
        lab.runExperiment(BallVolume())

    # Read the results back from the file, as a later analysis would.
    with HDF5LabNotebook(args.notebook) as nb:
        df = nb.dataframe()
    table = df.groupby(["d", "n"]).agg(
        estimate=("estimate", "mean"), exact=("exact", "first"), error=("error", "mean"), runs=("seed", "count")
    )
    print(table.reset_index().to_string(index=False, float_format="%.5f"))
    print(f"{len(df)} runs on {lab.numberOfCores()} cores, saved in {args.notebook}")

if __name__ == "__main__":
    main()
