"""The KFD ioctl table: AMDKFD_IOC_* names by request number, and the argument layouts the ioctl
tracepoint path decodes (tracers/ioctl.bpf.c reads the same offsets from user memory).

Sources: the uapi header of Linux 6.1 (KFD ioctl 1.11, /usr/include/linux/kfd_ioctl.h), newer uapi
(1.12 EXPORT_DMABUF, 1.13 RUNTIME_ENABLE + DBG_TRAP, CREATE_PROCESS) and ROCm's out-of-tree numbers
0x80.. (the ROCm thunk issues e.g. 0xC0284B82, its pre-upstream DBG_TRAP, which no upstream header
names). KFD dispatches on `_IOC_NR` alone and tolerates size differences, so names are looked up by the
number within type 'K'; the raw request number is always kept (events.ioctl_nr).

Scheme B (kernel/ series) adds AMDKFD_IOC_PREEMPT_QUEUES / RESUME_QUEUES; their numbers are read from
kernel/uapi_scheme_b.json when that file exists.
"""
from __future__ import annotations

import ctypes
import json
from functools import lru_cache

from .. import resources

KFD_IOC_TYPE = 0x4B  # 'K'
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
SCHEME_B_JSON = resources.scheme_b_uapi()


def ioc(direction: int, nr: int, size: int, typ: int = KFD_IOC_TYPE) -> int:
    """Linux _IOC(dir, type, nr, size) (asm-generic layout: nr 8 bits, type 8, size 14, dir 2)."""
    return (direction << 30) | (size << 16) | (typ << 8) | nr


def ioc_type(cmd: int) -> int:
    return (cmd >> 8) & 0xFF


def ioc_nr(cmd: int) -> int:
    return cmd & 0xFF


def ioc_size(cmd: int) -> int:
    return (cmd >> 16) & 0x3FFF


IOR = lambda nr, size: ioc(_IOC_READ, nr, size)  # noqa: E731
IOW = lambda nr, size: ioc(_IOC_WRITE, nr, size)  # noqa: E731
IOWR = lambda nr, size: ioc(_IOC_READ | _IOC_WRITE, nr, size)  # noqa: E731


# ---- argument layouts (uapi; little-endian, natural alignment) --------------------------------
class GetVersionArgs(ctypes.Structure):
    _fields_ = [("major_version", ctypes.c_uint32), ("minor_version", ctypes.c_uint32)]


class CreateQueueArgs(ctypes.Structure):  # 88 bytes in 6.1 (1.11); 1.17+ appends fields (96)
    _fields_ = [
        ("ring_base_address", ctypes.c_uint64),
        ("write_pointer_address", ctypes.c_uint64),
        ("read_pointer_address", ctypes.c_uint64),
        ("doorbell_offset", ctypes.c_uint64),  # out
        ("ring_size", ctypes.c_uint32),
        ("gpu_id", ctypes.c_uint32),
        ("queue_type", ctypes.c_uint32),
        ("queue_percentage", ctypes.c_uint32),
        ("queue_priority", ctypes.c_uint32),
        ("queue_id", ctypes.c_uint32),  # out
        ("eop_buffer_address", ctypes.c_uint64),
        ("eop_buffer_size", ctypes.c_uint64),
        ("ctx_save_restore_address", ctypes.c_uint64),
        ("ctx_save_restore_size", ctypes.c_uint32),
        ("ctl_stack_size", ctypes.c_uint32),
    ]


class DestroyQueueArgs(ctypes.Structure):
    _fields_ = [("queue_id", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class UpdateQueueArgs(ctypes.Structure):
    _fields_ = [
        ("ring_base_address", ctypes.c_uint64),
        ("queue_id", ctypes.c_uint32),
        ("ring_size", ctypes.c_uint32),
        ("queue_percentage", ctypes.c_uint32),
        ("queue_priority", ctypes.c_uint32),
    ]


class SetCuMaskArgs(ctypes.Structure):
    _fields_ = [("queue_id", ctypes.c_uint32), ("num_cu_mask", ctypes.c_uint32), ("cu_mask_ptr", ctypes.c_uint64)]


class DbgTrapArgs(ctypes.Structure):
    """Upstream 1.13+ `kfd_ioctl_dbg_trap_args` (32 bytes): pid, op, then a 24-byte union. Shown here
    with the SUSPEND_QUEUES view of the union; RESUME_QUEUES puts queue_array_ptr at 8, num_queues at 16."""

    _fields_ = [
        ("pid", ctypes.c_uint32),
        ("op", ctypes.c_uint32),
        ("u0", ctypes.c_uint64),  # suspend: exception_mask; resume: queue_array_ptr
        ("u1", ctypes.c_uint64),  # suspend: queue_array_ptr; resume: num_queues (low 32 bits)
        ("u2", ctypes.c_uint32),  # suspend: num_queues
        ("u3", ctypes.c_uint32),  # suspend: grace_period
    ]


class RocmDbgTrapArgs(ctypes.Structure):
    """ROCm's pre-upstream `kfd_ioctl_dbg_trap_args` (40 bytes, nr 0x82; ROCm now calls it
    _deprecated). NODE_SUSPEND (3): ptr = queue id array, data1 = num_queues, data2 = grace period;
    NODE_RESUME (4): ptr, data1."""

    _fields_ = [
        ("exception_mask", ctypes.c_uint64),
        ("ptr", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("op", ctypes.c_uint32),
        ("data1", ctypes.c_uint32),
        ("data2", ctypes.c_uint32),
        ("data3", ctypes.c_uint32),
        ("data4", ctypes.c_uint32),
    ]


class PreemptQueuesArgs(ctypes.Structure):
    """Scheme B `kfd_ioctl_preempt_queues_args` (24 bytes; kernel/uapi_scheme_b.json), shared by
    AMDKFD_IOC_PREEMPT_QUEUES and RESUME_QUEUES. The array holds (u32 queue_id, s32 result) entries."""

    _fields_ = [
        ("queue_array_ptr", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("num_queues", ctypes.c_uint32),
        ("grace_period", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class PreemptEntry(ctypes.Structure):
    _fields_ = [("queue_id", ctypes.c_uint32), ("result", ctypes.c_int32)]


# DBG_TRAP ops that name queues
DBG_TRAP_SUSPEND_QUEUES, DBG_TRAP_RESUME_QUEUES = 6, 7  # upstream 1.13+
ROCM_DBG_TRAP_NODE_SUSPEND, ROCM_DBG_TRAP_NODE_RESUME = 3, 4  # ROCm 0x82

# uapi KFD_IOC_QUEUE_TYPE_* -> schema.QUEUE_TYPES name
UAPI_QUEUE_TYPES = {0: "compute", 1: "sdma", 2: "compute_aql", 3: "sdma_xgmi", 4: "sdma_by_eng_id"}

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

# full request numbers of the calls whose arguments are decoded (6.1 sizes; newer sizes name the same)
GET_VERSION = IOR(0x01, ctypes.sizeof(GetVersionArgs))  # 0x80084B01
CREATE_QUEUE = IOWR(0x02, ctypes.sizeof(CreateQueueArgs))  # 0xC0584B02
DESTROY_QUEUE = IOWR(0x03, ctypes.sizeof(DestroyQueueArgs))  # 0xC0084B03
UPDATE_QUEUE = IOW(0x07, ctypes.sizeof(UpdateQueueArgs))  # 0x40184B07
SET_CU_MASK = IOW(0x1A, ctypes.sizeof(SetCuMaskArgs))  # 0x40104B1A
DBG_TRAP = IOWR(0x26, ctypes.sizeof(DbgTrapArgs))  # 0xC0204B26
ROCM_DBG_TRAP = IOWR(0x82, ctypes.sizeof(RocmDbgTrapArgs))  # 0xC0284B82


@lru_cache(maxsize=1)
def scheme_b() -> dict[str, int]:
    """{name: request number} of the scheme-B ioctls, from kernel/uapi_scheme_b.json (empty if absent).

    Accepts either {"AMDKFD_IOC_X": 0x..} or {"AMDKFD_IOC_X": {"request"|"cmd"|"number": ...}} at the
    top level or under "ioctls"; numbers may be ints or hex strings."""
    try:
        doc = json.loads(SCHEME_B_JSON.read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, int] = {}

    def num(v):
        if isinstance(v, int):
            return v
        if isinstance(v, str):
            try:
                return int(v, 0)
            except ValueError:
                return None
        if isinstance(v, dict):
            for k in ("request", "cmd", "number", "value", "ioctl"):
                if k in v and num(v[k]) is not None:
                    return num(v[k])
        return None

    for scope in (doc, doc.get("ioctls", {}) if isinstance(doc, dict) else {}):
        if isinstance(scope, dict):
            for k, v in scope.items():
                n = num(v)
                if k.startswith("AMDKFD_IOC_") and n is not None and ioc_type(n) == KFD_IOC_TYPE:
                    found[k] = n
    return found


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
