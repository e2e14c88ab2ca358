"""The prelude is the one definition of `runs` and `dbg_trap_ops`; bad segments are named and skipped."""
import json
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from testing.traces import R1_EVENTS, R1_MARKERS, set_counters, write_trace

from gpreempt_trace import api
from gpreempt_trace.sql import query
from gpreempt_trace.recorder import ioctls


def _runs_statement(text: str) -> str:
    return next(s for s in query._split_statements(text) if re.match(r"\s*(--[^\n]*\n\s*)*CREATE VIEW runs AS", s))


def test_connect_takes_runs_from_the_prelude(tmp_path, monkeypatch):
    """The tool's `runs` is the prelude's: a column added there (and only there) shows up in connect()."""
    queries = tmp_path / "queries"
    shutil.copytree(query.QUERIES_DIR, queries)
    prelude = queries / "prelude.sql"
    text = prelude.read_text()
    runs = _runs_statement(text)
    assert runs.count("  m.version AS format_version\n") == 1
    prelude.write_text(text.replace(runs, runs.replace("  m.version AS format_version\n",
                                                       "  m.version AS format_version,\n  -- Only in this copy.\n  42 AS only_here\n")))
    monkeypatch.setattr(query, "QUERIES_DIR", queries)
    t = write_trace(tmp_path / "r1", "r1", R1_EVENTS, R1_MARKERS)
    assert api.connect([str(t)]).sql("select run_id, only_here from runs").fetchall() == [("r1", 42)]


def test_runs_row_exact_values(tmp_path):
    t = write_trace(tmp_path / "r1", "r1", R1_EVENTS, R1_MARKERS, {"model": "a"})
    meta = json.loads((t / "meta.json").read_text())
    meta.update(host="h1", kernel="6.12.117+deb12-amd64", start_ns=1_000, stop_ns=5_000, start_wall="2026-12-01T10:00:00.000000001Z",
                stop_wall="2026-12-01T10:00:00.000004001Z", tool_version="9.9.9",
                counters={"events_written": 10, "events_lost": 3, "markers_written": 5, "snapshots_written": 0})
    (t / "meta.json").write_text(json.dumps(meta))
    con = api.connect([str(t)])
    cols = [c[0] for c in con.sql("describe runs").fetchall()]
    assert dict(zip(cols, con.sql("select * from runs").fetchall()[0])) == {
        "run_id": "r1", "path": str(t), "host": "h1", "kernel": "6.12.117+deb12-amd64", "start_ns": 1_000, "stop_ns": 5_000,
        "start_wall": "2026-12-01T10:00:00.000000001Z", "stop_wall": "2026-12-01T10:00:00.000004001Z", "labels": {"model": "a"},
        "synthetic": True, "events_written": 10, "events_written_derived": False, "events_lost": 3, "tool_version": "9.9.9",
        "format_version": 1}


def test_every_runs_column_has_a_comment_above_it(tmp_path):
    """The outer SELECT of `runs` lists one column per line, each under its `--` comment (the rule of
    every query module's public view), and those are exactly the columns the view has."""
    stmt = _runs_statement((query.QUERIES_DIR / "prelude.sql").read_text())
    select = stmt[stmt.rindex("\nSELECT\n") + len("\nSELECT\n"):stmt.rindex("\nFROM ")]
    docs, comment = {}, []
    for line in select.splitlines():
        line = line.strip()
        if line.startswith("--"):
            comment.append(line[2:].strip())
            continue
        name = re.split(r"\s+AS\s+", line.rstrip(","), flags=re.I)[-1].split(".")[-1]
        docs[name] = " ".join(comment)
        comment = []
    t = write_trace(tmp_path / "r1", "r1", R1_EVENTS, R1_MARKERS)
    columns = [c[0] for c in api.connect([str(t)]).sql("describe runs").fetchall()]
    assert list(docs) == columns
    assert [c for c, doc in docs.items() if not doc] == []


def test_dbg_trap_ops_match_the_uapi_constants(tmp_path):
    t = write_trace(tmp_path / "r1", "r1", R1_EVENTS, R1_MARKERS)
    got = set(api.connect([str(t)]).sql("select ioctl_nr_low, dbg_op, op_name from dbg_trap_ops").fetchall())
    dbg, rocm = ioctls.ioc_nr(ioctls.DBG_TRAP), ioctls.ioc_nr(ioctls.ROCM_DBG_TRAP)
    assert got == {(dbg, ioctls.DBG_TRAP_SUSPEND_QUEUES, "suspend_queues"), (dbg, ioctls.DBG_TRAP_RESUME_QUEUES, "resume_queues"),
                   (rocm, ioctls.ROCM_DBG_TRAP_NODE_SUSPEND, "suspend_queues"), (rocm, ioctls.ROCM_DBG_TRAP_NODE_RESUME, "resume_queues")}


def test_unknown_counters_stay_unknown_and_events_are_counted(tmp_path):
    t = set_counters(write_trace(tmp_path / "r1", "r1", R1_EVENTS, R1_MARKERS), events_written=None, events_lost=None)
    assert api.connect([str(t)]).sql("select events_written, events_written_derived, events_lost from runs").fetchall() == [(10, True, None)]


def test_segment_with_a_mistyped_column_is_named_and_skipped(tmp_path):
    t = write_trace(tmp_path / "r1", "r1", R1_EVENTS, R1_MARKERS)
    bad = t / "events" / "seg-999999.parquet"
    pq.write_table(pa.table({"run_id": ["r1"], "ts_ns": ["not a number"], "event": ["queue_create"]}), bad)
    with pytest.warns(UserWarning, match=r"skipping segment .*seg-999999\.parquet \(column ts_ns is string, expected int64\)"):
        con = api.connect([str(t)])
    assert con.sql("select count(*) from events").fetchall() == [(10,)]


def test_corrupt_segment_is_named_and_skipped(tmp_path):
    t = write_trace(tmp_path / "r1", "r1", R1_EVENTS, R1_MARKERS)
    (t / "events" / "seg-999998.parquet").write_bytes(b"PAR1 garbage")
    with pytest.warns(UserWarning, match=r"seg-999998\.parquet"):
        rows = api.query("preempt.preemption", [str(t)]).to_pylist()
    assert [r["seq"] for r in rows] == [1, 3]


@pytest.mark.parametrize("abi", ["6.1.0-56-amd64", "6.12.117+deb12-amd64"])
def test_unmap_filter_names_match_the_kernels_btf(tmp_path, kernel_fixture, abi):
    from gpreempt_trace.recorder.btf import Btf

    k = kernel_fixture(abi)
    enum = Btf.load(k / "btf" / "amdgpu", base=Btf.load(k / "btf" / "vmlinux")).enum_values("kfd_unmap_queues_filter")
    expected = {v: n.removeprefix("KFD_UNMAP_QUEUES_FILTER_").lower() for n, v in enum.items()}
    t = write_trace(tmp_path / "r1", "r1", R1_EVENTS, R1_MARKERS)
    assert dict(api.connect([str(t)]).sql("select unmap_filter, filter_name from unmap_filters").fetchall()) == expected
