"""Single values as JSON, with the types JSON lacks tagged so they come back the same.

Used for what is stored value by value rather than by column: the parameters
of pending results, result set attributes, and the cells of array and list
columns in JSON notebooks. Plain JSON values stay plain; the others become a
one-key object:

=========================  ==================================================
value                      JSON
=========================  ==================================================
NaN, inf, -inf             ``{"__float__": "nan"}`` (``"inf"``, ``"-inf"``)
complex                    ``{"__complex__": [re, im]}``
datetime                   ``{"__datetime__": "2024-01-31T12:00:00.000001"}``
numpy array                ``{"__ndarray__": {"dtype": "float64", "shape": [2, 2], "data": [...]}}``
tuple                      ``{"__tuple__": [...]}``
dict                       ``{"__dict__": {...}}``
=========================  ==================================================
"""

from __future__ import annotations

import math
import operator
from datetime import datetime
from typing import Any

import numpy as np

from epyclab.errors import UnstorableValueError

__all__ = ["encode_value", "decode_value", "encode_float", "decode_float"]


def encode_float(x: float) -> Any:
    """A float as JSON: itself if finite, else a tagged string."""
    x = float(x)
    if math.isfinite(x):
        return x
    return {"__float__": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


def decode_float(x: Any) -> float:
    """The float :func:`encode_float` encoded."""
    if isinstance(x, dict):
        return float(x["__float__"])
    return float(x)


def encode_value(v: Any, what: str = "value") -> Any:
    """``v`` as JSON (``what`` names it in the error if it cannot be stored)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return encode_float(v)
    if isinstance(v, (complex, np.complexfloating)):
        return {"__complex__": [encode_float(v.real), encode_float(v.imag)]}
    if isinstance(v, datetime):
        return {"__datetime__": v.isoformat()}
    if isinstance(v, np.ndarray) and v.dtype.kind in "biufc":
        flat = [encode_value(x) for x in v.reshape(-1).tolist()]
        return {"__ndarray__": {"dtype": v.dtype.str, "shape": list(v.shape), "data": flat}}
    if isinstance(v, list):
        return [encode_value(x, what) for x in v]
    if isinstance(v, tuple):
        return {"__tuple__": [encode_value(x, what) for x in v]}
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {"__dict__": {k: encode_value(x, what) for k, x in v.items()}}
    raise UnstorableValueError(
        f"cannot store {what} = {v!r:.60} (a {type(v).__name__}): a notebook stores None, bool, int, "
        f"float, complex, str, datetime, numeric numpy arrays, and lists, tuples and dicts of those"
    )


def decode_value(x: Any) -> Any:
    """The value :func:`encode_value` encoded.

    Raises:
        ValueError, TypeError, KeyError: ``x`` is not what :func:`encode_value` writes (a damaged file);
            the reader names the file and the key.
    """
    if isinstance(x, list):
        return [decode_value(y) for y in x]
    if not isinstance(x, dict):
        return x
    (tag, body), = x.items()
    if tag == "__float__":
        return float(body)
    if tag == "__complex__":
        return complex(decode_float(body[0]), decode_float(body[1]))
    if tag == "__datetime__":
        return datetime.fromisoformat(body)
    if tag == "__ndarray__":
        dtype = np.dtype(body["dtype"])
        # Read from a file: only the dtypes encode_value writes (a "V99999999999" would cost gigabytes).
        if dtype.kind not in "biufc" or dtype.itemsize > 32:
            raise ValueError(f"an array of dtype {dtype.str!r} is not one a notebook stores")
        data = [decode_value(y) for y in body["data"]]
        shape = [operator.index(d) for d in body["shape"]]
        if any(d < 0 for d in shape) or math.prod(shape) != len(data):
            raise ValueError(f"an array of shape {shape} cannot hold its {len(data)} value(s)")
        return np.array(data, dtype=dtype).reshape(shape)
    if tag == "__tuple__":
        return tuple(decode_value(y) for y in body)
    if tag == "__dict__":
        return {k: decode_value(y) for k, y in body.items()}
    raise ValueError(f"unknown tagged JSON value {tag!r}")
