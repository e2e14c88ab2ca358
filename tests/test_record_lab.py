"""`record` in the lab (Debian's real 6.1 kernel with amdgpu/KFD under QEMU, no GPU): real kprobes on KFD
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
    res = lab.run(".venv/bin/gpreempt-trace record -o $OUT/t --probes kfd,ioctl -- .venv/bin/python tests/lab_kfd_calls.py",
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
