"""Queue ids the KFD writes back with flag bits (DBG_TRAP SUSPEND/RESUME_QUEUES: bit 31 INVALID, bit 30
ERROR) are stored as the plain id (events.queue_ids) and its status (events.queue_id_status), through
the recorder's decoder; traces of schema_version 1 (ids with the bits, negative when INVALID, no status
column) read the same through the tool, alone or beside new ones."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from gpreempt_trace import api
from gpreempt_trace.trace import schema
from testing.traces import write_trace

FUNCS = ["suspend_queues", "resume_queues", "syscalls:sys_enter_ioctl"]
INVALID, ERROR = 1 << 31, 1 << 30
EVENTS = [
    dict(ts_ns=10, event="kfd_ioctl", func="syscalls:sys_enter_ioctl", tgid=30, dbg_op=6, target_pid=20, num_queues=2, queue_ids=[5, 6], ret=0),
    dict(ts_ns=11, dur_ns=5, event="queues_suspend", func="suspend_queues", tgid=30, target_pid=20, num_queues=3,
         queue_ids=[5 | INVALID, 6 | ERROR, 7], ret=0),
    dict(ts_ns=20, dur_ns=5, event="queues_resume", func="resume_queues", tgid=30, target_pid=20, num_queues=2,
         queue_ids=[5 | INVALID | ERROR, 7], ret=0),
    dict(ts_ns=30, dur_ns=5, event="queues_resume", func="resume_queues", tgid=30, target_pid=20, num_queues=0, ret=0),
]
# (event, queue_ids, queue_id_status) by ts_ns
WANT = [("kfd_ioctl", [5, 6], None), ("queues_suspend", [5, 6, 7], ["invalid", "error", "ok"]),
        ("queues_resume", [5, 7], ["invalid", "ok"]), ("queues_resume", None, None)]
SQL = "SELECT event, queue_ids, queue_id_status FROM events ORDER BY ts_ns"


def _as_schema_version_1(trace):
    """Rewrite the trace's event segments as a version-1 recorder wrote them: the int32 queue_ids column
    held the raw words (bit 31 made them negative) and there was no queue_id_status."""
    for f in (trace / "events").glob("*.parquet"):
        t = pq.read_table(f)
        raw = {11: [5 | INVALID, 6 | ERROR, 7], 20: [5 | INVALID | ERROR, 7]}
        ids = [[w - (1 << 32) if w >= 1 << 31 else w for w in raw[ts]] if ts in raw else q
               for ts, q in zip(t.column("ts_ns").to_pylist(), t.column("queue_ids").to_pylist())]
        col = pa.array(ids, pa.list_(pa.int32()))
        t = t.set_column(t.schema.get_field_index("queue_ids"), t.schema.field("queue_ids"), col).drop_columns(["queue_id_status"])
        pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b"gpreempt_trace.schema_version": b"1"}), f)


def test_recorded_ids_split_into_id_and_status(tmp_path):
    t = write_trace(tmp_path / "t", "r2", EVENTS, funcs=FUNCS)
    assert api.connect([str(t)]).sql(SQL).fetchall() == WANT
    fields = pq.read_schema(t / "events" / "schema.parquet")
    assert fields.field("queue_id_status").type == schema.table_schema("events").field("queue_id_status").type
    assert fields.metadata[b"gpreempt_trace.schema_version"] == b"2"


def test_schema_version_1_trace_reads_as_version_2(tmp_path):
    old = write_trace(tmp_path / "old", "r1", EVENTS, funcs=FUNCS)
    _as_schema_version_1(old)
    seg = next((old / "events").glob("seg-*.parquet"))
    assert "queue_id_status" not in pq.read_schema(seg).names
    t = pq.read_table(seg)  # rows of a row group are ordered by event family, not time: find the row by ts_ns
    assert dict(zip(t.column("ts_ns").to_pylist(), t.column("queue_ids").to_pylist()))[11] == [5 - (1 << 31), 6 | ERROR, 7]  # what v1 wrote
    assert api.connect([str(old)]).sql(SQL).fetchall() == WANT


def test_old_and_new_traces_together(tmp_path):
    old = write_trace(tmp_path / "old", "r1", EVENTS, funcs=FUNCS)
    _as_schema_version_1(old)
    new = write_trace(tmp_path / "new", "r2", EVENTS, funcs=FUNCS)
    got = api.connect([str(old), str(new)]).sql(
        "SELECT run_id, event, queue_ids, queue_id_status FROM events ORDER BY run_id, ts_ns").fetchall()
    assert got == [("r1", *w) for w in WANT] + [("r2", *w) for w in WANT]


def test_lifecycle_leaves_out_the_ids_the_kfd_answered_invalid(tmp_path):
    """A suspend naming queue 0 and queue 1, answered 0 ok and 1 INVALID (e.g. created after the
    debugger's snapshot): only queue 0 is suspended; queue 1 was not acted on."""
    from gpreempt_trace.sql import query
    from testing.traces import GA, KFD_FUNCS

    def call(ts, event, func, ids):
        return dict(ts_ns=ts, dur_ns=2, event=event, func=func, tgid=900, owner_tgid=100, target_pid=100, gpu_id=GA,
                    num_queues=len(ids), queue_ids=ids, ret=0)

    ev = [dict(ts_ns=10 + q, dur_ns=1, event="queue_create", func="create_queue_cpsch", tgid=100, gpu_id=GA, queue_id=q,
               queue_type="compute_aql", ret=0) for q in (0, 1)]
    ev += [call(60, "queues_suspend", "suspend_queues", [0, 1 | INVALID]), call(80, "queues_resume", "resume_queues", [0, 1 | INVALID])]
    con = api.connect([str(write_trace(tmp_path / "s", "s", ev, funcs=KFD_FUNCS))])
    query.load_module(con, query.resolve("queues.lifecycle"))
    assert con.sql("select queue_id, state, start_ts_ns, end_ts_ns from queues_lifecycle_states").fetchall() == [
        (0, "suspended", 60, 80)]
