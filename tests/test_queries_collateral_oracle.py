"""preempt.collateral against a plain-Python reading of its definition, on random traces with id reuse,
overlapping off states of several kinds, offs never put back and unmaps that start exactly with another
call. Queue lives and off intervals come from queues.lifecycle (tested on its own); what collateral
adds is recomputed here the straightforward way, every (unmap, queue) pair tested one by one."""
import pytest
from testing.traces import COLL_FUNCS, random_collateral_events, write_trace

from gpreempt_trace import api
from gpreempt_trace.sql import query

NAMED = ("queues_suspend", "queues_resume", "queues_preempt", "queues_unpreempt")
CAUSES = ("queue_create", "queue_destroy", "queue_update", *NAMED, "process_evict", "process_restore")


def _oracle(con):
    spans = con.sql("SELECT run_id, gpu_id, tgid, queue_id, created_ts_ns, destroyed_ts_ns FROM queues_lifecycle_spans").fetchall()
    states: dict[tuple, list] = {}
    for run, tgid, gpu, qid, created, state, a, b in con.sql(
            "SELECT run_id, tgid, gpu_id, queue_id, created_ts_ns, state, start_ts_ns, end_ts_ns FROM queues_lifecycle_states").fetchall():
        states.setdefault((run, gpu, tgid, qid, created), []).append((state, a, b))
    ev = con.sql("SELECT run_id, ts_ns, dur_ns, event, gpu_id, tgid, owner_tgid, target_pid FROM events").fetchall()

    def off(key, t):  # off when, for some state, the latest of its intervals started at or before t still runs at t
        latest = {}
        for state, a, b in states.get(key, []):
            if a <= t and (state not in latest or a > latest[state][0]):
                latest[state] = (a, b)
        return any(b is None or b > t for _a, b in latest.values())

    hits: dict[tuple, int] = {}
    for run, ts, dur, event, gpu, caller, _o, _p in ev:
        if event != "queues_unmap" or gpu is None:
            continue
        end = ts + (dur or 0)
        before = [e for e in ev if e[0] == run and e[3] in CAUSES and e[2] is not None and e[1] <= ts]
        cause, cause_tgid = None, caller
        if before:
            c = max(before, key=lambda e: e[1])  # timestamps of calls are unique
            if c[1] + c[2] >= end and (c[4] is None or c[4] == gpu):
                owner = c[6] if c[6] is not None else (c[7] if c[3] in NAMED else None)
                cause, cause_tgid = c[3], owner if owner is not None else c[5]
        maps = [e for e in ev if e[0] == run and e[3] == "queues_map" and e[4] == gpu and e[1] >= end]
        off_ns = min(maps, key=lambda e: e[1])[1] + min(maps, key=lambda e: e[1])[2] - ts if maps else None
        for r, g, p, q, created, destroyed in spans:
            if (r, g) == (run, gpu) and created < ts and (destroyed is None or destroyed > ts) and not off((r, g, p, q, created), ts):
                key = (ts, dur, gpu, caller, cause, cause_tgid, p, off_ns)
                hits[key] = hits.get(key, 0) + 1
    return sorted(k + (n,) for k, n in hits.items())


@pytest.mark.parametrize("seed", range(16))
def test_collateral_equals_its_definition_on_random_traces(tmp_path, seed):
    path = str(write_trace(tmp_path / "t", "t", random_collateral_events(seed), funcs=COLL_FUNCS))
    con = api.connect([path])
    query.load_module(con, query.resolve("preempt.collateral"))
    got = sorted(con.sql("SELECT unmap_ts_ns, unmap_dur_ns, gpu_id, caller_tgid, cause, cause_tgid, tgid, off_ns, queues "
                         "FROM preempt_collateral").fetchall())
    want = _oracle(con)
    assert len(want) >= 10 and any(w[4] for w in want)  # the trace has hits, some with a cause
    assert got == want
    # per queue (what export --perfetto draws): one row per queue of each hit
    per_queue = con.sql("SELECT ts_ns, gpu_id, tgid, count(*) FROM preempt_collateral_queue_hits GROUP BY ALL ORDER BY ALL").fetchall()
    agg: dict[tuple, int] = {}
    for w in want:
        agg[(w[0], w[2], w[6])] = agg.get((w[0], w[2], w[6]), 0) + w[8]
    assert per_queue == sorted(k + (n,) for k, n in agg.items())
