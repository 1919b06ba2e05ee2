"""`epyclab cluster` is quiet by default: it says what it did, and shows the commands it runs only with -v.

-q and -v are accepted before the subcommand and after it. Run as a user
would, in a shell (subprocesses), with a real single-machine cluster in an
IPython directory of the test's own, stopped by the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from epyclab.clustersetup.state import loadProcesses

EPYCLAB = str(Path(sys.executable).parent / "epyclab")



def epyclab(ipdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([EPYCLAB, "cluster", "--ipython-dir", str(ipdir), *args], capture_output=True,
                          text=True, timeout=180, env=dict(os.environ, IPYTHONDIR=str(ipdir)))
    assert done.returncode == 0, f"epyclab cluster {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.timeout(600)
def test_quiet_by_default_verbose_and_quiet_after_any_subcommand(ipdir: Path) -> None:
    init = epyclab(ipdir, "init", "demo")
    assert "profile demo" in init.stdout
    assert "sh -c" not in init.stdout + init.stderr

    # Default: what happened, not how.
    started = epyclab(ipdir, "start", "demo", "--local", "-n", "1")
    assert "1 engine(s) ready" in started.stdout
    assert "controller started" in started.stderr
    assert "sh -c" not in started.stdout + started.stderr
    assert "setsid" not in started.stderr

    # -v after the subcommand: every command, scripts included.
    status = epyclab(ipdir, "status", "demo", "-v")
    assert "answering" in status.stdout
    assert "sh -c" in status.stderr

    # -q after the subcommand: nothing but the outcome.
    quiet = epyclab(ipdir, "status", "demo", "-q")
    assert quiet.stderr == ""
    assert quiet.stdout == status.stdout

    # -q wins over -v, and the group's own -q/-v still work.
    assert epyclab(ipdir, "-v", "status", "demo", "-q").stderr == ""
    assert "sh -c" in epyclab(ipdir, "-v", "status", "demo").stderr

    stopped = epyclab(ipdir, "stop", "demo", "-q")
    assert stopped.stderr == ""
    assert loadProcesses(ipdir / "profile_demo").empty()
