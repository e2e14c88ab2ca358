"""`export --perfetto`: one trace as a Perfetto protobuf trace (open it in the Perfetto UI).

Written with the `perfetto` package's own protos (no hand-made JSON): packets are added to a `Trace`
message that is serialized and appended to the file every FLUSH_PACKETS packets (serialized `Trace`
messages concatenate into one trace: the framing of the package's StreamingTraceProtoBuilder, without
its copy and serialization per packet). Event names and debug-annotation names are interned
(TracePacket.interned_data, SEQ_NEEDS_INCREMENTAL_STATE), as Perfetto's own SDK writes them:
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

from ..sql import query
from ..errors import GptError
from ..trace.directory import find_traces, read_meta

SEQ = 1
BATCH = 200_000  # rows fetched from DuckDB at a time
FLUSH_PACKETS = 20_000


def _annotate(w: "_Writer", p, event, args: dict | None) -> None:
    """Debug annotations of a track event (names interned); None values are left out."""
    for k, v in (args or {}).items():
        if v is None:
            continue
        a = event.debug_annotations.add()
        a.name_iid = w.iid(p, "debug_annotation_names", k)
        if isinstance(v, bool):
            a.bool_value = v
        elif isinstance(v, int):
            a.int_value = v
        else:
            a.string_value = str(v)


class _Writer:
    def __init__(self, f):
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

        self.pb = pb
        self.f = f
        self.trace = pb.Trace()
        self.pending = 0
        self.next_uuid = 1
        self.first = True
        self.interned: dict[tuple[str, str], int] = {}
        self.flags = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE

    def packet(self):
        if self.pending >= FLUSH_PACKETS:  # before adding: the packet returned is filled by the caller
            self.flush()
        p = self.trace.packet.add()
        p.trusted_packet_sequence_id = SEQ
        if self.first:
            p.sequence_flags = self.pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED | self.flags
            self.first = False
        else:
            p.sequence_flags = self.flags
        self.pending += 1
        return p

    def flush(self) -> None:
        if self.pending:
            self.f.write(self.trace.SerializeToString())
            self.trace = self.pb.Trace()  # a new message: Clear() keeps upb's arena, which then grew by every packet (6 GB for 1 M events)
            self.pending = 0

    def iid(self, p, table: str, name: str) -> int:
        """The interned id of `name` in `table` (event_names, debug_annotation_names); the first use adds
        it to packet p's interned_data."""
        key = (table, name)
        i = self.interned.get(key)
        if i is None:
            i = self.interned[key] = len(self.interned) + 1
            e = getattr(p.interned_data, table).add()
            e.iid = i
            e.name = name
        return i

    def track(self, name: str, parent: int | None = None, pid: int | None = None, tid: int | None = None, counter: bool = False) -> int:
        uuid = self.next_uuid
        self.next_uuid += 1
        p = self.packet()
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
        return uuid

    def slice(self, track: int, ts: int, end: int, name: str, args: dict | None = None) -> None:
        TE = self.pb.TrackEvent
        p = self.packet()
        p.timestamp = ts
        e = p.track_event
        e.type = TE.TYPE_SLICE_BEGIN
        e.track_uuid = track
        e.name_iid = self.iid(p, "event_names", name)
        _annotate(self, p, e, args)
        q = self.packet()
        q.timestamp = end
        q.track_event.type = TE.TYPE_SLICE_END
        q.track_event.track_uuid = track

    def instant(self, track: int, ts: int, name: str, args: dict | None = None) -> None:
        p = self.packet()
        p.timestamp = ts
        e = p.track_event
        e.type = self.pb.TrackEvent.TYPE_INSTANT
        e.track_uuid = track
        e.name_iid = self.iid(p, "event_names", name)
        _annotate(self, p, e, args)

    def counter(self, track: int, ts: int, value: int) -> None:
        p = self.packet()
        p.timestamp = ts
        p.track_event.type = self.pb.TrackEvent.TYPE_COUNTER
        p.track_event.track_uuid = track
        p.track_event.counter_value = value


def _queue_slices(created: int, destroyed: int, offs: list[tuple[int, int, str]]):
    """Consecutive (start, end, state) slices over [created, destroyed]: `offs` clipped so they never
    overlap (a later interval cuts an earlier one short), the gaps are 'active'."""
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


def export(trace: str, out_file: str) -> Path:
    paths = find_traces([trace])
    if len(paths) != 1:
        raise GptError(f"{trace} holds {len(paths)} traces", "export one trace directory at a time")
    meta = read_meta(paths[0])
    con = query.connect([str(paths[0])])
    query.load_module(con, query.resolve("preempt.collateral"))
    query.materialize(con, "queues_lifecycle_spans", "queues_lifecycle_states", "queues_lifecycle")
    run = con.execute("SELECT run_id, events_written, events_lost, start_ns, stop_ns FROM runs").fetchall()[0]
    end_ns = con.execute("SELECT greatest((SELECT max(ts_ns + coalesce(dur_ns, 0)) FROM events), (SELECT max(ts_ns) FROM markers))").fetchall()[0][0]
    start_ns = con.execute("SELECT least((SELECT min(ts_ns) FROM events), (SELECT min(ts_ns) FROM markers))").fetchall()[0][0]
    if start_ns is None:
        raise GptError(f"{trace} holds no events and no markers", "nothing to export")
    out = Path(out_file)
    with open(out, "wb") as f:
        w = _Writer(f)
        mt = w.track("gpreempt-trace metadata")
        w.instant(mt, start_ns, f"run {run[0]}", {
            "run_id": run[0], "kernel": meta.get("kernel"), "host": meta.get("host"), "synthetic": bool(meta.get("synthetic")),
            "labels": ", ".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items()),
            "events_written": run[1], "events_lost": "unknown" if run[2] is None else run[2],
            "format_version": meta.get("version"),
        })
        if run[2] is not None:
            w.counter(w.track("events lost", counter=True), start_ns, int(run[2]))
        # processes and their queue tracks
        procs = {}
        names = dict(con.sql("SELECT tgid, coalesce(max(label), max(comm)) FROM (SELECT tgid, label, NULL AS comm FROM queues_lifecycle "
                             "UNION ALL SELECT tgid, NULL, comm FROM events WHERE comm IS NOT NULL) GROUP BY tgid").fetchall())

        # the container (short id) and in-container pid of each process, where /proc was read (view processes)
        where = {t: f" container {c} pid {n}" if n is not None else f" container {c}"
                 for t, c, n in con.sql("SELECT tgid, container, ns_tgid FROM processes WHERE container IS NOT NULL").fetchall()}

        def proc(tgid):
            if tgid not in procs:
                procs[tgid] = w.track(f"{names.get(tgid) or 'process'} ({tgid}){where.get(tgid, '')}", pid=tgid)
            return procs[tgid]

        qrows = con.sql("SELECT tgid, gpu_id, queue_id, type, created_ts_ns, destroyed_ts_ns FROM queues_lifecycle ORDER BY tgid, gpu_id, queue_id, created_ts_ns").fetchall()
        offs: dict[tuple, list] = {}
        for tgid, gpu, qid, a, b in con.sql("SELECT tgid, gpu_id, queue_id, ts_ns, remap_end_ns FROM preempt_collateral_queue_hits").fetchall():
            offs.setdefault((tgid, gpu, qid), []).append((a, b, "unmapped"))
        for tgid, gpu, qid, st, a, b in con.sql("SELECT tgid, gpu_id, queue_id, state, start_ts_ns, end_ts_ns FROM queues_lifecycle_states").fetchall():
            offs.setdefault((tgid, gpu, qid), []).append((a, b if b is not None else end_ns, st))
        for tgid, gpu, qid, typ, created, destroyed in qrows:
            t = w.track(f"q{qid} {typ} gpu 0x{gpu:x}", parent=proc(tgid))
            for a, b, s in _queue_slices(created, destroyed if destroyed is not None else end_ns, offs.get((tgid, gpu, qid), [])):
                w.slice(t, a, b, s)
        # KFD calls per thread
        threads = {}
        res = con.execute("SELECT ts_ns, dur_ns, event, func, tgid, tid, ret, gpu_id, queue_id, ioctl_cmd FROM events "
                          "WHERE dur_ns IS NOT NULL ORDER BY tid, ts_ns, dur_ns DESC, event, func, ret, gpu_id, queue_id, ioctl_cmd, tgid")
        while True:
            rows = res.fetchmany(BATCH)
            if not rows:
                break
            for ts, dur, ev, func, tgid, tid, ret, gpu, qid, cmd in rows:
                key = tid if tid is not None else tgid
                if key not in threads:
                    threads[key] = w.track(f"{names.get(tgid) or 'thread'} {key}", parent=proc(tgid) if tgid is not None else None, pid=tgid, tid=key)
                w.slice(threads[key], ts, ts + dur, cmd or ev, {"func": func, "ret": ret, "gpu_id": gpu, "queue_id": qid})
        inst = con.execute("SELECT ts_ns, event, func, tgid, gpu_id FROM events WHERE dur_ns IS NULL ORDER BY ALL")
        kt = None
        for ts, ev, func, tgid, gpu in inst.fetchall():
            kt = kt or w.track("KFD instant events")
            w.instant(kt, ts, ev, {"func": func, "tgid": tgid, "gpu_id": gpu})
        # markers, one track per source
        mtracks = {}
        res = con.execute("SELECT ts_ns, source, kind, tgid, target_tgid, gpu_id, scheme, seq, label, value_ns FROM markers ORDER BY ALL")
        while True:
            rows = res.fetchmany(BATCH)
            if not rows:
                break
            for ts, src, kind, tgid, target, gpu, sch, seq, label, val in rows:
                if src not in mtracks:
                    mtracks[src] = w.track(f"markers: {src}")
                w.instant(mtracks[src], ts, kind, {"tgid": tgid, "target_tgid": target, "gpu_id": gpu, "scheme": sch, "seq": seq, "label": label, "value_ns": val})
        w.flush()
    return out
