"""The contributors' pages match the tooling: mutation targets, mutmut's configuration, no pragmas.

benchmarks/mutation.sh names each target's source file and tests; the table of
docs/contributing/mutation.md must say the same, every file must exist, and
mutation runs go through mutmut's own runner and configuration (setup.cfg),
with no line of the library kept out of them by a ``# pragma: no mutate``.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "mutation.sh"
PAGE = ROOT / "docs" / "contributing" / "mutation.md"


def script_targets() -> dict[str, tuple[str, list[str]]]:
    """target -> (source file, test files), as benchmarks/mutation.sh has them."""
    found = re.findall(r"^\s+([\w-]+)\) src=(\S+?)[;\n]\s*tests=\"([^\"]+)\"", SCRIPT.read_text(), re.M)
    return {name: (src, tests.split()) for name, src, tests in found}


def page_targets() -> dict[str, tuple[str, list[str]]]:
    """target -> (source file, test files), as the Targets table of the page has them."""
    rows = re.findall(r"^\| `([\w-]+)` \| `([^`]+)` \| ([^|]+) \|", PAGE.read_text(), re.M)
    return {name: (src, [f"tests/{t}" for t in re.findall(r"`([^`]+)`", tests)]) for name, src, tests in rows}


def test_every_target_of_the_script_is_in_the_page_as_it_is() -> None:
    script = script_targets()
    assert len(script) >= 9, f"the script's targets were not all read: {sorted(script)}"
    assert script == page_targets()
    # --help lists every target with its file, in the script's order.
    listed = re.findall(r"^  ([\w-]+) +(epyclab/\S+) ", _run("--help").stdout, re.M)
    assert listed == [(name, src) for name, (src, _) in script.items()]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_says_what_a_target_is_and_how_long_each_takes(flag: str) -> None:
    done = _run(flag)
    assert done.returncode == 0 and done.stderr == ""
    assert "A target is one source file" in done.stdout
    assert re.search(r"^  jobs +epyclab/labs/remote/jobs.py +9.4 min", done.stdout, re.M)
    assert all(re.search(rf"^  {name} +\S+ +[~>]?\d", done.stdout, re.M) for name in script_targets())


def test_no_target_or_an_unknown_one_prints_the_usage_and_exits_2() -> None:
    for args in ((), ("nosuch",)):
        done = _run(*args)
        assert done.returncode == 2, args
        assert "usage: benchmarks/mutation.sh TARGET" in done.stderr and done.stdout == ""
    assert "no target nosuch" in _run("nosuch").stderr


def test_a_mutmut_command_needs_the_targets_cache_and_leaves_none_behind(tmp_path: Path) -> None:
    # On a copy of the script in a scratch checkout layout: the real checkout's caches are not touched.
    (tmp_path / "benchmarks").mkdir()
    script = tmp_path / "benchmarks" / "mutation.sh"
    shutil.copy(SCRIPT, script)
    done = subprocess.run(["sh", str(script), "jobs", "results"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no .mutmut-cache.jobs: run benchmarks/mutation.sh jobs first" in done.stderr
    assert not (tmp_path / ".mutmut-cache").exists()
    # With the cache: mutmut reads it as .mutmut-cache, and it is put back under the target's name.
    (tmp_path / ".mutmut-cache.jobs").write_bytes(b"")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(["sh", str(script), "jobs", "results"], capture_output=True, text=True, timeout=120, env=env)
    assert (tmp_path / ".mutmut-cache.jobs").exists()
    assert not (tmp_path / ".mutmut-cache").exists()


def test_every_file_a_target_names_exists() -> None:
    for name, (src, tests) in script_targets().items():
        assert (ROOT / src).is_file(), (name, src)
        for test in tests:
            assert (ROOT / test).is_file(), (name, test)


def test_mutmut_runs_with_its_own_runner_and_configuration() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert "python -m pytest" in config["mutmut"]["runner"]
    assert config["mutmut"]["paths_to_mutate"].strip() == "epyclab/"
    assert re.search(r"^\s*mutmut>=2\.\d+,<3$", config["options.extras_require"]["dev"], re.M)
    assert "mutmut run" in SCRIPT.read_text()
    assert not (ROOT / "benchmarks" / "mutation.py").exists()


def test_no_library_line_is_kept_out_of_mutation() -> None:
    marked = [f"{path.relative_to(ROOT)}:{i}" for path in sorted((ROOT / "epyclab").rglob("*.py"))
              for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "pragma: no mutate" in line]
    assert not marked, f"lines kept out of mutation (give the reason in {PAGE.relative_to(ROOT)} instead): {marked}"


def test_the_contributors_section_is_apart_from_the_user_docs() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    user, _, contributors = index.partition(":caption: For contributors")
    assert "contributing/index" in contributors and "contributing" not in user and "mutation" not in user
    page = (ROOT / "docs" / "contributing" / "index.md").read_text()
    for what in ("python -m pytest -x -q", "python -m pytest\n", "benchmarks/", "benchmarks/mutation.sh"):
        assert what in page, what


def test_the_fixtures_readme_has_a_title_and_describes_every_fixture() -> None:
    fixtures = ROOT / "tests" / "fixtures"
    text = (fixtures / "README.md").read_text(encoding="utf-8")
    assert text.startswith("# "), "the README starts with its title"
    for path in fixtures.iterdir():
        if path.name != "README.md":
            assert f"`{path.name}` —" in text, f"tests/fixtures/README.md has no entry for {path.name}"
