"""Write a synthetic trace from the KFD model (kfd_model.py) with its ground truth beside the tables.

`generate(dest, scheme, events, seed)` -> the trace directory. It holds meta.json (`synthetic: true`,
`synthetic_model`: the parameters), the usual events/ markers/ snapshots/, and `ground_truth/`:
  preemption.parquet  one row per controller preemption, the columns of `preempt.preemption`
  queues.parquet      one row per queue (tgid, label, gpu_id, queue_id, queue_type, created/destroyed)
Rows go through the real record path (raw `gpt_event` records -> EventDecoder -> SegmentWriter).
Same seed and parameters -> the same rows (run_id defaults to `synthetic-<scheme>-<seed>`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..recorder import decode, record_layout
from ..trace import markers, schema, directory as trace
from ..errors import GptError
from ..recorder import ioctls
from . import kfd_model
from .kfd_model import FUNCS, Model, ModelParams

GROUND_TRUTH = "ground_truth"
BATCH = 1 << 20  # records decoded at a time
# rows per Parquet row group: about what the recorder writes in its 100 ms groups at 1 M events/s
# (one group per table would leave DuckDB one thread per table)
GROUP_ROWS = 1 << 17
_RENAME = {"event": "event_id", "func": "func_id", "queue_type": "qtype_id", "queue_ids": "qids"}


def _records(vals: dict, valid: dict, order: np.ndarray, lo: int, hi: int) -> np.ndarray:
    lay = record_layout.layout()
    idx = order[lo:hi]
    rec = np.zeros(len(idx), record_layout.numpy_dtype(lay))
    bits = np.zeros(len(idx), np.uint64)
    for k, v in vals.items():
        f = _RENAME.get(k, k)
        rec[f] = v[idx]
        b = lay.field(f).valid_bit
        if b is not None:
            bits |= valid[k][idx].astype(np.uint64) << np.uint64(b)
    rec["valid"] = bits
    return rec


def _marker_table(m: Model, run_id: str) -> pa.Table:
    sch = schema.table_schema("markers")
    cols: dict[str, list] = {f.name: [] for f in sch}
    for row in m.markers:
        markers.check_kind(row["kind"])
        for f in sch.names:
            cols[f].append(row.get(f, run_id if f == "run_id" else None))
    parts = [pa.table(cols, schema=sch)]
    for b in m.bulk_markers:
        markers.check_kind(b["kind"])
        n = len(b["ts_ns"])
        common = b["common"]
        d = {
            "run_id": pa.array([run_id] * n, pa.string()) if n < 1000 else pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([run_id])).cast(pa.string()),
            "ts_ns": pa.array(b["ts_ns"], pa.int64()),
            "source": pa.array(np.full(n, common["source"], object), pa.string()),
            "kind": pa.array(np.full(n, b["kind"], object), pa.string()),
            "tgid": pa.array(np.full(n, common["tgid"]), pa.int32()),
            "target_tgid": pa.array(np.full(n, common["target_tgid"]), pa.int32()),
            "gpu_id": pa.array(np.full(n, common["gpu_id"]), pa.uint32()),
            "scheme": pa.array(np.full(n, common["scheme"], object), pa.string()),
            "queue_ids": pa.array([[b["qid"]] if "qid" in b else b["qlist"]] * n, pa.list_(pa.int32())),
            "seq": pa.array(b["seq"], pa.int64()),
            "label": pa.array(np.full(n, b["label"], object), pa.string()) if b["label"] else pa.nulls(n, pa.string()),
            "value_ns": pa.array(b["value_ns"], pa.int64()) if b.get("value_ns") is not None else pa.nulls(n, pa.int64()),
            "container_id": pa.nulls(n, pa.string()),  # the model's processes are not in containers (NULL: none known)
        }
        parts.append(pa.table(d, schema=sch))
    return pa.concat_tables(parts).sort_by([("ts_ns", "ascending"), ("seq", "ascending")])


def _member(x: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    i = np.minimum(np.searchsorted(sorted_set, x), max(len(sorted_set) - 1, 0))
    return (sorted_set[i] == x) if len(sorted_set) else np.zeros(len(x), bool)


def _truth(m: Model, kept_unmaps: np.ndarray, kept_maps: np.ndarray, run_id: str) -> tuple[pa.Table, pa.Table]:
    rows = []
    for blk in m.preemptions:
        n = len(blk["seq"])
        ok_u = _member(blk["unmap_ts_ns"], kept_unmaps)
        ok_m = _member(blk["resume_map_end"], kept_maps)
        req, done = blk["request_ts_ns"], blk["preempt_done"]
        for i in range(n):
            rows.append(dict(
                run_id=run_id, seq=int(blk["seq"][i]), scheme=m.p.scheme, target_tgid=int(blk["target_tgid"][i]), label=blk["label"],
                gpu_id=blk["gpu_id"], queue_ids=blk["queue_ids"], request_ts_ns=int(req[i]),
                preempt_latency_ns=int(blk["preempt_unmap_end"][i] - req[i]) if ok_u[i] else None,
                preempt_call_ns=int(done[i] - req[i]),
                resume_latency_ns=int(blk["resume_map_end"][i] - blk["resume_request"][i]) if ok_m[i] else None,
                suspended_ns=int(blk["resume_done"][i] - done[i]),
            ))
    sch = pa.schema([("run_id", pa.string()), ("seq", pa.int64()), ("scheme", pa.string()), ("target_tgid", pa.int32()), ("label", pa.string()),
                     ("gpu_id", pa.uint32()), ("queue_ids", pa.list_(pa.int32())), ("request_ts_ns", pa.int64()),
                     ("preempt_latency_ns", pa.int64()), ("preempt_call_ns", pa.int64()), ("resume_latency_ns", pa.int64()), ("suspended_ns", pa.int64())])
    pre = pa.Table.from_pylist(rows, schema=sch)
    qs = [dict(run_id=run_id, **q) for q in m.queues]
    qsch = pa.schema([("run_id", pa.string()), ("tgid", pa.int32()), ("label", pa.string()), ("gpu_id", pa.uint32()), ("queue_id", pa.int32()),
                      ("queue_type", pa.string()), ("created_ts_ns", pa.int64()), ("destroyed_ts_ns", pa.int64())])
    return pre, pa.Table.from_pylist(qs, schema=qsch)


def generate(dest: str | Path, scheme: str = "A", events: int = 10_000, seed: int = 0, run_id: str | None = None,
             labels: dict[str, str] | None = None, **params) -> Path:
    """Write a synthetic trace of exactly `events` event rows (before `lost`) to `dest`; returns its path."""
    if scheme not in ("A", "B"):
        raise GptError(f"scheme {scheme!r} is not A or B", "give --scheme A or --scheme B")
    p = ModelParams(scheme=scheme, events=events, seed=seed, **params)
    m = Model(p)
    try:
        m.generate()
    except ValueError as e:
        raise GptError(str(e), "see gpreempt_trace/synthetic/kfd_model.py") from None
    run_id = run_id or f"synthetic-{scheme}-{seed}"
    vals, valid = m.ev.build()
    n = len(vals["ts_ns"])
    order = np.argsort(vals["ts_ns"], kind="stable")
    lost = 0
    if p.lost > 0:
        keep = m.rng.random(n) >= p.lost
        lost = int(n - keep.sum())
        order = order[keep[order]]
    ev_ids, gpus, ts = vals["event"][order], vals["gpu_id"][order], vals["ts_ns"][order]
    g0 = p.gpus[0]
    kept_unmaps = ts[(ev_ids == kfd_model.EVENT_ID["queues_unmap"]) & (gpus == g0)]
    mp = (ev_ids == kfd_model.EVENT_ID["queues_map"]) & (gpus == g0)
    kept_maps = np.sort(ts[mp] + vals["dur_ns"][order][mp])
    kept_unmaps = np.sort(kept_unmaps)

    marker_tbl = _marker_table(m, run_id)
    tw = trace.TraceWriter.create(dest, labels={"scheme": scheme, **(labels or {})}, synthetic=True, run_id=run_id)
    tw.meta["kernel"] = "synthetic (gpreempt_trace.synthetic.kfd_model)"
    tw.meta["host"] = "synthetic"
    tw.meta["start_ns"] = kfd_model.START_NS
    tw.meta["synthetic_model"] = p.describe()
    tw.meta["ground_truth"] = GROUND_TRUTH
    dec = decode.EventDecoder(run_id, FUNCS, ioctls.ioctl_name)
    w = tw.writer("events", background=True)
    for lo in range(0, len(order), BATCH):
        tbl = dec.decode(_records(vals, valid, order, lo, lo + BATCH))
        for g in range(0, tbl.num_rows, GROUP_ROWS):
            w.append_table(tbl.slice(g, GROUP_ROWS))
    mw = tw.writer("markers")
    for g in range(0, marker_tbl.num_rows, GROUP_ROWS):
        mw.append_table(marker_tbl.slice(g, GROUP_ROWS))
    stop = m.end_ns
    tw.close()
    # deterministic meta: model time, not wall time
    tw.meta["stop_ns"] = stop
    tw.meta["start_wall"] = tw.meta["stop_wall"] = None
    tw.meta.setdefault("counters", {})["events_lost"] = lost
    tw.save_meta()
    gt = Path(dest) / GROUND_TRUTH
    gt.mkdir(exist_ok=True)
    pre, qs = _truth(m, kept_unmaps, kept_maps, run_id)
    pq.write_table(pre, gt / "preemption.parquet")
    pq.write_table(qs, gt / "queues.parquet")
    return Path(dest)


def ground_truth(trace_dir: str | Path, name: str) -> pa.Table:
    """A ground-truth table (preemption or queues) of a synthetic trace."""
    f = Path(trace_dir) / GROUND_TRUTH / f"{name}.parquet"
    if not f.exists():
        raise GptError(f"{trace_dir} has no ground truth {name}", "only traces written by `gpreempt-trace synth` have one")
    return pq.read_table(f)
