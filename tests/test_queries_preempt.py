"""preempt.preemption / preempt.summary / preempt.collateral / preempt.hw_unmap on hand-checkable traces."""
import pytest
from testing.traces import (C1_EVENTS, C1_MARKERS, GA, KFD_FUNCS, P1_EVENTS, P1_MARKERS, P2_EVENTS, P2_MARKERS, set_counters,
                           write_trace)

from gpreempt_trace import api
from gpreempt_trace.sql import query
from gpreempt_trace.errors import QueryError


@pytest.fixture
def p_runs(tmp_path):
    a = set_counters(write_trace(tmp_path / "p1", "p1", P1_EVENTS, P1_MARKERS, funcs=KFD_FUNCS), events_lost=0)
    b = set_counters(write_trace(tmp_path / "p2", "p2", P2_EVENTS, P2_MARKERS, funcs=KFD_FUNCS), events_lost=5)
    return [str(a), str(b)]


def test_preemption_latency_matches_only_the_right_kernel_rows(p_runs):
    rows = api.query("preempt.preemption", p_runs).to_pylist()
    got = [(r["run_id"], r["seq"], r["target_tgid"], r["label"], r["preempt_latency_ns"], r["preempt_call_ns"],
            r["resume_latency_ns"], r["suspended_ns"], r["result"]) for r in rows]
    assert got == [
        ("p1", 1, 200, "offline", 30, 50, 30, 190, "ok"),  # decoys before the request and on GPU B skipped
        ("p1", 3, 100, "online", 20, 30, 10, 90, "ok"),  # overlapping preemptions share the one unmap
        ("p1", 5, 200, "offline", 15, 30, None, None, "ok"),  # never resumed
        ("p1", 7, 200, "offline", None, 50, None, None, "EBUSY"),  # the next unmap starts after done: not a match
        ("p1", 9, 100, "online", 15, None, None, None, None),  # no done marker: the call is unknown
        ("p1", 11, 200, "offline", None, None, None, None, None),  # no gpu_id: the kernel side is not guessed
        ("p2", 1, 300, None, 7, 20, None, None, "ok"),  # an unmap starting exactly at the request counts
    ]
    assert rows[0]["queue_ids"] == [0, 1] and dict(rows[0]["queue_results"]) == {0: "ok", 1: "invalid"} and rows[0]["queues_ok"] == 1
    assert [r["events_lost"] for r in rows] == [0] * 6 + [5]  # the loss stands next to each number


def test_preemption_scheme_param(p_runs):
    assert [r["seq"] for r in api.query("preempt.preemption", p_runs, {"scheme": "B"}).to_pylist()] == [1]


def test_summary_per_scheme_and_label(p_runs):
    rows = {(r["scheme"], r["label"], r["metric"]): r for r in api.query("preempt.summary", p_runs).to_pylist()}
    off = rows[("A", "offline", "preempt_latency_ns")]  # values 30, 15 (seq 1, 5); NULL for 7 and 11
    assert (off["samples"], off["missing"], off["p50_ns"], off["p99_ns"], off["max_ns"], off["events_lost"]) == (2, 2, 15, 30, 30, 0)
    on = rows[("A", "online", "preempt_latency_ns")]  # 20, 15
    assert (on["samples"], on["missing"], on["p50_ns"], on["max_ns"]) == (2, 0, 15, 20)
    b = rows[("B", None, "preempt_latency_ns")]
    assert (b["samples"], b["p50_ns"], b["events_lost"]) == (1, 7, 5)


def test_summary_loss_unknown_when_a_run_does_not_know(tmp_path):
    t = set_counters(write_trace(tmp_path / "p2", "p2", P2_EVENTS, P2_MARKERS, funcs=KFD_FUNCS), events_lost=None, events_written=None)
    rows = api.query("preempt.summary", [str(t)]).to_pylist()
    assert {r["events_lost"] for r in rows} == {None}
    # events_written unknown in meta.json: counted from the segments, and said so
    assert api.connect([str(t)]).sql("select events_written, events_written_derived, events_lost from runs").fetchall() == [(1, True, None)]


@pytest.mark.parametrize("view", ["preempt_preemption", "preempt_summary"])
def test_two_run_ids_that_hash_alike_stop_the_query(p_runs, view):
    """Runs are keyed by hash(run_id) inside the modules; a collision must stop the query, never mix two
    runs. DuckDB's hash cannot be made to collide on two real ids, so every hash is made 0 here."""
    con = query.connect(p_runs)
    for name in ("preempt.preemption", "preempt.summary"):  # preemption first: summary includes it
        mod = query.resolve(name)
        mod.sql = mod.sql.replace("hash(run_id)", "(hash(run_id) * 0)")
        query.load_module(con, mod, {"scheme": "%"})
    with pytest.raises(QueryError) as e:  # one line through the path the tool and the report fetch by
        query._arrow(con.sql(f"SELECT * FROM {view}"), "query X")
    assert e.value.line() == "query X failed: preempt.preemption: two run ids hash alike: p1, p2 (query these traces separately)"


@pytest.fixture
def c_run(tmp_path):
    return [str(write_trace(tmp_path / "c1", "c1", C1_EVENTS, C1_MARKERS, funcs=KFD_FUNCS))]


def test_collateral_per_unmap_and_process(c_run):
    rows = api.query("preempt.collateral", c_run).to_pylist()
    got = [(r["unmap_ts_ns"], r["tgid"], r["label"], r["cause"], r["cause_tgid"], r["queues"], r["collateral"], r["off_ns"]) for r in rows]
    assert got == [
        (30, 100, None, "queue_update", 100, 1, False, 7),
        (30, 200, "offline", "queue_update", 100, 1, True, 7),
        (52, 100, None, "queues_suspend", 200, 1, True, 9),  # 200's queue is being suspended: not on the hardware
        (82, 100, None, "queues_resume", 200, 1, True, 8),
        (82, 200, "offline", "queues_resume", 200, 1, False, 8),
    ]  # the unmap on GPU B hit nobody
    con = api.connect(c_run)
    query.load_module(con, query.resolve("preempt.collateral"))
    per = con.sql("select tgid, unmaps, collateral_unmaps, collateral_off_ns, collateral_p50_off_ns, collateral_max_off_ns "
                  "from preempt_collateral_per_process").fetchall()
    assert per == [(100, 3, 2, 17, 8, 9), (200, 2, 1, 7, 7, 7)]  # 100's collateral offs 9, 8: the median is the 1st of 2, 8


def test_hw_unmap_failed_fence_wait(c_run):
    rows = api.query("preempt.hw_unmap", c_run).to_pylist()
    got = [(r["gpu_id"], r["ts_ns"], r["hw_ns"], r["failed"], r["unmap_ts_ns"], r["unmap_dur_ns"], r["reset_event"]) for r in rows]
    assert got == [(GA, 53, 3, True, 52, 5, "queue_reset"), (GA, 83, 1, False, 82, 3, None)]
    assert rows[0]["reset_ts_ns"] == 57
