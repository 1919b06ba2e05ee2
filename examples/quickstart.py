"""Quickstart: a Monte Carlo estimate of the volume of the unit ball in d dimensions.

Sweeps the dimension ``d`` and the number of random samples ``n``, and prints,
for each point, the estimate, the exact volume and the relative error.

Run it with ``python examples/quickstart.py`` (``--help`` lists the options).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from epyclab import Experiment, Lab


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
    args = parser.parse_args(argv)

    lab = Lab()
    lab["d"] = args.dims
    lab["n"] = args.samples
    lab.runExperiment(BallVolume())

    df = lab.dataframe()
    print(df[["d", "n", "estimate", "exact", "error"]].to_string(index=False, float_format="%.5f"))


if __name__ == "__main__":
    main()
