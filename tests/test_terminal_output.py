"""A ParallelLab sweep run from a terminal prints its progress bar and nothing of the local cluster's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kernels import CLUSTER_NOISE, processes_under, text_bar_draws

SCRIPT = textwrap.dedent("""
    from epyclab import Experiment, ParallelLab

    class Square(Experiment):
        def do(self, params):
            return {"y": params["x"] ** 2}

    if __name__ == "__main__":
        for _ in range(2):
            lab = ParallelLab(cores=2)
            lab["x"] = range(20)
            lab.runExperiment(Square(), progress=True)
            print(len(lab.dataframe()))
""")


@pytest.mark.timeout(300)
def test_terminal_shows_only_the_bars(tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    ipython_dir = tmp_path / "ipython"
    env = dict(os.environ, IPYTHONDIR=str(ipython_dir))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "20\n20\n"
    for noise in CLUSTER_NOISE:
        assert noise not in done.stderr, f"{noise!r} reached the terminal:\n{done.stderr}"
    draws = text_bar_draws(done.stderr)
    # Two sweeps, one bar each: each starts at 0 and ends at 20, with no redraw printed twice.
    starts = [i for i, (_, n, _) in enumerate(draws) if n == 0]
    assert len(starts) == 2, draws
    for bar in (draws[: starts[1]], draws[starts[1]:]):
        counts = [n for _, n, _ in bar]
        assert counts == sorted(set(counts)) and counts[-1] == 20, bar
        assert {(d, t) for d, _, t in bar} == {("ParallelLab", 20)}
    assert not processes_under(ipython_dir)
