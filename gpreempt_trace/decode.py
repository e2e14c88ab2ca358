"""Turn a batch of raw kernel records (numpy structured array) into an Arrow table, vectorised.

The ring-buffer callback only copies bytes into a numpy buffer; all decoding happens here, once per
batch: validity bits become Arrow null masks, enum ids become strings, the queue-id array becomes a
list column.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import record_layout, schema

NameOf = Callable[[int], Optional[str]]


def _lookup(ids: np.ndarray, null: np.ndarray | None, name_of: NameOf) -> pa.Array:
    """Map integer ids to strings through the few distinct values of the batch (hash-based)."""
    enc = pc.dictionary_encode(pa.array(ids))
    names = pa.array([name_of(int(u)) for u in enc.dictionary.to_numpy()], pa.string())
    return _take_names(names, enc.indices, null)


def _take_names(names: pa.Array, indices: pa.Array, null: np.ndarray | None) -> pa.Array:
    if null is not None and null.any():
        indices = pa.array(indices.to_numpy(zero_copy_only=False), mask=null)
    return pc.take(names, indices)


def _table_lookup(table: Sequence[str]) -> NameOf:
    return lambda i: table[i] if 0 <= i < len(table) else None


class EventDecoder:
    """Decode raw `gpt_event` records into the `events` Arrow schema."""

    def __init__(self, run_id: str, func_names: Sequence[str] = (), ioctl_name: NameOf | None = None):
        self.lay = record_layout.layout()
        self.dtype = record_layout.numpy_dtype(self.lay)
        self.schema = schema.table_schema("events")
        self.run_id = run_id
        self.names: dict[str, NameOf] = {
            "event_id": _table_lookup(schema.EVENTS),
            "func_id": _table_lookup(tuple(func_names)),
            "qtype_id": _table_lookup(schema.QUEUE_TYPES),
            "ioctl_nr": ioctl_name or (lambda _n: None),
        }
        self._cols = {c.name: c for c in schema.EVENT_COLUMNS}

    def _null(self, rec: np.ndarray, name: str) -> np.ndarray | None:
        bit = self.lay.field(name).valid_bit
        if bit is None:
            return None
        return self._missing[:, bit]

    def decode(self, rec: np.ndarray) -> pa.Table:
        n = len(rec)
        # one pass over the validity words: column b of _missing is True where bit b is clear
        valid = np.ascontiguousarray(rec["valid"], dtype="<u8")
        bits = np.unpackbits(valid.view(np.uint8).reshape(n, 8), axis=1, bitorder="little")
        self._missing = bits == 0
        arrays = []
        for field in self.schema:
            col = self._cols[field.name]
            if col.name == "run_id":
                arr = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([self.run_id])).cast(pa.string())
            elif col.derive == "qids":
                arr = self._queue_ids(rec)
            elif col.derive:
                arr = _lookup(rec[col.derive], self._null(rec, col.derive), self.names[col.derive])
            elif col.c.startswith("char"):
                arr = _lookup_bytes(rec[col.name], self._null(rec, col.name))
            else:
                vals = rec[col.name]
                if field.type == pa.bool_():
                    vals = vals != 0
                else:
                    vals = vals.astype(field.type.to_pandas_dtype(), copy=False)
                null = self._null(rec, col.name)
                arr = pa.array(vals, field.type, mask=null if null is not None and null.any() else None)
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _queue_ids(self, rec: np.ndarray) -> pa.Array:
        null = self._null(rec, "qids").copy()
        counts = np.minimum(rec["num_queues"], schema.MAX_QUEUE_IDS).astype(np.int32)
        counts[null] = 0
        take = np.arange(schema.MAX_QUEUE_IDS)[None, :] < counts[:, None]
        values = pa.array(rec["qids"][take].astype(np.int32))
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        return pa.ListArray.from_arrays(offsets, values, mask=pa.array(null) if null.any() else None)


def _lookup_bytes(vals: np.ndarray, null: np.ndarray | None) -> pa.Array:
    """Fixed-width NUL-padded C strings (comm) to strings, through their few distinct values."""
    width = vals.dtype.itemsize
    raw = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(vals), [None, pa.py_buffer(np.ascontiguousarray(vals))])
    enc = pc.dictionary_encode(raw)
    names = pa.array([u.rstrip(b"\0").decode("utf-8", "replace") for u in enc.dictionary.to_pylist()], pa.string())
    return _take_names(names, enc.indices, null)


def empty_records(n: int) -> np.ndarray:
    return np.zeros(n, record_layout.numpy_dtype())
