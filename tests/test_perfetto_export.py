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
