"""Query layer: views over traces, the SQL modules on hand-checkable fixtures (the module linter: test_sql_lint.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from testing.traces import GPU, two_runs

from gpreempt_trace import api
from gpreempt_trace.sql import query
from gpreempt_trace.errors import NotATrace, QueryError


@pytest.fixture
def runs(tmp_path):
    return [str(p) for p in two_runs(tmp_path)]


def test_views_over_two_traces(runs):
    con = api.connect(runs)
    assert con.sql("select run_id, count(*) from events group by 1 order by 1").fetchall() == [("r1", 10), ("r2", 1)]
    assert con.sql("select count(*) from markers").fetchall() == [(5,)]
    assert con.sql("select count(*) from snapshots").fetchall() == [(0,)]  # absent table: empty, typed
    assert con.sql("select run_id, labels['model'] from runs order by 1").fetchall() == [("r1", "a"), ("r2", "b")]


def test_queues_per_tgid(runs):
    rows = api.query("queues.per_tgid", runs).to_pylist()
    got = [(r["run_id"], r["tgid"], r["created"], r["destroyed"], r["compute_created"], r["sdma_created"], r["queue_ids"]) for r in rows]
    assert got == [
        ("r1", 100, 2, 1, 2, 0, [0, 1]),
        ("r1", 200, 1, 0, 0, 1, [0]),  # the failed create (ret -12) is not counted
        ("r2", 300, 1, 0, 1, 0, [0]),
    ]
    assert {r["gpu_id"] for r in rows} == {GPU}


def test_collateral(runs):
    """Unmaps with no enclosing KFD call are blamed on their caller; no queues_map rows: off_ns unknown."""
    rows = api.query("preempt.collateral", runs).to_pylist()
    got = [(r["unmap_ts_ns"], r["caller_tgid"], r["tgid"], r["queues"], r["collateral"], r["off_ns"]) for r in rows]
    assert got == [(50, 100, 100, 2, False, None), (50, 100, 200, 1, True, None),
                   (70, 200, 100, 1, True, None), (70, 200, 200, 1, False, None)]


def test_preempt_calls_and_param(runs):
    rows = api.query("preempt.calls", runs).to_pylist()
    assert [(r["seq"], r["op"], r["scheme"], r["call_ns"], r["num_queues"]) for r in rows] == [
        (1, "preempt", "A", 50, 1), (2, "resume", "A", 60, 0), (3, "preempt", "B", None, 0)]
    only_b = api.query("preempt.calls", runs, {"scheme": "B"}).to_pylist()
    assert [r["seq"] for r in only_b] == [3]


def test_ioctl_summary_keeps_unnamed(runs):
    rows = api.query("ioctl.summary", runs).to_pylist()
    got = [(r["ioctl_cmd"], r["ioctl_nr_hex"], r["calls"], r["failed"], r["p50_dur_ns"]) for r in rows]
    # CREATE_QUEUE took 100 and 300 ns: quantile_disc's median is the 1st of 2 (nearest rank ceil(0.5*2) = 1)
    assert got == [("AMDKFD_IOC_CREATE_QUEUE", "0xc0584b02", 2, 1, 100), (None, "0xc0284b82", 1, 0, 50)]


def test_events_overview(runs):
    rows = api.query("events.overview", runs).to_pylist()
    r1 = {(r["event"], r["func"]): (r["rows"], r["errors"], r["p50_dur_ns"], r["max_dur_ns"]) for r in rows if r["run_id"] == "r1"}
    assert r1[("queue_create", "create_queue_cpsch")] == (4, 1, 2, 6)  # durations 1 2 4 6: the 2nd of 4
    assert r1[("kfd_ioctl", "kfd_ioctl")] == (3, 1, 100, 300)  # 50 100 300: the 2nd of 3 (ceil(1.5))


def test_adhoc_sql_file(runs, tmp_path):
    f = tmp_path / "q.sql"
    f.write_text("-- count\nSELECT count(*) AS n FROM events WHERE tgid = getvariable('t');\n")
    assert api.query(str(f), runs, {"t": "200"}).to_pylist() == [{"n": 5}]


def test_bad_inputs(runs, tmp_path):
    with pytest.raises(QueryError, match="unknown query 'nope'.*available: .*queues.per_tgid"):
        api.query("nope", runs)
    with pytest.raises(QueryError, match="has no parameter 'bogus'.*scheme"):
        api.query("preempt.calls", runs, {"bogus": "1"})
    with pytest.raises(QueryError, match="bad --param 'x'"):
        api.parse_params(["x"])
    with pytest.raises(NotATrace):
        api.query("queues.per_tgid", [str(tmp_path / "missing")])
    with pytest.raises(QueryError, match="does not exist"):
        api.query(str(tmp_path / "none.sql"), runs)
    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT no_such_column FROM events;")
    with pytest.raises(QueryError, match="failed"):
        api.query(str(bad), runs)


def test_hive_export_reads_in_plain_duckdb_cli(runs, tmp_path):
    """The documented one-line setup: the same SQL module runs in the plain duckdb CLI."""
    hive = tmp_path / "runs"
    api.export_hive(runs, str(hive))
    duck = Path(sys.executable).parent / "duckdb"
    sql = (query.QUERIES_DIR / "queues" / "per_tgid.sql").read_text()
    cmd = [str(duck), "-json",
           "-cmd", f"SET VARIABLE traces = ['{hive}/*']",
           "-cmd", f".read {query.QUERIES_DIR / 'prelude.sql'}",
           "-cmd", sql,
           "-c", "SELECT run_id, tgid, created, queue_ids FROM queues_per_tgid ORDER BY run_id, tgid"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [
        {"run_id": "r1", "tgid": 100, "created": 2, "queue_ids": [0, 1]},
        {"run_id": "r1", "tgid": 200, "created": 1, "queue_ids": [0]},
        {"run_id": "r2", "tgid": 300, "created": 1, "queue_ids": [0]},
    ]
    runs_out = subprocess.run([str(duck), "-json", "-cmd", f"SET VARIABLE traces = ['{hive}/*']", "-cmd",
                               f".read {query.QUERIES_DIR / 'prelude.sql'}", "-c",
                               "SELECT run_id, labels['model'] AS model FROM runs ORDER BY 1"],
                              capture_output=True, text=True, check=True).stdout
    assert json.loads(runs_out) == [{"run_id": "r1", "model": "a"}, {"run_id": "r2", "model": "b"}]
    # the tool reads the hive root as a whole too
    assert api.connect([str(hive)]).sql("select count(distinct run_id) from events").fetchall() == [(2,)]


def test_ioctl_queue_requests_counts_the_tracepoint_path_once(tmp_path):
    from testing.traces import IOCTL_FUNCS, R3_EVENTS, write_trace

    t = write_trace(tmp_path / "r3", "r3", R3_EVENTS, funcs=IOCTL_FUNCS)
    rows = api.query("ioctl.queue_requests", [str(t)]).to_pylist()
    got = [(r["tgid"], r["comm"], r["create_calls"], r["create_types"] and dict(r["create_types"]), r["priorities"], r["destroy_calls"],
            r["suspend_calls"], r["resume_calls"], r["dbg_targets"], r["failed"]) for r in rows]
    assert got == [
        (10, "online", 2, {"compute_aql": 1, "sdma": 1}, [15], 0, 0, 0, None, 0),
        (20, "offline", 1, {"compute": 1}, [0], 1, 0, 0, None, 0),
        (30, "ctl", 0, None, None, 0, 1, 1, [20], 1),
    ]
    by_path = {(r["func"], r["ioctl_cmd"]): r["calls"] for r in api.query("ioctl.summary", [str(t)]).to_pylist()}
    assert by_path[("syscalls:sys_enter_ioctl", "AMDKFD_IOC_CREATE_QUEUE")] == 3
    assert by_path[("kfd_ioctl", "AMDKFD_IOC_CREATE_QUEUE")] == 1


def test_ioctl_queue_requests_counts_the_kprobe_path_when_it_is_the_only_one(tmp_path):
    """A default recording on a kernel with kprobes: every call is one decoded kfd_ioctl row (no tracepoint)."""
    from testing.traces import IOCTL_FUNCS, R3_EVENTS, write_trace

    kprobe_only = [dict(e, func="kfd_ioctl") for e in R3_EVENTS if e["func"] != "kfd_ioctl"]
    t = write_trace(tmp_path / "k", "k", kprobe_only, funcs=IOCTL_FUNCS)
    rows = api.query("ioctl.queue_requests", [str(t)]).to_pylist()
    assert [(r["tgid"], r["create_calls"], r["create_types"] and dict(r["create_types"]), r["suspend_calls"], r["resume_calls"],
             r["dbg_targets"], r["failed"]) for r in rows] == [
        (10, 2, {"compute_aql": 1, "sdma": 1}, 0, 0, None, 0),
        (20, 1, {"compute": 1}, 0, 0, None, 0),
        (30, 0, None, 1, 1, [20], 1),
    ]


def test_no_modules_found_is_an_error_not_an_empty_list(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from gpreempt_trace.sql import query
    from gpreempt_trace.cli.main import main

    monkeypatch.setattr(query, "QUERIES_DIR", tmp_path)
    monkeypatch.setattr(query.list_modules, "__defaults__", (tmp_path,))
    res = CliRunner().invoke(main, ["query", "--list"])
    assert res.exit_code == 1
    assert res.output == f"Error: no query modules in {tmp_path}: the installation is incomplete: reinstall gpreempt-trace (pip install .)\n"


def test_materialize_computes_a_view_once_and_keeps_its_rows(tmp_path):
    from testing.traces import KFD_FUNCS, Q1_EVENTS, write_trace

    t = [str(write_trace(tmp_path / "q1", "q1", Q1_EVENTS, funcs=KFD_FUNCS))]
    con = api.connect(t)
    query.load_module(con, query.resolve("queues.lifecycle"))
    before = con.sql("SELECT * FROM queues_lifecycle").fetchall()
    query.materialize(con, "queues_lifecycle_spans", "queues_lifecycle")
    assert con.sql("SELECT * FROM queues_lifecycle").fetchall() == before
    assert con.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'queues_lifecycle'").fetchall()[0][0].count("_gpt_m_queues_lifecycle") == 1
