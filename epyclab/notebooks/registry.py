"""The notebook file formats, by name: which class reads a file, told by its content or its suffix.

A format is registered with :func:`registerNotebookFormat` (the model is
joblib's ``register_parallel_backend``); :func:`openNotebook` opens a file with
the format whose signature its first bytes carry, or, for a file that does not
exist yet, the format its suffix names (HDF5 by default). Classes are named by
``"module:Class"`` and imported only when used, so importing this module loads
neither h5py nor pandas.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from epyclab.errors import NotebookFormatError, NotebookPathError
from epyclab.notebooks.paths import open_regular, refuse_special_path

__all__ = [
    "NotebookFormat", "recognisedFormat", "otherFormat", "refuseOtherFormat",
    "registerNotebookFormat", "notebookFormat", "notebookClass", "openNotebook",
]

#: How many bytes of a file a signature test is given.
SNIFF_BYTES = 64


@dataclass(frozen=True)
class NotebookFormat:
    """A notebook file format: its name, its class (``"module:Class"``), suffixes, and a signature test."""

    name: str
    cls: str
    suffixes: tuple[str, ...]
    sniff: Callable[[bytes], bool]

    def load(self) -> type:
        """The notebook class (imported now)."""
        module, _, name = self.cls.partition(":")
        return getattr(import_module(module), name)


_FORMATS: dict[str, NotebookFormat] = {}


def registerNotebookFormat(
    name: str, cls: str, suffixes: tuple[str, ...], sniff: Callable[[bytes], bool], default: bool = False
) -> None:
    """Register a notebook format (the first registered, or ``default=True``, is used for unknown suffixes).

    Raises:
        ValueError: an argument is malformed, or a suffix is already another format's.
    """
    if not name or ":" not in cls or not callable(sniff):
        raise ValueError(
            f"a notebook format needs a name, a 'module:Class' and a signature test; got {name!r}, {cls!r}"
        )
    suffixes = tuple(s.lower() for s in suffixes)
    for other in _FORMATS.values():
        clash = set(other.suffixes) & set(suffixes)
        if other.name != name and clash:
            raise ValueError(f"suffix(es) {sorted(clash)} already belong to notebook format {other.name!r}")
    fmt = NotebookFormat(name, cls, suffixes, sniff)
    if default:
        rest = {k: v for k, v in _FORMATS.items() if k != name}
        _FORMATS.clear()
        _FORMATS[name] = fmt
        _FORMATS.update(rest)
    else:
        _FORMATS[name] = fmt


def notebookFormat(path: str | os.PathLike[str]) -> NotebookFormat:
    """The format of the notebook at ``path``: by content if the file holds any, else by suffix.

    Raises:
        NotebookFormatError: the file exists and no format recognises it.
        NotebookPathError: ``path`` names no regular file (a directory, FIFO, device...).
    """
    p = os.fspath(path)
    refuse_special_path(p)
    # An empty file (touch, mkstemp) holds no notebook yet: its suffix says what it is to become.
    if os.path.exists(p) and os.path.getsize(p) > 0:
        head = _head(p)
        for fmt in _FORMATS.values():
            if fmt.sniff(head):
                return fmt
        known = ", ".join(_FORMATS)
        raise NotebookFormatError(
            f"{p} is not a notebook in any format epyclab knows ({known}); give the name of a notebook, "
            f"or a new file name"
        )
    suffix = os.path.splitext(p)[1].lower()
    for fmt in _FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt
    return next(iter(_FORMATS.values()))


def recognisedFormat(path: str | os.PathLike[str]) -> NotebookFormat | None:
    """The format whose signature the existing file at ``path`` carries; None if none does or there is no file."""
    p = os.fspath(path)
    try:
        head = _head(p)
    except (FileNotFoundError, NotebookPathError):
        return None  # no file, or none that is a notebook of any format
    return next((fmt for fmt in _FORMATS.values() if fmt.sniff(head)), None)


def _head(path: str) -> bytes:
    """The first :data:`SNIFF_BYTES` of the regular file ``path`` (never blocking on a FIFO)."""
    if path == "":
        raise NotebookPathError("the notebook path is empty ('')")
    fd = open_regular(path)
    try:
        return os.pread(fd, SNIFF_BYTES, 0)
    finally:
        os.close(fd)


def otherFormat(path: str | os.PathLike[str], cls: type) -> NotebookFormat | None:
    """The format of the file at ``path`` if it is one that ``cls`` does not read (else None)."""
    fmt = recognisedFormat(path)
    if fmt is None or issubclass(cls, fmt.load()):
        return None
    return fmt


def refuseOtherFormat(path: str | os.PathLike[str], cls: type) -> None:
    """Refuse to open ``path`` with ``cls`` if the file is a notebook of another format, saying which.

    Raises:
        NotebookFormatError: naming the file, its format and the classes that open it.
    """
    fmt = otherFormat(path, cls)
    if fmt is None:
        return  # its own format, or unknown: the class's own reader says what is wrong with it
    right = fmt.load()
    shown = fmt.name.upper()
    article = "an" if shown[:1] in "AEFHILMNORSX" else "a"
    raise NotebookFormatError(
        f"{os.fspath(path)} is {article} {shown} notebook, not one {cls.__name__} reads: open it with "
        f"{right.__name__} or openNotebook"
    )


def notebookClass(path: str | os.PathLike[str]) -> type:
    """The notebook class for ``path`` (see :func:`notebookFormat`)."""
    return notebookFormat(path).load()


def openNotebook(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Open the notebook at ``path`` with the class of its format; ``kwargs`` go to the class.

    Raises:
        NotebookFormatError: no format recognises the file; and what the class raises.
    """
    return notebookClass(path)(path, **kwargs)


registerNotebookFormat(
    "hdf5", "epyclab.notebooks.hdf5:HDF5LabNotebook", (".h5", ".hdf5", ".hdf"),
    lambda head: head.startswith(b"\x89HDF\r\n\x1a\n"), default=True,
)
registerNotebookFormat(
    "json", "epyclab.notebooks.json_notebook:JSONLabNotebook", (".json",),
    lambda head: head.lstrip()[:1] == b"{",
)
