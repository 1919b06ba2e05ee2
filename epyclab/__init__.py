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

from epyclab.combinators import ExperimentCombinator, RepeatedExperiment, SummaryExperiment
from epyclab.designs import Design, ExperimentalConfiguration, FactorialDesign, PointwiseDesign
from epyclab.errors import (
    CancelledException,
    ClusterConnectionError,
    DesignException,
    EpyclabError,
    ExperimentSerializationError,
    LabNotebookLockedException,
    NotebookError,
    NotebookFormatError,
    NotebookInUseError,
    NotebookIOError,
    NotebookOverwriteError,
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
from epyclab.experiment import Experiment, ExperimentalParameters, ResultsDict
from epyclab.labs.cluster import ClusterLab
from epyclab.labs.lab import Lab
from epyclab.labs.parallel import ParallelLab
from epyclab.log import Logger
from epyclab.notebooks.hdf5 import HDF5LabNotebook
from epyclab.notebooks.json_notebook import JSONLabNotebook
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.notebooks.resultset import ResultSet

__version__ = "0.1.0"

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
    "NotebookTakenOverError",
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
