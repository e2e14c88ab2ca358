"""Build raw kernel records (`struct gpt_event`) in user space, exactly as the BPF side fills them.

Used by tests (tiny hand-checkable fixtures), the writer benchmark and synthetic traces. A value
given for a nullable field sets its validity bit, like GPT_SET() does in BPF.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from . import codegen, schema

_EVENT_ID = {n: i for i, n in enumerate(schema.EVENTS)}
_QTYPE_ID = {n: i for i, n in enumerate(schema.QUEUE_TYPES)}


def records(rows: Iterable[Mapping], func_names: Sequence[str] = ()) -> np.ndarray:
    """rows use Parquet column names: event/func/queue_type as strings, queue_ids as a list."""
    rows = list(rows)
    lay = codegen.layout()
    rec = np.zeros(len(rows), codegen.numpy_dtype(lay))
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
