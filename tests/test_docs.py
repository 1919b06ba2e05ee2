"""Every code block of docs/ runs as shown, so the docs cannot rot.

The rule the pages follow (docs/cookbook/index.md states it for readers,
docs/contributing/index.md for writers):

- A ``python`` block is a complete script: saved as a file and run, alone,
  in the directory where the page's earlier blocks ran, it works. Here each
  one runs as a script of its own, in a fresh Python process, so a block that
  leans on an earlier block's imports or names fails.
- A ``python`` block whose first line is ``# continues the block above`` is
  not a script on its own: it runs after the block before it, in the same
  process (here: the two are one script).
- A ``bash`` block runs in a shell, in that same directory.
- A block whose first line is ``# not run by the docs tests: REASON`` is not
  run (it needs a cluster of machines, or installs software). The few such
  blocks are listed in ``NOT_RUN`` below, so that a new one is a decision.
- A ``console`` block is a transcript (``$ command`` lines and what they
  print): shown, not run.

Each page runs in a fresh working directory with an IPython directory of the
test's own; files a block writes (a notebook) and processes a bash block
starts (a cluster) are there for the blocks after it, as they would be for a
reader working through the page.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
CONTINUES = "# continues the block above"
NOT_RUN_PREFIX = "# not run by the docs tests:"
# Every block that is not run, per page: adding one to the docs means adding it here.
NOT_RUN = {
    "installation.md": 2,  # installs into a new venv from a checkout (.ci/run does, in a fresh clone)
    "cluster.md": 5,  # 3 need the ssh workers of the page's steps 1-3 (tests/test_cluster_ssh.py runs them),
    # 2 the Slurm profile hpc (tests/test_cluster_slurm_sweep.py runs such a sweep)
}
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
_START = re.compile(r"epyclab cluster start (\S+)")


@dataclass
class Block:
    """One fenced code block of a page."""

    lang: str
    code: str
    where: str

    @property
    def first_line(self) -> str:
        return self.code.split("\n", 1)[0].strip()

    @property
    def continues(self) -> bool:
        return self.first_line == CONTINUES

    @property
    def not_run(self) -> bool:
        return self.first_line.startswith(NOT_RUN_PREFIX)


def code_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order (MyST directives left out)."""
    where = page.relative_to(DOCS)
    return [Block(lang, code, f"docs/{where}[block {i + 1}]")
            for i, (lang, code) in enumerate(_BLOCK.findall(page.read_text(encoding="utf-8")))]


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


def test_every_tutorial_and_cookbook_page_has_code() -> None:
    pages = [p for p in PAGES if p.parent.name in ("tutorial", "cookbook") and p.name != "index.md"]
    assert pages, "no tutorial pages found"
    without = [p.name for p in pages if not any(b.lang == "python" for b in code_blocks(p))]
    assert not without, f"pages with no python block to run: {without}"


def test_every_block_is_of_a_kind_the_rule_covers() -> None:
    """python, bash and console only; console blocks are transcripts; markers are used as documented."""
    problems = []
    not_run: dict[str, int] = {}
    for page in PAGES:
        before = None
        for block in code_blocks(page):
            if block.lang not in ("python", "bash", "console"):
                problems.append(f"{block.where}: a {block.lang!r} block: use python, bash or console")
            if block.lang == "console" and not block.first_line.startswith("$ "):
                problems.append(f"{block.where}: a console block is a transcript and starts with '$ command'")
            if block.continues and (block.lang != "python" or before is None or before.lang != "python"):
                problems.append(f"{block.where}: {CONTINUES!r} must follow a python block, in a python block")
            if block.not_run:
                if not block.first_line[len(NOT_RUN_PREFIX):].strip():
                    problems.append(f"{block.where}: {NOT_RUN_PREFIX!r} needs a reason after it")
                not_run[page.name] = not_run.get(page.name, 0) + 1
            if block.lang != "console":
                before = block
    assert not problems, "\n".join(problems)
    assert not_run == NOT_RUN, f"blocks not run, per page: {not_run}; NOT_RUN in this file says {NOT_RUN}"


def _steps(page: Path) -> list[tuple[str, list[Block]]]:
    """The page as what a reader runs, in order: ("python", a script's blocks) or ("bash", [block]).

    A misplaced continuation (first, or after a bash block) runs alone, and fails as it would for a reader;
    test_every_block_is_of_a_kind_the_rule_covers names it.
    """
    steps: list[tuple[str, list[Block]]] = []
    for block in code_blocks(page):
        if block.lang not in ("python", "bash") or block.not_run:
            continue
        if block.continues and steps and steps[-1][0] == "python":
            steps[-1][1].append(block)
        else:
            steps.append((block.lang, [block]))
    return steps


RUN_PAGES = [p for p in PAGES if _steps(p)]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(DOCS).with_suffix("")) for p in RUN_PAGES])
def test_page_runs(page: Path, tmp_path: Path) -> None:
    work, ipython_dir = tmp_path / "work", tmp_path / "ipython"
    work.mkdir()
    ipython_dir.mkdir()
    env = dict(os.environ, IPYTHONDIR=str(ipython_dir),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    started: list[str] = []
    try:
        for n, (lang, blocks) in enumerate(_steps(page)):
            where = " + ".join(b.where for b in blocks)
            if lang == "python":
                # Saved beside the reader's files and run from there, as a reader runs a script.
                script = work / f"_docs_script{n + 1}.py"
                script.write_text("\n".join(b.code for b in blocks), encoding="utf-8")
                argv = [sys.executable, script.name]
            else:
                started += _START.findall(blocks[0].code)
                argv = ["bash", "-euo", "pipefail", "-c", blocks[0].code]
            done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{where} does not run as shown:\n{done.stdout}\n{done.stderr}"
    finally:
        for profile in started:
            subprocess.run(["bash", "-c", f"epyclab cluster stop {shlex.quote(profile)}"], cwd=work, env=env,
                           capture_output=True, timeout=120)
    if started:
        left = _processes_under(ipython_dir)
        assert not left, f"processes left running: {[p.cmdline() for p in left]}"


def test_installation_page_installs_from_a_checkout_with_extras_that_exist() -> None:
    import configparser

    page = (DOCS / "installation.md").read_text()
    commands = "\n".join(b.code for b in code_blocks(DOCS / "installation.md") if b.lang == "bash")
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
