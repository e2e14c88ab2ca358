"""In the lab guests (Debian's real 6.1 and 6.12 kernels with amdgpu/KFD): plan_kfd() against the running
kernel (/proc/kallsyms, /sys/kernel/btf) yields attachable kprobes, plan.attach(bpf) attaches them, and
kfd_ioctl fires for AMDKFD_IOC_GET_VERSION with the right ioctl number and return value; `doctor` live
equals `doctor` offline on the fixture of the same build."""
from __future__ import annotations

import json

import pytest

from gpreempt_trace.recorder.plan import PROBES

KERNELS = [pytest.param("6.1", id="6.1"), pytest.param("6.12", id="6.12", marks=pytest.mark.lab612)]
FIXTURES = {"6.1": "6.1.0-56-amd64", "6.12": "6.12.117+deb12-amd64"}


GUEST_SCRIPT = r'''
import ctypes, fcntl, json, os, sys
from pathlib import Path
REPO = Path.cwd()
os.environ["BCC_KERNEL_SOURCE"] = str(REPO / "tracers" / "stub")
import numpy as np
from bcc import BPF
from gpreempt_trace.recorder import record_layout
from gpreempt_trace.trace import schema
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


# every plain-name DQM/HWS probe both kernels have (attach fine, never fire without a GPU)
COMMON_ATTACHED = {"create_queue_cpsch", "destroy_queue_cpsch", "update_queue", "map_queues_cpsch", "unmap_queues_cpsch",
                   "evict_process_queues_cpsch", "restore_process_queues_cpsch", "kfd_process_evict_queues",
                   "kfd_process_restore_queues", "pm_send_runlist", "hw_unmap_wait", "kfd_ioctl", "reset_queues_cpsch",
                   "kfd_signal_reset_event"}


@pytest.mark.parametrize("lab_kernel", KERNELS, indirect=True)
def test_plan_attaches_real_kprobes_in_lab(lab_kernel):
    res = lab_kernel.python(GUEST_SCRIPT, timeout_s=500)
    assert res.rc == 0, res.output[-3000:]
    line = next(ln for ln in res.output.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["kernel"] == lab_kernel.kernel
    plan = {p["probe"]: p for p in out["plan"]}
    assert plan["update_queue"]["target"] == "amdgpu:update_queue"
    attached = {n for n, p in plan.items() if p["status"] == "attached"}
    assert COMMON_ATTACHED <= attached
    assert not [p for p in out["plan"] if p["status"] == "failed"], out["plan"]
    if lab_kernel.series == "6.1":
        assert plan["execute_queues_cpsch"]["status"] == "unavailable"
    else:  # 6.12: every KFD kprobe attaches, execute_queues_cpsch through its clone
        assert attached == {s.name for s in PROBES}
        assert plan["execute_queues_cpsch"]["target"] == "execute_queues_cpsch.constprop.0"
    # GET_VERSION went through kfd_ioctl: one record, cmd and ret exact
    assert out["version"] == {"6.1": [1, 11], "6.12": [1, 17]}[lab_kernel.series]
    ev = out["ioctl_events"]
    assert len(ev) == 1, ev
    assert ev[0]["ioctl_nr"] == 0x80084B01 and ev[0]["ret"] == 0 and ev[0]["dur_ns"] > 0
    assert ev[0]["func_id"] == plan["kfd_ioctl"]["func_id"]


@pytest.mark.parametrize("lab_kernel", KERNELS, indirect=True)
def test_doctor_live_in_lab(lab_kernel, kernel_fixture):
    """doctor on the real kernel: kprobes, amdgpu, /dev/kfd's version, and the same plan and offsets as the
    offline fixture (6.1: the fixture is 6.1.0-56, the lab boots the newest 6.1.0-N: same layouts)."""
    res = lab_kernel.run(".venv/bin/gpreempt-trace doctor --json > $OUT/doctor.json", timeout_s=400)
    assert res.rc == 0, res.output[-2000:]
    out = json.loads((res.files / "doctor.json").read_text())
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["kprobes"]["ok"] is True
    assert checks["amdgpu module"]["ok"] is True and checks["btf amdgpu"]["ok"] is True
    assert checks["/dev/kfd"]["detail"] == {"6.1": "KFD ioctl version 1.11", "6.12": "KFD ioctl version 1.17"}[lab_kernel.series]
    assert all(p["reason"] for p in out["probes"] if p["status"] != "planned")  # every probe explained
    from gpreempt_trace.doctor.report import run_doctor

    fx = kernel_fixture(FIXTURES[lab_kernel.series])
    offline = run_doctor(fx / "kallsyms", fx / "btf").as_dict()
    assert out["offsets"] == offline["offsets"]
    live = {p["probe"]: (p["symbol"], p["status"]) for p in out["probes"]}
    assert live == {p["probe"]: (p["symbol"], p["status"]) for p in offline["probes"]}
