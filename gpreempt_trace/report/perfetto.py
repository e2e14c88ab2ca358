"""`export --perfetto`: one trace as a Perfetto protobuf trace (open it in the Perfetto UI).

The few packets that describe (track descriptors, the metadata instant, the loss counter) are built with
the `perfetto` package's own protos. The bulk (slices and instants: ~9 M packets for 1 M events) is
encoded column-wise with numpy in the same wire format: each field of a packet is a byte matrix over
the rows (tag, varint, interned id), the matrices side by side with their valid bytes masked, and one
boolean selection lays the packets out in row order (Python per packet took 45 s for 1 M events). Every
name is interned once, in the first packet (TracePacket.interned_data, SEQ_INCREMENTAL_STATE_CLEARED;
every later packet SEQ_NEEDS_INCREMENTAL_STATE), as Perfetto's own SDK interns them:
- a process track per tgid (named after its model label, else comm), and under it one track per
  queue ("q<id> <type> gpu 0x..") with consecutive slices: active, unmapped (a device-wide unmap until
  the next map on the GPU), suspended (scheme A), preempted (scheme B), evicted;
- a track per thread with the KFD calls as slices (kfd_ioctl, queue_create, queues_unmap, …; nested as
  they ran), with func/ret/gpu_id/queue_id as debug annotations;
- a track per marker source with the markers as instant events;
- a "gpreempt-trace metadata" track whose first instant carries meta.json (run_id, kernel, synthetic,
  events written/lost: "unknown" when meta.json does not know) and a counter track "events lost".
Perfetto's trace processor binary is downloaded at run time and cannot be fetched here, so the tests
decode the file with the package's protos (perfetto_trace_pb2) instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..sql import derived, query
from ..errors import GptError
from ..trace.directory import find_traces, read_meta

SEQ = 1
CHUNK = 16_384  # rows encoded at a time: byte matrices of ~2 MB stay in the heap (256 k rows: +1 s of page faults)
_U64 = np.uint64


def _varint_bytes(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _tag(num: int, wire: int) -> bytes:
    return _varint_bytes(num << 3 | wire)


class _Fields:
    """Field numbers and enum values, read from the `perfetto` package's protos (one source of truth)."""

    def __init__(self, pb):
        f = lambda m, name: m.DESCRIPTOR.fields_by_name[name].number  # noqa: E731
        self.trace_packet = _tag(f(pb.Trace, "packet"), 2)
        self.timestamp = _tag(f(pb.TracePacket, "timestamp"), 0)
        flags = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
        self.sequence = (_tag(f(pb.TracePacket, "trusted_packet_sequence_id"), 0) + _varint_bytes(SEQ)
                         + _tag(f(pb.TracePacket, "sequence_flags"), 0) + _varint_bytes(flags))
        self.track_event = _tag(f(pb.TracePacket, "track_event"), 2)
        te = pb.TrackEvent
        self.type = {t: _tag(f(te, "type"), 0) + _varint_bytes(getattr(te, t)) for t in ("TYPE_SLICE_BEGIN", "TYPE_SLICE_END", "TYPE_INSTANT")}
        self.track_uuid = _tag(f(te, "track_uuid"), 0)
        self.name_iid = _tag(f(te, "name_iid"), 0)
        self.annotation = _tag(f(te, "debug_annotations"), 2)
        da = pb.DebugAnnotation
        self.ann_name_iid = _tag(f(da, "name_iid"), 0)
        self.int_value = _tag(f(da, "int_value"), 0)
        self.string_value = _tag(f(da, "string_value"), 2)


# A piece: the bytes of one field over n rows: an (n, w) uint8 matrix, its (n, w) mask of valid bytes
# and the count of valid bytes per row.
def _const(b: bytes, n: int):
    a = np.frombuffer(b, np.uint8)
    return np.broadcast_to(a, (n, len(a))), np.ones((n, len(a)), bool), np.full(n, len(a), np.int64)


def _varint(v: np.ndarray):
    """Varints of integers (int64 negatives as 10 bytes of two's complement, as protobuf writes int64)."""
    v = v.astype(np.int64, copy=False).view(_U64) if v.dtype.kind == "i" else v.astype(_U64, copy=False)
    n = np.ones(len(v), np.int8)
    for k in range(1, 10):
        more = v >= (_U64(1) << _U64(7 * k))
        if not more.any():
            break
        n += more
    w = int(n.max()) if len(v) else 1
    data = np.empty((len(v), w), np.uint8)
    for k in range(w):
        data[:, k] = ((v >> _U64(7 * k)) & _U64(0x7F)).astype(np.uint8) | np.where(n > k + 1, 0x80, 0).astype(np.uint8)
    return data, np.arange(w) < n[:, None], n.astype(np.int64)


def _lens(pieces) -> np.ndarray:
    return sum(n for _, _, n in pieces)


def _masked(pieces, present: np.ndarray | None):
    return pieces if present is None else [(d, m & present[:, None], np.where(present, n, 0)) for d, m, n in pieces]


def _message(tag: bytes, pieces, present: np.ndarray | None = None):
    """A length-delimited field holding `pieces` (left out where not present)."""
    n = len(pieces[0][0])
    return _masked([_const(tag, n), _varint(_lens(pieces)), *pieces], present)


def _strings(codes: np.ndarray, table: list[bytes]):
    """The length varint and bytes of dictionary strings by code."""
    lens = np.array([len(b) for b in table], np.int64)
    w = max(int(lens.max()), 1)
    mat = np.zeros((len(table), w), np.uint8)
    for i, b in enumerate(table):
        mat[i, :len(b)] = np.frombuffer(b, np.uint8)
    n = lens[codes]
    return [_varint(n), (mat[codes], np.arange(w) < n[:, None], n)]


def _layout(pieces) -> bytes:
    data = np.concatenate([d for d, _, _ in pieces], axis=1)
    mask = np.concatenate([m for _, m, _ in pieces], axis=1)
    return data[mask].tobytes()


class _Bulk:
    """TracePackets of track events encoded over arrays: interned names and tracks as integers."""

    def __init__(self, pb, f, intern):
        self.F = _Fields(pb)
        self.f = f
        self.intern = intern  # (table, name) -> iid

    def _annotations(self, n: int, args: dict[str, pa.ChunkedArray | pa.Array]):
        F, out = self.F, []
        for key, col in args.items():
            col = _array(col)
            present = _valid(col)
            if not present.any():
                continue
            key_piece = [_const(F.ann_name_iid + _varint_bytes(self.intern[("debug_annotation_names", key)]), n)]
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                codes, words = _codes(col)
                table = [w.encode() for w in words] or [b""]
                val = [_const(F.string_value, n), *_strings(codes, table)]
            else:
                vals = _ints(col)
                val = [_const(F.int_value, n), _varint(vals)]
            out += _message(F.annotation, key_piece + val, present)
        return out

    def _packet(self, ts: np.ndarray, event_pieces):
        F, n = self.F, len(ts)
        body = [_const(F.timestamp, n), _varint(ts), _const(F.sequence, n), *_message(F.track_event, event_pieces)]
        return _message(F.trace_packet, body)

    def _event(self, typ: str, uuids: np.ndarray, names: np.ndarray | None, args):
        F, n = self.F, len(uuids)
        out = [_const(F.type[typ], n), _const(F.track_uuid, n), _varint(uuids)]
        if names is not None:
            out += [_const(F.name_iid, n), _varint(names)]
        return out + (self._annotations(n, args) if args else [])

    def name_iids(self, col) -> np.ndarray:
        """Interned event-name ids of a string column."""
        codes, words = _codes(col)
        lut = np.array([self.intern[("event_names", w)] for w in words] or [0], np.int64)
        return lut[codes]

    def slices(self, uuids: np.ndarray, start: np.ndarray, end: np.ndarray, names: np.ndarray, args: dict | None = None) -> None:
        """One begin and one end packet per row, in row order."""
        for lo in range(0, len(uuids), CHUNK):
            s = slice(lo, lo + CHUNK)
            a = {k: v.slice(lo, CHUNK) for k, v in (args or {}).items()}
            begin = self._packet(start[s], self._event("TYPE_SLICE_BEGIN", uuids[s], names[s], a))
            endp = self._packet(end[s], self._event("TYPE_SLICE_END", uuids[s], None, None))
            self.f.write(_layout(begin + endp))

    def instants(self, uuids: np.ndarray, ts: np.ndarray, names: np.ndarray, args: dict) -> None:
        for lo in range(0, len(uuids), CHUNK):
            s = slice(lo, lo + CHUNK)
            a = {k: v.slice(lo, CHUNK) for k, v in args.items()}
            self.f.write(_layout(self._packet(ts[s], self._event("TYPE_INSTANT", uuids[s], names[s], a))))


class _Writer:
    """Packets built with the protos (the descriptors and the few single events)."""

    def __init__(self, f):
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

        self.pb = pb
        self.f = f
        self.next_uuid = 1
        self.first = True
        self.interned: dict[tuple[str, str], int] = {}
        self.flags = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE

    def intern_all(self, table: str, names) -> None:
        for name in names:
            if (table, name) not in self.interned:
                self.interned[(table, name)] = len(self.interned) + 1

    def packet(self, fill) -> None:
        """Build one packet with fill(packet) and write it; the first carries every interned name."""
        p = self.pb.TracePacket()
        p.trusted_packet_sequence_id = SEQ
        if self.first:
            p.sequence_flags = self.pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED | self.flags
            for (table, name), i in self.interned.items():
                e = getattr(p.interned_data, table).add()
                e.iid = i
                e.name = name
            self.first = False
        else:
            p.sequence_flags = self.flags
        fill(p)
        t = self.pb.Trace()
        t.packet.append(p)
        self.f.write(t.SerializeToString())

    def track(self, name: str, parent: int | None = None, pid: int | None = None, tid: int | None = None, counter: bool = False) -> int:
        uuid = self.next_uuid
        self.next_uuid += 1

        def fill(p):
            d = p.track_descriptor
            d.uuid = uuid
            if parent is not None:
                d.parent_uuid = parent
            if pid is not None and tid is None:
                d.process.pid = pid
                d.process.process_name = name
            elif tid is not None:
                d.thread.pid = pid or tid
                d.thread.tid = tid
                d.thread.thread_name = name
            else:
                d.name = name
            if counter:
                d.counter.SetInParent()
        self.packet(fill)
        return uuid

    def instant(self, track: int, ts: int, name: str, args: dict) -> None:
        def fill(p):
            p.timestamp = ts
            e = p.track_event
            e.type = self.pb.TrackEvent.TYPE_INSTANT
            e.track_uuid = track
            e.name_iid = self.interned[("event_names", name)]
            for k, v in args.items():  # None values are left out
                if v is None:
                    continue
                a = e.debug_annotations.add()
                a.name_iid = self.interned[("debug_annotation_names", k)]
                if isinstance(v, bool):
                    a.bool_value = v
                elif isinstance(v, int):
                    a.int_value = v
                else:
                    a.string_value = str(v)
        self.packet(fill)

    def counter(self, track: int, ts: int, value: int) -> None:
        def fill(p):
            p.timestamp = ts
            p.track_event.type = self.pb.TrackEvent.TYPE_COUNTER
            p.track_event.track_uuid = track
            p.track_event.counter_value = value
        self.packet(fill)


def _queue_slices(created: int, destroyed: int, offs: list[tuple[int, int, str]]):
    """Consecutive (start, end, state) slices over [created, destroyed]: `offs` clipped so they never
    overlap (a later interval cuts an earlier one short), the gaps are 'active'. The reference for
    _all_queue_slices, which the export runs (tests compare the two)."""
    offs = sorted((max(a, created), min(b, destroyed), s) for a, b, s in offs if b is not None and b > created and a < destroyed)
    out, t = [], created
    for i, (a, b, s) in enumerate(offs):
        if i + 1 < len(offs):
            b = min(b, offs[i + 1][0])
        a = max(a, t)
        if b <= a:
            continue
        if a > t:
            out.append((t, a, "active"))
        out.append((a, b, s))
        t = b
    if destroyed > t:
        out.append((t, destroyed, "active"))
    return out


# The queues (one row each, `qn` numbers them) and their clipped off-intervals (getvariable('end_ns'): where
# open intervals and live queues end), the input of _all_queue_slices.
QUEUES_SQL = """
SELECT row_number() OVER (ORDER BY tgid, gpu_id, queue_id, created_ts_ns) - 1 AS qn, tgid, gpu_id, queue_id, type,
       created_ts_ns AS c, coalesce(destroyed_ts_ns, getvariable('end_ns')) AS d
FROM queues_lifecycle
"""
QUEUE_OFFS_SQL = """
WITH offs AS (
  SELECT tgid, gpu_id, queue_id, ts_ns AS a, remap_end_ns AS b, 'unmapped' AS s FROM preempt_collateral_queue_hits
  UNION ALL
  SELECT tgid, gpu_id, queue_id, start_ts_ns, coalesce(end_ts_ns, getvariable('end_ns')), state FROM queues_lifecycle_states
)
SELECT q.qn, greatest(o.a, q.c) AS a, least(o.b, q.d) AS b, o.s
FROM _gpt_queues q JOIN offs o ON o.tgid IS NOT DISTINCT FROM q.tgid AND o.gpu_id IS NOT DISTINCT FROM q.gpu_id
 AND o.queue_id IS NOT DISTINCT FROM q.queue_id
WHERE o.b IS NOT NULL AND o.b > q.c AND o.a < q.d
"""


def _all_queue_slices(created: np.ndarray, destroyed: np.ndarray, qn: np.ndarray, a: np.ndarray, b: np.ndarray, state: pa.Array):
    """_queue_slices of every queue at once (queue qn lives [created[qn], destroyed[qn]], offs clipped to
    it): (qn, start, end, state names) in queue then time order. Sorted by (a, b, s), an interval ends at
    the next one's start at the latest; starts never move (every earlier interval ended before it), so
    the kept intervals are those still longer than zero, and the gaps before them and after the last
    are 'active'."""
    codes, names = _codes(state)
    rank = np.argsort(np.argsort(np.array(names, dtype=object))) if names else np.zeros(0, np.int64)  # code -> string order
    o = np.lexsort((rank[codes] if len(codes) else codes, b, a, qn))
    qn, a, b, codes = qn[o], a[o], b[o], codes[o]
    same = np.zeros(len(qn), bool)
    same[:-1] = qn[1:] == qn[:-1]
    nxt = np.empty_like(a)
    nxt[:-1] = a[1:]
    b = np.where(same, np.minimum(b, nxt), b)
    keep = b > a
    qn, a, b, codes = qn[keep], a[keep], b[keep], codes[keep]
    first = np.ones(len(qn), bool)
    first[1:] = qn[1:] != qn[:-1]
    t = np.empty_like(a)
    t[1:] = b[:-1]
    t = np.where(first, created[qn], t)
    last = np.ones(len(qn), bool)
    last[:-1] = qn[1:] != qn[:-1]
    last_t = created.copy()
    last_t[qn[last]] = b[last]
    gap = a > t
    fin = np.nonzero(destroyed > last_t)[0]
    active = len(names)
    q_all = np.concatenate([qn[gap], qn, fin])
    s_all = np.concatenate([t[gap], a, last_t[fin]])
    e_all = np.concatenate([a[gap], b, destroyed[fin]])
    c_all = np.concatenate([np.full(int(gap.sum()), active), codes, np.full(len(fin), active)])
    o = np.lexsort((s_all, q_all))
    return q_all[o], s_all[o], e_all[o], [*names, "active"], c_all[o]


def _array(col) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks else pa.nulls(0, col.type)  # (combining no chunks imports pandas)
    return col


# Arrow -> numpy from the buffers: pyarrow.compute and to_numpy(zero_copy_only=False) import pandas
# (~0.4 s), which nothing else of the export needs.
def _valid(col) -> np.ndarray:
    """Where an Arrow column is not NULL."""
    a = _array(col)
    if a.null_count == 0:
        return np.ones(len(a), bool)
    bits = np.unpackbits(np.frombuffer(a.buffers()[0], np.uint8), bitorder="little")
    return bits[a.offset:a.offset + len(a)].astype(bool)


def _ints(col, fill: int = 0) -> np.ndarray:
    """An integer Arrow column as int64, NULL as `fill`."""
    a = _array(col)
    if len(a) == 0:
        return np.zeros(0, np.int64)
    t = a.type
    dt = np.dtype(f"{'i' if pa.types.is_signed_integer(t) else 'u'}{t.bit_width // 8}")
    v = np.frombuffer(a.buffers()[1], dt, len(a), a.offset * dt.itemsize).astype(np.int64)
    return v if a.null_count == 0 else np.where(_valid(a), v, fill)


def _codes(col) -> tuple[np.ndarray, list]:
    """Dictionary codes (NULL: 0) and values of a string column."""
    enc = _array(col).dictionary_encode()
    return _ints(enc.indices), enc.dictionary.to_pylist()


def _arrow(con, sql: str) -> pa.Table:
    return query._arrow(con.sql(sql), "export --perfetto")


CALLS_SQL = ("SELECT ts_ns, dur_ns, coalesce(nullif(ioctl_cmd, ''), event) AS name, func, tgid, coalesce(tid, tgid) AS key, ret, gpu_id, queue_id "
             "FROM events WHERE dur_ns IS NOT NULL ORDER BY tid, ts_ns, dur_ns DESC, event, func, ret, gpu_id, queue_id, ioctl_cmd, tgid")
INSTANTS_SQL = "SELECT ts_ns, event, func, tgid, gpu_id FROM events WHERE dur_ns IS NULL ORDER BY ALL"
MARKERS_SQL = "SELECT ts_ns, source, kind, tgid, target_tgid, gpu_id, scheme, seq, label, value_ns FROM markers ORDER BY ALL"


def read(trace: str) -> dict:
    """Everything the export draws, read from DuckDB (the benchmark times this alone as its floor)."""
    paths = find_traces([trace])
    if len(paths) != 1:
        raise GptError(f"{trace} holds {len(paths)} traces", "export one trace directory at a time")
    meta = read_meta(paths[0])
    con = query.connect([str(paths[0])])
    query.load_module(con, query.resolve("preempt.collateral"))
    con.execute("CREATE OR REPLACE VIEW queues_lifecycle_states AS SELECT * FROM queues_lifecycle_states_unsorted")  # offs are sorted below
    have = derived.attach(con, paths)  # the trace's derived rows, where valid (sql/derived.py)
    query.materialize(con, *[v for v in ("queues_lifecycle_spans", "queues_lifecycle_states_unsorted") if v not in have], "queues_lifecycle")
    run = con.execute("SELECT run_id, events_written, events_lost, start_ns, stop_ns FROM runs").fetchall()[0]
    end_ns = con.execute("SELECT greatest((SELECT max(ts_ns + coalesce(dur_ns, 0)) FROM events), (SELECT max(ts_ns) FROM markers))").fetchall()[0][0]
    start_ns = con.execute("SELECT least((SELECT min(ts_ns) FROM events), (SELECT min(ts_ns) FROM markers))").fetchall()[0][0]
    if start_ns is None:
        raise GptError(f"{trace} holds no events and no markers", "nothing to export")
    con.execute(f"SET VARIABLE end_ns = {int(end_ns)}::BIGINT")
    names = dict(con.sql("SELECT tgid, coalesce(max(label), max(comm)) FROM (SELECT tgid, label, NULL AS comm FROM queues_lifecycle "
                         "UNION ALL SELECT tgid, NULL, comm FROM events WHERE comm IS NOT NULL) GROUP BY tgid").fetchall())
    # the container (short id) and in-container pid of each process, where /proc was read (view processes)
    where = {t: f" container {c} pid {n}" if n is not None else f" container {c}"
             for t, c, n in con.sql("SELECT tgid, container, ns_tgid FROM processes WHERE container IS NOT NULL").fetchall()}
    con.execute(f"CREATE TEMP TABLE _gpt_queues AS {QUEUES_SQL}")
    return dict(meta=meta, run=run, start_ns=start_ns, names=names, where=where, queues=_arrow(con, "SELECT * FROM _gpt_queues ORDER BY qn"),
                offs=_arrow(con, QUEUE_OFFS_SQL), calls=_arrow(con, CALLS_SQL), inst=_arrow(con, INSTANTS_SQL), marks=_arrow(con, MARKERS_SQL))


def export(trace: str, out_file: str) -> Path:
    r = read(trace)
    meta, run, start_ns, names, where = r["meta"], r["run"], r["start_ns"], r["names"], r["where"]
    queues, offs, calls, inst, marks = r["queues"], r["offs"], r["calls"], r["inst"], r["marks"]
    qn, qa, qb, snames, scodes = _all_queue_slices(_ints(queues["c"]), _ints(queues["d"]), _ints(offs["qn"]), _ints(offs["a"]), _ints(offs["b"]), offs["s"])
    run_name = f"run {run[0]}"
    out = Path(out_file)
    with open(out, "wb") as f:
        w = _Writer(f)
        w.intern_all("event_names", [run_name])
        w.intern_all("event_names", snames)
        for col in (calls["name"], inst["event"], marks["kind"]):
            w.intern_all("event_names", _codes(col)[1])
        meta_args = {
            "run_id": run[0], "kernel": meta.get("kernel"), "host": meta.get("host"), "synthetic": bool(meta.get("synthetic")),
            "labels": ", ".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items()),
            "events_written": run[1], "events_lost": "unknown" if run[2] is None else run[2],
            "format_version": meta.get("version"),
        }
        call_args = ("func", "ret", "gpu_id", "queue_id")
        inst_args = ("func", "tgid", "gpu_id")
        mark_args = ("tgid", "target_tgid", "gpu_id", "scheme", "seq", "label", "value_ns")
        w.intern_all("debug_annotation_names", [*meta_args, *call_args, *inst_args, *mark_args])
        mt = w.track("gpreempt-trace metadata")
        w.instant(mt, start_ns, run_name, meta_args)
        if run[2] is not None:
            w.counter(w.track("events lost", counter=True), start_ns, int(run[2]))
        procs = {}

        def proc(tgid):
            if tgid not in procs:
                procs[tgid] = w.track(f"{names.get(tgid) or 'process'} ({tgid}){where.get(tgid, '')}", pid=tgid)
            return procs[tgid]

        # tracks: one per queue (by qn, the row of `queues`), per thread (by key), per marker source
        qtracks = np.array([w.track(f"q{qid} {typ} gpu 0x{gpu:x}", parent=proc(tgid))
                            for tgid, gpu, qid, typ in zip(*(queues[c].to_pylist() for c in ("tgid", "gpu_id", "queue_id", "type")))] or [0], np.int64)
        null_key = np.int64(-(1 << 62))  # tid and tgid both NULL
        keys = _ints(calls["key"], null_key)
        uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        tgids = calls["tgid"]
        key_uuid = np.zeros(len(uniq), np.int64)
        for j in np.argsort(first):  # tracks in the order their threads first appear
            key = None if uniq[j] == null_key else int(uniq[j])
            tgid = tgids[int(first[j])].as_py()
            key_uuid[j] = w.track(f"{names.get(tgid) or 'thread'} {key}", parent=proc(tgid) if tgid is not None else None, pid=tgid, tid=key)
        call_uuid = key_uuid[inv.reshape(-1)]
        kt = w.track("KFD instant events") if len(inst) else 0
        msrc, sources = _codes(marks["source"]) if len(marks) else (None, [])
        mtracks = [w.track(f"markers: {s}") for s in sources]
        # the bulk: queue states, KFD calls, KFD instants, markers
        b = _Bulk(w.pb, f, w.interned)
        if len(qn):
            siid = np.array([w.interned[("event_names", x)] for x in snames], np.int64)
            b.slices(qtracks[qn], qa, qb, siid[scodes])
        if len(calls):
            ts = _ints(calls["ts_ns"])
            b.slices(call_uuid, ts, ts + _ints(calls["dur_ns"]), b.name_iids(calls["name"]), {k: calls[k] for k in call_args})
        if len(inst):
            b.instants(np.full(len(inst), kt, np.int64), _ints(inst["ts_ns"]), b.name_iids(inst["event"]), {k: inst[k] for k in inst_args})
        if len(marks):
            uu = np.array(mtracks, np.int64)[msrc]
            b.instants(uu, _ints(marks["ts_ns"]), b.name_iids(marks["kind"]), {k: marks[k] for k in mark_args})
    return out
