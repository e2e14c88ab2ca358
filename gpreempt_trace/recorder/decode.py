"""Turn a batch of raw kernel records (numpy structured array) into an Arrow table, vectorised.

The ring reader only copies bytes into a numpy buffer; all decoding happens here, once per batch:
validity bits become Arrow null masks (a column whose bit is clear in every record of the batch is
an all-null array without reading its bytes; one whose bit is set in all is built without a mask),
small enum ids become strings through a lookup table, the queue-id array becomes two list columns
(the plain ids and the status the KFD wrote back into their flag bits, decoded by uapi.queue_id_status).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import record_layout
from ..trace import schema
from ..contracts import uapi
from ..trace.arrays import from_numpy, strings, to_numpy

NameOf = Callable[[int], Optional[str]]


def _lookup(ids: np.ndarray, null: np.ndarray | None, name_of: NameOf) -> pa.Array:
    """Map integer ids to strings through the few distinct values of the batch (hash-based)."""
    if null is None and len(ids) and not (ids != ids[0]).any():  # one id in the whole batch
        return _repeated(name_of(int(ids[0])), len(ids))
    enc = pc.dictionary_encode(from_numpy(ids, pa.from_numpy_dtype(ids.dtype)))
    names = strings([name_of(int(u)) for u in to_numpy(enc.dictionary)])
    return _take_names(names, enc.indices, null)


def _take_names(names: pa.Array, indices: pa.Array | np.ndarray, null: np.ndarray | None) -> pa.Array:
    """names[indices] as a plain string array (NULL where `null`). A batch of one name (the usual case:
    a burst of the same call) is built straight from buffers; else through a dictionary cast, which is
    about twice as fast as `take` on strings."""
    idx = indices if isinstance(indices, np.ndarray) else to_numpy(indices)
    idx = idx.astype(np.int32, copy=False)
    if null is None and len(idx) and not (idx != idx[0]).any():
        return _repeated(names[int(idx[0])].as_py(), len(idx))
    return pa.DictionaryArray.from_arrays(from_numpy(idx, pa.int32(), null), names).cast(pa.string())


def _repeated(value: str | None, n: int) -> pa.Array:
    """`value` n times as a string array, built straight from buffers (NULLs when value is None)."""
    if value is None:
        return pa.nulls(n, pa.string())
    raw = value.encode()
    if n * len(raw) >= 2**31:  # past int32 offsets: the general path
        return pa.DictionaryArray.from_arrays(from_numpy(np.zeros(n, np.int32), pa.int32()), strings([value])).cast(pa.string())
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def _table_lookup(table: Sequence[str]) -> NameOf:
    return lambda i: table[i] if 0 <= i < len(table) else None


class _SmallTable:
    """Ids of a small fixed table (event, func, queue type) to names by indexing, no hashing:
    an id past the table reads the trailing NULL entry."""

    def __init__(self, table: Sequence[str]):
        self.n = len(table)
        self.names = strings(list(table) + [None])

    def __call__(self, ids: np.ndarray, null: np.ndarray | None) -> pa.Array:
        idx = np.minimum(ids, self.n).astype(np.int32, copy=False)
        return _take_names(self.names, idx, null)


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
        self._small = {"event_id": _SmallTable(schema.EVENTS), "func_id": _SmallTable(tuple(func_names)),
                       "qtype_id": _SmallTable(schema.QUEUE_TYPES)}
        self._cols = {c.name: c for c in schema.EVENT_COLUMNS}
        self._statuses = strings(list(uapi.QUEUE_ID_STATUSES))
        self._ioctl_event = schema.EVENTS.index("kfd_ioctl")  # its ids are read at entry: no status
        self._run_ids = strings([])

    def _run_id_column(self, n: int) -> pa.Array:
        if len(self._run_ids) < n:  # one string per row; kept and sliced (zero-copy) for later batches
            self._run_ids = pa.DictionaryArray.from_arrays(from_numpy(np.zeros(max(n, 65536), np.int32), pa.int32()),
                                                           strings([self.run_id])).cast(pa.string())
        return self._run_ids.slice(0, n)

    def _null(self, name: str) -> np.ndarray | None | bool:
        """None: the field is known in every record; True: in none; else the per-record null mask."""
        bit = self.lay.field(name).valid_bit
        if bit is None:
            return None
        b = np.uint64(1 << bit)
        if self._all & b:
            return None
        if not self._any & b:
            return True
        return (self._valid & b) == 0

    def decode(self, rec: np.ndarray) -> pa.Table:
        n = len(rec)
        self._valid = np.ascontiguousarray(rec["valid"], dtype="<u8")
        self._any = np.bitwise_or.reduce(self._valid) if n else np.uint64(0)
        self._all = np.bitwise_and.reduce(self._valid) if n else np.uint64(0)
        arrays = []
        for field in self.schema:
            col = self._cols[field.name]
            if col.name == "run_id":
                arrays.append(self._run_id_column(n))
                continue
            null = self._null(col.derive or col.name)
            if null is True:
                arr = pa.nulls(n, field.type)
            elif col.name == "queue_ids":
                arr = self._queue_ids(rec, null)
            elif col.name == "queue_id_status":
                arr = self._queue_id_status(rec, null)
            elif col.derive in self._small:
                arr = self._small[col.derive](rec[col.derive], null)
            elif col.derive:
                arr = _lookup(rec[col.derive], null, self.names[col.derive])
            elif col.c.startswith("char"):
                arr = _lookup_bytes(rec[col.name], null)
            else:
                arr = from_numpy(rec[col.name], field.type, null)
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _queue_ids(self, rec: np.ndarray, null: np.ndarray | None) -> pa.Array:
        words, offsets, mask = self._qid_words(rec, null)
        return pa.ListArray.from_arrays(offsets, from_numpy(words & np.uint32(uapi.DBG_QUEUE_ID_MASK), pa.int32()), mask=mask)

    def _queue_id_status(self, rec: np.ndarray, null: np.ndarray | None) -> pa.Array:
        at_entry = rec["event_id"] == self._ioctl_event
        if at_entry.any():
            null = at_entry if null is None else (null | at_entry)
        words, offsets, mask = self._qid_words(rec, null)
        return pa.ListArray.from_arrays(offsets, _take_names(self._statuses, uapi.queue_id_status(words), None), mask=mask)

    def _qid_words(self, rec: np.ndarray, null: np.ndarray | None):
        """The raw queue id words of the known rows, flat, with their list offsets and null mask."""
        null = np.zeros(len(rec), bool) if null is None else null
        counts = np.minimum(rec["num_queues"], schema.MAX_QUEUE_IDS).astype(np.int32)
        counts[null] = 0
        take = np.arange(schema.MAX_QUEUE_IDS)[None, :] < counts[:, None]
        offsets = from_numpy(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
        return rec["qids"][take], offsets, (from_numpy(null, pa.bool_()) if null.any() else None)


def _lookup_bytes(vals: np.ndarray, null: np.ndarray | None) -> pa.Array:
    """Fixed-width NUL-padded C strings (comm) to strings, through their few distinct values."""
    if null is None and len(vals) and not (vals != vals[0]).any():  # one name in the whole batch
        return _repeated(bytes(vals[0]).rstrip(b"\0").decode("utf-8", "replace"), len(vals))
    width = vals.dtype.itemsize
    raw = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(vals), [None, pa.py_buffer(np.ascontiguousarray(vals))])
    enc = pc.dictionary_encode(raw)
    names = strings([u.rstrip(b"\0").decode("utf-8", "replace") for u in enc.dictionary.to_pylist()])
    return _take_names(names, enc.indices, null)


def empty_records(n: int) -> np.ndarray:
    return np.zeros(n, record_layout.numpy_dtype())
