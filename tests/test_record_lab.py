"""`record` in the lab (Debian's real 6.1 and 6.12 kernels with amdgpu/KFD under QEMU, no GPU): real kprobes on KFD
functions and the ioctl path see AMDKFD_IOC_GET_VERSION (ret 0) and a CREATE_QUEUE naming a gpu_id that does
not exist (ret -EINVAL), from the right tgid; meta.json's plan says what attached. The default recording decodes
the ioctls from the kprobe on kfd_ioctl (no syscall tracepoint attached); the same calls recorded again with
`--probes ioctl` (the syscall tracepoints) give the same rows, column for column."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpreempt_trace.recorder import ioctls as I
from gpreempt_trace.recorder.plan import KFD_IOCTL_DECODED
from gpreempt_trace.trace import schema

pytestmark = pytest.mark.lab
# columns that differ between two recordings of the same calls: when, where, which path, the run
PER_RUN = {"ts_ns", "dur_ns", "cpu", "func", "run_id"}
PIDS = ("tgid", "tid", "target_pid")  # compared through the role of the process (its pid differs per run)


def same_rows(kprobe_rows, tp_rows, roles_k: dict, roles_t: dict):
    """The ioctl rows of the kprobe path and of the tracepoint path, in call order, with pids named by role."""
    def norm(rows, roles):
        out = []
        for r in sorted((r for r in rows if r["event"] == "kfd_ioctl"), key=lambda r: r["ts_ns"]):
            d = {c: v for c, v in r.items() if c not in PER_RUN}
            for c in PIDS:
                d[c] = roles.get(d[c], d[c])
            out.append(d)
        return out
    return norm(kprobe_rows, roles_k), norm(tp_rows, roles_t)


def _ioctl_plan(meta, mechanism):
    plan = {p["probe"]: p for p in meta["attach_plan"]}
    row = plan["sys_ioctl"]
    assert (row["status"], row["mechanism"]) == ("attached", mechanism), row
    if mechanism == "kprobe+kretprobe":  # the kfd plan's kfd_ioctl probe is the one attached, its rows decoded
        assert row["target"] == "kfd_ioctl" and row["func_id"] == plan["kfd_ioctl"]["func_id"]
        assert (plan["kfd_ioctl"]["status"], plan["kfd_ioctl"]["reason"]) == ("attached", KFD_IOCTL_DECODED)
    return plan


def test_record_kfd_ioctls_in_lab(lab):
    script = ".venv/bin/python tests/testing/lab_kfd_calls.py"
    res = lab.run(f".venv/bin/gpreempt-trace record -o $OUT/t --probes kfd,ioctl -- {script} && "
                  f".venv/bin/gpreempt-trace record -o $OUT/tp --probes ioctl -- {script}", timeout_s=1500)
    assert res.rc == 0, res.output[-3000:]
    seen_k, seen_t = [json.loads(ln) for ln in res.output.splitlines() if ln.startswith('{"pid"')]
    for seen in (seen_k, seen_t):
        assert (seen["get_version"], seen["create_queue"]) == (0, -22)
        assert seen["version"] == [1, 11]
    trace, tp = res.files / "t", res.files / "tp"
    meta, meta_t = (json.loads((d / "meta.json").read_text()) for d in (trace, tp))
    assert meta["counters"]["events_lost"] == 0 == meta_t["counters"]["events_lost"]
    plan = _ioctl_plan(meta, "kprobe+kretprobe")
    assert plan["create_queue_cpsch"]["status"] == "attached"
    _ioctl_plan(meta_t, "tracepoint")

    rows, rows_t = _rows(trace), _rows(tp)
    for rs, func, seen in ((rows, "kfd_ioctl", seen_k), (rows_t, "syscalls:sys_enter_ioctl", seen_t)):
        mine = {r["ioctl_cmd"]: r for r in rs if r["event"] == "kfd_ioctl"}
        assert set(mine) == {"AMDKFD_IOC_GET_VERSION", "AMDKFD_IOC_CREATE_QUEUE"}, (func, rs)
        v, c = mine["AMDKFD_IOC_GET_VERSION"], mine["AMDKFD_IOC_CREATE_QUEUE"]
        assert (v["func"], v["ret"], v["ioctl_nr"], v["tgid"]) == (func, 0, I.GET_VERSION, seen["pid"])
        assert (c["func"], c["ret"], c["ioctl_nr"], c["tgid"]) == (func, -22, I.CREATE_QUEUE, seen["pid"])
        assert (c["gpu_id"], c["queue_type"], c["priority"], c["queue_percentage"], c["ring_size"], c["ring_base"]) == \
            (0xDEAD, "compute_aql", 7, 100, 4096, 0x100000)
        assert c["queue_id"] is None  # outputs are only read on success
    a, b = same_rows(rows, rows_t, {seen_k["pid"]: "caller"}, {seen_t["pid"]: "caller"})
    assert a == b and len(a) == 2
    assert meta_t["recorder"]["ioctl_filter"] == "device"


def _rows(trace):
    rows = pa.concat_tables([pq.read_table(f) for f in sorted((trace / "events").glob("seg-*.parquet"))]).to_pylist()
    return sorted(rows, key=lambda r: r["ts_ns"])  # entry time: the order the calls were made


def test_record_debugger_suspend_resume_in_612_lab(lab612):
    """Scheme A on the real 6.12 KFD (1.17, no GPU): the target does RUNTIME_ENABLE, its ptrace parent does
    DBG_TRAP ENABLE / SUSPEND_QUEUES / RESUME_QUEUES / DISABLE. The trace holds the kfd_ioctl rows (kprobe and
    tracepoint path) and the new 6.12 probes' rows with the right tgid, target pid and values."""
    script = ".venv/bin/python tests/testing/lab_kfd_calls.py --debugger"
    res = lab612.run(f".venv/bin/gpreempt-trace record -o $OUT/t --probes kfd,ioctl -- {script} && "
                     f".venv/bin/gpreempt-trace record -o $OUT/tp --probes ioctl -- {script}", timeout_s=1500)
    assert res.rc == 0, res.output[-3000:]
    seen, seen_t = [json.loads(ln) for ln in res.output.splitlines() if ln.startswith('{"debugger_pid"')]
    dbg, tgt = seen["debugger_pid"], seen["target_pid"]
    # what the callers saw: every call succeeded, no queue was acted on, each id came back with bit 31 (INVALID)
    assert {k: seen[k] for k in ("runtime_enable", "ptrace_seize", "enable", "suspend", "resume", "disable")} == dict.fromkeys(
        ("runtime_enable", "ptrace_seize", "enable", "suspend", "resume", "disable"), 0)
    assert seen["suspend_ids"] == seen["resume_ids"] == [5 | 1 << 31, 6 | 1 << 31]
    ids, invalid = [5, 6], ["invalid", "invalid"]  # the plain ids in queue_ids, bit 31 in queue_id_status

    trace = res.files / "t"
    rows = _rows(trace)
    meta = json.loads((trace / "meta.json").read_text())
    assert meta["counters"]["events_lost"] == 0
    plan = _ioctl_plan(meta, "kprobe+kretprobe")
    for probe in ("kfd_ioctl", "suspend_queues", "resume_queues", "kfd_ioctl_runtime_enable", "kfd_dbg_trap_enable",
                  "kfd_dbg_trap_disable", "execute_queues_cpsch", "map_queues_cpsch", "unmap_queues_cpsch",
                  "reset_queues_cpsch", "kgd_gfx_v9_hqd_reset", "kfd_hws_hang", "kfd_signal_reset_event"):
        assert plan[probe]["status"] == "attached", plan[probe]
    assert plan["execute_queues_cpsch"]["target"] == "execute_queues_cpsch.constprop.0"
    assert plan["update_queue"]["target"] == "amdgpu:update_queue"

    def one(event, func, tgid):
        found = [r for r in rows if (r["event"], r["func"], r["tgid"]) == (event, func, tgid)]
        assert len(found) >= 1, (event, func, tgid, rows)
        return found

    sus = one("queues_suspend", "suspend_queues", dbg)
    assert len(sus) == 1
    assert (sus[0]["target_pid"], sus[0]["num_queues"], sus[0]["grace_period"], sus[0]["ret"], sus[0]["queue_ids"],
            sus[0]["queue_id_status"]) == (tgt, 2, 9, 0, ids, invalid)
    res_rows = one("queues_resume", "resume_queues", dbg)
    # RESUME_QUEUES, then DISABLE resumes whatever is left (resume_queues(target, 0, NULL))
    assert [(r["target_pid"], r["num_queues"], r["ret"], r["queue_ids"], r["queue_id_status"], r["grace_period"])
            for r in res_rows] == [(tgt, 2, 0, ids, invalid, None), (tgt, 0, 0, None, None, None)]
    rt = one("runtime_enable", "kfd_ioctl_runtime_enable", tgt)
    assert [(r["target_pid"], r["ret"]) for r in rt] == [(tgt, 0)]
    en = one("dbg_trap_enable", "kfd_dbg_trap_enable", dbg)
    assert [(r["target_pid"], r["ret"]) for r in en] == [(tgt, 0)]
    assert (tgt, 0) in [(r["target_pid"], r["ret"]) for r in one("dbg_trap_disable", "kfd_dbg_trap_disable", dbg)]

    # the same calls through both paths: the kprobe on kfd_ioctl (default) and the syscall tracepoints (--probes ioctl)
    tp = res.files / "tp"
    meta_t = json.loads((tp / "meta.json").read_text())
    _ioctl_plan(meta_t, "tracepoint")
    rows_t = _rows(tp)
    for rs, func, s in ((rows, "kfd_ioctl", seen), (rows_t, "syscalls:sys_enter_ioctl", seen_t)):
        ioctl = [r for r in rs if r["event"] == "kfd_ioctl"]
        d, t = s["debugger_pid"], s["target_pid"]
        assert {r["func"] for r in ioctl} == {func}
        calls = [(r["tgid"], r["ioctl_cmd"], r["ioctl_nr"], r["ret"]) for r in ioctl]
        assert calls == [(t, "AMDKFD_IOC_RUNTIME_ENABLE", I.RUNTIME_ENABLE, 0)] + [(d, "AMDKFD_IOC_DBG_TRAP", I.DBG_TRAP, 0)] * 4, (func, calls)
        ops = [(r["dbg_op"], r["target_pid"]) for r in ioctl if r["tgid"] == d]
        assert ops == [(0, t), (6, t), (7, t), (1, t)]  # ENABLE, SUSPEND_QUEUES, RESUME_QUEUES, DISABLE
        sus = [r for r in ioctl if r["dbg_op"] == 6][0]
        assert (sus["num_queues"], sus["grace_period"], sus["queue_ids"]) == (2, 9, ids)
    roles = lambda s: {s["debugger_pid"]: "debugger", s["target_pid"]: "target"}  # noqa: E731
    a, b = same_rows(rows, rows_t, roles(seen), roles(seen_t))
    assert a == b and len(a) == 5
    assert set(a[0]) == set(schema.table_schema("events").names) - PER_RUN  # every column compared
