"""In a terminal, log records and printed lines written during a sweep never share the progress bar's line.

The sweep runs in a child process whose stdout and stderr are a real pseudo
terminal, so the bar is drawn (``progress`` left to its default) and redrawn
with carriage returns as a user sees it. The output is rendered as a terminal
would (a carriage return moves back to the start of the line, later text
overwrites earlier), and no rendered line may hold both a bar and a record.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest
from kernels import processes_under

SCRIPT = textwrap.dedent("""
    import logging
    import sys
    import threading
    import time

    from epyclab import Experiment, Lab, ParallelLab

    class Noisy(Experiment):
        def do(self, params):
            time.sleep(0.1)
            logging.getLogger("mystudy").warning("warn %d", params["x"])
            print(f"said {params['x']}")
            return {"y": params["x"]}

    def epyclab_warns():
        # epyclab's own warnings (an engine died, a notebook taken over) come from any thread.
        time.sleep(0.25)
        logging.getLogger("epyclab").warning("own warning")

    if __name__ == "__main__":
        if sys.argv[1] == "configured":
            logging.basicConfig(format="%(levelname)s:%(name)s:%(message)s")
        for lab in (Lab(), ParallelLab(cores=2)):
            lab["x"] = range(5)
            warner = threading.Thread(target=epyclab_warns)
            warner.start()
            lab.runExperiment(Noisy())
            warner.join()
        # Back to the user's own handlers once the bar is gone.
        assert all(type(h).__name__ != "_AroundBar" for h in logging.getLogger().handlers)
        assert type(logging.lastResort).__name__ != "_AroundBar"
        print("finished")
""")

_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BAR = re.compile(r"\d+%\||\d+/\d+ \[")
# A whole bar line and nothing else (the rate is runs per second, or seconds per run when slow).
_WHOLE_BAR = re.compile(r"(Parallel)?Lab: .*(run/s|s/run)(, failed=\d+)?\]")


def _rendered(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw``: after a carriage return, text overwrites the line from its start."""
    lines = []
    for line in _CSI.sub("", raw).split("\n"):
        cells: list[str] = []
        col = 0
        for ch in line:
            if ch == "\r":
                col = 0
                continue
            if col < len(cells):
                cells[col] = ch
            else:
                cells.append(ch)
            col += 1
        lines.append("".join(cells).rstrip())
    return lines


def _run_in_pty(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                break
            if not data:
                break
            chunks.append(data)
            assert time.monotonic() < deadline, "the sweep did not finish in time"
        return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(420)
@pytest.mark.parametrize("logging_setup", ["unconfigured", "configured"])
def test_records_and_prints_never_share_the_bars_line(tmp_path: Path, logging_setup: str) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    ipython_dir = tmp_path / "ipython"
    env = dict(os.environ, IPYTHONDIR=str(ipython_dir))
    rc, raw = _run_in_pty([sys.executable, str(script), logging_setup], tmp_path, env, timeout=300)
    lines = _rendered(raw)
    assert rc == 0, raw
    assert lines[-2:] == ["finished", ""] or lines[-1] == "finished", lines[-5:]
    bars = [line for line in lines if _BAR.search(line)]
    # Both sweeps drew their bar, to the end.
    assert any(line.startswith("Lab:") and "5/5" in line for line in bars), lines
    assert any(line.startswith("ParallelLab:") and "5/5" in line for line in bars), lines
    for line in bars:
        assert _WHOLE_BAR.fullmatch(line), f"a bar shares its line: {line!r}"
    # Every record and printed line is there, on a line of its own.
    for x in range(5):
        printed = [line for line in lines if re.search(rf"said {x}\b", line)]
        logged = [line for line in lines if re.search(rf"\bwarn {x}\b", line)]
        # Once from the sequential Lab (as written), once replayed from an engine (with the point).
        assert len(printed) == 2 and len(logged) == 2, (x, printed, logged)
        assert f"[x={x}] said {x}" in printed
        assert any(line.startswith(f"[x={x}] mystudy: warn {x}") or line.endswith(f"[x={x}] mystudy: warn {x}")
                   for line in logged), logged
        for line in printed + logged:
            assert not _BAR.search(line), f"a record shares the bar's line: {line!r}"
    own = [line for line in lines if "own warning" in line]
    assert len(own) == 2 and all(not _BAR.search(line) for line in own), own
    assert not processes_under(ipython_dir)


def test_console_handlers_keep_their_level_and_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from epyclab.progress import Progress

    console = io.StringIO()
    monkeypatch.setattr(sys, "stderr", console)
    root, study, quiet = logging.getLogger(), logging.getLogger("study.part"), logging.getLogger("study.quiet")
    files = logging.StreamHandler(io.StringIO())  # not the console: left alone
    shown = logging.StreamHandler(sys.stderr)
    shown.setLevel(logging.WARNING)
    own = logging.StreamHandler(sys.stderr)
    own.setFormatter(logging.Formatter("own %(message)s"))
    before = (list(root.handlers), root.level, logging.lastResort)
    root.handlers = [files, shown]
    root.setLevel(logging.DEBUG)
    study.handlers = [own]
    try:
        with Progress(3, enabled=True, desc="Lab") as bar:
            root.debug("debug one")  # under the console handler's level: not shown
            study.warning("warn two")  # its own handler and the root's
            quiet.error("error three")  # a logger without handlers: none added
            bar.add(1, 0)
        assert root.handlers == [files, shown] and study.handlers == [own] and quiet.handlers == []
    finally:
        root.handlers, study.handlers = before[0], []
        root.setLevel(before[1])
    assert logging.lastResort is before[2]
    lines = _rendered(console.getvalue())
    assert "debug one" not in console.getvalue()
    assert [line for line in lines if "two" in line or "three" in line] == ["own warn two", "warn two", "error three"]
    assert any(_BAR.search(line) for line in lines)
    assert all(line.startswith("Lab:") for line in lines if _BAR.search(line))
    assert "debug one" in files.stream.getvalue()
