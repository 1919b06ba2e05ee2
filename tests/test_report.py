"""``epyclab report``: one self-contained HTML page per notebook, checked by reading the page it renders.

Generated notebooks (one to three swept parameters, repetitions, failures of
several exception types, pending jobs) are rendered, and the page is parsed:
the counts, failure groups and plots are the result set's, every image is an
embedded PNG, and nothing on the page reaches the network. The command runs on
epyc 1.x files (HDF5 and JSON) without changing them, and on a notebook that
another process is writing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab.combinators import RepeatedExperiment
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.report import renderNotebook

EPYCLAB = str(Path(sys.executable).with_name("epyclab"))
FIXTURES = Path(__file__).with_name("fixtures")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EPYCLAB, *args], capture_output=True, text=True, timeout=180)


class Page(HTMLParser):
    """What a report page holds: its images, the text of its headings, tags and attributes that reach out."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[bytes] = []
        self.captions: list[str] = []
        self.headings: list[str] = []
        self.outside: list[str] = []
        self.counts: list[list[str]] = []
        self._in: str | None = None
        self._cells: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.outside.append(tag)
        for k in ("src", "href"):
            v = a.get(k) or ""
            if k == "href" and v.startswith("#"):
                continue
            if v:
                if not v.startswith("data:image/png;base64,"):
                    self.outside.append(v)
                else:
                    self.images.append(base64.b64decode(v.split(",", 1)[1]))
        if tag in ("h2", "h3", "h4", "figcaption"):
            self._in = tag
        if tag == "table" and a.get("class") == "counts":
            self._cells = []
        if tag == "td" and self._cells is not None:
            self._in = "td"

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._cells is not None:
            self.counts.append(self._cells)
            self._cells = None
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in in ("h2", "h3", "h4"):
            self.headings.append(data)
        elif self._in == "figcaption":
            self.captions.append(data)
        elif self._in == "td" and self._cells is not None:
            self._cells.append(data)


class Sweep(Experiment):
    """Numeric results from the point; raises the exception ``bad`` names at some points."""

    def __init__(self, bad: dict[int, str]) -> None:
        super().__init__()
        self.bad = bad
        self.rng = np.random.default_rng()

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        kind = self.bad.get(params["a"])
        if kind == "value":
            raise ValueError(f"<script>alert({params['a']})</script> at a={params['a']}")
        if kind == "zero":
            raise ZeroDivisionError("no walk")
        return {"m": float(self.rng.normal(params["a"])), "k": int(params["a"]) * 2, "name": "x"}


@st.composite
def notebooks(draw: st.DrawFn) -> dict[str, Any]:
    swept = draw(st.integers(0, 3))
    sizes = [draw(st.integers(2, 4)) for _ in range(swept)]
    bad = draw(st.dictionaries(st.integers(0, 3), st.sampled_from(["value", "zero"]), max_size=2))
    return {"sizes": sizes, "bad": bad, "reps": draw(st.integers(1, 2)), "pending": draw(st.integers(0, 2))}


def make(case: dict[str, Any]) -> LabNotebook:
    nb = LabNotebook(description="generated")
    nb.addResultSet("sweep", "the generated sweep")
    lab = Lab(nb)
    lab["a"] = list(range(case["sizes"][0])) if case["sizes"] else [1]
    for i, n in enumerate(case["sizes"][1:]):
        lab[f"b{i}"] = [0.5 * j for j in range(n)]
    e: Experiment = Sweep(case["bad"])
    if case["reps"] > 1:
        e = RepeatedExperiment(e, case["reps"])
    lab.runExperiment(e, progress=False, seed=5)
    for j in range(case["pending"]):
        nb.addPendingResult({"a": 100 + j, **{f"b{i}": 0.0 for i in range(len(case["sizes"]) - 1)}}, f"job{j}")
    return nb


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(notebooks())
def test_a_generated_notebooks_page_shows_its_counts_failures_and_plots_and_reaches_nothing_outside(
    case: dict[str, Any]
) -> None:
    nb = make(case)
    page = Page(renderNotebook(nb, "generated.h5"))
    assert page.outside == []
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in page.images)
    df = nb.dataframe("sweep", only_successful=False)
    ok = df[Experiment.STATUS].astype(bool)
    done, failed = int(ok.sum()), int((~ok).sum())
    # The sweep's counts: done, failed, pending, total.
    assert [str(done), str(failed), str(case["pending"]), str(done + failed + case["pending"])] in page.counts
    # Failures grouped by exception, with their counts.
    for name in set(df.loc[~ok, Experiment.EXCEPTION].str.split(":").str[0]):
        n = int((df.loc[~ok, Experiment.EXCEPTION].str.split(":").str[0] == name).sum())
        assert f"{name}: {n} point(s)" in page.headings
    # One plot per numeric result with a successful run, of the kind the number of swept parameters asks for.
    swept = len(case["sizes"]) + (1 if case["pending"] and not case["sizes"] else 0)
    plotted = [c for c in page.captions if c.startswith(("m ", "k "))]
    assert len(plotted) == (2 if done else 0)
    kind = {0: "no parameter is swept", 1: "line: mean over runs", 2: "mean per cell", 3: "one panel per"}
    assert all(kind[min(swept, 3)] in c for c in plotted)
    assert "Time per point" in page.headings


def test_text_from_the_notebook_is_escaped() -> None:
    nb = make({"sizes": [3], "bad": {1: "value"}, "reps": 1, "pending": 0})
    text = renderNotebook(nb, "x.h5")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_command_reports_epyc_files_without_changing_them(tmp_path: Path) -> None:
    for name in ("epyc-1.7.2-notebook.h5", "epyc-1.7.2-notebook.json"):
        src = tmp_path / name
        shutil.copy(FIXTURES / name, src)
        before = digest(src)
        out = run("report", str(src), "-o", str(tmp_path / f"{name}.html"))
        assert out.returncode == 0, out.stderr
        page = Page((tmp_path / f"{name}.html").read_text())
        assert {"walks", "repeated", "pending"} <= {h.split(" (")[0] for h in page.headings}
        assert page.outside == [] and page.images
        assert digest(src) == before
    # Read as they are: no conversion, no backup, no side file left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"epyc-1.7.2-notebook.{s}" for s in ("h5", "json", "h5.html", "json.html")])


def test_the_command_keeps_an_existing_page_unless_forced_and_never_writes_over_the_notebook(tmp_path: Path) -> None:
    src = tmp_path / "nb.json"
    shutil.copy(FIXTURES / "epyc-1.7.2-notebook.json", src)
    assert run("report", str(src), "-o", str(tmp_path / "r.html")).returncode == 0
    out = run("report", str(src), "-o", str(tmp_path / "r.html"))
    assert out.returncode == 1 and "exists: use --force" in out.stderr
    assert run("report", "--force", str(src), "-o", str(tmp_path / "r.html")).returncode == 0
    out = run("report", "--force", str(src), "-o", str(src))
    assert out.returncode == 1 and "would overwrite the notebook" in out.stderr


WRITER = """
import sys
from epyclab import HDF5LabNotebook, Lab, Experiment
class Square(Experiment):
    def do(self, p):
        return {"y": p["x"] ** 2}
nb = HDF5LabNotebook(sys.argv[1], create=True)
lab = Lab(nb)
lab["x"] = range(7)
lab.runExperiment(Square(), progress=False)
print("committed", flush=True)
sys.stdin.readline()   # holds the notebook open for writing until told to go on
lab["x"] = range(7, 10)
lab.runExperiment(Square(), progress=False)
nb.close()
print("closed", flush=True)
"""


def test_a_notebook_another_process_is_writing_is_reported_read_only(tmp_path: Path) -> None:
    fn = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(fn)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "committed"
        out = run("report", str(fn), "-o", str(tmp_path / "live.html"))
        assert out.returncode == 0, out.stderr
        page = Page((tmp_path / "live.html").read_text())
        assert ["7", "0", "0", "7"] in page.counts
        # The writer goes on undisturbed, and its later rows are in the next report.
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "closed"
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert run("report", "--force", str(fn), "-o", str(tmp_path / "live.html")).returncode == 0
    assert ["10", "0", "0", "10"] in Page((tmp_path / "live.html").read_text()).counts


def test_without_matplotlib_the_error_says_which_extra_to_install(tmp_path: Path) -> None:
    src = tmp_path / "nb.json"
    shutil.copy(FIXTURES / "epyc-1.7.2-notebook.json", src)
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from epyclab.cli import main\n"
            f"main(['report', {str(src)!r}])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "pip install matplotlib" in out.stderr and "'.[report]'" in out.stderr
    assert re.search(r"not installed", out.stderr) and not src.with_suffix(".html").exists()


def test_rows_replaced_by_a_rerun_are_not_counted_and_are_said_to_be_kept() -> None:
    nb = make({"sizes": [4], "bad": {1: "zero", 2: "zero"}, "reps": 1, "pending": 0})
    lab = Lab(nb)
    lab["a"] = list(range(4))
    assert lab.rerunFailed(Sweep({2: "zero"}), progress=False) == 2
    text = renderNotebook(nb, "x.h5")
    page = Page(text)
    assert ["3", "1", "0", "4"] in page.counts
    assert "ZeroDivisionError: 1 point(s)" in page.headings
    assert "2 earlier row(s) were replaced by reruns" in text
