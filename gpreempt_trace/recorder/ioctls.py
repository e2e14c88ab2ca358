"""The KFD ioctl table of the recorder: AMDKFD_IOC_* names by request number.

The argument layouts and request numbers are defined once, in gpreempt_trace/uapi.py (which also
generates tracers/kfd_uapi.h, the offsets tracers/ioctl.bpf.c reads); this module re-exports the names
its callers use. Names are looked up by _IOC_NR within type 'K' (KFD dispatches on the nr alone and
tolerates size differences); the raw request number is always kept (events.ioctl_nr). ROCm's
out-of-tree numbers 0x80.. are listed too (the ROCm thunk issues 0xC0284B82, its pre-upstream DBG_TRAP).
Scheme B (kernel/ series) adds AMDKFD_IOC_PREEMPT_QUEUES / RESUME_QUEUES from kernel/uapi_scheme_b.json.
"""
from __future__ import annotations

from .. import uapi as _u
from ..uapi import (  # noqa: F401  (re-exported)
    CREATE_QUEUE,
    DBG_TRAP,
    DESTROY_QUEUE,
    GET_VERSION,
    KFD_IOC_TYPE,
    ROCM_DBG_TRAP,
    RUNTIME_ENABLE,
    SET_CU_MASK,
    UAPI_QUEUE_TYPES,
    UPDATE_QUEUE,
    CreateQueueArgs,
    DbgTrapArgs,
    DestroyQueueArgs,
    GetVersionArgs,
    PreemptEntry,
    PreemptQueuesArgs,
    RocmDbgTrapArgs,
    SetCuMaskArgs,
    UpdateQueueArgs,
    ioc,
    ioc_nr,
    ioc_size,
    ioc_type,
)

_IOC_NONE, _IOC_WRITE, _IOC_READ = _u.IOC_NONE, _u.IOC_WRITE, _u.IOC_READ
IOR = lambda nr, size: ioc(_IOC_READ, nr, size)
IOW = lambda nr, size: ioc(_IOC_WRITE, nr, size)
IOWR = lambda nr, size: ioc(_IOC_READ | _IOC_WRITE, nr, size)

# DBG_TRAP ops that name queues
DBG_TRAP_SUSPEND_QUEUES, DBG_TRAP_RESUME_QUEUES = _u.DBG_TRAP_OP["SUSPEND_QUEUES"], _u.DBG_TRAP_OP["RESUME_QUEUES"]
ROCM_DBG_TRAP_NODE_SUSPEND, ROCM_DBG_TRAP_NODE_RESUME = 3, 4  # ROCm 0x82

# ---- names by _IOC_NR within type 'K' ----------------------------------------------------------
NAMES_BY_NR: dict[int, str] = {
    0x01: "AMDKFD_IOC_GET_VERSION",
    0x02: "AMDKFD_IOC_CREATE_QUEUE",
    0x03: "AMDKFD_IOC_DESTROY_QUEUE",
    0x04: "AMDKFD_IOC_SET_MEMORY_POLICY",
    0x05: "AMDKFD_IOC_GET_CLOCK_COUNTERS",
    0x06: "AMDKFD_IOC_GET_PROCESS_APERTURES",
    0x07: "AMDKFD_IOC_UPDATE_QUEUE",
    0x08: "AMDKFD_IOC_CREATE_EVENT",
    0x09: "AMDKFD_IOC_DESTROY_EVENT",
    0x0A: "AMDKFD_IOC_SET_EVENT",
    0x0B: "AMDKFD_IOC_RESET_EVENT",
    0x0C: "AMDKFD_IOC_WAIT_EVENTS",
    0x0D: "AMDKFD_IOC_DBG_REGISTER_DEPRECATED",
    0x0E: "AMDKFD_IOC_DBG_UNREGISTER_DEPRECATED",
    0x0F: "AMDKFD_IOC_DBG_ADDRESS_WATCH_DEPRECATED",
    0x10: "AMDKFD_IOC_DBG_WAVE_CONTROL_DEPRECATED",
    0x11: "AMDKFD_IOC_SET_SCRATCH_BACKING_VA",
    0x12: "AMDKFD_IOC_GET_TILE_CONFIG",
    0x13: "AMDKFD_IOC_SET_TRAP_HANDLER",
    0x14: "AMDKFD_IOC_GET_PROCESS_APERTURES_NEW",
    0x15: "AMDKFD_IOC_ACQUIRE_VM",
    0x16: "AMDKFD_IOC_ALLOC_MEMORY_OF_GPU",
    0x17: "AMDKFD_IOC_FREE_MEMORY_OF_GPU",
    0x18: "AMDKFD_IOC_MAP_MEMORY_TO_GPU",
    0x19: "AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU",
    0x1A: "AMDKFD_IOC_SET_CU_MASK",
    0x1B: "AMDKFD_IOC_GET_QUEUE_WAVE_STATE",
    0x1C: "AMDKFD_IOC_GET_DMABUF_INFO",
    0x1D: "AMDKFD_IOC_IMPORT_DMABUF",
    0x1E: "AMDKFD_IOC_ALLOC_QUEUE_GWS",
    0x1F: "AMDKFD_IOC_SMI_EVENTS",
    0x20: "AMDKFD_IOC_SVM",
    0x21: "AMDKFD_IOC_SET_XNACK_MODE",
    0x22: "AMDKFD_IOC_CRIU_OP",
    0x23: "AMDKFD_IOC_AVAILABLE_MEMORY",
    0x24: "AMDKFD_IOC_EXPORT_DMABUF",  # 1.12
    0x25: "AMDKFD_IOC_RUNTIME_ENABLE",  # 1.13
    0x26: "AMDKFD_IOC_DBG_TRAP",  # 1.13
    0x27: "AMDKFD_IOC_CREATE_PROCESS",  # 1.19
    # ROCm (out of tree)
    0x80: "AMDKFD_IOC_IPC_IMPORT_HANDLE",
    0x81: "AMDKFD_IOC_IPC_EXPORT_HANDLE",
    0x82: "AMDKFD_IOC_DBG_TRAP_DEPRECATED",  # ROCm's pre-upstream DBG_TRAP (0xC0284B82)
    0x83: "AMDKFD_IOC_CROSS_MEMORY_COPY_DEPRECATED",
    0x84: "AMDKFD_IOC_RLC_SPM",
    0x85: "AMDKFD_IOC_PC_SAMPLE",
    0x86: "AMDKFD_IOC_PROFILER",
}

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
