"""A bar says what it counts: runs (with their failures) for a sweep, jobs sent for a ClusterLab's submission."""

from __future__ import annotations

import re
import sys

import pytest

from epyclab.experiment import Experiment
from epyclab.progress import Progress


def _rc(ok: bool) -> dict:
    return {Experiment.PARAMETERS: {}, Experiment.RESULTS: {}, Experiment.METADATA: {Experiment.STATUS: ok}}


def test_a_sweep_bar_counts_runs_and_failures(capsys):
    with Progress(3, enabled=True, desc="Lab") as bar:
        for ok in (True, False, True):
            bar.record(_rc(ok))
    err = capsys.readouterr().err
    assert "Lab" in err and "3/3" in err and "run" in err and "failed=1" in err


def test_a_submission_bar_counts_jobs_and_no_failures(capsys):
    with Progress(4, enabled=True, desc="ClusterLab: submitting", unit="job") as bar:
        bar.add(4, 0)
    err = capsys.readouterr().err
    assert "ClusterLab: submitting" in err and "4/4" in err and "job" in err
    assert "failed" not in err and "run/s" not in err


def _in_a_terminal(argv: list[str]) -> str:
    """Run ``argv`` on a real pseudo-terminal (120 columns) and return everything it wrote there."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: the program, its stdout and stderr the terminal
        os.execv(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    os.waitpid(pid, 0)
    os.close(fd)
    return out.decode("utf-8", "replace")


@pytest.mark.parametrize("points", [1, 3, 6])
def test_a_terminal_sees_each_draw_once(tmp_path, points):
    # Seen: the last line of every bar was written twice (the sweep's last draw, then close()'s).
    script = tmp_path / "sweep.py"
    script.write_text(
        "import time\nfrom epyclab import Experiment, Lab\n"
        "class S(Experiment):\n"
        "    def do(self, p):\n"
        "        time.sleep(0.25)\n"  # longer than the bar's refresh interval: every point is drawn
        "        return {'y': p['x']}\n"
        f"lab = Lab()\nlab['x'] = range({points})\nlab.runExperiment(S())\n"
    )
    raw = _in_a_terminal([sys.executable, str(script)])
    draws = [d for d in re.split(r"[\r\n]", raw) if d.strip()]
    assert draws and all(d.startswith("Lab:") for d in draws), raw
    assert all(a != b for a, b in zip(draws, draws[1:])), f"a line drawn twice: {draws}"
    assert f"{points}/{points}" in draws[-1] and raw.endswith("\r\n")
