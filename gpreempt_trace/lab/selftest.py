"""The lab's self-checks: facts about the real 6.1 / 6.12 KFD that the recorder's attach planner relies on.

Host side: `run_checks(lab)` boots one guest, runs this module there (`--guest`) and returns the
facts as a dict. Guest side: load amdgpu, talk to /dev/kfd, attach tracefs kprobes and a BCC
kprobe, and print one JSON object on the last line of output."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import subprocess
import sys
import time

from gpreempt_trace.contracts import uapi  # absolute: the guest runs this module with the repo's venv

TRACEFS = "/sys/kernel/tracing"
# uapi/linux/kfd_ioctl.h (6.1): _IOR('K', 1, 8-byte get_version_args), _IOWR('K', 2, 88-byte create_queue_args)
AMDKFD_IOC_GET_VERSION = uapi.GET_VERSION
AMDKFD_IOC_CREATE_QUEUE = uapi.CREATE_QUEUE  # the 1.11 size; 1.17 takes it too (KFD dispatches on the nr)
CREATE_QUEUE_ARGS = struct.Struct("<4Q6I3Q2I")  # ring_base .. doorbell_offset, ring_size .. queue_id, eop .. ctl_stack_size
BOGUS_GPU_ID = 0xDEAD
BCC_TEXT = """
BPF_ARRAY(hits, u64, 1);
int kprobe__kfd_ioctl(void *ctx) { int k = 0; u64 *v = hits.lookup(&k); if (v) __sync_fetch_and_add(v, 1); return 0; }
"""


def _errno_name(e: OSError) -> str:
    return errno.errorcode.get(e.errno, str(e.errno))


def _probe(line: str) -> str | None:
    """Add a tracefs kprobe event; None when accepted, else the errno name."""
    fd = os.open(f"{TRACEFS}/kprobe_events", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
        return None
    except OSError as e:
        return _errno_name(e)
    finally:
        os.close(fd)


def _kfd_calls() -> dict:
    facts: dict = {}
    fd = os.open("/dev/kfd", os.O_RDWR | os.O_CLOEXEC)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, AMDKFD_IOC_GET_VERSION, buf)
        facts["kfd_version"] = list(struct.unpack("<II", buf))
        args = bytearray(CREATE_QUEUE_ARGS.pack(0x1000, 0, 0, 0, 4096, BOGUS_GPU_ID, 0, 100, 7, 0, 0, 0, 0, 0, 0))
        try:
            fcntl.ioctl(fd, AMDKFD_IOC_CREATE_QUEUE, args)
            facts["create_queue_bogus_gpu"] = "OK"
        except OSError as e:
            facts["create_queue_bogus_gpu"] = _errno_name(e)
    finally:
        os.close(fd)
    return facts


# functions whose kallsyms presence (and owner) differs between the kernels
KALLSYMS_NAMES = ("execute_queues_cpsch", "update_queue", "kfd_ioctl", "runtime_enable", "runtime_disable",
                  "suspend_single_queue", "resume_single_queue", "suspend_queues", "resume_queues",
                  "kfd_ioctl_runtime_enable", "kfd_ioctl_set_debug_trap")


def _kallsyms() -> dict:
    """kallsyms_<name>: owners ("amdgpu" or "vmlinux") of <name>; clones_<name>: its compiler clones
    (<name>.constprop.0, .isra.0 …), so an inlined function and one that only exists as a clone differ."""
    owners: dict[str, list[str]] = {n: [] for n in KALLSYMS_NAMES}
    clones: dict[str, list[str]] = {n: [] for n in KALLSYMS_NAMES}
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or parts[1] not in "tT":
                continue
            name, owner = parts[2], (parts[3].strip("[]") if len(parts) > 3 else "vmlinux")
            base = name.split(".", 1)[0]
            if name in owners:
                owners[name].append(owner)
            elif base in clones and name != base:
                clones[base].append(f"{name} [{owner}]")
    facts = {f"kallsyms_{k}": sorted(v) for k, v in owners.items()}
    facts.update({f"clones_{k}": sorted(v) for k, v in clones.items()})
    return facts


def _bcc_check() -> dict:
    t0 = time.monotonic()
    try:
        from bcc import BPF

        b = BPF(text=BCC_TEXT)
        compiled = time.monotonic() - t0
        fd = os.open("/dev/kfd", os.O_RDWR)
        fcntl.ioctl(fd, AMDKFD_IOC_GET_VERSION, bytearray(8))
        os.close(fd)
        hits = b["hits"][0].value
        b.cleanup()
        return {"bcc_kprobe_hits": hits, "bcc_compile_s": round(compiled, 1)}
    except Exception as e:  # reported as a fact, checked by the tests
        return {"bcc_error": f"{type(e).__name__}: {e}"[:300]}


def guest_main() -> dict:
    facts: dict = {"kernel": os.uname().release}
    t0 = time.monotonic()
    mp = subprocess.run(["modprobe", "amdgpu"], capture_output=True, text=True)
    facts["modprobe_amdgpu_rc"] = mp.returncode
    facts["modprobe_amdgpu_s"] = round(time.monotonic() - t0, 1)
    if mp.returncode:
        facts["modprobe_amdgpu_error"] = mp.stderr.strip()[-300:]
    facts["dev_kfd"] = os.path.exists("/dev/kfd")
    facts["btf_amdgpu"] = os.path.exists("/sys/kernel/btf/amdgpu")
    facts["tracefs"] = os.path.exists(f"{TRACEFS}/kprobe_events")
    facts["debugfs_dri"] = os.path.isdir("/sys/kernel/debug/dri")
    facts.update(_kallsyms())
    facts["probe_kfd_ioctl"] = _probe("p:gptlab/kfd_ioctl kfd_ioctl cmd=%si:x32")
    facts["probe_update_queue_plain"] = _probe("p:gptlab/uq_plain update_queue")
    facts["probe_update_queue_amdgpu"] = _probe("p:gptlab/uq_amdgpu amdgpu:update_queue")
    facts["probe_execute_queues_cpsch"] = _probe("p:gptlab/eqc execute_queues_cpsch")
    clone = next((c.split()[0] for c in facts["clones_execute_queues_cpsch"]), None)
    if clone:  # 6.12: the function exists only as a .constprop clone; tracefs attaches by its full name
        facts["probe_execute_queues_cpsch_clone"] = _probe(f"p:gptlab/eqc_clone {clone}")
    if facts["probe_kfd_ioctl"] is None:
        with open(f"{TRACEFS}/events/gptlab/kfd_ioctl/enable", "w") as f:
            f.write("1")
        with open(f"{TRACEFS}/trace", "w") as f:
            f.write("")
    if facts["dev_kfd"]:
        facts.update(_kfd_calls())
    if facts["probe_kfd_ioctl"] is None:
        with open(f"{TRACEFS}/events/gptlab/kfd_ioctl/enable", "w") as f:
            f.write("0")
        with open(f"{TRACEFS}/trace") as f:
            cmds = [ln.split("cmd=")[1].split()[0] for ln in f if "kfd_ioctl:" in ln and "cmd=" in ln]
        facts["kprobe_kfd_ioctl_cmds"] = cmds
    with open(f"{TRACEFS}/kprobe_events", "w") as f:
        f.write("")
    if facts["dev_kfd"]:
        facts.update(_bcc_check())
    return facts


# the facts each kernel must show (world.md's table): the recorder's attach planner depends on them
EXPECTED = {
    "6.1": {
        "kfd_version": [1, 11],
        "kallsyms_execute_queues_cpsch": [], "clones_execute_queues_cpsch": [],
        "probe_execute_queues_cpsch": "ENOENT",
        "probe_update_queue_plain": "EADDRNOTAVAIL",  # ipc/sem.c's update_queue is the other one
        "kallsyms_kfd_ioctl_set_debug_trap": [],  # no debugger ABI
    },
    "6.12": {
        "kfd_version": [1, 17],
        "kallsyms_execute_queues_cpsch": [],
        "clones_execute_queues_cpsch": ["execute_queues_cpsch.constprop.0 [amdgpu]"],
        "probe_execute_queues_cpsch": "EINVAL", "probe_execute_queues_cpsch_clone": None,  # 6.12 tracefs: EINVAL for an unknown symbol
        "probe_update_queue_plain": "EINVAL",  # "not unique": vmlinux and amdgpu both define it
        "kallsyms_kfd_ioctl_set_debug_trap": ["amdgpu"], "kallsyms_kfd_ioctl_runtime_enable": ["amdgpu"],
        "kallsyms_suspend_queues": ["amdgpu"], "kallsyms_resume_queues": ["amdgpu"],
        # inlined on 6.12 (no symbol, no clone)
        "kallsyms_runtime_enable": [], "kallsyms_runtime_disable": [], "clones_runtime_enable": [],
        "kallsyms_suspend_single_queue": [], "kallsyms_resume_single_queue": [], "clones_suspend_single_queue": [],
    },
}
COMMON = {  # both kernels
    "modprobe_amdgpu_rc": 0, "dev_kfd": True, "btf_amdgpu": True, "create_queue_bogus_gpu": "EINVAL",
    "kprobe_kfd_ioctl_cmds": [f"{AMDKFD_IOC_GET_VERSION:#x}", f"{AMDKFD_IOC_CREATE_QUEUE:#x}"], "kallsyms_kfd_ioctl": ["amdgpu"],
    "kallsyms_update_queue": ["amdgpu", "vmlinux"], "probe_update_queue_amdgpu": None, "bcc_kprobe_hits": 1,
}


def expected(series: str) -> dict:
    """The facts a healthy guest of `series` reports (key -> exact value)."""
    return {**COMMON, **EXPECTED[series]}


def mismatches(facts: dict, series: str) -> dict:
    """key -> [expected, seen] for every expected fact the guest did not show."""
    return {k: [v, facts.get(k, "<missing>")] for k, v in expected(series).items() if facts.get(k, "<missing>") != v}


def run_checks(lab, timeout_s: float = 300) -> dict:
    """Boot one guest, run the guest checks, return the facts (+ wall_s, ok)."""
    res = lab.python("from gpreempt_trace.lab.selftest import guest_main_json; guest_main_json()",
                     timeout_s=timeout_s, modules=())
    last = res.output.strip().splitlines()[-1:] or [""]
    try:
        facts = json.loads(last[0])
    except ValueError:
        facts = {"error": f"guest checks printed no JSON (rc {res.rc})", "output": res.output[-2000:]}
    facts["rc"] = res.rc
    facts["wall_s"] = round(res.wall_s, 1)
    facts["series"] = lab.series
    facts["mismatches"] = mismatches(facts, lab.series)
    facts["ok"] = res.rc == 0 and not facts["mismatches"]
    return facts


def is_healthy(f: dict, series: str = "6.1") -> bool:
    return not mismatches(f, series)


def guest_main_json() -> None:
    print(json.dumps(guest_main()), flush=True)


if __name__ == "__main__":
    guest_main_json()
    sys.exit(0)
