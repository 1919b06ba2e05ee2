"""``epyclab copy SOURCE:TAG=NEWTAG``: a set copied under another tag, with every guarantee of copy.

Two notebooks' default sets merge into one file; tags holding ``:`` and ``=``
are read as the documented rule says (hypothesis generates them); a copy that
cannot be made (a clash, two sets for one tag, a locked destination) writes
nothing and leaves the destination as it was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_notebooks import digest

from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook, LabNotebook
from epyclab.cli import main

EPYCLAB = str(Path(sys.executable).with_name("epyclab"))
DEFAULT = LabNotebook.DEFAULT_RESULTSET


def run(*args: str) -> subprocess.CompletedProcess:
    """The installed ``epyclab`` command, as a user runs it."""
    return subprocess.run([EPYCLAB, *args], capture_output=True, text=True, timeout=120)


def _row(x: int, y: float) -> dict:
    return {Experiment.PARAMETERS: {"x": x}, Experiment.METADATA: {}, Experiment.RESULTS: {"y": y}}


def study(path: Path, ys: list[float], cls=HDF5LabNotebook) -> Path:
    """A notebook whose default set holds one row per ``ys``, and a pending job named after the file."""
    with cls(path, create=True) as nb:
        for i, y in enumerate(ys):
            nb.addResult(_row(i, y))
        nb.addPendingResult({"x": 99}, f"job-{path.stem}")
    return path


def test_two_default_sets_merge_into_one_file(tmp_path):
    a = study(tmp_path / "a.h5", [1.0, 2.0])
    b = study(tmp_path / "b.json", [3.0], cls=JSONLabNotebook)
    m = tmp_path / "m.h5"
    # The user's command: both under the default tag, refused, naming the way out; nothing made.
    done = run("copy", f"{a}:{DEFAULT}", f"{b}:{DEFAULT}", str(m))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "named more than once" in done.stderr and "SOURCE:TAG=NEWTAG" in done.stderr
    assert not m.exists()
    done = run("copy", f"{a}:{DEFAULT}", f"{b}:{DEFAULT}=from-b", str(m))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"copied {a}:{DEFAULT} -> {m} (2 row(s), 1 pending)",
        f"copied {b}:{DEFAULT} -> {m}:from-b (1 row(s), 1 pending)",
    ]
    got = HDF5LabNotebook(m, readonly=True)
    assert got.keys() == [DEFAULT, "from-b"] and got.currentTag() == DEFAULT
    assert got.dataframe(DEFAULT)["y"].tolist() == [1.0, 2.0]
    assert got.dataframe("from-b")["y"].tolist() == [3.0]
    assert got.resultSet("from-b").pendingResults() == ["job-b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.json", "m.h5"]  # no temporary file


def test_renaming_into_an_existing_file_keeps_its_current_set(tmp_path):
    a = study(tmp_path / "a.h5", [1.0])
    b = study(tmp_path / "b.h5", [2.0])
    m = tmp_path / "m.h5"
    with HDF5LabNotebook(m, create=True) as nb:
        nb.addResultSet("mine")
        nb.addResult(_row(0, 9.0))
    done = run("copy", f"{a}:{DEFAULT}=from-a", f"{b}:{DEFAULT}=from-b", str(m))
    assert done.returncode == 0, done.stderr
    got = HDF5LabNotebook(m, readonly=True)
    assert got.currentTag() == "mine"
    assert got.keys() == [DEFAULT, "mine", "from-a", "from-b"]
    assert got.dataframe("from-a")["y"].tolist() == [1.0] and got.dataframe("from-b")["y"].tolist() == [2.0]


def test_a_renamed_copy_that_cannot_be_made_changes_nothing(tmp_path):
    a = study(tmp_path / "a.h5", [1.0])
    m = tmp_path / "m.h5"
    with HDF5LabNotebook(m, create=True) as nb:
        nb.addResultSet("taken")
    before = digest(m)
    clash = run("copy", f"{a}:{DEFAULT}=taken", str(m))
    assert clash.returncode == 1 and "Traceback" not in clash.stderr
    assert f"{m} already has result set(s) ['taken']" in clash.stderr and "SOURCE:TAG=NEWTAG" in clash.stderr
    twice = run("copy", f"{a}:{DEFAULT}=new", f"{a}:{DEFAULT}=new", str(m))
    assert twice.returncode == 1 and "['new'] are named more than once" in twice.stderr
    missing = run("copy", f"{a}:nope=new", str(m))
    assert missing.returncode == 1 and "no result set 'nope=new' or 'nope'" in missing.stderr
    assert digest(m) == before
    with HDF5LabNotebook(m) as nb:
        nb.finish()
    before = digest(m)
    locked = run("copy", f"{a}:{DEFAULT}=new", str(m))
    assert locked.returncode == 1 and f"{m} is locked (finished)" in locked.stderr
    assert digest(m) == before


def test_dry_run_names_the_new_tag_and_writes_nothing(tmp_path):
    a = study(tmp_path / "a.h5", [1.0, 2.0])
    m = tmp_path / "m.h5"
    out = CliRunner().invoke(main, ["copy", "--dry-run", f"{a}:{DEFAULT}=renamed", str(m)])
    assert out.exit_code == 0, out.output
    assert out.output == f"would copy {a}:{DEFAULT} -> {m}:renamed (2 row(s), 1 pending)\n"
    assert not m.exists()


#: Tags made of letters, ':' and '=', so that names and renamings meet.
TAGS = st.text(alphabet="ab:=", min_size=1, max_size=5)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tags=st.lists(TAGS, min_size=1, max_size=4, unique=True), data=st.data())
def test_tags_with_colons_and_equals_are_read_as_documented(tags, data, tmp_path_factory):
    d = tmp_path_factory.mktemp("rename")
    src = d / "src.h5"
    with HDF5LabNotebook(src, create=True) as nb:
        for i, t in enumerate(tags):
            nb.addResultSet(t)
            nb.addResult(_row(i, float(i)))
    tag = data.draw(st.sampled_from(tags))
    new = data.draw(st.one_of(st.none(), TAGS))
    rest = tag if new is None else f"{tag}={new}"
    # The rule: the whole text is a tag if there is one of that name; else the one '=' whose left is a tag.
    if rest in tags:
        readings = [(rest, rest)]
    else:
        readings = [(rest[:i], rest[i + 1:]) for i, c in enumerate(rest)
                    if c == "=" and rest[:i] in tags and rest[i + 1:]]
    dest = d / "dest.h5"
    out = CliRunner().invoke(main, ["copy", f"{src}:{rest}", str(dest)])
    if len(readings) != 1:
        assert out.exit_code == 1 and "can be read as copying" in out.output, out.output
        assert not dest.exists()
        return
    assert out.exit_code == 0, out.output
    (old, got_new), = readings
    # What the user typed is what is copied: TAG as TAG, or TAG as NEWTAG.
    assert (old, got_new) == ((rest, rest) if rest in tags else (tag, new))
    copied = HDF5LabNotebook(dest, readonly=True)
    assert got_new in copied
    pd.testing.assert_frame_equal(copied.dataframe(got_new, only_successful=False),
                                  HDF5LabNotebook(src, readonly=True).dataframe(old, only_successful=False))
