"""Every code block of the tutorial and cookbook runs, so the docs cannot rot.

The blocks of one page run in order, as a reader following the page would run
them, in a fresh working directory with an IPython directory of the test's own:
``bash`` blocks (the ``epyclab`` commands a page tells the reader to type) in a
shell; ``python`` blocks of the tutorial each as a standalone script in a
Python process of its own (the tutorial promises that every block is a
complete program: a block that leans on an earlier one's imports or names
fails here); ``python`` blocks of the cookbook in one namespace, as the
recipes build on each other. Files a block writes (a notebook) and processes a
bash block starts (a cluster) are there for the blocks after it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(
    p for sub in ("tutorial", "cookbook") for p in (DOCS / sub).glob("*.md") if p.name != "index.md"
)
_BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)
_START = re.compile(r"epyclab cluster start (\S+)")


def code_blocks(page: Path) -> list[tuple[str, str]]:
    """The (language, code) of a Markdown page's python and bash blocks, in order."""
    return _BLOCK.findall(page.read_text())


def _processes_under(path: Path) -> list[psutil.Process]:
    """Processes whose command line mentions ``path`` (the test's own IPython directory)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["environ"] or {}).get("IPYTHONDIR", "")
        except (psutil.Error, TypeError):
            continue
        if str(path) in text and proc.pid != os.getpid():
            found.append(proc)
    return found


def test_every_page_has_code() -> None:
    assert PAGES, "no tutorial pages found"
    without = [p.name for p in PAGES if not any(lang == "python" for lang, _ in code_blocks(p))]
    assert not without, f"pages with no python block to run: {without}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", PAGES, ids=[f"{p.parent.name}/{p.stem}" for p in PAGES])
def test_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, ipython_dir = tmp_path / "work", tmp_path / "ipython"
    work.mkdir()
    ipython_dir.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    started: list[str] = []
    try:
        for i, (lang, block) in enumerate(code_blocks(page)):
            where = f"{page.relative_to(DOCS)}[block {i + 1}]"
            if lang == "python" and page.parent.name == "tutorial":
                script = work / f"block{i + 1}.py"
                script.write_text(block)
                done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                                      timeout=300)
                assert done.returncode == 0, f"{where} does not run as a script:\n{done.stdout}\n{done.stderr}"
                continue
            if lang == "python":
                exec(compile(block, where, "exec"), namespace)  # noqa: S102 - running the docs is the point
                continue
            started += _START.findall(block)
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"
    finally:
        for profile in started:
            subprocess.run(["bash", "-c", f"epyclab cluster stop {shlex.quote(profile)}"], env=env,
                           capture_output=True, timeout=120)
    if started:
        left = _processes_under(ipython_dir)
        assert not left, f"processes left running: {[p.cmdline() for p in left]}"


def test_installation_page_installs_from_a_checkout_with_extras_that_exist() -> None:
    import configparser

    page = (DOCS / "installation.md").read_text()
    commands = "\n".join(code for lang, code in code_blocks(DOCS / "installation.md") if lang == "bash")
    # Not on a package index: nothing may tell the reader to install it by name.
    assert "pip install epyclab" not in page
    assert "pip install -e ." in commands
    config = configparser.ConfigParser()
    config.read(DOCS.parent / "setup.cfg")
    extras = {name: config["options.extras_require"][name] for name in config["options.extras_require"]}
    named = set(re.findall(r"pip install -e '\.\[(\w+)\]'", page))
    assert named and named <= set(extras), f"the page names extras setup.cfg lacks: {named - set(extras)}"
    for package in ("nbclient", "ipykernel", "ipywidgets", "hypothesis"):
        assert package in extras["dev"] and package in page
