"""openNotebook opens a file with the format its content says (a new file: its suffix says); formats register."""

from __future__ import annotations

import pytest

from epyclab import HDF5LabNotebook, JSONLabNotebook, NotebookFormatError, openNotebook, registerNotebookFormat


def test_the_content_decides_whatever_the_name(tmp_path):
    misnamed = tmp_path / "really-hdf5.json"
    HDF5LabNotebook(misnamed, create=True).close()
    nb = openNotebook(misnamed, readonly=True)
    assert type(nb) is HDF5LabNotebook
    misnamed2 = tmp_path / "really-json.h5"
    JSONLabNotebook(misnamed2, create=True).close()
    assert type(openNotebook(misnamed2, readonly=True)) is JSONLabNotebook


def test_a_new_file_gets_the_format_of_its_suffix_hdf5_by_default(tmp_path):
    for name, cls in (("a.json", JSONLabNotebook), ("b.h5", HDF5LabNotebook), ("c.nb", HDF5LabNotebook)):
        nb = openNotebook(tmp_path / name, create=True)
        assert type(nb) is cls
        nb.close()


def test_a_file_no_format_knows_is_a_clear_error_and_left_alone(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(NotebookFormatError, match=r"junk\.h5 is not a notebook in any format epyclab knows"):
        openNotebook(junk)
    assert junk.read_bytes() == b"PK\x03\x04 a zip file"


def test_registering_checks_its_arguments():
    with pytest.raises(ValueError, match="'module:Class'"):
        registerNotebookFormat("csv", "NotAModulePath", (".csv",), lambda head: False)
    with pytest.raises(ValueError, match=r"\['.json'\] already belong to notebook format 'json'"):
        registerNotebookFormat("json5", "x.y:Z", (".json",), lambda head: False)
