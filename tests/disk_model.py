"""A model of what a disk keeps when the power goes: built from the writes and flushes a notebook made.

:func:`epyclab.notebooks.fileio.recording` shows every write, cut, flush,
creation, rename and removal of a notebook's files. :class:`DiskModel` replays
them over the files a directory held when recording began (taken as on the
disk), and gives the directory as it would be after a cut at any point:

* ``"flushed"``: a power cut that keeps only what was flushed: each file's
  data (and its size, grown by a write or an ``allocate``) as of its last
  ``flush``, and the names (created, renamed, removed) as of the directory's
  last ``flush_dir``; everything after is lost.
* ``"kept"``: a killed process: the kernel keeps every write made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class DiskModel:
    """Replays recorded file operations over a directory's starting files (all taken as durable)."""

    def __init__(self, directory: Path) -> None:
        self.directory = str(directory.resolve())
        self.events: list[tuple[str, str, tuple[Any, ...]]] = []
        self._base = {str(p.resolve()): p.read_bytes() for p in directory.iterdir() if p.is_file()}

    def record(self, op: str, path: str, details: tuple[Any, ...]) -> None:
        """The recorder given to ``fileio.recording``."""
        if op == "flush_dir" or os.path.dirname(path) == self.directory:
            self.events.append((op, path, details))

    def mark(self, what: Any) -> None:
        """Note a point of the test's own (a commit that returned) among the operations."""
        self.events.append(("mark", "", (what,)))

    def state(self, cut: int, model: str) -> dict[str, bytes]:
        """The directory's files (name -> bytes) after the first ``cut`` events, under ``model``."""
        inodes: dict[int, bytearray] = {}
        flushed: dict[int, bytes] = {}
        names: dict[str, int] = {}
        for i, (path, data) in enumerate(self._base.items()):
            inodes[i] = bytearray(data)
            flushed[i] = data
            names[path] = i
        durable = dict(names)
        for op, path, details in self.events[:cut]:
            if op == "open":
                if path not in names:
                    names[path] = len(inodes)
                    inodes[names[path]] = bytearray()
            elif op == "write":
                offset, data = details
                content = inodes[names[path]]
                if len(content) < offset:
                    content.extend(bytes(offset - len(content)))
                content[offset : offset + len(data)] = data
            elif op == "allocate":
                # posix_fallocate: the file grows to at least offset + length, the new bytes zeros (bytes it
                # held stay); like a write, the new size is on the disk only once the file is flushed.
                offset, length = details
                content = inodes[names[path]]
                content.extend(bytes(max(0, offset + length - len(content))))
            elif op == "truncate":
                content = inodes[names[path]]
                (size,) = details
                del content[size:]
                content.extend(bytes(size - len(content)))
            elif op == "flush":
                flushed[names[path]] = bytes(inodes[names[path]])
            elif op == "flush_dir":
                durable = dict(names)
            elif op == "replace":
                names[details[0]] = names.pop(path)
            elif op == "link":
                names[details[0]] = names[path]
            elif op == "unlink":
                names.pop(path)
        if model == "kept":
            return {os.path.basename(p): bytes(inodes[i]) for p, i in names.items()}
        return {os.path.basename(p): flushed.get(i, b"") for p, i in durable.items()}

    def materialize(self, files: dict[str, bytes], directory: Path) -> None:
        """Write ``files`` into the empty ``directory``."""
        for name, data in files.items():
            (directory / name).write_bytes(data)
