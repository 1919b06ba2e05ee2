"""What the docs say about names and files is what the code and the checkout do.

- docs/reference/metadata.md lists every metadata key and result-set attribute
  a sweep records, and the naming rule it states holds: epyc's names keep
  ``epyc.``, everything epyclab adds starts with ``epyclab.``.
- Nothing tells a user to install epyclab from a package index (it is not on
  one): install hints use the checkout (``pip install -e '.[plot]'``).
- What the README's quickstart command leaves in the checkout is ignored by git.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from epyclab import Experiment, Lab, RepeatedExperiment, ResultSet, SummaryExperiment, order, seeding
from epyclab.labs import provenance
from epyclab.labs.engine import capture
from epyclab.labs.remote import collect

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "metadata.md"
# epyc 1.7's own names, which epyclab keeps (the rule's first half).
EPYC_NAMES = {
    Experiment.EXPERIMENT, Experiment.START_TIME, Experiment.END_TIME, Experiment.ELAPSED_TIME,
    Experiment.SETUP_TIME, Experiment.EXPERIMENT_TIME, Experiment.TEARDOWN_TIME, Experiment.STATUS,
    Experiment.EXCEPTION, Experiment.TRACEBACK, RepeatedExperiment.REPETITIONS, RepeatedExperiment.I,
    SummaryExperiment.UNDERLYING_RESULTS, SummaryExperiment.UNDERLYING_SUCCESSFUL_RESULTS, ResultSet.JOBID,
}
EPYCLAB_NAMES = {Experiment.HOST, Experiment.PID, capture.OUTPUT, capture.CAPTURE, order.SWEEP, order.POINT,
                 collect.SUBMITTED_ATTRIBUTE, Experiment.SEED, seeding.SWEEP_SEED}


class Noisy(Experiment):
    def do(self, params):
        print("running", params["x"])  # so that the output column exists
        return {"y": params["x"] * 2}


def _page_names() -> set[str]:
    """The names in code spans of the page (Python constants such as ``epyclab.order.SWEEP`` left out)."""
    spans = re.findall(r"`(epyc(?:lab)?\.[\w.-]+)`", PAGE.read_text(encoding="utf-8"))
    return {name for name in spans if not name.rsplit(".", 1)[-1].isupper()}


def _recorded(experiment: Experiment) -> tuple[set[str], set[str]]:
    """The metadata columns and result-set attributes a sweep of ``experiment`` records."""
    lab = Lab()
    lab["x"] = range(3)
    lab.runExperiment(experiment, progress=False)
    rs = lab.notebook().current()
    return set(rs.metadataNames()), set(rs.attributes())


def test_the_metadata_page_lists_every_name_a_sweep_records() -> None:
    listed = _page_names()
    for experiment in (Noisy(), RepeatedExperiment(Noisy(), 2), SummaryExperiment(RepeatedExperiment(Noisy(), 2))):
        metadata, attributes = _recorded(experiment)
        assert metadata and attributes
        missing = (metadata | attributes) - listed
        assert not missing, f"recorded but not in {PAGE.relative_to(ROOT)}: {sorted(missing)}"


def test_every_name_follows_the_rule_and_the_page_names_only_real_ones() -> None:
    listed = _page_names()
    assert EPYC_NAMES | EPYCLAB_NAMES <= listed, sorted((EPYC_NAMES | EPYCLAB_NAMES) - listed)
    assert all(n.startswith("epyc.") for n in EPYC_NAMES)
    assert all(n.startswith("epyclab.") for n in EPYCLAB_NAMES)
    metadata, attributes = _recorded(SummaryExperiment(RepeatedExperiment(Noisy(), 2)))
    ours = (metadata | attributes) - EPYC_NAMES
    assert ours and all(n.startswith("epyclab.") for n in ours), sorted(ours)
    # Every epyclab name on the page is a constant of the code or a provenance attribute.
    unknown = {n for n in listed if n.startswith("epyclab.")} - EPYCLAB_NAMES
    unknown = {n for n in unknown if not n.startswith(provenance.PREFIX)}
    assert not unknown, f"{PAGE.relative_to(ROOT)} names what the code does not record: {sorted(unknown)}"


def test_no_install_hint_names_a_package_index() -> None:
    files = [*ROOT.joinpath("examples").glob("*.py"), *ROOT.joinpath("docs").rglob("*.md"), ROOT / "README.md"]
    offending = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        if re.search(r"pip install ['\"]?epyclab", text):
            offending.append(str(path.relative_to(ROOT)))
    assert not offending, f"install hints that need a package index (use pip install -e '.[plot]'): {offending}"
    assert "pip install -e '.[plot]'" in (ROOT / "examples" / "epidemic.py").read_text(encoding="utf-8")


def test_git_ignores_what_the_quickstart_leaves_in_the_checkout(tmp_path: Path) -> None:
    # A repository with this .gitignore, and the files `python examples/quickstart.py` (and the
    # other examples, with their default names) write at the top of the checkout.
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    outputs = ["quickstart.h5", "quickstart.h5.journal", "quickstart.h5.undo", "quickstart.h5.lock",
               "epidemic.h5", "epidemic.h5.journal", "epidemic.png", "cluster.h5", "cluster.h5.journal"]
    for name in outputs:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "quickstart.h5").write_bytes(b"x")  # only the top level's outputs are ignored
    done = subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
                          capture_output=True, text=True, check=True)
    untracked = sorted(line[3:] for line in done.stdout.splitlines())
    assert untracked == [".gitignore", "tests/quickstart.h5"]
