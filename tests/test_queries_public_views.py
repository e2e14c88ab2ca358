"""The public views other modules, the report and the Perfetto export read (issue 22.4: no private view
leaves its module), each on a tiny hand-checkable trace with exact values."""
import pytest
from testing.traces import (C1_EVENTS, C1_MARKERS, GA, GB, KFD_FUNCS, P1_EVENTS, P1_MARKERS, P2_EVENTS, P2_MARKERS, Q1_EVENTS,
                           set_counters, two_runs, write_trace)

from gpreempt_trace import api
from gpreempt_trace.sql import query


def _load(traces, *modules, params=None):
    con = api.connect([str(t) for t in traces])
    for m in modules:
        query.load_module(con, query.resolve(m), params)
    return con


def test_workload_labels_first_labelled_marker_per_process(tmp_path):
    marks = [dict(ts_ns=5, source="workload", kind="workload_start", tgid=7, label="late"),
             dict(ts_ns=3, source="workload", kind="workload_start", tgid=7, label="first"),   # earliest wins
             dict(ts_ns=1, source="controller", kind="workload_start", tgid=1, target_tgid=8, label="named"),  # for 8
             dict(ts_ns=2, source="workload", kind="workload_start", tgid=9),                 # no label: no row
             dict(ts_ns=4, source="workload", kind="step_done", tgid=10, label="other")]      # another kind
    con = _load([write_trace(tmp_path / "w", "w", [], marks)], "workload.labels")
    assert con.sql("SELECT run_id, tgid, label FROM workload_labels ORDER BY tgid").fetchall() == [("w", 7, "first"), ("w", 8, "named")]


def test_queues_created_unlabelled_and_lifecycle_spans(tmp_path):
    """Q1: 100 creates q0 on A at 10 (destroyed 90, created again 95) and q1 (sdma) at 20 (destroyed 70);
    200 creates q0 on B at 15, never destroyed."""
    con = _load([write_trace(tmp_path / "q1", "q1", Q1_EVENTS, funcs=KFD_FUNCS)], "queues.lifecycle")
    assert con.sql("SELECT tgid, gpu_id, queue_id, queue_type, comm, created_ts_ns, next_create_ts_ns FROM queues_created_unlabelled "
                   "ORDER BY ALL").fetchall() == [
        (100, GA, 0, "compute_aql", "online", 10, 95), (100, GA, 0, "compute_aql", "online", 95, None),
        (100, GA, 1, "sdma", "online", 20, None), (200, GB, 0, "compute_aql", "offline", 15, None)]
    assert con.sql("SELECT tgid, gpu_id, queue_id, queue_type, created_ts_ns, destroyed_ts_ns FROM queues_lifecycle_spans "
                   "ORDER BY ALL").fetchall() == [
        (100, GA, 0, "compute_aql", 10, 90), (100, GA, 0, "compute_aql", 95, None),  # the destroy at 90 ends the first life only
        (100, GA, 1, "sdma", 20, 70), (200, GB, 0, "compute_aql", 15, None)]


def test_preempt_collateral_queue_hits(tmp_path):
    """C1: 100/q0 (created 10) and 200/q0 (created 20) on A. Unmaps on A at 30 (remap ends 37), 52 (200's
    queue is suspended 50..80: not hit; remap ends 61) and 82 (remap ends 90); the unmap on B hits nobody."""
    con = _load([write_trace(tmp_path / "c1", "c1", C1_EVENTS, C1_MARKERS, funcs=KFD_FUNCS)], "preempt.collateral")
    assert con.sql("SELECT ts_ns, remap_end_ns, tgid, gpu_id, queue_id, created_ts_ns FROM preempt_collateral_queue_hits "
                   "ORDER BY ALL").fetchall() == [
        (30, 37, 100, GA, 0, 10), (30, 37, 200, GA, 0, 20), (52, 61, 100, GA, 0, 10), (82, 90, 100, GA, 0, 10), (82, 90, 200, GA, 0, 20)]


@pytest.fixture
def p_con(tmp_path):
    a = set_counters(write_trace(tmp_path / "p1", "p1", P1_EVENTS, P1_MARKERS, funcs=KFD_FUNCS), events_lost=0)
    b = set_counters(write_trace(tmp_path / "p2", "p2", P2_EVENTS, P2_MARKERS, funcs=KFD_FUNCS), events_lost=5)
    return _load([a, b], "preempt.preemption", params={"scheme": "%"})


def test_preempt_preemption_timings_keyed_by_run(p_con):
    """The numbers worked out in tests/testing/traces.py (run p1, p2), keyed by rk = hash(run_id)."""
    got = p_con.sql("SELECT k.run_id, t.seq, t.scheme, t.target_tgid, t.gpu_id, t.request_ts_ns, t.result, t.preempt_latency_ns, "
                    "t.preempt_call_ns, t.resume_latency_ns, t.suspended_ns FROM preempt_preemption_timings t "
                    "JOIN preempt_preemption_run_keys k USING (rk) ORDER BY ALL").fetchall()
    assert got == [
        ("p1", 1, "A", 200, GA, 100, "ok", 30, 50, 30, 190),
        ("p1", 3, "A", 100, GA, 400, "ok", 20, 30, 10, 90),
        ("p1", 5, "A", 200, GA, 405, "ok", 15, 30, None, None),
        ("p1", 7, "A", 200, GA, 600, "EBUSY", None, 50, None, None),
        ("p1", 9, "A", 100, GA, 800, None, 15, None, None, None),
        ("p1", 11, "A", 200, None, 900, None, None, None, None, None),
        ("p2", 1, "B", 300, GA, 100, "ok", 7, 20, None, None),
    ]


def test_preempt_preemption_run_keys_and_labels(p_con):
    assert p_con.sql("SELECT run_id, rk = hash(run_id) FROM preempt_preemption_run_keys ORDER BY run_id").fetchall() == [
        ("p1", True), ("p2", True)]
    assert p_con.sql("SELECT run_id, rk = hash(run_id), tgid, label FROM preempt_preemption_labels ORDER BY ALL").fetchall() == [
        ("p1", True, 100, "online"), ("p1", True, 200, "offline")]


def test_compare_runs_call_percentiles(tmp_path):
    """two_runs: r1's preempt call 100 -> 150 (seq 1; seq 3 has no done marker), its resume call 200 -> 260;
    r2 has no controller markers. One sample each: quantile_disc returns it."""
    rows = api.query("compare.runs", [str(t) for t in two_runs(tmp_path)]).to_pylist()
    got = [(r["run_id"], r["events"], r["processes"], r["queues_created"], r["min_per_process"], r["max_per_process"],
            r["ioctl_errors"], r["preempt_call_p50_ns"], r["preempt_call_p99_ns"], r["resume_call_p50_ns"]) for r in rows]
    assert sorted(got) == [("r1", 10, 2, 3, 1, 2, 1, 50, 50, 60), ("r2", 1, 1, 1, 1, 1, 0, None, None, None)]
