"""The ``epyclab`` notebook commands: show, copy, remove, select, export.

Through click's runner for the details, and as a real subprocess for the
installed command's behaviour (exit codes, output).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook, Lab
from epyclab.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "epyc-1.7.2-notebook.h5"


class Square(Experiment):
    def do(self, params):
        if params["x"] == 3:
            raise ValueError("three is bad")
        return {"y": params["x"] ** 2}


def make_notebook(path: Path, cls=HDF5LabNotebook) -> Path:
    """A notebook with two result sets ('squares' with a failure, 'more' locked) and a pending job."""
    with cls(str(path), create=True, description="a test notebook") as nb:
        lab = Lab(nb)
        nb.addResultSet("squares", description="x squared")
        lab["x"] = range(5)
        lab.runExperiment(Square(), progress=False)
        nb.current()["note"] = "an attribute"
        nb.addPendingResult({"x": 10}, "job-10")
        nb.addResultSet("more")
        lab["x"] = [7, 8]
        lab.runExperiment(Square(), progress=False)
        nb.current().finish()
        nb.select("squares")
    return path


def digest(*paths: Path) -> str:
    """A hash of the files' bytes (and of which exist), to show a command changed nothing."""
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(p.parent.glob(p.name + "*")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def nbfile(tmp_path: Path) -> Path:
    return make_notebook(tmp_path / "study.h5")


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(main, list(args), catch_exceptions=False)


# ---- show ----------------------------------------------------------------------------------


def test_show_summarises_every_result_set(runner, nbfile):
    out = invoke(runner, "show", str(nbfile))
    assert out.exit_code == 0, out.output
    text = out.output
    assert "a test notebook" in text
    assert "squares (current)" in text
    assert "more (locked)" in text
    assert "rows: 5  failed: 1  pending: 1" in text
    assert "parameters: x" in text and "results: y" in text
    with HDF5LabNotebook(nbfile, readonly=True) as nb:
        n_metadata = len(nb.resultSet("squares").metadataNames())
    assert n_metadata >= 12  # epyc's standard metadata and more
    assert f"metadata: {n_metadata} column(s)" in text


def test_show_long_lists_metadata_and_attributes(runner, nbfile):
    text = invoke(runner, "show", "--long", str(nbfile)).output
    assert Experiment.STATUS in text and Experiment.HOST in text
    assert "attribute note: 'an attribute'" in text


def test_show_reads_an_epyc_notebook(runner, tmp_path):
    copy = tmp_path / "epyc.h5"
    shutil.copy(FIXTURE, copy)
    before = digest(copy)
    text = invoke(runner, "show", str(copy)).output
    assert "walks (current)" in text
    assert "rows: 12  failed: 3  pending: 0" in text
    assert "rows: 0  failed: 0  pending: 2" in text
    assert digest(copy) == before  # showing never converts or touches the file


def test_show_works_on_json_notebooks(runner, tmp_path):
    path = make_notebook(tmp_path / "study.json", JSONLabNotebook)
    out = invoke(runner, "show", str(path))
    assert out.exit_code == 0 and "squares (current)" in out.output


@pytest.mark.parametrize("command", [["show"], ["export", "--dry-run"], ["select"], ["remove"]])
def test_missing_file_is_a_clear_error(runner, tmp_path, command):
    target = str(tmp_path / "nope.h5") + ("" if command == ["show"] else ":squares")
    args = [*command, target] + (["out.csv"] if command[0] == "export" else [])
    out = runner.invoke(main, args)
    assert out.exit_code != 0
    assert "no notebook at" in out.output and "nope.h5" in out.output
    assert not (tmp_path / "nope.h5").exists()


def test_a_file_that_is_not_a_notebook_is_a_clear_error(runner, tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("hello")
    out = runner.invoke(main, ["show", str(junk)])
    assert out.exit_code != 0 and "junk.h5 is not a notebook in any format epyclab knows" in out.output
    assert junk.read_text() == "hello"


def test_an_hdf5_file_that_is_not_a_notebook_is_a_clear_error(runner, tmp_path):
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = [1, 2, 3]
    out = runner.invoke(main, ["show", str(other)])
    assert out.exit_code != 0
    assert "other.h5" in out.output and "notebook" in out.output


# ---- export ----------------------------------------------------------------------------------


def test_export_writes_the_result_set_as_csv(runner, nbfile, tmp_path):
    csv = tmp_path / "squares.csv"
    out = invoke(runner, "export", f"{nbfile}:squares", str(csv))
    assert out.exit_code == 0 and "wrote 5 row(s)" in out.output
    df = pd.read_csv(csv)
    assert sorted(df["x"]) == [0, 1, 2, 3, 4]
    only = tmp_path / "ok.csv"
    invoke(runner, "export", "--only-successful", f"{nbfile}:squares", str(only))
    assert sorted(pd.read_csv(only)["y"]) == [0, 1, 4, 16]


def test_export_dry_run_writes_nothing(runner, nbfile, tmp_path):
    csv = tmp_path / "squares.csv"
    out = invoke(runner, "export", "--dry-run", f"{nbfile}:squares", str(csv))
    assert "would write 5 row(s)" in out.output
    assert not csv.exists()


def test_export_of_a_missing_tag_names_the_known_tags(runner, nbfile, tmp_path):
    out = runner.invoke(main, ["export", f"{nbfile}:nope", str(tmp_path / "x.csv")])
    assert out.exit_code != 0
    assert "'nope'" in out.output and "'squares'" in out.output
    assert not (tmp_path / "x.csv").exists()


def test_export_into_a_missing_directory_leaves_no_file(runner, nbfile, tmp_path):
    out = runner.invoke(main, ["export", f"{nbfile}:squares", str(tmp_path / "nodir" / "x.csv")])
    assert out.exit_code != 0
    assert not (tmp_path / "nodir").exists()
    assert list(tmp_path.glob(".x.csv*")) == []


# ---- select --------------------------------------------------------------------------------------


def test_select_changes_the_current_result_set(runner, nbfile):
    out = invoke(runner, "select", f"{nbfile}:more")
    assert out.exit_code == 0 and "selected more" in out.output
    with HDF5LabNotebook(str(nbfile), readonly=True) as nb:
        assert nb.currentTag() == "more"


def test_select_dry_run_changes_nothing(runner, nbfile):
    before = digest(nbfile)
    out = invoke(runner, "select", "--dry-run", f"{nbfile}:more")
    assert "would select more" in out.output
    assert digest(nbfile) == before


def test_select_of_a_missing_tag_changes_nothing(runner, nbfile):
    before = digest(nbfile)
    out = runner.invoke(main, ["select", f"{nbfile}:nope"])
    assert out.exit_code != 0 and "'nope'" in out.output
    assert digest(nbfile) == before


def test_a_target_without_a_tag_is_a_usage_error(runner, nbfile):
    out = runner.invoke(main, ["select", str(nbfile)])
    assert out.exit_code == 2 and "NOTEBOOK:TAG" in out.output


# ---- remove ----------------------------------------------------------------------------------------


def test_remove_deletes_result_sets(runner, tmp_path):
    path = make_notebook(tmp_path / "study.h5")
    with HDF5LabNotebook(str(path)) as nb:
        nb.addResultSet("scratch")
    out = invoke(runner, "remove", f"{path}:scratch")
    assert out.exit_code == 0
    with HDF5LabNotebook(str(path), readonly=True) as nb:
        assert "scratch" not in nb and "squares" in nb


def test_remove_refuses_the_default_set(runner, nbfile):
    before = digest(nbfile)
    out = runner.invoke(main, ["remove", "--force", f"{nbfile}:epyc.resultset.default"])
    assert out.exit_code == 1
    assert "is the default result set" in out.output and "Traceback" not in out.output
    assert digest(nbfile) == before


def test_remove_refuses_locked_and_pending_sets_unless_forced(runner, nbfile):
    before = digest(nbfile)
    locked = runner.invoke(main, ["remove", f"{nbfile}:more"])
    assert locked.exit_code != 0 and "locked" in locked.output and "--force" in locked.output
    pending = runner.invoke(main, ["remove", f"{nbfile}:squares"])
    assert pending.exit_code != 0 and "1 pending" in pending.output
    assert digest(nbfile) == before
    forced = invoke(runner, "remove", "--force", f"{nbfile}:more", f"{nbfile}:squares")
    assert forced.exit_code == 0
    with HDF5LabNotebook(str(nbfile), readonly=True) as nb:
        assert nb.resultSets() == [nb.DEFAULT_RESULTSET]


def test_remove_with_one_bad_tag_removes_nothing(runner, tmp_path):
    path = make_notebook(tmp_path / "study.h5")
    with HDF5LabNotebook(str(path)) as nb:
        nb.addResultSet("scratch")
    before = digest(path)
    out = runner.invoke(main, ["remove", f"{path}:scratch", f"{path}:nope"])
    assert out.exit_code != 0 and "'nope'" in out.output
    assert digest(path) == before


def test_remove_dry_run_changes_nothing(runner, nbfile):
    before = digest(nbfile)
    out = invoke(runner, "remove", "--dry-run", "--force", f"{nbfile}:more")
    assert "would remove" in out.output
    assert digest(nbfile) == before


# ---- copy -----------------------------------------------------------------------------------------


def test_copy_into_a_new_notebook_keeps_rows_pending_attributes_and_lock(runner, nbfile, tmp_path):
    dest = tmp_path / "dest.h5"
    out = invoke(runner, "copy", f"{nbfile}:squares", f"{nbfile}:more", str(dest))
    assert out.exit_code == 0, out.output
    with HDF5LabNotebook(str(nbfile), readonly=True) as src, HDF5LabNotebook(str(dest), readonly=True) as d:
        for tag in ("squares", "more"):
            pd.testing.assert_frame_equal(
                d.dataframe(tag, only_successful=False), src.dataframe(tag, only_successful=False)
            )
        assert d.resultSet("squares").pendingResults() == ["job-10"]
        assert d.resultSet("squares")["note"] == "an attribute"
        assert d.resultSet("squares").description() == "x squared"
        assert d.resultSet("more").isLocked()


def test_copy_from_an_epyc_notebook(runner, tmp_path):
    src = tmp_path / "epyc.h5"
    shutil.copy(FIXTURE, src)
    dest = tmp_path / "dest.h5"
    invoke(runner, "copy", f"{src}:walks", f"{src}:pending", str(dest))
    with HDF5LabNotebook(str(dest), readonly=True) as d:
        assert d.numberOfResults("walks") == 12
        assert sorted(d.resultSet("pending").pendingResults()) == ["job-1", "job-2"]


def test_copy_onto_an_existing_tag_changes_nothing(runner, nbfile, tmp_path):
    dest = make_notebook(tmp_path / "dest.h5")
    before = digest(dest)
    out = runner.invoke(main, ["copy", f"{nbfile}:squares", str(dest)])
    assert out.exit_code != 0 and "already has" in out.output
    assert digest(dest) == before


def test_copy_dry_run_creates_nothing(runner, nbfile, tmp_path):
    dest = tmp_path / "dest.h5"
    out = invoke(runner, "copy", "--dry-run", f"{nbfile}:squares", str(dest))
    assert "would copy" in out.output and "5 row(s), 1 pending" in out.output
    assert list(tmp_path.glob("dest.h5*")) == []


def test_copy_of_a_missing_tag_creates_nothing(runner, nbfile, tmp_path):
    dest = tmp_path / "dest.h5"
    out = runner.invoke(main, ["copy", f"{nbfile}:nope", str(dest)])
    assert out.exit_code != 0 and "'nope'" in out.output
    assert list(tmp_path.glob("dest.h5*")) == []


# ---- help and the real command -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["show", "copy", "remove", "select", "export"])
def test_every_command_has_help(runner, command):
    out = invoke(runner, command, "--help")
    assert out.exit_code == 0 and "Usage:" in out.output
    if command != "show":
        assert "--dry-run" in out.output


def test_the_installed_command_runs_as_a_subprocess(nbfile, tmp_path):
    exe = shutil.which("epyclab") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "epyclab"]
    shown = subprocess.run([*cmd, "show", str(nbfile)], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "squares (current)" in shown.stdout
    csv = tmp_path / "out.csv"
    exported = subprocess.run([*cmd, "export", f"{nbfile}:squares", str(csv)], capture_output=True, text=True,
                              timeout=120)
    assert exported.returncode == 0 and len(pd.read_csv(csv)) == 5
    missing = subprocess.run([*cmd, "show", str(tmp_path / "nope.h5")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no notebook at" in missing.stderr
