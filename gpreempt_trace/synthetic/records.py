"""Build raw kernel records (`struct gpt_event`) in user space, exactly as the BPF side fills them.

Used by tests (tiny hand-checkable fixtures), the writer benchmark and synthetic traces. A value
given for a nullable field sets its validity bit, like GPT_SET() does in BPF.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from ..recorder import record_layout
from ..trace import schema
from ..contracts import uapi

_EVENT_ID = {n: i for i, n in enumerate(schema.EVENTS)}
_QTYPE_ID = {n: i for i, n in enumerate(schema.QUEUE_TYPES)}


def records(rows: Iterable[Mapping], func_names: Sequence[str] = ()) -> np.ndarray:
    """rows use Parquet column names: event/func/queue_type as strings, queue_ids as a list."""
    rows = list(rows)
    lay = record_layout.layout()
    rec = np.zeros(len(rows), record_layout.numpy_dtype(lay))
    bits = {f.name: f.valid_bit for f in lay.fields}
    funcs = {n: i for i, n in enumerate(func_names)}
    for i, row in enumerate(rows):
        valid = 0
        for key, val in row.items():
            if val is None:
                continue
            if key == "event":
                key, val = "event_id", _EVENT_ID[val]
            elif key == "func":
                key, val = "func_id", funcs[val]
            elif key == "queue_type":
                key, val = "qtype_id", _QTYPE_ID[val]
            elif key == "queue_ids":
                ids = list(val)[: schema.MAX_QUEUE_IDS]
                rec["qids"][i, : len(ids)] = ids
                key, val = "qids", None
            elif key == "comm":
                val = val.encode()[:16]
            if val is not None:
                rec[key][i] = val
            if bits.get(key) is not None:
                valid |= 1 << bits[key]
        rec["valid"][i] = valid
    return rec


def bulk_records(n: int, seed: int = 0, tgids: int = 64) -> np.ndarray:
    """n plausible records, vectorised (benchmarks, synthetic traces): a mix of queue lifecycle,
    map/unmap and ioctl rows from `tgids` processes with every common field known."""
    rng = np.random.default_rng(seed)
    lay = record_layout.layout()
    rec = np.zeros(n, record_layout.numpy_dtype(lay))
    ev = np.array([_EVENT_ID[e] for e in ("kfd_ioctl", "queue_create", "queue_destroy", "queues_map", "queues_unmap")], np.uint16)
    rec["event_id"] = rng.choice(ev, n, p=[0.6, 0.1, 0.1, 0.1, 0.1])
    rec["func_id"] = rec["event_id"] % 4
    rec["ts_ns"] = np.cumsum(rng.integers(100, 2000, n, dtype=np.uint64))
    rec["dur_ns"] = rng.integers(500, 50_000, n, dtype=np.uint64)
    rec["tgid"] = 1000 + rng.integers(0, tgids, n, dtype=np.int32)
    rec["tid"] = rec["tgid"]
    rec["cpu"] = rng.integers(0, 2, n, dtype=np.int32)
    rec["comm"] = b"python3"
    rec["gpu_id"] = 0xF7BC
    rec["queue_id"] = rng.integers(0, 8, n, dtype=np.int32)
    rec["qtype_id"] = _QTYPE_ID["compute_aql"]
    rec["doorbell_off"] = rec["queue_id"].astype(np.uint32) * 2
    rec["priority"] = 7
    rec["ret"] = 0
    rec["ioctl_nr"] = uapi.CREATE_QUEUE
    bits = ("dur_ns", "tgid", "tid", "cpu", "comm", "gpu_id", "queue_id", "qtype_id", "doorbell_off", "priority", "ret", "ioctl_nr")
    rec["valid"] = sum(np.uint64(1 << lay.field(b).valid_bit) for b in bits)
    return rec
