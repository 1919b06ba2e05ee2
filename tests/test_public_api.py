"""The public surface: every name of the contract importable from `epyclab`, epyc's key strings kept."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import epyclab
from epyclab.errors import EpyclabError

FIXTURE = Path(__file__).parent / "fixtures" / "epyc-1.7.2-notebook.h5"

# The names API.md promises at the top level of the package.
FOUNDATION_NAMES = [
    "Experiment",
    "ExperimentCombinator",
    "RepeatedExperiment",
    "SummaryExperiment",
    "Design",
    "FactorialDesign",
    "PointwiseDesign",
    "DesignException",
    "Lab",
    "LabNotebook",
    "HDF5LabNotebook",
    "JSONLabNotebook",
    "ResultSet",
    "LabNotebookLockedException",
    "ResultSetLockedException",
    "ResultsStructureException",
    "PendingResultException",
    "CancelledException",
    "NotebookVersionException",
    "Logger",
    "ResultsDict",
    "ExperimentalParameters",
    "ExperimentalConfiguration",
    "ClusterLab",
    "ParallelLab",
]

# The methods API.md names, per class.
METHODS = {
    "Experiment": [
        "set", "configure", "deconfigure", "setUp", "do", "tearDown", "run", "report", "resultsdict",
        "success", "failed", "results", "experimentalResults", "parameters", "metadata", "__getitem__",
    ],
    "ExperimentCombinator": ["experiment"],
    "ClusterLab": [
        "runExperiment", "updateResults", "wait", "numberOfEngines", "engines", "sync_imports", "connect",
        "activate", "open", "close",
    ],
    "ParallelLab": ["numberOfCores", "runExperiment"],
    "RepeatedExperiment": ["repetitions"],
    "SummaryExperiment": ["summarise"],
    "Design": ["experiments"],
    "Lab": [
        "addParameter", "__setitem__", "__getitem__", "__delitem__", "deleteParameter", "deleteAllParameters",
        "parameters", "__contains__", "__len__", "experiments", "notebook", "design", "open", "close",
        "updateResults", "recreate", "runExperiment", "createWith", "dataframe", "results", "ready",
        "readyFraction",
    ],
    "LabNotebook": [
        "name", "description", "setDescription", "isPersistent", "commit", "addResultSet", "deleteResultSet",
        "resultSets", "resultSet", "resultSetTag", "select", "current", "currentTag", "numberOfResultSets",
        "__len__", "keys", "__contains__", "already", "finish", "isLocked", "addResult", "dataframe",
        "dataframeFor", "results", "resultsFor", "numberOfResults", "addPendingResult", "resolvePendingResult",
        "cancelPendingResult", "ready", "readyFraction", "pendingResults", "numberOfPendingResults",
        "pendingResultParameters", "allPendingResults", "numberOfAllPendingResults", "__enter__", "__exit__",
    ],
    "ResultSet": [
        "description", "setDescription", "names", "metadataNames", "parameterNames", "resultNames",
        "__setitem__", "__getitem__", "__delitem__", "__contains__", "keys", "setAttribute", "getAttribute",
        "finish", "isLocked", "addSingleResult", "dataframe", "dataframeFor", "results", "resultsFor",
        "numberOfResults", "__len__", "parameterRange", "parameterSpace", "parameterCombinations",
        "addSinglePendingResult", "pendingResults", "numberOfPendingResults", "pendingResultsFor",
        "resolveSinglePendingResult", "cancelSinglePendingResult", "ready", "pendingResultParameters",
    ],
}


def test_contract_names_are_exported():
    assert [n for n in FOUNDATION_NAMES if not hasattr(epyclab, n)] == []
    assert [n for n in FOUNDATION_NAMES if n not in epyclab.__all__] == []


def test_everything_in_all_is_importable():
    missing = [n for n in epyclab.__all__ if not hasattr(epyclab, n)]
    assert missing == []
    assert len(set(epyclab.__all__)) == len(epyclab.__all__)


def test_star_import_gives_the_contract():
    namespace: dict = {}
    exec("from epyclab import *", namespace)
    assert set(FOUNDATION_NAMES) <= set(namespace)


# epyc 1.7.2's top-level public names, less its module names (dir(epyc) there): code written for
# epyc refers to these as epyc.X, so each must exist as epyclab.X.
EPYC_TOP_LEVEL = [
    "CancelledException", "ClusterLab", "Design", "DesignException", "Experiment", "ExperimentCombinator",
    "ExperimentalConfiguration", "ExperimentalParameters", "FactorialDesign", "HDF5LabNotebook",
    "JSONLabNotebook", "Lab", "LabNotebook", "LabNotebookLockedException", "Logger", "NotebookVersionException",
    "PackageContactInfo", "ParallelLab", "PendingResultException", "PointwiseDesign", "RepeatedExperiment",
    "ResultSet", "ResultSetLockedException", "ResultsDict", "ResultsStructureException", "SummaryExperiment",
]


def test_every_top_level_name_of_epyc_exists_and_is_exported():
    assert [n for n in EPYC_TOP_LEVEL if not hasattr(epyclab, n)] == []
    assert [n for n in EPYC_TOP_LEVEL if n not in epyclab.__all__] == []


def test_package_contact_info_names_epyclab_and_is_the_creator_of_its_hdf5_files(tmp_path):
    info = epyclab.PackageContactInfo
    assert isinstance(info, str) and "epyclab" in info and epyclab.__version__ in info
    nb = epyclab.HDF5LabNotebook(tmp_path / "nb.h5", create=True)
    nb.close()
    with h5py.File(tmp_path / "nb.h5", "r") as f:
        assert f.attrs["creator"] == info


def test_logger_name_and_version():
    assert epyclab.Logger == "epyclab"
    assert isinstance(epyclab.__version__, str) and epyclab.__version__


@pytest.mark.parametrize("cls", list(METHODS))
def test_documented_methods_exist(cls):
    missing = [m for m in METHODS[cls] if not callable(getattr(getattr(epyclab, cls), m, None))]
    assert missing == []


def test_every_exported_exception_is_an_epyclab_error():
    exported = [getattr(epyclab, n) for n in epyclab.__all__]
    exceptions = [x for x in exported if isinstance(x, type) and issubclass(x, BaseException)]
    assert epyclab.CancelledException in exceptions
    assert [x.__name__ for x in exceptions if not issubclass(x, EpyclabError)] == []


def test_lab_notebook_default_tag():
    assert epyclab.LabNotebook.DEFAULT_RESULTSET == "epyc.resultset.default"


# ---- epyc's key strings, read from a notebook written by epyc 1.7.2 itself ------------------------


@pytest.fixture(scope="module")
def epyc_names() -> dict[str, set[str]]:
    """Column names by role, over every result set of the epyc fixture notebook."""
    names: dict[str, set[str]] = {"parameters": set(), "results": set(), "metadata": set(), "pending": set(),
                                  "groups": set()}
    with h5py.File(FIXTURE, "r") as f:
        for tag, group in f.items():
            names["groups"].add(tag)
            if "results" in group:
                for role in ("parameters", "results", "metadata"):
                    names[role].update(str(n) for n in group["results"].attrs[role])
            if "pending" in group:
                names["pending"].update(group["pending"].dtype.names)
    return names


def test_standard_metadata_keys_match_epyc(epyc_names):
    e = epyclab.Experiment
    epyc_standard = {e.EXPERIMENT, e.START_TIME, e.END_TIME, e.ELAPSED_TIME, e.SETUP_TIME, e.EXPERIMENT_TIME,
                     e.TEARDOWN_TIME, e.STATUS, e.EXCEPTION, e.TRACEBACK}
    written_by_epyc = epyc_names["metadata"] - {epyclab.RepeatedExperiment.I, epyclab.RepeatedExperiment.REPETITIONS}
    assert written_by_epyc == epyc_standard
    # epyclab adds only its own namespace to epyc's standard metadata.
    assert e.StandardMetadata - epyc_standard == {e.HOST, e.PID}


def test_repetition_metadata_keys_match_epyc(epyc_names):
    assert epyclab.RepeatedExperiment.I in epyc_names["metadata"]
    assert epyclab.RepeatedExperiment.REPETITIONS in epyc_names["metadata"]


def test_pending_job_id_key_and_default_tag_match_epyc(epyc_names):
    assert epyclab.ResultSet.JOBID in epyc_names["pending"]
    assert epyclab.LabNotebook.DEFAULT_RESULTSET in epyc_names["groups"]


def _modules_after(code: str) -> set[str]:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


HEAVY = {"ipyparallel", "h5py", "pandas", "IPython", "zmq", "dill", "epyclab.clustersetup", "epyclab.labs.clusterlab"}


def test_import_epyclab_loads_no_heavy_module_until_a_name_needs_it():
    assert _modules_after("import epyclab") & HEAVY == set()
    # Names that need nothing heavy stay light.
    assert _modules_after("from epyclab import Experiment, EpyclabError, Logger") & HEAVY == set()
    # A notebook needs pandas only for a DataFrame, never the cluster tooling; a lab's module
    # loads ipyparallel only when it runs.
    after_notebook = _modules_after("from epyclab import LabNotebook, Lab")
    assert after_notebook & {"pandas", "ipyparallel", "h5py", "epyclab.clustersetup"} == set()
    assert "pandas" in _modules_after("from epyclab import LabNotebook\nLabNotebook().dataframe()")
    assert "h5py" in _modules_after("from epyclab import HDF5LabNotebook")


def test_the_cli_loads_the_cluster_tooling_only_for_cluster_commands():
    assert _modules_after("import epyclab.cli") & {"ipyparallel", "epyclab.clustersetup"} == set()


def test_lazy_names_are_the_real_objects_and_listed_by_dir():
    from epyclab.labs.parallel import ParallelLab

    assert epyclab.ParallelLab is ParallelLab
    assert set(epyclab.__all__) <= set(dir(epyclab))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        epyclab.NoSuchThing  # noqa: B018


@pytest.mark.parametrize("code", ["i1", "i8", "u4", "f4", "f8", "c16", "?", "U", "S", "O"])
def test_zero_mapping_agrees_with_zero_for_every_kind(code):
    # epyc code reads ResultSet.ZeroMapping[dtype.kind]; it must give what a missing cell holds.
    expected, mapped = epyclab.ResultSet.zero(np.dtype(code)), epyclab.ResultSet.ZeroMapping[np.dtype(code).kind]
    assert type(mapped) is type(expected)
    assert (mapped != mapped and expected != expected) or mapped == expected


def test_refused_results_dict_and_unknown_version_answer_as_in_epyc():
    rs = epyclab.ResultSet()
    bad = {"parameters": {"x": 1}, "metadata": {}, "results": [1]}
    with pytest.raises(epyclab.ResultsStructureException) as err:
        rs.addSingleResult(bad)
    assert err.value.resultsdict() is bad
    epyc_form = epyclab.ResultsStructureException(bad)  # as epyc code raises it
    assert epyc_form.resultsdict() is bad and "results dict" in str(epyc_form)
    version = epyclab.NotebookVersionException("'2'", "3", "f.h5")
    assert version.expectedVersion() == "'2'" and version.actualVersion() == "3" and "f.h5" in str(version)
