"""What the HDF5 notebook asks of its journal, checked for every number of records and for odd descriptors.

``has_records`` decides whether a notebook is opened with a replay (records
past the header) or not; ``write_aside`` keeps a journal of another file,
readable by the notebook's owner's group as the notebook is; a journal closed
with ``remove=True`` is gone, whatever descriptor it had (a process started
with its standard input closed gets descriptor 0 for its first file).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epyclab.notebooks.journal import Journal, has_records, read_records, write_aside

FILE_ID = "0123456789abcdef0123456789abcdef"
HEADER = 8 + 4 + 32 + 4  # magic, version, file id, crc32


@given(records=st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3), cut=st.integers(0, 3))
def test_has_records_is_true_exactly_when_something_follows_the_header(tmp_path_factory, records, cut):
    path = tmp_path_factory.mktemp("j") / "journal"
    Journal(str(path), FILE_ID).close()
    assert not has_records(str(path))  # a header alone
    journal = Journal(str(path), FILE_ID)
    for r in records:
        journal.append(r)
    journal.close()
    assert has_records(str(path)) == bool(records)
    # A torn first record still follows the header: the notebook must look at (and cut) it.
    if records:
        data = path.read_bytes()
        path.write_bytes(data[: HEADER + 1 + cut])
        assert has_records(str(path))


def test_a_missing_journal_has_no_records(tmp_path: Path) -> None:
    assert not has_records(str(tmp_path / "none"))


def test_a_journal_set_aside_is_readable_as_the_notebook_is(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_aside(str(tmp_path / "aside"), FILE_ID, [])
    finally:
        os.umask(old)
    assert (tmp_path / "aside").stat().st_mode & 0o777 == 0o644
    assert list(read_records(str(tmp_path / "aside"))) == []


ON_DESCRIPTOR_0 = """
import os, sys
from epyclab.notebooks.journal import Journal
os.close(0)  # as a process started without standard input: the journal gets descriptor 0
journal = Journal(sys.argv[1], "0123456789abcdef0123456789abcdef")
journal.append("row")
print(os.path.exists(sys.argv[1]))
journal.close(remove=True)
print(os.path.exists(sys.argv[1]))
journal.close()  # a second close is harmless
"""


def test_a_journal_on_descriptor_0_is_closed_and_removed_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    done = subprocess.run([sys.executable, "-c", ON_DESCRIPTOR_0, str(path)], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["True", "False"]
    assert not path.exists()


AFTER_A_FAILED_RESET = """
import resource, signal, sys
from epyclab.notebooks.journal import Journal, read_records
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
path, reopen = sys.argv[1], sys.argv[2] == "reopened"
ids = ["0" * 32, "1" * 32, "2" * 32]
if reopen:
    Journal(path, ids[0]).close()  # a journal already there (its header written)
    journal = Journal(path, ids[0])
else:
    journal = Journal(path, ids[0])
    journal.reset(ids[1])
limit = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, limit[1]))  # a full disk: the new header cannot be written
try:
    journal.reset(ids[2])
except OSError as exc:
    print("reset failed:", exc.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, limit)  # space again
journal.append("kept")
journal.close()
print(list(read_records(path)))
"""


@pytest.mark.parametrize("journal", ["reopened", "reset once"])
def test_a_commit_after_a_reset_that_found_the_disk_full_is_kept(tmp_path: Path, journal: str) -> None:
    done = subprocess.run([sys.executable, "-c", AFTER_A_FAILED_RESET, str(tmp_path / "j"), journal],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"reset failed: {errno.EFBIG}", "['kept']"]
