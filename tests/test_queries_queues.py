"""queues.lifecycle and queues.counts on hand-checkable traces (exact ns)."""
from testing.traces import GA, GB, KFD_FUNCS, Q1_EVENTS, write_trace

from gpreempt_trace import api
from gpreempt_trace.sql import query


def test_lifecycle_one_row_per_queue_with_counts(tmp_path):
    t = [str(write_trace(tmp_path / "q1", "q1", Q1_EVENTS, funcs=KFD_FUNCS))]
    rows = api.query("queues.lifecycle", t).to_pylist()
    got = [(r["tgid"], r["label"], r["gpu_id"], r["queue_id"], r["type"], r["created_ts_ns"], r["destroyed_ts_ns"], r["lifetime_ns"],
            r["updates"], r["unmapped"], r["evicted"], r["suspended"], r["preempted"], r["reset"]) for r in rows]
    assert got == [
        (100, "online", GA, 0, "compute_aql", 10, 90, 80, 1, 4, 0, 1, 0, 0),  # unmaps at 30, 50, 62, 82; suspended 60..80
        (100, "online", GA, 0, "compute_aql", 95, None, None, 0, 0, 1, 0, 0, 0),  # the id reused: a new queue, evicted at 100
        (100, "online", GA, 1, "sdma", 20, 70, 50, 0, 3, 0, 0, 0, 0),  # not named by the suspend
        (200, "offline", GB, 0, "compute_aql", 15, None, None, 0, 1, 0, 0, 0, 0),  # only the unmap on its own GPU
    ]
    con = api.connect(t)
    query.load_module(con, query.resolve("queues.lifecycle"))
    assert con.sql("select tgid, queue_id, created_ts_ns, state, start_ts_ns, end_ts_ns from queues_lifecycle_states").fetchall() == [
        (100, 0, 10, "suspended", 60, 80), (100, 0, 95, "evicted", 100, 110)]



def test_states_until_is_the_end_or_the_next_off_of_the_same_state(tmp_path):
    """Suspended at 60 and again at 70 without a resume between, resumed at 80; evicted at 75, never
    restored: the first suspend has no end but stops at 70 for a lookup; the eviction runs on."""
    def call(ts, event, func, **kw):
        return dict(ts_ns=ts, dur_ns=2, event=event, func=func, tgid=900, owner_tgid=100, gpu_id=GA, ret=1, **kw)

    ev = [dict(ts_ns=10, dur_ns=2, event="queue_create", func="create_queue_cpsch", tgid=100, gpu_id=GA, queue_id=0,
               queue_type="compute_aql", ret=0),
          call(60, "queues_suspend", "suspend_queues", target_pid=100, num_queues=1, queue_ids=[0]),
          call(70, "queues_suspend", "suspend_queues", target_pid=100, num_queues=1, queue_ids=[0]),
          call(75, "process_evict", "evict_process_queues_cpsch"),
          call(80, "queues_resume", "resume_queues", target_pid=100, num_queues=1, queue_ids=[0])]
    con = api.connect([str(write_trace(tmp_path / "s", "s", ev, funcs=KFD_FUNCS))])
    query.load_module(con, query.resolve("queues.lifecycle"))
    assert con.sql("select state, start_ts_ns, end_ts_ns, until_ts_ns from queues_lifecycle_states").fetchall() == [
        ("suspended", 60, None, 70), ("suspended", 70, 80, 80), ("evicted", 75, None, None)]

def test_counts_per_model_and_stability_across_runs(tmp_path):
    def create(tgid, qid, qtype, comm):
        return dict(ts_ns=10 + qid, dur_ns=1, event="queue_create", func="create_queue_cpsch", tgid=tgid, gpu_id=GA, queue_id=qid,
                    queue_type=qtype, ret=0, comm=comm)

    r1 = [create(1, 0, "compute_aql", "bert"), create(1, 1, "compute_aql", "bert"), create(1, 2, "sdma", "bert"),
          create(2, 0, "compute_aql", "resnet")]
    r2 = [create(5, 0, "compute_aql", "bert"), create(5, 1, "compute_aql", "bert"), create(5, 2, "sdma", "bert"),
          create(6, 0, "compute_aql", "resnet"), create(6, 1, "compute_aql", "resnet"),
          create(7, 0, "compute_aql", "resnet")]
    runs = [str(write_trace(tmp_path / "r1", "r1", r1, funcs=KFD_FUNCS)), str(write_trace(tmp_path / "r2", "r2", r2, funcs=KFD_FUNCS))]
    rows = api.query("queues.counts", runs).to_pylist()
    got = [(r["label"], r["run_id"], r["processes"], r["queues"], r["compute_queues"], r["sdma_queues"], r["min_per_process"],
            r["max_per_process"], r["queue_ids"], r["identical_across_runs"]) for r in rows]
    assert got == [
        ("bert", "r1", 1, 3, 2, 1, 3, 3, [0, 1, 2], True),
        ("bert", "r2", 1, 3, 2, 1, 3, 3, [0, 1, 2], True),
        ("resnet", "r1", 1, 1, 1, 0, 1, 1, [0], False),
        ("resnet", "r2", 2, 3, 3, 0, 1, 2, [0, 1], False),  # its processes differ: 2 queues vs 1
    ]


def test_created_one_row_per_creation_with_owner_and_label(tmp_path):
    t = [str(write_trace(tmp_path / "q1", "q1", Q1_EVENTS, funcs=KFD_FUNCS))]
    rows = api.query("queues.created", t).to_pylist()
    got = [(r["tgid"], r["label"], r["gpu_id"], r["queue_id"], r["queue_type"], r["created_ts_ns"], r["next_create_ts_ns"]) for r in rows]
    assert got == [
        (100, "online", GA, 0, "compute_aql", 10, 95),  # the id is created again at 95
        (100, "online", GA, 0, "compute_aql", 95, None),
        (100, "online", GA, 1, "sdma", 20, None),
        (200, "offline", GB, 0, "compute_aql", 15, None),
    ]
