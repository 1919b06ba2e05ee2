"""Writing result sets to exchange formats: netCDF (the labelled array) and Parquet (the table).

Each writer checks first what the format cannot hold and refuses it, naming the
column and what to do; then writes to a temporary file beside the target, reads
it back, and compares it with what it meant to write: only a file that reads
back the same is renamed into place. So an exported file is exact or absent.

- netCDF (:func:`writeNetCDF`): the Dataset of :mod:`epyclab.notebooks.dataset`,
  through h5netcdf (HDF5 underneath: no C netCDF library needed). Attributes
  netCDF cannot hold (bools, None) are written as JSON text and listed in the
  attribute :data:`JSON_ATTRS`; :func:`readNetCDF` decodes them. Complex values
  and columns of mixed types are refused.
- Parquet (:func:`writeParquet`): the DataFrame, through pyarrow. Array results
  of one dimension are lists; the result set's attributes are kept in the
  schema's metadata under ``epyclab`` (JSON); :func:`readParquet` gives both back.
  Complex values, arrays of two or more dimensions and mixed columns are refused.

Both need optional packages (the ``exchange`` extra: xarray, h5netcdf, pyarrow), imported here only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from epyclab.errors import ExportError, OptionalDependencyError
from epyclab.notebooks.sidefiles import safe_write

__all__ = ["JSON_ATTRS", "writeNetCDF", "readNetCDF", "writeParquet", "readParquet", "FORMATS", "formatOf"]

#: netCDF attribute listing the attributes written as JSON text.
JSON_ATTRS = "epyclab.json_attributes"
#: The formats ``epyclab export`` writes, by name, with the file suffixes that choose them.
FORMATS = {"csv": (".csv",), "netcdf": (".nc", ".nc4", ".netcdf"), "parquet": (".parquet", ".pq")}


def formatOf(path: str, given: str | None = None) -> str:
    """The export format: ``given``, or the one ``path``'s suffix names (CSV for any other suffix)."""
    if given is not None:
        return given
    lower = path.lower()
    for name, suffixes in FORMATS.items():
        if lower.endswith(suffixes):
            return name
    return "csv"


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"writing this format needs {module.split('.')[0]}, which is not installed: pip install "
            f"{module.split('.')[0]} (or the extra: pip install -e '.[{extra}]' in epyclab's checkout)"
        ) from exc


# ---- netCDF ---------------------------------------------------------------------------------


def _netcdf_attr_ok(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)) or v is None:
        return False
    if isinstance(v, (str, int, float, np.integer, np.floating)):
        return not (isinstance(v, (int, np.integer)) and not -(2**63) <= int(v) < 2**63)
    return False


def _check_netcdf(ds: Any, where: str) -> None:
    for name, var in ds.variables.items():
        kind = var.dtype.kind
        if kind == "c":
            raise ExportError(
                f"{where}: {name!r} holds complex values, which netCDF cannot store; export to CSV "
                f"(which keeps them exactly), or split them into real and imaginary results"
            )
        if kind == "O":
            values = [v for v in np.asarray(var.values).ravel() if v is not None]
            kinds = {type(v).__name__ for v in values}
            if kinds - {"str"}:
                raise ExportError(
                    f"{where}: {name!r} holds values of types {sorted(kinds)}, which netCDF cannot store as one "
                    f"variable; {_fix(kinds)}"
                )
            if any("\x00" in v for v in values):
                raise ExportError(
                    f"{where}: {name!r} holds text with a NUL character, which netCDF cannot store; export to CSV"
                )


def _fix(kinds: set[str]) -> str:
    """What to do about a column of values of these types."""
    if kinds <= {"list", "tuple"}:
        return "export to CSV (lists read back as arrays from this format), or return numpy arrays instead"
    return "export to CSV, or make its values one type"


def _encoded_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    as_json = []
    for k, v in attrs.items():
        if _netcdf_attr_ok(v):
            out[k] = v.item() if isinstance(v, np.generic) else v
        else:
            try:
                out[k] = json.dumps(v.item() if isinstance(v, np.generic) else v)
            except (TypeError, ValueError) as exc:
                raise ExportError(f"attribute {k!r} = {v!r} cannot be written to netCDF: {exc}") from exc
            as_json.append(k)
    if as_json:
        out[JSON_ATTRS] = json.dumps(as_json)
    return out


def _decoded_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(attrs)
    names = json.loads(out.pop(JSON_ATTRS, "[]"))
    for k in names:
        out[k] = json.loads(out[k])
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in out.items()}


def readNetCDF(path: str) -> Any:
    """Read a Dataset that :func:`writeNetCDF` wrote (its attributes decoded)."""
    xr = _need("xarray", "exchange")
    _need("h5netcdf", "exchange")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        loaded = ds.load()
    loaded.attrs = _decoded_attrs(loaded.attrs)
    for name in list(loaded.variables):
        if loaded[name].dtype.kind == "U":
            # Text reads back as fixed-width numpy strings: as object arrays of str, as the Dataset had it.
            loaded[name] = loaded[name].astype(object)
    return loaded


def _differences(a: Any, b: Any) -> list[str]:
    """Names of the variables, coordinates and attributes that differ between two Datasets."""
    differ = sorted(set(a.variables) ^ set(b.variables))
    for name in set(a.variables) & set(b.variables):
        va, vb = a[name], b[name]
        # Times may read back at another resolution (ns for us): their values must be the same.
        # Text may come back as object arrays of str or as numpy str: the same strings either way.
        same_type = (va.dtype == vb.dtype or (va.dtype.kind == vb.dtype.kind and va.dtype.kind in "mM")
                     or {va.dtype.kind, vb.dtype.kind} <= {"O", "U"})
        if va.dims != vb.dims or not same_type or va.shape != vb.shape:
            differ.append(name)
        elif not np.array_equal(np.asarray(va.values), np.asarray(vb.values),
                                equal_nan=va.dtype.kind in "fcmM"):
            differ.append(name)
    for k in set(a.attrs) | set(b.attrs):
        if k not in a.attrs or k not in b.attrs or type(a.attrs[k]) is not type(b.attrs[k]) \
                or a.attrs[k] != b.attrs[k]:
            differ.append(f"attribute {k}")
    return sorted(differ)


def writeNetCDF(ds: Any, path: str, where: str = "the result set") -> None:
    """Write Dataset ``ds`` to the netCDF file ``path``, whole and exact, or refuse naming why.

    Raises:
        OptionalDependencyError: xarray or h5netcdf is not installed.
        ExportError: a variable or attribute cannot be stored, or did not read back the same.
    """
    _need("xarray", "exchange")
    _need("h5netcdf", "exchange")
    _check_netcdf(ds, where)
    out = ds.copy()
    out.attrs = _encoded_attrs(ds.attrs)
    for name in out.variables:
        if out[name].dtype.kind == "O":
            # Text: variable-length strings (xarray would otherwise guess from the values).
            out[name].encoding["dtype"] = str
    _write_verified(path, lambda tmp: out.to_netcdf(tmp, engine="h5netcdf"),
                    lambda tmp: _differences(ds, readNetCDF(tmp)), where, "netCDF")


# ---- Parquet ---------------------------------------------------------------------------------


def _check_parquet(df: Any, where: str) -> dict[str, Any]:
    """Refuse what Parquet cannot hold; return the columns converted for pyarrow (arrays as lists)."""
    converted: dict[str, Any] = {}
    for name in df.columns:
        col = df[name]
        if col.dtype.kind == "c":
            raise ExportError(
                f"{where}: column {name!r} holds complex values, which Parquet cannot store; export to CSV "
                f"(which keeps them exactly), or split them into real and imaginary results"
            )
        if col.dtype.kind != "O":
            continue
        values = [v for v in col.tolist() if v is not None]
        kinds = {type(v).__name__ for v in values}
        if kinds <= {"str"}:
            continue
        if kinds == {"ndarray"}:
            dims = {v.ndim for v in values}
            dtypes = {v.dtype for v in values}
            if dims != {1} or len(dtypes) != 1 or next(iter(dtypes)).kind not in "biuf":
                raise ExportError(
                    f"{where}: column {name!r} holds arrays of {sorted(dims)} dimension(s) and dtypes "
                    f"{sorted(map(str, dtypes))}; Parquet keeps one-dimensional numeric arrays of one dtype: "
                    f"export to CSV, or to netCDF (where arrays keep their dimensions)"
                )
            converted[name] = [None if v is None else list(v) for v in col.tolist()]
            continue
        raise ExportError(
            f"{where}: column {name!r} holds values of types {sorted(kinds)}, which Parquet cannot store as "
            f"one column; {_fix(kinds)}"
        )
    return converted


def readParquet(path: str) -> tuple[Any, dict[str, Any]]:
    """Read a table that :func:`writeParquet` wrote: the DataFrame, and the result set's attributes."""
    pq = _need("pyarrow.parquet", "exchange")
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    attrs = json.loads(meta.get(b"epyclab", b"{}"))
    return table.to_pandas(), attrs


def _same_column(a: Any, b: Any) -> bool:
    if len(a) != len(b):
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a.to_numpy(), b.to_numpy(), equal_nan=True))
    if a.dtype.kind == "M":
        return bool((a.isna() == b.isna()).all() and (a[a.notna()] == b[b.notna()]).all()) and a.dtype == b.dtype
    for x, y in zip(a.tolist(), b.tolist()):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype
                    and np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def writeParquet(df: Any, path: str, attributes: Mapping[str, Any] | None = None,
                 where: str = "the result set") -> None:
    """Write DataFrame ``df`` (and the result set's ``attributes``) to the Parquet file ``path``, exactly.

    Raises:
        OptionalDependencyError: pyarrow is not installed.
        ExportError: a column cannot be stored, or did not read back the same.
    """
    pa = _need("pyarrow", "exchange")
    pq = _need("pyarrow.parquet", "exchange")
    converted = _check_parquet(df, where)
    try:
        meta = json.dumps(dict(attributes or {}), default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{where}: its attributes cannot be written as JSON: {exc}") from exc
    table_df = df.assign(**converted) if converted else df
    try:
        table = pa.Table.from_pandas(table_df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ExportError(f"{where}: Parquet cannot store it: {exc}; export to CSV instead") from exc
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"epyclab": meta.encode()})

    def differences(tmp: str) -> list[str]:
        back, _ = readParquet(tmp)
        return [c for c in df.columns if c not in back.columns or not _same_column(df[c], back[c])]

    _write_verified(path, lambda tmp: pq.write_table(table, tmp), differences, where, "Parquet")


# ---- writing through a verified temporary file ---------------------------------------------------


def _write_verified(path: str, write: Callable[[str], None], differences: Callable[[str], list[str]],
                    where: str, fmt: str) -> None:
    """Write with ``write(tmp)``, check ``differences(tmp)`` is empty, then move the file to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".new", dir=directory)
    os.close(fd)
    try:
        try:
            write(tmp)
        except (ValueError, TypeError, OverflowError) as exc:
            # What the checks before did not foresee: the library's own words, and the way out.
            raise ExportError(f"{where}: {fmt} cannot store it: {exc}; export to CSV, which keeps every value "
                              f"exactly") from exc
        differ = differences(tmp)
        if differ:
            raise ExportError(
                f"{where}: {', '.join(map(repr, differ))} would not read back the same from {fmt}; "
                f"nothing was written to {path}: export to CSV, which keeps every value exactly"
            )
        # The verified bytes are copied into place whole (fsynced, then renamed) by the notebooks' own helper.
        with open(tmp, "rb") as f:
            data = f.read()
        safe_write(path, lambda out: out.write(data), binary=True, what="exporting to it")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
