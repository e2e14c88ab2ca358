"""In the lab guest (Debian's real 6.1.0-56 kernel with amdgpu/KFD): plan_kfd() against the running
kernel (/proc/kallsyms, /sys/kernel/btf) yields attachable kprobes, plan.attach(bpf) attaches them, and
kfd_ioctl fires for AMDKFD_IOC_GET_VERSION with the right ioctl number and return value."""
from __future__ import annotations

import json


GUEST_SCRIPT = r'''
import ctypes, fcntl, json, os, sys
from pathlib import Path
REPO = Path.cwd()
os.environ["BCC_KERNEL_SOURCE"] = str(REPO / "tracers" / "stub")
import numpy as np
from bcc import BPF
from gpreempt_trace import record_layout, schema
from gpreempt_trace.recorder.plan import plan_kfd

plan = plan_kfd()
text = (REPO / "tracers" / "common.h").read_text() + "\n" + plan.source()
b = BPF(text=text.encode(), cflags=plan.cflags + ["-I" + str(REPO / "tracers")])
plan.attach(b)
raw = []
b["gpt_events"].open_ring_buffer(lambda ctx, data, size: raw.append(ctypes.string_at(data, size)))
fd = os.open("/dev/kfd", os.O_RDWR)
buf = bytearray(8)
fcntl.ioctl(fd, 0x80084B01, buf)
os.close(fd)
b.ring_buffer_poll(500)
recs = np.frombuffer(b"".join(raw), dtype=record_layout.numpy_dtype()) if raw else []
mine = [r for r in recs if int(r["tgid"]) == os.getpid() and int(r["event_id"]) == schema.EVENTS.index("kfd_ioctl")]
print("RESULT " + json.dumps({
    "kernel": os.uname().release,
    "version": list(memoryview(buf).cast("I")),
    "plan": [p.as_dict() for p in plan.probes],
    "ioctl_events": [{"ioctl_nr": int(r["ioctl_nr"]), "ret": int(r["ret"]), "dur_ns": int(r["dur_ns"]),
                      "valid": int(r["valid"]), "func_id": int(r["func_id"])} for r in mine],
}))
'''


def test_plan_attaches_real_kprobes_in_lab(lab):
    res = lab.python(GUEST_SCRIPT, timeout_s=400)
    assert res.rc == 0, res.output[-3000:]
    line = next(ln for ln in res.output.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["kernel"] == "6.1.0-56-amd64"
    plan = {p["probe"]: p for p in out["plan"]}
    # the fixture's facts hold on the live kernel too
    assert plan["execute_queues_cpsch"]["status"] == "unavailable"
    assert plan["update_queue"]["target"] == "amdgpu:update_queue"
    attached = {n for n, p in plan.items() if p["status"] == "attached"}
    assert {"create_queue_cpsch", "destroy_queue_cpsch", "update_queue", "map_queues_cpsch", "unmap_queues_cpsch",
            "evict_process_queues_cpsch", "restore_process_queues_cpsch", "kfd_process_evict_queues",
            "kfd_process_restore_queues", "pm_send_runlist", "hw_unmap_wait", "kfd_ioctl"} <= attached
    assert not [p for p in out["plan"] if p["status"] == "failed"], out["plan"]
    # GET_VERSION went through kfd_ioctl: one record, cmd and ret exact
    assert out["version"][0] == 1
    ev = out["ioctl_events"]
    assert len(ev) == 1, ev
    assert ev[0]["ioctl_nr"] == 0x80084B01 and ev[0]["ret"] == 0 and ev[0]["dur_ns"] > 0
    assert ev[0]["func_id"] == plan["kfd_ioctl"]["func_id"]


def test_doctor_live_in_lab(lab, kfd_fixture):
    """doctor on the real 6.1 kernel: kprobes, amdgpu, /dev/kfd 1.11, and the same plan and offsets as the
    offline fixture of that build."""
    res = lab.run(".venv/bin/gpreempt-trace doctor --json > $OUT/doctor.json", timeout_s=300)
    assert res.rc == 0, res.output[-2000:]
    out = json.loads((res.files / "doctor.json").read_text())
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["kprobes"]["ok"] is True
    assert checks["amdgpu module"]["ok"] is True and checks["btf amdgpu"]["ok"] is True
    assert checks["/dev/kfd"]["detail"] == "KFD ioctl version 1.11"
    from gpreempt_trace.doctor import run_doctor

    offline = run_doctor(kfd_fixture / "kallsyms", kfd_fixture / "btf").as_dict()
    assert out["offsets"] == offline["offsets"]
    live = {p["probe"]: (p["symbol"], p["status"]) for p in out["probes"]}
    assert live == {p["probe"]: (p["symbol"], p["status"]) for p in offline["probes"]}
