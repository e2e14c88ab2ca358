"""The prelude is the one definition of `runs` and `dbg_trap_ops`; bad segments are named and skipped."""
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from testing.traces import R1_EVENTS, R1_MARKERS, set_counters, write_trace

from gpreempt_trace import api, query
from gpreempt_trace.recorder import ioctls


def test_runs_view_is_defined_only_in_the_prelude():
    py = (query.__file__ and open(query.__file__).read())
    assert not re.search(r"CREATE\s+VIEW\s+runs", py, re.I)
    assert any(re.search(r"CREATE VIEW runs AS", s) for s in query.prelude_statements())


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
