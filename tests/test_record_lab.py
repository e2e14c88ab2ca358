"""`record` in the lab (Debian's real 6.1 and 6.12 kernels with amdgpu/KFD under QEMU, no GPU): real kprobes on KFD
functions AND the ioctl tracepoint path see AMDKFD_IOC_GET_VERSION (ret 0) and a CREATE_QUEUE naming a
gpu_id that does not exist (ret -EINVAL), from the right tgid; meta.json's plan says what attached."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpreempt_trace.recorder import ioctls as I

pytestmark = pytest.mark.lab


def test_record_kfd_ioctls_in_lab(lab):
    res = lab.run(".venv/bin/gpreempt-trace record -o $OUT/t --probes kfd,ioctl -- .venv/bin/python tests/testing/lab_kfd_calls.py",
                  timeout_s=900)
    assert res.rc == 0, res.output[-3000:]
    seen = json.loads([ln for ln in res.output.splitlines() if ln.startswith('{"pid"')][0])
    assert (seen["get_version"], seen["create_queue"]) == (0, -22)
    assert seen["version"] == [1, 11]
    trace = res.files / "t"
    rows = pa.concat_tables([pq.read_table(f) for f in sorted((trace / "events").glob("seg-*.parquet"))]).to_pylist()
    meta = json.loads((trace / "meta.json").read_text())
    assert meta["counters"]["events_lost"] == 0

    plan = {p["probe"]: p for p in meta["attach_plan"]}
    assert plan["sys_ioctl"]["status"] == "attached" and plan["sys_ioctl"]["mechanism"] == "tracepoint"
    assert plan["kfd_ioctl"]["status"] == "attached" and plan["kfd_ioctl"]["mechanism"] == "kprobe+kretprobe"
    assert plan["create_queue_cpsch"]["status"] == "attached"

    ioctl_rows = [r for r in rows if r["event"] == "kfd_ioctl"]
    for func in ("syscalls:sys_enter_ioctl", "kfd_ioctl"):  # the tracepoint path and the kprobe on kfd_ioctl
        mine = {r["ioctl_cmd"]: r for r in ioctl_rows if r["func"] == func}
        assert set(mine) == {"AMDKFD_IOC_GET_VERSION", "AMDKFD_IOC_CREATE_QUEUE"}, (func, ioctl_rows)
        v, c = mine["AMDKFD_IOC_GET_VERSION"], mine["AMDKFD_IOC_CREATE_QUEUE"]
        assert (v["ret"], v["ioctl_nr"], v["tgid"]) == (0, I.GET_VERSION, seen["pid"])
        assert (c["ret"], c["ioctl_nr"], c["tgid"]) == (-22, I.CREATE_QUEUE, seen["pid"])
    cq = [r for r in ioctl_rows if r["func"] == "syscalls:sys_enter_ioctl" and r["ioctl_cmd"] == "AMDKFD_IOC_CREATE_QUEUE"][0]
    assert (cq["gpu_id"], cq["queue_type"], cq["priority"], cq["queue_percentage"], cq["ring_size"], cq["ring_base"]) == \
        (0xDEAD, "compute_aql", 7, 100, 4096, 0x100000)
    assert cq["queue_id"] is None  # outputs are only read on success
    assert meta["recorder"]["ioctl_filter"] == "device"


def _rows(trace):
    rows = pa.concat_tables([pq.read_table(f) for f in sorted((trace / "events").glob("seg-*.parquet"))]).to_pylist()
    return sorted(rows, key=lambda r: r["ts_ns"])  # entry time: the order the calls were made


def test_record_debugger_suspend_resume_in_612_lab(lab612):
    """Scheme A on the real 6.12 KFD (1.17, no GPU): the target does RUNTIME_ENABLE, its ptrace parent does
    DBG_TRAP ENABLE / SUSPEND_QUEUES / RESUME_QUEUES / DISABLE. The trace holds the kfd_ioctl rows (kprobe and
    tracepoint path) and the new 6.12 probes' rows with the right tgid, target pid and values."""
    res = lab612.run(".venv/bin/gpreempt-trace record -o $OUT/t --probes kfd,ioctl -- "
                     ".venv/bin/python tests/testing/lab_kfd_calls.py --debugger", timeout_s=900)
    assert res.rc == 0, res.output[-3000:]
    seen = json.loads([ln for ln in res.output.splitlines() if ln.startswith('{"debugger_pid"')][0])
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
    plan = {p["probe"]: p for p in meta["attach_plan"]}
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

    ioctl = [r for r in rows if r["event"] == "kfd_ioctl"]
    for func in ("syscalls:sys_enter_ioctl", "kfd_ioctl"):  # the tracepoint path and the kprobe on kfd_ioctl
        calls = [(r["tgid"], r["ioctl_cmd"], r["ioctl_nr"], r["ret"]) for r in ioctl if r["func"] == func]
        assert calls == [(tgt, "AMDKFD_IOC_RUNTIME_ENABLE", I.RUNTIME_ENABLE, 0)] + \
            [(dbg, "AMDKFD_IOC_DBG_TRAP", I.DBG_TRAP, 0)] * 4, (func, calls)
    ops = [(r["dbg_op"], r["target_pid"]) for r in ioctl if r["func"] == "syscalls:sys_enter_ioctl" and r["tgid"] == dbg]
    assert ops == [(0, tgt), (6, tgt), (7, tgt), (1, tgt)]  # ENABLE, SUSPEND_QUEUES, RESUME_QUEUES, DISABLE
