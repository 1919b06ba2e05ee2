"""The writer's running CRC-32 of its notebook file (epyclab/notebooks/filecrc.py), on real files.

A checkpoint's undo log names the CRC-32 of the file as it was, and a restore is
trusted only if it matches: a kept CRC that is wrong would refuse a sound
restore. So after any change made through an :class:`UndoFile`, the kept CRC is
the file's, as :func:`zlib.crc32` of its bytes says.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_undo_log import apply, ops, originals

from epyclab import HDF5LabNotebook
from epyclab.notebooks import filecrc
from epyclab.notebooks.filecrc import FileCrc, crc32_combine
from epyclab.notebooks.undo import UndoFile


@given(a=st.binary(max_size=3000), b=st.binary(max_size=3000))
def test_combining_two_crcs_is_the_crc_of_the_two_joined(a: bytes, b: bytes) -> None:
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_combining_over_a_long_run_of_zeros() -> None:
    zeros = bytes(5 * 2**20 + 3)
    assert crc32_combine(zlib.crc32(b"head"), zlib.crc32(zeros), len(zeros)) == zlib.crc32(b"head" + zeros)


class SmallBlocks(FileCrc):
    """Blocks of 64 bytes: the changes of a few pages touch many of them, and their edges."""

    Block = 64


@settings(max_examples=100, deadline=None)
@given(original=originals, changes=st.lists(ops, min_size=1, max_size=4))
def test_the_kept_crc_is_the_files_after_every_change(
    tmp_path_factory: pytest.TempPathFactory, original: bytes, changes: list
) -> None:
    tmp = tmp_path_factory.mktemp("crc")
    path, undo = tmp / "nb.h5", tmp / "nb.h5.undo"
    path.write_bytes(original)
    crc = SmallBlocks()
    for operations in changes:
        f = UndoFile(str(path), str(undo), crc)
        for op in operations:
            apply(f, op)
        f.commit()
        fd = os.open(path, os.O_RDONLY)
        try:
            assert crc.crc(fd) == zlib.crc32(path.read_bytes())
        finally:
            os.close(fd)


def test_a_file_changed_behind_its_back_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 1000)
    crc = SmallBlocks()
    fd = os.open(path, os.O_RDWR)
    try:
        assert crc.crc(fd) == zlib.crc32(b"a" * 1000)
        os.pwrite(fd, b"b" * 10, 1000)  # grows: its size tells
        assert crc.crc(fd) == zlib.crc32(b"a" * 1000 + b"b" * 10)
        os.pwrite(fd, b"c", 0)  # same size: its times tell (set apart here: a coarse clock may not move)
        st = os.fstat(fd)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        assert crc.crc(fd) == zlib.crc32(b"c" + b"a" * 999 + b"b" * 10)
    finally:
        os.close(fd)


def test_checkpoints_read_only_what_they_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small checkpoints of a large notebook name the right CRC (the power-cut tests restore by it) without
    # reading the whole file each time: the blocks read for CRCs are those the checkpoints wrote.
    read: list[int] = []
    real = filecrc.FileCrc._read_blocks
    monkeypatch.setattr(filecrc.FileCrc, "_read_blocks",
                        lambda self, fd, first, n: read.extend(range(first, first + n)) or real(self, fd, first, n))
    path = tmp_path / "nb.h5"
    nb = HDF5LabNotebook(str(path), create=True)

    def add(k: int, n: int) -> None:
        for i in range(n):
            nb.addResult({"parameters": {"k": k, "i": i}, "metadata": {}, "results": {"x": float(i), "s": "t" * 50}})

    add(0, 30_000)
    nb.checkpoint()
    blocks = -(-path.stat().st_size // FileCrc.Block)
    assert blocks >= 10
    read.clear()
    for k in range(1, 6):
        add(k, 100)
        nb.checkpoint()
    nb.close()
    # Each reads the blocks of HDF5's metadata at the start of the file and its last block, not the rest.
    assert 0 < len(read) < 5 * blocks / 2
    assert len(HDF5LabNotebook(str(path), readonly=True).dataframe()) == 30_500
