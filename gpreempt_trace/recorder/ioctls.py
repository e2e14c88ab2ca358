"""The KFD ioctl table of the recorder: AMDKFD_IOC_* names by request number.

The argument layouts and request numbers are defined once, in gpreempt_trace/contracts/uapi.py (which also
generates tracers/kfd_uapi.h, the offsets tracers/ioctl.bpf.c reads); this module re-exports the names
its callers use. Names are looked up by _IOC_NR within type 'K' (KFD dispatches on the nr alone and
tolerates size differences); the raw request number is always kept (events.ioctl_nr). ROCm's
out-of-tree numbers from 0x80 are listed too (the ROCm thunk issues AMDKFD_IOC_DBG_TRAP_DEPRECATED, its
pre-upstream DBG_TRAP). The table is uapi.IOCTL_NRS.
Scheme B (kernel/ series) adds AMDKFD_IOC_PREEMPT_QUEUES / RESUME_QUEUES from kernel/uapi_scheme_b.json.
"""
from __future__ import annotations

from ..contracts import uapi as _u
from ..contracts.uapi import CREATE_QUEUE, DBG_TRAP, DESTROY_QUEUE, GET_VERSION, KFD_IOC_TYPE, ROCM_DBG_TRAP, RUNTIME_ENABLE, SET_CU_MASK, UAPI_QUEUE_TYPES, UPDATE_QUEUE, CreateQueueArgs, DbgTrapArgs, DestroyQueueArgs, GetVersionArgs, PreemptEntry, PreemptQueuesArgs, RocmDbgTrapArgs, SetCuMaskArgs, UpdateQueueArgs, ioc, ioc_nr, ioc_size, ioc_type

_IOC_NONE, _IOC_WRITE, _IOC_READ = _u.IOC_NONE, _u.IOC_WRITE, _u.IOC_READ
IOR = lambda nr, size: ioc(_IOC_READ, nr, size)
IOW = lambda nr, size: ioc(_IOC_WRITE, nr, size)
IOWR = lambda nr, size: ioc(_IOC_READ | _IOC_WRITE, nr, size)

# DBG_TRAP ops that name queues
DBG_TRAP_SUSPEND_QUEUES, DBG_TRAP_RESUME_QUEUES = _u.DBG_TRAP_OP["SUSPEND_QUEUES"], _u.DBG_TRAP_OP["RESUME_QUEUES"]
ROCM_DBG_TRAP_NODE_SUSPEND, ROCM_DBG_TRAP_NODE_RESUME = _u.ROCM_DBG_TRAP_OP["NODE_SUSPEND"], _u.ROCM_DBG_TRAP_OP["NODE_RESUME"]

# ---- names by _IOC_NR within type 'K' (uapi.IOCTL_NRS, checked against the headers) --------------
NAMES_BY_NR: dict[int, str] = {nr: name for name, (nr, _) in _u.IOCTL_NRS.items()}

def scheme_b() -> dict[str, int]:
    """{name: request number} of the scheme-B ioctls (kernel/uapi_scheme_b.json, via uapi.scheme_b())."""
    return {name: i.request for name, i in _u.scheme_b().ioctls.items()}


def names_by_nr() -> dict[int, str]:
    table = dict(NAMES_BY_NR)
    for name, cmd in scheme_b().items():
        table.setdefault(ioc_nr(cmd), name)
    return table


def ioctl_name(cmd: int) -> str | None:
    """AMDKFD_IOC_* name of a request number; None when it is not a KFD ('K') number we know."""
    if ioc_type(cmd) != KFD_IOC_TYPE:
        return None
    return names_by_nr().get(ioc_nr(cmd))


def known_nrs() -> list[int]:
    """_IOC_NR values the BPF side accepts when the KFD device cannot be resolved."""
    return sorted(names_by_nr())


def bpf_cflags() -> list[str]:
    """-D flags for tracers/ioctl.bpf.c describing the scheme-B numbers (when the kernel series has them)."""
    out = []
    sb = scheme_b()
    for name, macro in (("AMDKFD_IOC_PREEMPT_QUEUES", "GPT_NR_PREEMPT_QUEUES"), ("AMDKFD_IOC_RESUME_QUEUES", "GPT_NR_RESUME_QUEUES")):
        if name in sb:
            out.append(f"-D{macro}={ioc_nr(sb[name])}")
    return out
