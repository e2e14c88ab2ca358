"""Replay the KFD queue calls of an online + offline pair on a device, as real ioctl syscalls.

    python -m gpreempt_trace.workloads.kfd_calls [--kfd-path PATH] [--rounds N]

Two child processes play the models: `online` creates 2 AQL compute queues at priority 15 and one
SDMA queue, `offline` 4 compute queues at priority 0 and one SDMA queue. The parent then plays a
scheme-A controller: N rounds of DBG_TRAP SUSPEND_QUEUES / RESUME_QUEUES naming offline's queue ids
0..3, then both children destroy their queues. On /dev/kfd of a real GPU this creates real queues;
on another path (the demo uses /dev/null, where every call fails with ENOTTY) it exercises the
recorder's ioctl path with the exact argument structs ROCm passes. Prints one line per process.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys

from ..contracts import uapi as I  # the argument structs and request numbers (one definition)

GPU_ID = 0xF7BC  # first MI308X node of the embedded sample
QTYPE = {name: number for number, name in I.UAPI_QUEUE_TYPES.items()}  # the uapi map, inverted
ROLES = {
    "online": [("compute_aql", 15), ("compute_aql", 15), ("sdma", 15)],
    "offline": [("compute", 0), ("compute", 0), ("compute", 0), ("compute", 0), ("sdma", 0)],
}


class _Kfd:
    def __init__(self, path: str):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = os.open(path, os.O_RDWR)
        self.calls = self.failed = 0
        self.last_errno = 0

    def ioctl(self, request: int, arg) -> int:
        ret = self.libc.ioctl(self.fd, ctypes.c_ulong(request), ctypes.byref(arg))
        self.calls += 1
        if ret < 0:
            self.failed += 1
            self.last_errno = ctypes.get_errno()
        return ret


def play_model(path: str, role: str) -> str:
    kfd = _Kfd(path)
    kfd.ioctl(I.GET_VERSION, I.GetVersionArgs())
    ids = []
    for k, (qtype, prio) in enumerate(ROLES[role]):
        a = I.CreateQueueArgs(ring_base_address=0x7F0000000000 + (os.getpid() << 24) + k * 0x100000, ring_size=1 << 20,
                              gpu_id=GPU_ID, queue_type=QTYPE[qtype], queue_percentage=100, queue_priority=prio)
        if kfd.ioctl(I.CREATE_QUEUE, a) == 0:
            ids.append(a.queue_id)
    for qid in ids or range(len(ROLES[role])):
        kfd.ioctl(I.DESTROY_QUEUE, I.DestroyQueueArgs(queue_id=qid))
    return f"{role} pid {os.getpid()}: {kfd.calls} KFD calls, {kfd.failed} failed (last errno {kfd.last_errno})"


def play_controller(path: str, target_pid: int, rounds: int) -> str:
    kfd = _Kfd(path)
    ids = (ctypes.c_uint32 * 4)(0, 1, 2, 3)
    for _ in range(rounds):
        kfd.ioctl(I.DBG_TRAP, I.dbg_trap_args(target_pid, "SUSPEND_QUEUES", queue_array_ptr=ctypes.addressof(ids), num_queues=4, grace_period=0))
        kfd.ioctl(I.DBG_TRAP, I.dbg_trap_args(target_pid, "RESUME_QUEUES", queue_array_ptr=ctypes.addressof(ids), num_queues=4))
    return f"controller pid {os.getpid()}: {kfd.calls} DBG_TRAP calls on pid {target_pid}, {kfd.failed} failed"


def _say(line: str, stream=None) -> None:
    """One write per line: the three processes share the terminal or pipe."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


def _play(fn, *args) -> bool:
    """Run one role; its result or its failure is one line. True when it succeeded."""
    try:
        _say(fn(*args))
        return True
    except Exception as e:  # noqa: BLE001 - reported in one line, the exit code says it
        _say(f"{fn.__name__} pid {os.getpid()} failed: {e.__class__.__name__}: {e}", sys.stderr)
        return False


def _spawn(fn, *args) -> int:
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = _play(fn, *args)
        finally:
            os._exit(0 if ok else 1)
    return pid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kfd-path", default="/dev/kfd")
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args(argv)
    if not os.path.exists(a.kfd_path):
        print(f"{a.kfd_path} does not exist: give --kfd-path (e.g. /dev/null to exercise the recorder)", file=sys.stderr)
        return 1
    online = _spawn(play_model, a.kfd_path, "online")
    offline = _spawn(play_model, a.kfd_path, "offline")
    controller_ok = _play(play_controller, a.kfd_path, offline, a.rounds)
    failed = [pid for pid in (online, offline) if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    if failed:
        _say(f"replay child(ren) {failed} failed", sys.stderr)
    return 0 if controller_ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
