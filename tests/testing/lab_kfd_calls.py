"""In the lab guest (real kernel, amdgpu loaded, no GPU): open /dev/kfd, issue AMDKFD_IOC_GET_VERSION
(ret 0) and a CREATE_QUEUE naming a gpu_id that does not exist (ret -EINVAL). Prints one JSON line with
the pid, the version and both return values as the caller saw them.

`--debugger` (KFD 1.13+, the 6.12 lab): a forked target opens /dev/kfd and does RUNTIME_ENABLE; this
process, its ptrace parent (PTRACE_SEIZE), does DBG_TRAP ENABLE (dbg_fd: a pipe), SUSPEND_QUEUES,
RESUME_QUEUES and DISABLE on it. Prints one JSON line: both pids, every return value as seen, and the
queue ids SUSPEND/RESUME wrote back."""
import ctypes
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from gpreempt_trace.recorder import ioctls as I  # noqa: E402

BOGUS_GPU_ID = 0xDEAD


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/kfd", os.O_RDWR | os.O_CLOEXEC)
    ver = I.GetVersionArgs()
    r1 = libc.ioctl(fd, ctypes.c_ulong(I.GET_VERSION), ctypes.byref(ver))
    e1 = ctypes.get_errno() if r1 < 0 else 0
    cq = I.CreateQueueArgs(gpu_id=BOGUS_GPU_ID, queue_type=2, queue_percentage=100, queue_priority=7,
                           ring_size=4096, ring_base_address=0x100000)
    r2 = libc.ioctl(fd, ctypes.c_ulong(I.CREATE_QUEUE), ctypes.byref(cq))
    e2 = ctypes.get_errno() if r2 < 0 else 0
    print(json.dumps({"pid": os.getpid(), "version": [ver.major_version, ver.minor_version],
                      "get_version": -e1 if r1 < 0 else r1, "create_queue": -e2 if r2 < 0 else r2}))
    return 0


PTRACE_SEIZE = 0x4206
SUSPEND_IDS = (5, 6)  # no such queues: KFD acts on none and writes each id back with the INVALID bit
GRACE_PERIOD = 9


def _ioctl(libc, fd: int, req: int, arg) -> int:
    r = libc.ioctl(fd, ctypes.c_ulong(req), ctypes.byref(arg))
    return -ctypes.get_errno() if r < 0 else r


def debugger() -> int:
    from gpreempt_trace.contracts import uapi as U

    libc = ctypes.CDLL(None, use_errno=True)
    go_r, go_w = os.pipe()  # child -> parent: runtime enabled (1 byte: its ret + 128)
    end_r, end_w = os.pipe()  # parent -> child: done, exit
    pid = os.fork()
    if pid == 0:
        os.close(go_r)
        os.close(end_w)
        fd = os.open("/dev/kfd", os.O_RDWR | os.O_CLOEXEC)
        rt = U.RuntimeEnableArgs(r_debug=0, mode_mask=U.CONSTANTS["KFD_RUNTIME_ENABLE_MODE_ENABLE_MASK"][0])
        r = _ioctl(libc, fd, U.RUNTIME_ENABLE, rt)
        os.write(go_w, bytes([r + 128]))
        os.read(end_r, 1)
        os._exit(0)
    os.close(go_w)
    os.close(end_r)
    out = {"debugger_pid": os.getpid(), "target_pid": pid}
    out["runtime_enable"] = os.read(go_r, 1)[0] - 128
    out["ptrace_seize"] = 0 if libc.ptrace(ctypes.c_long(PTRACE_SEIZE), pid, None, None) == 0 else -ctypes.get_errno()
    fd = os.open("/dev/kfd", os.O_RDWR | os.O_CLOEXEC)
    ev_r, ev_w = os.pipe()  # dbg_fd must be a pipe (an eventfd refuses KFD's 1-byte write)
    rinfo = U.RuntimeInfo()
    en = U.dbg_trap_args(pid, "ENABLE", exception_mask=0, rinfo_ptr=ctypes.addressof(rinfo),
                         rinfo_size=ctypes.sizeof(rinfo), dbg_fd=ev_w)
    out["enable"] = _ioctl(libc, fd, U.DBG_TRAP, en)
    out["runtime_state"] = rinfo.runtime_state
    ids = (ctypes.c_uint32 * len(SUSPEND_IDS))(*SUSPEND_IDS)
    sus = U.dbg_trap_args(pid, "SUSPEND_QUEUES", exception_mask=0, queue_array_ptr=ctypes.addressof(ids),
                          num_queues=len(SUSPEND_IDS), grace_period=GRACE_PERIOD)
    out["suspend"] = _ioctl(libc, fd, U.DBG_TRAP, sus)
    out["suspend_ids"] = list(ids)
    ids[:] = SUSPEND_IDS
    res = U.dbg_trap_args(pid, "RESUME_QUEUES", queue_array_ptr=ctypes.addressof(ids), num_queues=len(SUSPEND_IDS))
    out["resume"] = _ioctl(libc, fd, U.DBG_TRAP, res)
    out["resume_ids"] = list(ids)
    out["disable"] = _ioctl(libc, fd, U.DBG_TRAP, U.dbg_trap_args(pid, "DISABLE"))
    out["ioctls"] = {"RUNTIME_ENABLE": U.RUNTIME_ENABLE, "DBG_TRAP": U.DBG_TRAP}
    os.write(end_w, b"x")
    os.waitpid(pid, 0)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(debugger() if sys.argv[1:] == ["--debugger"] else main())
