"""The examples run, as a user would run them, with small sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from epyclab import HDF5LabNotebook

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env=env,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_quickstart_prints_the_table_read_from_its_notebook(tmp_path: Path) -> None:
    done = run_example("quickstart.py", "--dims", "2", "3", "--samples", "1000", "5000", "--seeds", "2",
                       "--cores", "2", cwd=tmp_path)
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["d", "n", "estimate", "exact", "error", "runs"]
    assert len(lines) == 1 + 4 + 1  # header, 2 x 2 points, the closing line
    assert "8 runs on 2 cores" in lines[-1]
    with HDF5LabNotebook(str(tmp_path / "quickstart.h5"), readonly=True) as nb:
        df = nb.dataframe()
    assert len(df) == 8
    assert (df["error"] < 0.5).all()


def test_epidemic_sweeps_summaries_and_saves_a_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the epidemic example's plot needs the 'plot' extra")
    done = run_example("epidemic.py", "--sizes", "60", "120", "--betas", "3", "--repetitions", "3",
                       "--cores", "2", cwd=tmp_path)
    assert "plot saved to epidemic.png" in done.stdout
    png = tmp_path / "epidemic.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with HDF5LabNotebook(str(tmp_path / "epidemic.h5"), readonly=True) as nb:
        df = nb.dataframe()
    assert len(df) == 6
    assert (df["epyc.summaryexperiment.repetitions"] == 3).all()
    assert ((df["final_size_mean"] >= 0) & (df["final_size_mean"] <= 1)).all()
    assert (df["final_size_min"] <= df["final_size_max"]).all()


def test_cluster_examples_submit_then_collect_in_another_process(tmp_path: Path) -> None:
    ipython_dir = tmp_path / "ipython"
    env = dict(os.environ, IPYTHONDIR=str(ipython_dir))
    epyclab = [sys.executable, "-m", "epyclab"]
    subprocess.run([*epyclab, "cluster", "init", "demo"], env=env, check=True, capture_output=True, timeout=120)
    started = subprocess.run([*epyclab, "cluster", "start", "demo", "--local", "-n", "2"], env=env,
                             capture_output=True, text=True, timeout=180)
    try:
        assert started.returncode == 0, started.stderr
        submitted = run_example("cluster_submit.py", "--profile", "demo", "--samples", "1000", "2000",
                                "--seeds", "3", cwd=tmp_path, env=env)
        assert "submitted 6 points" in submitted.stdout
        with HDF5LabNotebook(str(tmp_path / "cluster.h5"), readonly=True) as nb:
            assert nb.numberOfPendingResults() == 6  # the submitter left, its jobs are in the file
        collected = run_example("cluster_collect.py", "--profile", "demo", "--timeout", "120", cwd=tmp_path, env=env)
        lines = collected.stdout.strip().splitlines()
        assert lines[0].split() == ["n", "mean", "std", "count"]
        assert [line.split()[-1] for line in lines[1:3]] == ["3", "3"]
    finally:
        subprocess.run([*epyclab, "cluster", "stop", "demo"], env=env, capture_output=True, timeout=120)
