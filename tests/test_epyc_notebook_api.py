"""epyc 1.x's LabNotebook API is all there, with epyc's meaning, in every notebook class."""

from __future__ import annotations

import pytest
from notebook_cases import results_dict

from epyclab import HDF5LabNotebook, JSONLabNotebook, LabNotebook
from epyclab.errors import LabNotebookLockedException

#: The public methods epyc 1.x's LabNotebook documents (pendingResultsFor, cancelPendingResultsFor and
#: cancelAllPendingResults were epyc 0.x's, before result sets; epyc 1.x keeps pendingResultsFor on ResultSet).
EPYC1_LABNOTEBOOK = [
    "name", "description", "setDescription", "isPersistent", "commit", "addResultSet", "deleteResultSet",
    "resultSets", "resultSet", "resultSetTag", "select", "current", "currentTag", "numberOfResultSets",
    "__len__", "keys", "__contains__", "already", "finish", "isLocked", "assertUnlocked",
    "addPendingResult", "resolvePendingResult", "cancelPendingResult", "ready", "readyFraction",
    "pendingResults", "numberOfPendingResults", "pendingResultParameters", "allPendingResults",
    "numberOfAllPendingResults", "addResult", "dataframe", "dataframeFor", "results", "resultsFor",
    "numberOfResults", "open",
]


def make(kind, tmp_path):
    if kind == "memory":
        return LabNotebook("study")
    cls = {"h5": HDF5LabNotebook, "json": JSONLabNotebook}[kind]
    return cls(tmp_path / f"study.{kind}", create=True)


@pytest.mark.parametrize("kind", ["memory", "h5", "json"])
def test_every_epyc1_labnotebook_method_is_there(kind, tmp_path):
    nb = make(kind, tmp_path)
    missing = [m for m in EPYC1_LABNOTEBOOK if not callable(getattr(nb, m, None))]
    assert missing == []
    assert callable(getattr(nb.current(), "pendingResultsFor", None))
    nb.close()


@pytest.mark.parametrize("kind", ["memory", "h5", "json"])
def test_assertUnlocked_raises_once_finished(kind, tmp_path):
    nb = make(kind, tmp_path)
    nb.assertUnlocked()  # an open, unfinished notebook: nothing happens
    nb.addResult(results_dict(0, y=1.0))
    nb.finish()
    with pytest.raises(LabNotebookLockedException, match="finished"):
        nb.assertUnlocked()
    with pytest.raises(LabNotebookLockedException):
        nb.addResultSet("more")
    nb.close()
    if kind != "memory":
        again = type(nb)(nb.name())  # the lock is kept in the file
        with pytest.raises(LabNotebookLockedException):
            again.assertUnlocked()
        again.close()


def test_epyc_keyword_names_and_result_set_assertunlocked(tmp_path):
    """epyc 1.7 code that names its arguments: addResult(results=...), parameterRange(param=...)."""
    from epyclab import Experiment, LabNotebook, ResultSetLockedException

    nb = LabNotebook()
    nb.addResult(results={Experiment.PARAMETERS: {"k": 3}, Experiment.METADATA: {}, Experiment.RESULTS: {"y": 1}})
    rs = nb.current()
    assert rs.parameterRange(param="k") == {3}
    rs.assertUnlocked()  # an unfinished set: nothing happens
    rs.finish()
    with pytest.raises(ResultSetLockedException):
        rs.assertUnlocked()


@pytest.mark.parametrize("value, hint", [
    (__import__("numpy").datetime64("2020-01-01"), "store pandas.Timestamp(value)"),
    (__import__("pandas").NA, "for a missing value, store None"),
])
def test_refused_values_say_what_to_store_instead(value, hint):
    from epyclab import Experiment, LabNotebook, UnstorableValueError

    nb = LabNotebook()
    with pytest.raises(UnstorableValueError, match=hint.replace("(", r"\(").replace(")", r"\)")):
        nb.addResult({Experiment.PARAMETERS: {}, Experiment.METADATA: {}, Experiment.RESULTS: {"t": value}})
