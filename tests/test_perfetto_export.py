"""`export --perfetto`: decoded with Perfetto's own protos (the trace processor cannot be downloaded here)."""
from collections import Counter

from click.testing import CliRunner
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
from testing.traces import C1_EVENTS, C1_MARKERS, GA, KFD_FUNCS, set_counters, write_trace

from gpreempt_trace.cli.main import main
from gpreempt_trace.report.perfetto import _queue_slices


def _decode(path):
    """Tracks, slices and instants with interned names resolved as trace processor does: per sequence,
    interned_data entries seen so far; SEQ_INCREMENTAL_STATE_CLEARED resets them."""
    t = pb.Trace()
    t.ParseFromString(path.read_bytes())
    tracks, events = {}, []
    interned: dict = {}
    for p in t.packet:
        if p.sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED:
            interned = {}
        for table in ("event_names", "debug_annotation_names"):
            for e in getattr(p.interned_data, table):
                interned[(table, e.iid)] = e.name
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            tracks[d.uuid] = (d.name or d.process.process_name or d.thread.thread_name, d.parent_uuid)
        if p.HasField("track_event"):
            te = p.track_event
            if te.name_iid:
                assert p.sequence_flags & pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
            name = interned[("event_names", te.name_iid)] if te.name_iid else te.name
            args = {(interned[("debug_annotation_names", a.name_iid)] if a.name_iid else a.name): a for a in te.debug_annotations}
            events.append((te.type, te.track_uuid, p.timestamp, name, args))
    slices = [(tracks[u][0], ts, name) for typ, u, ts, name, _ in events if typ == pb.TrackEvent.TYPE_SLICE_BEGIN]
    ends = [(tracks[u][0], ts) for typ, u, ts, _, _ in events if typ == pb.TrackEvent.TYPE_SLICE_END]
    inst = [(tracks[u][0], ts, name, args) for typ, u, ts, name, args in events if typ == pb.TrackEvent.TYPE_INSTANT]
    begins = [(u, ts, name) for typ, u, ts, name, _ in events if typ == pb.TrackEvent.TYPE_SLICE_BEGIN]
    return t, tracks, slices, ends, inst, begins


def test_queue_tracks_kernel_slices_markers_and_loss(tmp_path):
    tr = set_counters(write_trace(tmp_path / "c1", "c1", C1_EVENTS, C1_MARKERS, funcs=KFD_FUNCS), events_lost=3)
    out = tmp_path / "c1.pftrace"
    res = CliRunner().invoke(main, ["export", "--perfetto", str(tr), "-o", str(out)])
    assert res.exit_code == 0, res.output
    t, tracks, slices, ends, inst, begins = _decode(out)
    names = {n for n, _ in tracks.values()}
    assert {"offline (200)", "process (100)", f"q0 compute_aql gpu 0x{GA:x}", "markers: workload", "gpreempt-trace metadata", "events lost"} <= names
    # 200's queue q0: active from creation, unmapped by 100's update (30 -> 37), suspended 50 -> 80, active after
    q200 = [u for u, (n, parent) in tracks.items() if n.startswith("q0") and tracks[parent][0] == "offline (200)"][0]
    q = sorted((ts, name) for u, ts, name in begins if u == q200)
    assert q == [(20, "active"), (30, "unmapped"), (37, "active"), (50, "suspended"), (80, "active"), (82, "unmapped"), (90, "active")]
    kernel = Counter(name for n, ts, name in slices if not n.startswith("q"))
    assert kernel["queues_unmap"] == 4 and kernel["queues_suspend"] == 1 and kernel["hw_unmap_wait"] == 2
    assert len(slices) == len(ends)  # every slice closed
    meta = [a for n, ts, name, a in inst if n == "gpreempt-trace metadata"][0]
    assert meta["events_lost"].int_value == 3 and meta["run_id"].string_value == "c1"
    assert ("markers: workload", 1, "workload_start") in [(n, ts, name) for n, ts, name, _ in inst]


def test_unknown_loss_is_said_so(tmp_path):
    tr = write_trace(tmp_path / "c1", "c1", C1_EVENTS, C1_MARKERS, funcs=KFD_FUNCS)  # counters unknown
    out = tmp_path / "x.pftrace"
    assert CliRunner().invoke(main, ["export", "--perfetto", str(tr), "-o", str(out)]).exit_code == 0
    _, tracks, _, _, inst, _ = _decode(out)
    meta = [a for n, ts, name, a in inst if n == "gpreempt-trace metadata"][0]
    assert meta["events_lost"].string_value == "unknown" and "events lost" not in {n for n, _ in tracks.values()}


def test_queue_slices_clip_overlaps():
    assert _queue_slices(0, 100, [(10, 30, "unmapped"), (20, 50, "suspended"), (60, None, "evicted")]) == [
        (0, 10, "active"), (10, 20, "unmapped"), (20, 50, "suspended"), (50, 100, "active")]


def test_export_usage_errors(tmp_path):
    tr = write_trace(tmp_path / "c1", "c1", C1_EVENTS, C1_MARKERS, funcs=KFD_FUNCS)
    assert CliRunner().invoke(main, ["export", "--perfetto", str(tr)]).exit_code == 2
    assert CliRunner().invoke(main, ["export", str(tr)]).exit_code == 2


def test_all_queue_slices_match_the_per_queue_reference():
    """The export's vectorized slicing gives _queue_slices' result for every queue (random intervals:
    overlaps, equal starts, ties, intervals outside the queue's life, queues without any)."""
    import random

    import numpy as np
    import pyarrow as pa

    from gpreempt_trace.report.perfetto import _all_queue_slices

    rnd = random.Random(7)
    created, destroyed, offs = [], [], []
    for q in range(300):
        c = rnd.randrange(0, 50)
        d = c + rnd.randrange(-5, 60)
        created.append(c)
        destroyed.append(d)
        for _ in range(rnd.randrange(0, 8)):
            a = rnd.randrange(-10, 80)
            offs.append((q, a, a + rnd.randrange(0, 30), rnd.choice(["unmapped", "suspended", "preempted", "evicted"])))
    # the SQL side hands over the intervals already clipped to the queue's life (QUEUE_OFFS_SQL)
    clipped = [(q, max(a, created[q]), min(b, destroyed[q]), s) for q, a, b, s in offs if b > created[q] and a < destroyed[q]]
    qn, a, b, names, codes = _all_queue_slices(np.array(created), np.array(destroyed), np.array([x[0] for x in clipped], np.int64),
                                               np.array([x[1] for x in clipped], np.int64), np.array([x[2] for x in clipped], np.int64),
                                               pa.array([x[3] for x in clipped], pa.string()))
    got = [(int(q), int(x), int(y), names[c]) for q, x, y, c in zip(qn, a, b, codes)]
    want = [(q, *s) for q in range(300) for s in _queue_slices(created[q], destroyed[q], [(a, b, s) for qq, a, b, s in offs if qq == q])]
    assert got == want


def test_bulk_packets_decode_like_proto_built_ones(tmp_path):
    """The numpy encoder writes what the protos would: each bulk packet parses back to the TracePacket
    built field by field (negative and 10-byte varints, absent annotations, strings)."""
    import numpy as np
    import pyarrow as pa

    from gpreempt_trace.report.perfetto import SEQ, _Bulk

    intern = {("event_names", "a"): 1, ("event_names", "kfd_ioctl"): 2, ("debug_annotation_names", "func"): 3, ("debug_annotation_names", "ret"): 4}
    ts = np.array([0, 1, 2**62, 127, 128], np.int64)
    uuids = np.array([1, 300, 2**40, 5, 6], np.int64)
    names = np.array([1, 2, 1, 2, 1], np.int64)
    func = pa.array(["f", None, "", "a_much_longer_function_name", "f"])
    ret = pa.array([0, -1, None, -(2**63), 2**63 - 1], pa.int64())
    path = tmp_path / "bulk.bin"
    with open(path, "wb") as f:
        _Bulk(pb, f, intern).slices(uuids, ts, ts + 5, names, {"func": func, "ret": ret})
    t = pb.Trace()
    t.ParseFromString(path.read_bytes())
    want = []
    for i in range(5):
        p = pb.TracePacket(timestamp=int(ts[i]), trusted_packet_sequence_id=SEQ, sequence_flags=pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE)
        p.track_event.type = pb.TrackEvent.TYPE_SLICE_BEGIN
        p.track_event.track_uuid = int(uuids[i])
        p.track_event.name_iid = int(names[i])
        for key, col, field in (("func", func, "string_value"), ("ret", ret, "int_value")):
            v = col[i].as_py()
            if v is not None:
                a = p.track_event.debug_annotations.add()
                a.name_iid = intern[("debug_annotation_names", key)]
                setattr(a, field, v)
        q = pb.TracePacket(timestamp=int(ts[i]) + 5, trusted_packet_sequence_id=SEQ, sequence_flags=pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE)
        q.track_event.type = pb.TrackEvent.TYPE_SLICE_END
        q.track_event.track_uuid = int(uuids[i])
        want += [p, q]
    assert list(t.packet) == want
