"""The contributors' pages match the tooling: mutation targets, mutmut's configuration, no pragmas.

benchmarks/mutation.sh names each target's source file and tests; the table of
docs/contributing/mutation.md must say the same, every file must exist, and
mutation runs go through mutmut's own runner and configuration (setup.cfg),
with no line of the library kept out of them by a ``# pragma: no mutate``.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

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
    usage = re.search(r"usage: benchmarks/mutation.sh ([\w|-]+)", SCRIPT.read_text())
    assert usage and usage.group(1).split("|") == list(script)


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
