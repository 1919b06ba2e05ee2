"""Collect the results of a sweep submitted by ``examples/cluster_submit.py``.

Run it any time after the submission, from any process: it connects to the
same cluster, collects every finished job into the notebook, waits for the
rest (up to ``--timeout`` seconds), and prints the table.
"""

from __future__ import annotations

import argparse
import sys

from epyclab import ClusterLab, HDF5LabNotebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--notebook", default="cluster.h5")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    nb = HDF5LabNotebook(args.notebook)
    lab = ClusterLab(nb, profile=args.profile)
    finished = lab.wait(timeout=args.timeout)
    df = lab.dataframe()
    summary = df.groupby("n")["pi"].agg(["mean", "std", "count"]).reset_index()
    print(summary.to_string(index=False, float_format="%.5f"))
    if not finished:
        print(f"{nb.numberOfPendingResults()} point(s) still pending: run this again later")
    lab.close()
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
