"""The lab's self-checks: facts about the real 6.1 KFD that the recorder's attach planner relies on.

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

TRACEFS = "/sys/kernel/tracing"
# uapi/linux/kfd_ioctl.h (6.1): _IOR('K', 1, 8-byte get_version_args), _IOWR('K', 2, 88-byte create_queue_args)
AMDKFD_IOC_GET_VERSION = 0x80084B01
AMDKFD_IOC_CREATE_QUEUE = 0xC0584B02
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


def _kallsyms() -> dict:
    owners: dict[str, list[str]] = {"execute_queues_cpsch": [], "update_queue": [], "kfd_ioctl": []}
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] in owners:
                owners[parts[2]].append(parts[3].strip("[]") if len(parts) > 3 else "vmlinux")
    return {f"kallsyms_{k}": sorted(v) for k, v in owners.items()}


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
    facts["ok"] = res.rc == 0 and is_healthy(facts)
    return facts


def is_healthy(f: dict) -> bool:
    return (f.get("modprobe_amdgpu_rc") == 0 and f.get("dev_kfd") is True and f.get("kfd_version") == [1, 11]
            and f.get("create_queue_bogus_gpu") == "EINVAL" and f.get("btf_amdgpu") is True
            and f.get("kprobe_kfd_ioctl_cmds") == ["0x80084b01", "0xc0584b02"]
            and f.get("kallsyms_execute_queues_cpsch") == [] and f.get("probe_update_queue_amdgpu") is None
            and f.get("probe_update_queue_plain") is not None and f.get("bcc_kprobe_hits") == 1)


def guest_main_json() -> None:
    print(json.dumps(guest_main()), flush=True)


if __name__ == "__main__":
    guest_main_json()
    sys.exit(0)
