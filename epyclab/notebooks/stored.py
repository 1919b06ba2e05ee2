"""What a notebook file holds, as read: the common currency of the file formats and the notebooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["StoredResultSet", "StoredResults", "StoredNotebook"]


@dataclass
class StoredResultSet:
    """One result set as a file holds it.

    ``frame`` holds the rows (typed as a result set's DataFrame types them),
    ``roles`` the column names by role (``'parameter'``, ``'result'``,
    ``'metadata'``), ``kinds`` each column's state (see
    :mod:`epyclab.notebooks.kinds`), ``pending`` job id -> parameters.
    """

    tag: str
    uid: str
    description: str
    locked: bool
    attributes: dict[str, Any]
    roles: dict[str, list[str]]
    frame: pd.DataFrame
    kinds: dict[str, str]
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each column's storage dtype (the dtype of its state in the table of kinds), when known.
    dtypes: dict[str, Any] = field(default_factory=dict)
    #: For int columns: which cells are missing (bool arrays; see :mod:`epyclab.notebooks.kinds`).
    missing: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoredResults:
    """A result set a file holds as results dicts (epyc's JSON files), to be added row by row.

    Adding them through the result set checks and types each value as any new result is.
    """

    tag: str
    description: str
    locked: bool
    attributes: dict[str, Any]
    results: list[dict[str, Any]]
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class StoredNotebook:
    """A whole notebook as a file holds it.

    ``version`` is the file's format version ('1' for epyc files), ``file_id``
    the identity a journal is tied to, ``seq`` the last journal record the
    file includes.
    """

    version: str
    description: str
    locked: bool
    current: str | None
    resultsets: list[StoredResultSet | StoredResults]
    file_id: str = ""
    seq: int = 0
