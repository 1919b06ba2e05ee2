"""What a notebook file holds, as read: the common currency of the file formats and the notebooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Later", "StoredRows", "StoredResultSet", "StoredResults", "StoredNotebook"]


class Later:
    """Typed cells made when first needed, by ``function(*args)``."""

    __slots__ = ("function", "args")

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args

    def make(self) -> Any:
        """The typed cells."""
        return self.function(*self.args)


class StoredRows:
    """The rows of one result set as a file holds them: typed columns made when first asked for.

    A reader gives, per column, either its typed cells (as a result set's
    DataFrame holds them) or a :class:`Later` making them. Nothing more is made until
    asked: counting rows or reading one column (the status column, to count
    failed runs) builds no DataFrame and imports no pandas, so ``epyclab show``
    reads a notebook in a fraction of what typing every column would take.
    """

    def __init__(self, rows: int, columns: dict[str, Any]) -> None:
        """``rows`` cells per column; ``columns``: name -> its typed cells, or a :class:`Later` making them."""
        self._rows = rows
        self._names = list(columns)
        self._known = set(self._names)
        self._made = {n: c for n, c in columns.items() if not isinstance(c, Later)}
        self._makers = {n: c for n, c in columns.items() if isinstance(c, Later)}
        self._frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return self._rows

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def names(self) -> list[str]:
        """The stored columns' names, in the order the file gives them."""
        return list(self._names)

    def column(self, name: str) -> Any:
        """The typed cells of column ``name`` (a 1-D numpy or pandas array, ``len(self)`` long).

        Raises:
            KeyError: no stored column has that name.
        """
        if self._frame is not None:
            return self._frame[name].array
        if name not in self._made:
            if name not in self._makers:
                raise KeyError(name)
            # Made once: the stored arrays it was made from are let go.
            self._made[name] = self._makers.pop(name).make()
        return self._made[name]

    def frame(self) -> pd.DataFrame:
        """Every stored row as a DataFrame (columns in :meth:`names`' order, index 0..n-1), built once."""
        if self._frame is None:
            import pandas as pd

            cells = {name: self.column(name) for name in self._names}
            self._frame = pd.DataFrame(cells, index=pd.RangeIndex(self._rows), copy=False)
            # The frame holds the cells now; keeping them here too would double the memory.
            self._made = {}
        return self._frame


@dataclass
class StoredResultSet:
    """One result set as a file holds it.

    ``rows`` holds the rows (typed as a result set's DataFrame types them, when asked),
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
    rows: StoredRows
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
