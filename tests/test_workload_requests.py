"""Query module workload.requests on a tiny hand-built pair of traces, exact values."""
from gpreempt_trace import api
from gpreempt_trace.trace.markers import MarkerWriter
from gpreempt_trace.trace.directory import TraceWriter

ONLINE, OFFLINE = 10, 20


def _trace(path, run_id, labels, rows):
    tw = TraceWriter.create(path, labels, run_id=run_id)
    with MarkerWriter(path, "workload", prefix="t") as mw:
        for kind, ts, kw in rows:
            mw.add(kind, ts_ns=ts, **kw)
    tw.close()
    return str(path)


def _two_runs(tmp_path):
    a = _trace(tmp_path / "a", "ra", {"scheme": "A", "environment": "qemu-tcg"}, [
        ("request_start", 900, dict(tgid=ONLINE, seq=0, value_ns=10, label="mlp")),
        ("preempt_request", 1000, dict(tgid=30, target_tgid=OFFLINE, scheme="A", seq=1)),
        ("step_done", 1100, dict(tgid=OFFLINE, seq=0, value_ns=100)),
        ("request_end", 1200, dict(tgid=ONLINE, seq=0, value_ns=300)),
        ("resume_done", 1500, dict(tgid=30, target_tgid=OFFLINE, scheme="A", seq=2)),
        ("request_start", 2000, dict(tgid=ONLINE, seq=1, value_ns=0, label="mlp")),
        ("step_done", 2000, dict(tgid=OFFLINE, seq=1, value_ns=500)),
        ("request_end", 2400, dict(tgid=ONLINE, seq=1, value_ns=400)),
        ("request_start", 2900, dict(tgid=ONLINE, seq=2, value_ns=5, label="mlp")),
        ("preempt_request", 3000, dict(tgid=30, target_tgid=OFFLINE, scheme="A", seq=3)),  # never resumed
        ("step_done", 3000, dict(tgid=OFFLINE, seq=2, value_ns=900)),
        ("request_end", 3100, dict(tgid=ONLINE, seq=2, value_ns=200)),
        ("request_start", 3200, dict(tgid=ONLINE, seq=3, value_ns=0, label="mlp")),  # killed: no end
    ])
    none = _trace(tmp_path / "n", "rn", {}, [
        ("request_start", 100, dict(tgid=ONLINE, seq=0, value_ns=0, label="gemm")),
        ("request_end", 150, dict(tgid=ONLINE, seq=0, value_ns=50)),
        ("step_done", 140, dict(tgid=OFFLINE, seq=0, value_ns=100)),
        ("step_done", 300, dict(tgid=OFFLINE, seq=1, value_ns=160)),  # after the online stream: not counted
    ])
    return [a, none]


def test_requests_overlap_preemptions_exactly(tmp_path):
    rows = api.query("workload.requests", _two_runs(tmp_path)).to_pylist()
    got = [(r["run_id"], r["scheme"], r["environment"], r["seq"], r["model"], r["response_ns"], r["queue_delay_ns"],
            r["preemptions"], r["preempted_ns"]) for r in rows]
    assert got == [
        ("ra", "A", "qemu-tcg", 0, "mlp", 300, 10, 1, 200),    # [900,1200] vs preemption [1000,1500]
        ("ra", "A", "qemu-tcg", 1, "mlp", 400, 0, 0, 0),       # between the two preemptions
        ("ra", "A", "qemu-tcg", 2, "mlp", 200, 5, 1, 100),     # [2900,3100] vs open preemption from 3000
        ("ra", "A", "qemu-tcg", 3, "mlp", None, 0, 0, 0),      # no end: no response time, no guessed overlap
        ("rn", "none", None, 0, "gemm", 50, 0, 0, 0),
    ]


def test_summary_per_scheme_exactly(tmp_path):
    con = api.connect(_two_runs(tmp_path))
    from gpreempt_trace.sql import query

    query.load_module(con, query.list_modules()["workload.requests"])
    rows = con.execute("SELECT * FROM workload_requests_summary").fetchall()
    cols = [d[0] for d in con.description]
    got = [dict(zip(cols, r)) for r in rows]
    assert got == [
        {"scheme": "A", "environment": "qemu-tcg", "synthetic": False, "runs": 1, "requests": 4, "completed": 3,
         "p50_ns": 300, "p99_ns": 400, "max_ns": 400, "overlapped_requests": 2, "preemptions": 2,
         "offline_steps": 3, "offline_steps_per_s": 3 * 1e9 / (3100 - 900)},  # window: first due .. last end
        {"scheme": "none", "environment": None, "synthetic": False, "runs": 1, "requests": 1, "completed": 1,
         "p50_ns": 50, "p99_ns": 50, "max_ns": 50, "overlapped_requests": 0, "preemptions": 0,
         "offline_steps": 1, "offline_steps_per_s": 1e9 / 50},
    ]
