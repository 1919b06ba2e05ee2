"""An SIR epidemic on random networks, swept over infection rate and network size.

Each point runs the epidemic several times (``RepeatedExperiment``) and keeps
summary statistics of the outbreaks (``SummaryExperiment``): the mean, median,
variance, minimum and maximum of the final epidemic size. The sweep runs on
every core (``ParallelLab``), the results go to an HDF5 notebook, and a plot of
final size against infection rate, one line per network size, is saved as a
PNG (needs matplotlib: ``pip install -e '.[plot]'`` from the checkout).

    python examples/epidemic.py [--sizes 200 500] [--betas 8] [--repetitions 10] [--cores 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from epyclab import Experiment, HDF5LabNotebook, ParallelLab, RepeatedExperiment, SummaryExperiment

#: The mean degree of the random networks.
MEAN_DEGREE = 6.0
#: The per-step probability that an infected node recovers.
RECOVERY = 0.2


def erdos_renyi(n: int, mean_degree: float, rng: np.random.Generator) -> list[np.ndarray]:
    """A G(n, p) random network as adjacency lists, with p chosen for the mean degree."""
    p = mean_degree / (n - 1)
    upper = np.triu(rng.random((n, n)) < p, k=1)
    i, j = np.nonzero(upper | upper.T)
    return np.split(j, np.searchsorted(i, np.arange(1, n)))


class SIR(Experiment):
    """A discrete-time SIR epidemic from one random seed node.

    At every step each infected node infects each susceptible neighbour with
    probability ``beta`` and recovers with probability ``RECOVERY``.
    """

    def setUp(self, params):
        super().setUp(params)
        self._rng = np.random.default_rng()
        self._network = erdos_renyi(params["N"], MEAN_DEGREE, self._rng)

    def do(self, params):
        n, beta, rng = params["N"], params["beta"], self._rng
        state = np.zeros(n, dtype=np.int8)  # 0 susceptible, 1 infected, 2 removed
        state[rng.integers(n)] = 1
        peak, steps = 1, 0
        while (infected := np.flatnonzero(state == 1)).size:
            neighbours = np.concatenate([self._network[i] for i in infected])
            exposed = neighbours[state[neighbours] == 0]
            caught = exposed[rng.random(exposed.size) < beta]
            state[infected[rng.random(infected.size) < RECOVERY]] = 2
            state[caught] = 1
            peak = max(peak, int(np.count_nonzero(state == 1)))
            steps += 1
        return {"final_size": float(np.count_nonzero(state == 2)) / n, "peak": peak / n, "duration": steps}


def plot(df, path: Path) -> None:
    """Final epidemic size against infection rate, one line per network size, with ±1 sd bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for n, group in df.sort_values("beta").groupby("N"):
        ax.errorbar(
            group["beta"], group["final_size_mean"], yerr=np.sqrt(group["final_size_variance"]),
            marker="o", capsize=3, label=f"N = {n}",
        )
    ax.set_xlabel("infection rate β")
    ax.set_ylabel("final epidemic size (fraction)")
    ax.set_title(f"SIR on random networks (mean degree {MEAN_DEGREE:g})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument("--betas", type=int, default=8, help="how many infection rates in [0.01, 0.25]")
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--cores", type=int, default=0, help="0 all, n that many, -n all but n")
    parser.add_argument("--notebook", default="epidemic.h5")
    parser.add_argument("--plot", default="epidemic.png")
    args = parser.parse_args(argv)

    with HDF5LabNotebook(args.notebook, create=True, description="SIR epidemics on random networks") as nb:
        lab = ParallelLab(nb, cores=args.cores)
        lab["N"] = args.sizes
        lab["beta"] = np.linspace(0.01, 0.25, args.betas)
        lab.runExperiment(SummaryExperiment(RepeatedExperiment(SIR(), args.repetitions)))
        df = nb.dataframe()

    columns = ["N", "beta", "final_size_mean", "final_size_variance", "peak_mean", "duration_mean"]
    print(df[columns].sort_values(["N", "beta"]).to_string(index=False, float_format="%.3f"))
    try:
        plot(df, Path(args.plot))
    except ImportError:
        print("matplotlib is not installed: run pip install -e '.[plot]' in the epyclab checkout to get the plot")
    else:
        print(f"plot saved to {args.plot}")


if __name__ == "__main__":
    main()
