"""Refusing HDF5 features that would make a notebook read or write files other than itself.

An HDF5 dataset may keep its data in *external* files (raw bytes of any file
named in the dataset's layout), be *virtual* (mapped from datasets in other
files), and a group may hold *external links* to objects in other files. A
notebook received from someone else could use any of them to make
``dataframe()`` return the bytes of an arbitrary file on the reader's machine,
so a notebook holding one is refused before anything is read.
"""

from __future__ import annotations

from typing import Any

import h5py

from epyclab.errors import NotebookFormatError
from epyclab.notebooks.untrusted import damaged, reading

__all__ = ["refuse_foreign_storage", "safe_type", "check_attribute_types"]


def refuse_foreign_storage(path: str) -> None:
    """Raise if the HDF5 file at ``path`` has external storage, virtual datasets or external links.

    Raises:
        NotebookFormatError: naming the file, the offending object and what it refers to; or the
            file is damaged so that its objects cannot be listed.
    """
    try:
        f = h5py.File(path, "r")
    except OSError:
        return  # not an HDF5 file: the reader that follows says so clearly
    with f, reading(path, "the links and datasets it holds"):
        found: list[str] = []

        def visit(name: str, link: Any) -> None:
            if isinstance(link, h5py.ExternalLink):
                found.append(f"/{name} is an external link to {link.filename}:{link.path}")
                return
            if isinstance(link, h5py.SoftLink):
                return
            obj = f.get(name)
            if isinstance(obj, h5py.Dataset):
                if obj.external:
                    files = ", ".join(str(e[0]) for e in obj.external)
                    found.append(f"dataset /{name} keeps its data in external file(s) {files}")
                elif obj.is_virtual:
                    found.append(f"dataset /{name} is a virtual dataset mapped from other files")

        f.visititems_links(visit)
    if found:
        raise NotebookFormatError(
            f"{path} refers to data outside itself ({'; '.join(found[:3])}); epyclab never reads "
            f"a notebook that does, since it could read any file on this machine. Rebuild the "
            f"notebook from its source, or copy the data into the file with plain h5py"
        )


#: The HDF5 classes of the values a notebook (epyclab's or epyc's) stores: numbers, bools (an
#: enum) and text, and (see :func:`safe_type`) sequences of 64-bit numbers.
_SAFE_CLASSES = (h5py.h5t.INTEGER, h5py.h5t.FLOAT, h5py.h5t.STRING, h5py.h5t.ENUM, h5py.h5t.BITFIELD)


def safe_type(t: Any) -> bool:
    """True if values of the HDF5 type ``t`` (an ``h5py.h5t.TypeID``) are of a kind a notebook stores.

    Anything else is refused before it is read: HDF5 converting a value of a damaged type (text
    whose type was turned into a sequence of bytes by one flipped bit, a reference) can crash
    the process, not only fail.
    """
    if t.get_class() == h5py.h5t.VLEN:
        base = t.get_super()
        return base.get_class() in (h5py.h5t.INTEGER, h5py.h5t.FLOAT) and base.get_size() == 8
    return t.get_class() in _SAFE_CLASSES


def check_attribute_types(path: str, obj: Any) -> None:
    """Refuse the HDF5 object ``obj`` if one of its attributes is of a type no notebook stores.

    Only the attributes' names and types are read, never their values; a name must be text.

    Raises:
        NotebookFormatError: naming the file, the object and the attribute.
    """
    for name in obj.attrs:
        if not isinstance(name, str):  # (h5py gives a name that is not UTF-8 back as bytes: a damaged byte)
            raise damaged(path, f"an attribute of {obj.name}", f"its name {name!r} is not UTF-8 text")
        if not safe_type(obj.attrs.get_id(name).get_type()):
            raise damaged(path, f"attribute {name} of {obj.name}", "it is of a type no notebook stores")
