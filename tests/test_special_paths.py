"""Only regular files are notebooks (issue 19.4): a directory, FIFO, socket, character or block device, a
symbolic link to one, or ``""`` is refused at once, naming the path and what it is, in both formats and on
the command line; nothing is blocked on (a FIFO opened for reading waits for a writer), replaced by a
notebook file, or written beside it (no journal, lock or undo log)."""

from __future__ import annotations

import os
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from epyclab import HDF5LabNotebook, JSONLabNotebook, NotebookPathError, openNotebook
from epyclab.cli import main
from epyclab.errors import NotebookSideFileError

FORMATS = [HDF5LabNotebook, JSONLabNotebook]
KINDS = ["directory", "fifo", "socket", "chardev", "blockdev"]
WORDS = {
    "directory": "a directory",
    "fifo": "a FIFO (named pipe)",
    "socket": "a socket",
    "chardev": "a character device",
    "blockdev": "a block device",
}
# A FIFO opened for reading blocks until a writer comes: every test here is bounded, so a regression hangs no one.
pytestmark = pytest.mark.timeout(60)


def _root_only(kind: str) -> None:
    if kind in ("chardev", "blockdev") and os.geteuid() != 0:
        pytest.skip("making a device node (os.mknod) needs root; CI runs as root")


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def make(kind: str, path: Path, sockets: list[socket.socket]) -> Path:
    """A file of ``kind`` at ``path`` (devices: /dev/null's numbers and /dev/loop0's, made in tmp_path)."""
    _root_only(kind)
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        sockets.append(s)
    elif kind == "chardev":
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        os.mknod(path, 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    return path


def _untouched(path: Path, kind: str) -> None:
    """The special file is as it was, and nothing was made beside it."""
    st = os.lstat(path)
    test = {"directory": stat.S_ISDIR, "fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK, "chardev": stat.S_ISCHR,
            "blockdev": stat.S_ISBLK}[kind]
    assert test(st.st_mode) or stat.S_ISLNK(st.st_mode)
    beside = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "."))
    assert beside == []
    if kind == "directory":
        assert list(Path(os.path.realpath(path)).iterdir()) == []


@pytest.mark.parametrize("cls", FORMATS, ids=["hdf5", "json"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("link", [False, True], ids=["itself", "symlink"])
@pytest.mark.parametrize("how", ["open", "create", "create-force", "readonly"])
def test_a_notebook_on_a_special_file_is_refused_at_once(cls: type, kind: str, link: bool, how: str,
                                                         tmp_path: Path, sockets: list[socket.socket]) -> None:
    target = make(kind, tmp_path / "special", sockets)
    path = target
    if link:
        path = tmp_path / "nb-link"
        path.symlink_to(target)
    kwargs = {"open": {}, "create": {"create": True}, "create-force": {"create": True, "force": True},
              "readonly": {"readonly": True}}[how]
    with pytest.raises(NotebookPathError) as err:
        cls(path, **kwargs)
    said = str(err.value)
    assert said.startswith(f"{path} is ")
    assert WORDS[kind] in said and "not a regular file" in said
    if link:
        assert f"a symbolic link to {target}" in said
    _untouched(path, kind)
    _untouched(target, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_open_notebook_refuses_a_special_file(kind: str, tmp_path: Path, sockets: list[socket.socket]) -> None:
    path = make(kind, tmp_path / "special.h5", sockets)
    with pytest.raises(NotebookPathError, match=re.escape(f"{path} is {WORDS[kind]}")):
        openNotebook(path)
    _untouched(path, kind)


@pytest.mark.parametrize("cls", FORMATS, ids=["hdf5", "json"])
def test_the_empty_path_is_refused(cls: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for kwargs in ({}, {"create": True}, {"readonly": True}):
        with pytest.raises(NotebookPathError, match=r"the notebook path is empty \(''\)"):
            cls("", **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cls", FORMATS, ids=["hdf5", "json"])
def test_a_notebook_replaced_by_a_fifo_is_refused_on_reopening(cls: type, tmp_path: Path) -> None:
    path = tmp_path / "nb"
    nb = cls(path, create=True)
    nb.close()
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(NotebookPathError, match="a FIFO"):
        nb.open()
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


def _notebook(tmp_path: Path, name: str = "good.h5") -> Path:
    path = tmp_path / name
    with HDF5LabNotebook(path, create=True) as nb:
        nb.addResultSet("t")
    return path


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("link", [False, True], ids=["itself", "symlink"])
def test_the_command_line_refuses_a_special_notebook_path(kind: str, link: bool, tmp_path: Path,
                                                          sockets: list[socket.socket]) -> None:
    target = make(kind, tmp_path / "special", sockets)
    path = target
    if link:
        path = tmp_path / "link"
        path.symlink_to(target)
    good = _notebook(tmp_path)
    commands = [
        ["export", str(path), str(tmp_path / "out.csv")],
        ["export", f"{path}:t", str(tmp_path / "out.csv")],
        ["copy", f"{path}:t", str(tmp_path / "new.h5")],
        ["copy", f"{good}:t", str(path)],
        ["remove", f"{path}:t"],
        ["select", f"{path}:t"],
        ["show", str(path)],
    ]
    for args in commands:
        code, out = _cli(*args)
        assert code == 1, (args, out)
        assert f"{path} is " in out and WORDS[kind] in out and "not a regular file" in out, (args, out)
    _untouched(path, kind)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "new.h5").exists()


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev", "blockdev"])
@pytest.mark.parametrize("force", [False, True])
def test_export_never_replaces_a_special_csv_file(kind: str, force: bool, tmp_path: Path,
                                                  sockets: list[socket.socket]) -> None:
    out = make(kind, tmp_path / "out.csv", sockets)
    good = _notebook(tmp_path)
    code, said = _cli("export", *(["--force"] if force else []), str(good), str(out))
    assert code == 1 and f"{out} is {WORDS[kind]}" in said, said
    _untouched(out, kind)


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev", "blockdev"])
@pytest.mark.parametrize("how", ["report", "netcdf", "parquet"])
def test_no_output_of_the_command_line_replaces_a_special_file_even_with_force(
        kind: str, how: str, tmp_path: Path, sockets: list[socket.socket]) -> None:
    # Every command that writes a file goes through one write helper (sidefiles.safe_write): the rule is there.
    good = _notebook(tmp_path)
    with HDF5LabNotebook(good) as nb:
        nb.select("t")
        nb.addResult({"parameters": {"x": 1}, "results": {"y": 2.0}, "metadata": {"epyc.experiment.status": True}})
    out = make(kind, tmp_path / {"report": "out.html", "netcdf": "out.nc", "parquet": "out.parquet"}[how], sockets)
    args = (["report", f"{good}", "-o", str(out), "--force"] if how == "report"
            else ["export", "--force", f"{good}:t", str(out)])
    code, said = _cli(*args)
    assert code == 1 and f"{out} is {WORDS[kind]}" in said, said
    _untouched(out, kind)


def test_the_command_line_refuses_the_empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    good = _notebook(tmp_path)
    for args in (["export", "", "out.csv"], ["copy", f"{good}:t", ""], ["report", ""], ["report", "", "-o", "r.html"]):
        code, out = _cli(*args)
        assert code == 1 and "empty ('')" in out, (args, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.h5"]


def _side_file_cases() -> list[tuple[type, str]]:
    return [(HDF5LabNotebook, "journal"), (HDF5LabNotebook, "undo"), (HDF5LabNotebook, "lock"),
            (JSONLabNotebook, "lock")]


@pytest.mark.timeout(8)
@pytest.mark.parametrize(("cls", "suffix"), _side_file_cases(), ids=lambda v: getattr(v, "__name__", v))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "reader"])
def test_a_special_file_beside_a_notebook_is_refused_at_once_and_left_alone(
        cls: type, suffix: str, kind: str, readonly: bool, tmp_path: Path, sockets: list[socket.socket]) -> None:
    # A notebook unpacked from an archive, or a side file some tool replaced, may have a FIFO, a socket, a
    # device or a directory where its journal, undo log or lock goes: opening one must not wait for ever (a
    # FIFO blocks until a writer comes) nor read or write a device; it is refused, naming the file and what it is.
    path = tmp_path / ("nb.h5" if cls is HDF5LabNotebook else "nb.json")
    with cls(path, create=True) as nb:
        nb.addResult({"parameters": {"x": 1}, "results": {"y": 2.0}, "metadata": {}})
    before = path.read_bytes()
    side = make(kind, Path(f"{path}.{suffix}"), sockets)
    if readonly and suffix == "lock":
        # A reader takes no writer lock: it reads the notebook and leaves the lock's path alone.
        with cls(path, readonly=True) as nb:
            assert len(nb.dataframe()) == 1
    else:
        with pytest.raises(NotebookSideFileError) as err:
            cls(path, readonly=readonly)
        said = str(err.value)
        assert said.startswith(f"{side} is {WORDS[kind]}"), said
        assert "Move it away and open the notebook again" in said
    st = os.lstat(side)
    assert {"directory": stat.S_ISDIR, "fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK, "chardev": stat.S_ISCHR,
            "blockdev": stat.S_ISBLK}[kind](st.st_mode)
    assert path.read_bytes() == before
    # Once it is moved away, the notebook opens with its row.
    if kind == "directory":
        side.rmdir()
    else:
        side.unlink()
    with cls(path) as nb:
        assert len(nb.dataframe()) == 1


@pytest.mark.parametrize("how", ["csv", "csv-force", "netcdf", "parquet", "report"])
def test_an_output_file_that_is_empty_or_special_is_refused_as_the_output(
        how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sockets: list[socket.socket]) -> None:
    # The file a command writes is not a notebook: its refusal says which argument is at fault.
    monkeypatch.chdir(tmp_path)
    good = _notebook(tmp_path)
    fifo = make("fifo", tmp_path / {"netcdf": "out.nc", "parquet": "out.parquet"}.get(how, "out.csv"), sockets)

    def args(out: str) -> list[str]:
        if how == "report":
            return ["report", str(good), "-o", out, "--force"]
        fmt = {"netcdf": ["--format", "netcdf"], "parquet": ["--format", "parquet"]}.get(how, [])
        return ["export", *fmt, *(["--force"] if how != "csv" else []), f"{good}:t", out]

    code, said = _cli(*args(""))
    assert code == 1 and "the output file name is empty ('')" in said and "notebook" not in said, said
    code, said = _cli(*args(str(fifo)))
    assert code == 1 and f"{fifo} is a FIFO (named pipe)" in said and "notebook" not in said, said
    _untouched(fifo, "fifo")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["good.h5", fifo.name])
