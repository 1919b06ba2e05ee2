"""``epyclab export`` to netCDF and Parquet: exact round trips, and refusals that name the culprit.

Generated sweeps are written to both formats and read back (with the readers in
:mod:`epyclab.notebooks.exchange`, and with plain xarray and pyarrow): every
variable, column and attribute comes back the same. A value a format cannot
hold (complex numbers, arrays of two dimensions in Parquet, lists) is refused
before anything is written, naming the column; what reads back changed is
refused too. The user's cases run through the installed command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from test_dataset import run_sweep, sweeps

from epyclab.errors import ExportError
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab
from epyclab.notebooks import exchange
from epyclab.notebooks.hdf5 import HDF5LabNotebook

EPYCLAB = str(Path(sys.executable).with_name("epyclab"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EPYCLAB, *args], capture_output=True, text=True, timeout=120)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(sweeps())
def test_generated_sweeps_read_back_the_same_from_netcdf_and_parquet(tmp_path_factory: Any,
                                                                       case: dict[str, Any]) -> None:
    tmp = tmp_path_factory.mktemp("exchange")
    nb = run_sweep(case)
    ds = nb.dataset()
    exchange.writeNetCDF(ds, str(tmp / "s.nc"))
    back = exchange.readNetCDF(str(tmp / "s.nc"))
    assert exchange._differences(ds, back) == []  # noqa: SLF001 (the writer's own check, run from outside)
    assert set(back.data_vars) == set(ds.data_vars) and back.attrs == ds.attrs
    df = nb.dataframe(only_successful=False)
    exchange.writeParquet(df, str(tmp / "s.parquet"), nb.current().attributes())
    table, attrs = exchange.readParquet(str(tmp / "s.parquet"))
    assert list(table.columns) == list(df.columns) and attrs == nb.current().attributes()
    for c in df.columns:
        assert exchange._same_column(df[c], table[c]), c  # noqa: SLF001


class Odd(Experiment):
    """Results whose kind a format may not hold, chosen by ``what``."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        x = params["x"]
        if self.what == "complex":
            return {"z": complex(x, 1)}
        if self.what == "matrix":
            return {"m": np.eye(2) * x}
        if self.what == "list":
            return {"w": [x, 0.5]}
        return {"y": x * 0.5, "v": np.arange(3) * x}


def notebook(tmp_path: Path, what: str) -> str:
    fn = str(tmp_path / f"{what}.h5")
    with HDF5LabNotebook(fn, create=True) as nb:
        lab = Lab(nb)
        lab["x"] = [0, 1, 2]
        lab.runExperiment(Odd(what), progress=False, seed=3)
    return fn


def test_the_command_writes_netcdf_and_parquet_by_suffix_and_plain_readers_read_them(tmp_path: Path) -> None:
    fn = notebook(tmp_path, "plain")
    out = run("export", fn, str(tmp_path / "r.nc"))
    assert out.returncode == 0, out.stderr
    assert "(netcdf)" in out.stdout
    with xr.open_dataset(tmp_path / "r.nc", engine="h5netcdf") as ds:
        assert list(ds["y"].values) == [0.0, 0.5, 1.0]
        assert ds["v"].dims == ("x", "v_dim_0")
        assert ds.attrs["epyclab.lab.seed"] == 3
    out = run("export", "--format", "parquet", fn, str(tmp_path / "r.data"))
    assert out.returncode == 0, out.stderr
    table = pq.read_table(tmp_path / "r.data").to_pandas()
    assert table["y"].tolist() == [0.0, 0.5, 1.0] and list(table["v"][2]) == [0, 2, 4]
    # An existing file is kept unless --force; a dry run writes nothing.
    out = run("export", fn, str(tmp_path / "r.nc"))
    assert out.returncode == 1 and "exists: use --force" in out.stderr
    out = run("export", "--dry-run", fn, str(tmp_path / "dry.parquet"))
    assert out.returncode == 0 and "would write 3 row(s)" in out.stdout and not (tmp_path / "dry.parquet").exists()
    assert run("export", "--force", fn, str(tmp_path / "r.nc")).returncode == 0


@pytest.mark.parametrize(("what", "suffix", "named"), [
    ("complex", ".nc", "'z' holds complex values"),
    ("complex", ".parquet", "column 'z' holds complex values"),
    ("matrix", ".parquet", "column 'm' holds arrays of [2] dimension(s)"),
    ("list", ".nc", "'w' holds values of types ['list']"),
    ("list", ".parquet", "column 'w' holds values of types ['list']"),
])
def test_what_a_format_cannot_hold_is_refused_naming_it_and_nothing_is_written(
    tmp_path: Path, what: str, suffix: str, named: str
) -> None:
    fn = notebook(tmp_path, what)
    target = tmp_path / f"out{suffix}"
    out = run("export", fn, str(target))
    assert out.returncode == 1
    assert named in out.stderr and "export to CSV" in out.stderr and fn in out.stderr
    assert not target.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # CSV keeps it.
    assert run("export", fn, str(tmp_path / "out.csv")).returncode == 0


def test_a_two_dimensional_array_goes_to_netcdf_with_its_dimensions(tmp_path: Path) -> None:
    fn = notebook(tmp_path, "matrix")
    assert run("export", fn, str(tmp_path / "m.nc")).returncode == 0
    back = exchange.readNetCDF(str(tmp_path / "m.nc"))
    assert back["m"].dims == ("x", "m_dim_0", "m_dim_1") and back["m"].values[2].tolist() == [[2, 0], [0, 2]]


def test_netcdf_refuses_only_successful_and_stdout(tmp_path: Path) -> None:
    fn = notebook(tmp_path, "plain")
    out = run("export", "--only-successful", fn, str(tmp_path / "r.nc"))
    assert out.returncode == 1 and "epyclab.mask" in out.stderr
    out = run("export", "--format", "netcdf", fn, "-")
    assert out.returncode == 1 and "name a file" in out.stderr


def test_a_file_that_would_not_read_back_the_same_is_refused_and_odd_attributes_round_trip(tmp_path: Path) -> None:
    # Units in CF's form make xarray read an int variable back as times: caught by reading the file back.
    ds = xr.Dataset({"y": ("x", np.array([1, 2]), {"units": "days since 2000-01-01"})})
    with pytest.raises(ExportError, match="'y' would not read back the same from netCDF"):
        exchange.writeNetCDF(ds, str(tmp_path / "cf.nc"))
    assert list(tmp_path.iterdir()) == []
    # Attributes netCDF has no type for (bools, None, ints beyond 64 bits) come back through JSON.
    odd = {"flag": True, "none": None, "big": 2**70, "text": "x"}
    exchange.writeNetCDF(xr.Dataset({"y": ("x", np.array([1.0]))}, attrs=odd), str(tmp_path / "odd.nc"))
    assert exchange.readNetCDF(str(tmp_path / "odd.nc")).attrs == odd
    text = xr.Dataset({"t": ("x", np.array(["a\x00b"], dtype=object))})
    with pytest.raises(ExportError, match="'t' holds text with a NUL"):
        exchange.writeNetCDF(text, str(tmp_path / "nul.nc"))
