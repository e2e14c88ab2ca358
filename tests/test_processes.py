"""The `processes` view (issue 21): /proc reads folded per (run, tgid), and the container next to the
model in queues.*, exp01.*, the report and the Perfetto export, on hand-written traces (exact values)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from testing.traces import CID_OFFLINE, CID_ONLINE, GA, GB, KFD_FUNCS, Q1_EVENTS, Q1_PROCESSES, proc_read, write_trace

from gpreempt_trace import api
from gpreempt_trace.sql import query
from gpreempt_trace.cli.main import main
from gpreempt_trace.trace.processes import ProcessLog
from gpreempt_trace.trace.directory import TraceWriter

MI300 = Path(__file__).parent / "fixtures" / "debugfs" / "v6.5-mi300-4xcc"
ON, OFF = CID_ONLINE[:12], CID_OFFLINE[:12]


def q1(tmp_path, processes=Q1_PROCESSES):
    return [str(write_trace(tmp_path / "q1", "q1", Q1_EVENTS, funcs=KFD_FUNCS, processes=processes))]


def test_processes_view_one_row_per_process(tmp_path):
    con = api.connect(q1(tmp_path))
    rows = con.sql("SELECT run_id, tgid, ns_tgid, pidns, cgroup, container_id, container_runtime, container, comm, "
                   "first_seen_ts_ns, last_seen_ts_ns FROM processes ORDER BY tgid").fetchall()
    assert rows == [
        ("q1", 100, 7, 4026532890, f"/docker/{CID_ONLINE}", CID_ONLINE, "docker", ON, "online", 10, 110),
        # the end-of-run read found 200 gone: its facts come from the first read, not NULLs, not a guess
        ("q1", 200, 1, 4026532999, f"/kubepods.slice/crio-{CID_OFFLINE}.scope", CID_OFFLINE, "crio", OFF, "offline", 15, 15),
        ("q1", 900, 900, 4026531836, "/user.slice", None, None, None, "gpreempt-trace", 60, 80),
    ]
    # events.tgid joins it
    assert con.sql("SELECT p.container, count(*) FROM events e JOIN processes p USING (run_id, tgid) "
                   "GROUP BY ALL ORDER BY ALL").fetchall() == [(OFF, 1), (ON, 6), (None, 7)]  # tgid 5 (a worker) was never read


def test_a_process_never_read_keeps_nulls(tmp_path):
    con = api.connect(q1(tmp_path, [proc_read(5, 100, first=10), proc_read(9, 100, last=12)]))
    assert con.sql("SELECT tgid, ns_tgid, pidns, cgroup, container_id, container, comm, first_seen_ts_ns, last_seen_ts_ns "
                   "FROM processes").fetchall() == [(100, None, None, None, None, None, None, 10, 12)]
    rows = api.query("queues.counts", q1(tmp_path / "x", [proc_read(5, 100, first=10)]))
    assert [(r["label"], r["containers"]) for r in rows.to_pylist()] == [("offline", None), ("online", None)]  # unknown, not []


def test_recorder_first_read_wins_over_an_earlier_launcher_read(tmp_path):
    # the launcher read the process at its gate (before exec: another comm, host cgroup); the recorder at its first event
    reads = [proc_read(1, 100, 100, None, None, "python3", cgroup="/user.slice", first=1, source="launcher"),
             proc_read(11, 100, 7, CID_ONLINE, "docker", "online", first=10)]
    con = api.connect(q1(tmp_path, reads))
    assert con.sql("SELECT tgid, ns_tgid, container, comm, first_seen_ts_ns FROM processes").fetchall() == [(100, 7, ON, "online", 1)]


def test_queues_modules_show_the_container(tmp_path):
    t = q1(tmp_path)
    got = [(r["tgid"], r["label"], r["container"], r["queue_id"], r["created_ts_ns"]) for r in api.query("queues.lifecycle", t).to_pylist()]
    assert got == [(100, "online", ON, 0, 10), (100, "online", ON, 0, 95), (100, "online", ON, 1, 20), (200, "offline", OFF, 0, 15)]
    got = [(r["tgid"], r["label"], r["container"], r["queue_id"]) for r in api.query("queues.created", t).to_pylist()]
    assert got == [(100, "online", ON, 0), (100, "online", ON, 0), (100, "online", ON, 1), (200, "offline", OFF, 0)]
    got = [(r["tgid"], r["gpu_id"], r["created"], r["container"]) for r in api.query("queues.per_tgid", t).to_pylist()]
    assert got == [(100, GA, 3, ON), (200, GB, 1, OFF)]
    got = [(r["label"], r["containers"], r["processes"], r["queues"]) for r in api.query("queues.counts", t).to_pylist()]
    assert got == [("offline", [OFF], 1, 1), ("online", [ON], 1, 3)]
    # host processes: [] (known: not in a container)
    host = [proc_read(11, 100, 100, None, None, "online", cgroup="/user.slice", first=10),
            proc_read(16, 200, 200, None, None, "offline", cgroup="/user.slice", first=15)]
    got = [(r["label"], r["containers"]) for r in api.query("queues.counts", q1(tmp_path / "h", host)).to_pylist()]
    assert got == [("offline", []), ("online", [])]


def test_exp01_shows_the_container(tmp_path):
    t = tmp_path / "t"
    api.snapshot(str(t), debugfs_dir=str(MI300))  # a capture: its pid 5001 is not read from this host's /proc
    assert api.connect([str(t)]).sql("SELECT source, tgid, cgroup, first_seen_ts_ns IS NOT NULL FROM process_reads "
                                     "ORDER BY first_seen_ts_ns NULLS LAST, tgid").fetchall() == [
        ("snapshot", 5001, None, True), ("snapshot", 5002, None, True), ("snapshot", 5001, None, False), ("snapshot", 5002, None, False)]
    tw = TraceWriter.join(t, prefix="test")
    tw.writer("process_reads").append_rows([proc_read(1, 5001, 1, CID_ONLINE, "docker", "demo", first=1, source="snapshot")])
    tw.close()
    inv = query.run("exp01.inventory", [str(t)]).to_pylist()
    assert [(r["tgid"], r["container"], r["compute_queues"]) for r in inv] == [(5001, ON, 2), (5002, None, 1)]
    qs = query.run("exp01.queues", [str(t)]).to_pylist()
    assert {(r["tgid"], r["container"]) for r in qs} == {(5001, ON), (5002, None)}
    assert api.exp01([str(t)]).groups[0].queues.startswith(f"2 compute + 1 SDMA per process (tgid 5001 [{ON}]; 1 run(s)")


def test_perfetto_and_report_name_the_container(tmp_path):
    t = q1(tmp_path)
    out = tmp_path / "q1.pftrace"
    res = CliRunner().invoke(main, ["export", "--perfetto", t[0], "-o", str(out)])
    assert res.exit_code == 0, res.output
    from test_perfetto_export import _decode

    names = {n for n, _ in _decode(out)[1].values()}
    assert {f"online (100) container {ON} pid 7", f"offline (200) container {OFF} pid 1", f"q0 compute_aql gpu 0x{GA:x}"} <= names
    page = api.report(t, str(tmp_path / "rep")).read_text()
    assert "<h2>Processes and containers</h2>" in page
    assert page.count(ON) >= 2 and page.count(OFF) >= 2  # the processes table and queues.counts


def test_process_log_reads_proc_once_and_again_at_the_end(tmp_path):
    tw = TraceWriter.create(tmp_path / "t", run_id="pl")
    log = ProcessLog(tw, "recorder")
    me, gone = os.getpid(), 2 ** 22 + 12345  # above pid_max's default: no such process
    log.see_arrays(np.array([me, 0, me, gone], dtype=np.int32), np.array([50, 1, 20, 30], dtype=np.int64))
    log.see_arrays(np.array([me], dtype=np.int32), np.array([70], dtype=np.int64))
    log.finish()
    tw.close()
    con = api.connect([str(tmp_path / "t")])
    assert con.sql("SELECT tgid, first_seen_ts_ns, last_seen_ts_ns, comm IS NOT NULL, ns_tgid FROM process_reads "
                   "ORDER BY ts_ns, tgid").fetchall() == [
        (me, 20, None, True, me), (gone, 30, None, False, None), (me, None, 70, True, me), (gone, None, 30, False, None)]
    assert con.sql("SELECT tgid, first_seen_ts_ns, last_seen_ts_ns, container_id, cgroup IS NOT NULL FROM processes ORDER BY tgid").fetchall() == [
        (me, 20, 70, None, True), (gone, 30, 30, None, False)]


def test_outside_the_host_pid_namespace_nothing_is_read(tmp_path):
    """A writer in its own pid namespace (a container without --pid=host): its /proc numbers other processes
    than the host pids in the rows, so every fact stays NULL rather than a wrong one."""
    import subprocess
    import sys

    code = ("import sys; from gpreempt_trace.trace.directory import TraceWriter; from gpreempt_trace.trace.processes import ProcessLog; "
            "tw = TraceWriter.create(sys.argv[1], run_id='ns'); log = ProcessLog(tw, 'recorder'); "
            "log.see(1, 10); log.see(2, 11); log.finish(); tw.close(); print(log.read)")
    if os.geteuid() != 0:
        import pytest
        pytest.skip("unshare --pid needs root")
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code, str(tmp_path / "t")],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    con = api.connect([str(tmp_path / "t")])
    assert con.sql("SELECT tgid, ns_tgid, pidns, cgroup, comm, first_seen_ts_ns, last_seen_ts_ns FROM processes ORDER BY tgid").fetchall() == [
        (1, None, None, None, None, 10, 10), (2, None, None, None, None, 11, 11)]
