"""Issue KFD ioctl numbers with known argument structs (uapi layouts) on a device, for the recorder tests.

    python tests/testing/ioctl_calls.py PATH N [--fork] [--other PATH2]

Each round i issues, in this order, one call of each entry of SEQUENCE with argument values that are a
function of (kind, i) (see `args_for`), so a test can predict every decoded field. On /dev/null every
call fails with ENOTTY (ret -25). With --fork the rounds run in a forked child (descendant tracking);
with --other, each round also issues the same KFD numbers on PATH2 (must NOT be recorded when the
recorder filters on PATH's device) and one non-KFD ioctl (TCGETS) on PATH.
Prints one JSON line: {"pid": ..., "calls": ..., "errno": ...}.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from gpreempt_trace.contracts import uapi  # noqa: E402
from gpreempt_trace.recorder import ioctls as I  # noqa: E402

UNKNOWN = I.IOWR(0x7E, 16)  # a 'K' number nobody names
SCHEME_B = I.scheme_b()  # {name: request} when kernel/uapi_scheme_b.json exists
SEQUENCE = ("create", "destroy", "update", "cu_mask", "dbg_suspend", "dbg_resume", "rocm_suspend", "unknown", "version") + (
    ("preempt", "resume") if SCHEME_B else ())
REQUEST = {
    "create": I.CREATE_QUEUE, "destroy": I.DESTROY_QUEUE, "update": I.UPDATE_QUEUE, "cu_mask": I.SET_CU_MASK,
    "dbg_suspend": I.DBG_TRAP, "dbg_resume": I.DBG_TRAP, "rocm_suspend": I.ROCM_DBG_TRAP, "unknown": UNKNOWN,
    "version": I.GET_VERSION,
    **({"preempt": SCHEME_B["AMDKFD_IOC_PREEMPT_QUEUES"], "resume": SCHEME_B["AMDKFD_IOC_RESUME_QUEUES"]} if SCHEME_B else {}),
}
QTYPE_NAMES = {0: "compute", 1: "sdma", 2: "compute_aql", 3: "sdma_xgmi"}


def args_for(kind: str, i: int):
    """(ctypes argument object, keep-alive objects, expected decoded columns) of call `kind` in round i."""
    keep = []
    if kind == "create":
        a = I.CreateQueueArgs(ring_base_address=0x7F0000000000 + i * 0x1000, ring_size=4096 << (i % 4), gpu_id=0x1234 + i % 3,
                              queue_type=i % 4, queue_percentage=i % 101, queue_priority=i % 16, queue_id=999, doorbell_offset=77)
        exp = {"ring_base": 0x7F0000000000 + i * 0x1000, "ring_size": 4096 << (i % 4), "gpu_id": 0x1234 + i % 3,
               "queue_type": QTYPE_NAMES[i % 4], "queue_percentage": i % 101, "priority": i % 16,
               "queue_id": None, "doorbell_off": None}  # outputs only on success
    elif kind == "destroy":
        a = I.DestroyQueueArgs(queue_id=i)
        exp = {"queue_id": i}
    elif kind == "update":
        a = I.UpdateQueueArgs(ring_base_address=0x10000 + i, queue_id=i + 1, ring_size=8192 + i, queue_percentage=50, queue_priority=i % 16)
        exp = {"ring_base": 0x10000 + i, "queue_id": i + 1, "ring_size": 8192 + i, "queue_percentage": 50, "priority": i % 16}
    elif kind == "cu_mask":
        mask = (ctypes.c_uint32 * 2)(0xFFFF, 0xFF)
        keep.append(mask)
        a = I.SetCuMaskArgs(queue_id=i + 7, num_cu_mask=64, cu_mask_ptr=ctypes.addressof(mask))
        exp = {"queue_id": i + 7}
    elif kind == "dbg_suspend":
        ids = (ctypes.c_uint32 * 3)(i, i + 1, i + 2)
        keep.append(ids)
        a = uapi.dbg_trap_args(4242 + i, "SUSPEND_QUEUES", exception_mask=0, queue_array_ptr=ctypes.addressof(ids), num_queues=3, grace_period=100 + i)
        exp = {"target_pid": 4242 + i, "dbg_op": 6, "num_queues": 3, "grace_period": 100 + i, "queue_ids": [i, i + 1, i + 2]}
    elif kind == "dbg_resume":
        ids = (ctypes.c_uint32 * 2)(i, i + 5)
        keep.append(ids)
        a = uapi.dbg_trap_args(5000 + i, "RESUME_QUEUES", queue_array_ptr=ctypes.addressof(ids), num_queues=2)
        exp = {"target_pid": 5000 + i, "dbg_op": 7, "num_queues": 2, "queue_ids": [i, i + 5], "grace_period": None}
    elif kind == "rocm_suspend":
        ids = (ctypes.c_uint32 * 20)(*range(i, i + 20))
        keep.append(ids)
        a = I.RocmDbgTrapArgs(ptr=ctypes.addressof(ids), pid=6000 + i, op=I.ROCM_DBG_TRAP_NODE_SUSPEND, data1=20, data2=7)
        exp = {"target_pid": 6000 + i, "dbg_op": 3, "num_queues": 20, "grace_period": 7, "queue_ids": list(range(i, i + 16))}
    elif kind in ("preempt", "resume"):
        ids = (I.PreemptEntry * 4)(*[I.PreemptEntry(queue_id=i + k, result=-1) for k in range(4)])
        keep.append(ids)
        a = I.PreemptQueuesArgs(queue_array_ptr=ctypes.addressof(ids), pid=7000 + i, num_queues=4, grace_period=0xFFFFFFFF, flags=0)
        exp = {"target_pid": 7000 + i, "num_queues": 4, "queue_ids": [i, i + 1, i + 2, i + 3],
               "grace_period": 0xFFFFFFFF if kind == "preempt" else None}
    elif kind == "unknown":
        a = (ctypes.c_uint8 * 16)()
        exp = {}
    elif kind == "version":
        a = I.GetVersionArgs()
        exp = {}
    else:
        raise ValueError(kind)
    return a, keep, exp


def issue(path: str, n: int, other: str | None = None) -> tuple[int, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDWR)
    fd2 = os.open(other, os.O_RDWR) if other else -1
    calls, err = 0, 0
    for i in range(n):
        for kind in SEQUENCE:
            a, _keep, _ = args_for(kind, i)
            libc.ioctl(fd, ctypes.c_ulong(REQUEST[kind]), ctypes.byref(a))
            err = ctypes.get_errno()
            calls += 1
            if fd2 >= 0:
                libc.ioctl(fd2, ctypes.c_ulong(REQUEST[kind]), ctypes.byref(a))
        if fd2 >= 0:
            buf = (ctypes.c_uint8 * 64)()
            libc.ioctl(fd, ctypes.c_ulong(0x5401), ctypes.byref(buf))  # TCGETS: not a KFD number
    return calls, err


def main(argv: list[str]) -> int:
    path, n = argv[0], int(argv[1])
    other = argv[argv.index("--other") + 1] if "--other" in argv else None
    if "--fork" in argv:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            calls, err = issue(path, n, other)
            os.write(w, json.dumps({"pid": os.getpid(), "calls": calls, "errno": err}).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 4096):
            data += chunk
        os.waitpid(pid, 0)
        print(data.decode())
        return 0
    calls, err = issue(path, n, other)
    print(json.dumps({"pid": os.getpid(), "calls": calls, "errno": err}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
