"""Arrow arrays built straight from buffers (numpy arrays, Python lists), for the recorder's data path.

pyarrow's converters (`pa.array`, `pa.scalar`, `Table.from_pylist`, `Schema.empty_table`) import pandas
on their first call to check for pandas objects: ~45 MiB of RSS in a process that never uses pandas
(the recorder). These helpers build the same arrays with `Array.from_buffers`; `column()` falls back to
`pa.array` for values or types it does not handle (same result, same errors).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa


def _validity(null: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
    """Arrow validity bitmap (1 = valid) of a per-row null mask, and the null count."""
    if null is None:
        return None, 0
    nulls = int(np.count_nonzero(null))
    if nulls == 0:
        return None, 0
    return pa.py_buffer(np.packbits(~np.asarray(null, bool), bitorder="little")), nulls


def from_numpy(vals: np.ndarray, type: pa.DataType, null: np.ndarray | None = None) -> pa.Array:
    """A fixed-width (integer, float, bool) Arrow array of `vals`, NULL where `null` is true."""
    n = len(vals)
    if pa.types.is_boolean(type):
        data = pa.py_buffer(np.packbits(np.asarray(vals) != 0, bitorder="little"))
    else:
        data = pa.py_buffer(np.ascontiguousarray(vals, dtype=type.to_pandas_dtype()))
    validity, nulls = _validity(null)
    return pa.Array.from_buffers(type, n, [validity, data], null_count=nulls)


def to_numpy(arr: pa.Array) -> np.ndarray:
    """A numpy view of a fixed-width integer array without NULLs (Array.to_numpy may import pandas)."""
    if arr.null_count or not pa.types.is_integer(arr.type):
        raise ValueError(f"to_numpy: {arr.type} with {arr.null_count} nulls")
    dt = np.dtype(arr.type.to_pandas_dtype())
    return np.frombuffer(arr.buffers()[1], dt, len(arr), offset=arr.offset * dt.itemsize)


def strings(values: Sequence[str | None]) -> pa.Array:
    """A string array of Python str / None."""
    raw = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(len(raw) + 1, np.int64)
    np.cumsum([len(r) for r in raw], out=offsets[1:])
    null = np.fromiter((v is None for v in values), bool, len(raw))
    if offsets[-1] < 2**31:
        typ, offsets = pa.string(), offsets.astype(np.int32)
    else:
        typ = pa.large_string()
    validity, nulls = _validity(null)
    arr = pa.Array.from_buffers(typ, len(raw), [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(raw))],
                                null_count=nulls)
    return arr if typ == pa.string() else arr.cast(pa.string())


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def column(values: list, type: pa.DataType) -> pa.Array:
    """`pa.array(values, type)` for a list of Python values, without pyarrow's converter where the type
    is an integer, bool, string or list of integers and every value fits it."""
    null = np.fromiter((v is None for v in values), bool, len(values))
    try:
        if pa.types.is_integer(type) and all(_is_int(v) for v in values if v is not None):
            return from_numpy(np.array([0 if v is None else v for v in values], type.to_pandas_dtype()), type, null)
        if pa.types.is_boolean(type) and all(isinstance(v, (bool, np.bool_)) for v in values if v is not None):
            return from_numpy(np.array([bool(v) for v in values], bool), type, null)
        if pa.types.is_string(type) and all(isinstance(v, str) for v in values if v is not None):
            return strings(values)
        if (pa.types.is_list(type) and pa.types.is_integer(type.value_type)
                and all(isinstance(v, (list, tuple)) and all(_is_int(x) for x in v) for v in values if v is not None)):
            counts = [0 if v is None else len(v) for v in values]
            offsets = np.zeros(len(values) + 1, np.int32)
            np.cumsum(counts, out=offsets[1:])
            flat = np.array([x for v in values if v is not None for x in v], type.value_type.to_pandas_dtype())
            validity, nulls = _validity(null)  # from_buffers: ListArray.from_arrays(mask=) imports pyarrow.compute
            return pa.Array.from_buffers(type, len(values), [validity, pa.py_buffer(offsets)], null_count=nulls,
                                         children=[from_numpy(flat, type.value_type)])
    except (OverflowError, ValueError, TypeError):  # out of range etc.: pyarrow's converter says what is wrong
        pass
    return pa.array(values, type)


def table_from_rows(rows: Sequence[dict], schema: pa.Schema) -> pa.Table:
    """`pa.Table.from_pylist(rows, schema=schema)` (missing keys are NULL) through `column()`."""
    return pa.Table.from_arrays([column([r.get(f.name) for r in rows], f.type) for f in schema], schema=schema)


def empty_table(sch: pa.Schema) -> pa.Table:
    """A zero-row table of `sch` (`Schema.empty_table` imports pandas)."""
    return pa.Table.from_batches([], sch)
