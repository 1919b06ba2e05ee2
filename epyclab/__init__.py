"""epyclab: computational experiments over parameter spaces, kept in notebooks.

Write an :class:`Experiment` with a ``do(params)`` method, give a :class:`Lab`
parameter ranges, run it, and read the results back as a pandas DataFrame::

    from epyclab import Experiment, Lab

    class Square(Experiment):
        def do(self, params):
            return {"y": params["x"] ** 2}

    lab = Lab()
    lab["x"] = range(10)
    lab.runExperiment(Square())
    print(lab.dataframe())
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from epyclab.errors import (
    CancelledException,
    ClusterConnectionError,
    DesignException,
    EpyclabError,
    ExperimentSerializationError,
    LabNotebookLockedException,
    NotebookClosedError,
    NotebookError,
    NotebookFormatError,
    NotebookInUseError,
    NotebookIOError,
    NotebookOverwriteError,
    NotebookPathError,
    NotebookReadOnlyError,
    NotebookSideFileError,
    NotebookTakenOverError,
    NotebookVersionException,
    PendingResultException,
    ResultSetLockedException,
    ResultsStructureException,
    SummaryError,
    UnknownResultSetError,
    UnstorableValueError,
)
from epyclab.log import Logger

# The rest is imported on first use (the model is concurrent.futures' __init__): a
# lab or a notebook pulls in pandas, h5py or ipyparallel (about a second in all), and
# `import epyclab` or `epyclab show` should not pay for what they do not use.
_LAZY = {
    "ExperimentCombinator": "epyclab.combinators",
    "RepeatedExperiment": "epyclab.combinators",
    "SummaryExperiment": "epyclab.combinators",
    "Design": "epyclab.designs",
    "ExperimentalConfiguration": "epyclab.designs",
    "FactorialDesign": "epyclab.designs",
    "PointwiseDesign": "epyclab.designs",
    "Experiment": "epyclab.experiment",
    "ExperimentalParameters": "epyclab.experiment",
    "ResultsDict": "epyclab.experiment",
    "Lab": "epyclab.labs.lab",
    "ParallelLab": "epyclab.labs.parallel",
    "ClusterLab": "epyclab.labs.clusterlab",
    "LabNotebook": "epyclab.notebooks.labnotebook",
    "HDF5LabNotebook": "epyclab.notebooks.hdf5",
    "JSONLabNotebook": "epyclab.notebooks.json_notebook",
    "ResultSet": "epyclab.notebooks.resultset",
    "openNotebook": "epyclab.notebooks.registry",
    "backupNotebook": "epyclab.notebooks.backup",
    "registerNotebookFormat": "epyclab.notebooks.registry",
}

if TYPE_CHECKING:
    from epyclab.combinators import ExperimentCombinator, RepeatedExperiment, SummaryExperiment
    from epyclab.designs import Design, ExperimentalConfiguration, FactorialDesign, PointwiseDesign
    from epyclab.experiment import Experiment, ExperimentalParameters, ResultsDict
    from epyclab.labs.clusterlab import ClusterLab
    from epyclab.labs.lab import Lab
    from epyclab.labs.parallel import ParallelLab
    from epyclab.notebooks.backup import backupNotebook
    from epyclab.notebooks.hdf5 import HDF5LabNotebook
    from epyclab.notebooks.json_notebook import JSONLabNotebook
    from epyclab.notebooks.labnotebook import LabNotebook
    from epyclab.notebooks.registry import openNotebook, registerNotebookFormat
    from epyclab.notebooks.resultset import ResultSet


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'epyclab' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

#: Who wrote a notebook: the ``creator`` attribute of every HDF5 notebook epyclab writes (epyc's name).
PackageContactInfo = f"Created by epyclab {__version__}, computational experiments over parameter spaces"

__all__ = [
    "__version__",
    "Logger",
    "ResultsDict",
    "ExperimentalParameters",
    "ExperimentalConfiguration",
    "Experiment",
    "ExperimentCombinator",
    "RepeatedExperiment",
    "SummaryExperiment",
    "Design",
    "FactorialDesign",
    "PointwiseDesign",
    "Lab",
    "ParallelLab",
    "ClusterLab",
    "LabNotebook",
    "HDF5LabNotebook",
    "JSONLabNotebook",
    "ResultSet",
    "openNotebook",
    "backupNotebook",
    "registerNotebookFormat",
    "PackageContactInfo",
    "EpyclabError",
    "DesignException",
    "ResultsStructureException",
    "NotebookVersionException",
    "NotebookFormatError",
    "NotebookInUseError",
    "NotebookReadOnlyError",
    "NotebookOverwriteError",
    "NotebookError",
    "NotebookIOError",
    "NotebookSideFileError",
    "NotebookPathError",
    "NotebookTakenOverError",
    "NotebookClosedError",
    "UnstorableValueError",
    "LabNotebookLockedException",
    "ResultSetLockedException",
    "PendingResultException",
    "CancelledException",
    "UnknownResultSetError",
    "ExperimentSerializationError",
    "ClusterConnectionError",
    "SummaryError",
]
