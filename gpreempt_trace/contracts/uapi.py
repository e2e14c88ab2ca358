"""KFD uapi: the one definition of the ioctl request numbers and argument layouts the toolkit uses.

Everything else is generated from the tables below (no other module types a request number, nr or
queue-type value; tests/test_uapi.py checks that too):
- ctypes classes (`struct("kfd_ioctl_dbg_trap_args")`, the named classes at the bottom), used by the
  controller (gpreempt_trace.control), the workloads and recorder/ioctls.py;
- tracers/kfd_uapi.h, the offset/size macros tracers/ioctl.bpf.c reads user memory with, and its
  uapi queue type -> enum gpt_qtype map (`make codegen` rewrites it; tests/test_uapi.py checks it is current);
- the recorder's ioctl names by _IOC_NR (IOCTL_NRS; recorder/ioctls.py), doctor's GET_VERSION, the
  synthetic KFD model's and the lab guest's request numbers;
- the status bits the KFD writes back into DBG_TRAP queue ids, decoded once (queue_id_status,
  split_queue_id: decode.py's events.queue_id_status, the controller's per-queue results);
- the compile check of tests/test_uapi.py: gcc asserts every sizeof/offsetof/request number/ioctl nr/constant
  below against the system <linux/kfd_ioctl.h> (6.1, KFD ioctl 1.11) and Debian's 6.12.117 uapi header
  (KFD ioctl 1.17) — each struct against the headers whose minor version has it.

Layouts: little-endian, natural alignment, as the asm-generic uapi. A field tagged with a minor version
exists from that KFD ioctl minor version on (struct growth is append-only). Scheme B (kernel/ series) is
read from kernel/uapi_scheme_b.json in exactly one shape (see `scheme_b()`); ROCm's out-of-tree
DBG_TRAP 0xC0284B82 has no header on any machine here: its layout is from ROCm's thunk source.
"""
from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from functools import cache, lru_cache

KFD_IOC_TYPE = 0x4B  # 'K'
IOC_NONE, IOC_WRITE, IOC_READ = 0, 1, 2
DIRS = {"r": IOC_READ, "w": IOC_WRITE, "rw": IOC_READ | IOC_WRITE}


def ioc(direction: int, nr: int, size: int, typ: int = KFD_IOC_TYPE) -> int:
    """Linux _IOC(dir, type, nr, size) (asm-generic: nr 8 bits, type 8, size 14, dir 2)."""
    return (direction << 30) | (size << 16) | (typ << 8) | nr


def ioc_type(cmd: int) -> int:
    return (cmd >> 8) & 0xFF


def ioc_nr(cmd: int) -> int:
    return cmd & 0xFF


def ioc_size(cmd: int) -> int:
    return (cmd >> 16) & 0x3FFF


# ---- the definition ------------------------------------------------------------------------------
# struct name -> [(field, type, since_minor)]; since_minor None = present since the struct appeared.
_S = None
STRUCTS: dict[str, list[tuple[str, str, int | None]]] = {
    "kfd_ioctl_get_version_args": [("major_version", "u32", _S), ("minor_version", "u32", _S)],
    "kfd_ioctl_create_queue_args": [
        ("ring_base_address", "u64", _S), ("write_pointer_address", "u64", _S),
        ("read_pointer_address", "u64", _S), ("doorbell_offset", "u64", _S),
        ("ring_size", "u32", _S), ("gpu_id", "u32", _S), ("queue_type", "u32", _S),
        ("queue_percentage", "u32", _S), ("queue_priority", "u32", _S), ("queue_id", "u32", _S),
        ("eop_buffer_address", "u64", _S), ("eop_buffer_size", "u64", _S),
        ("ctx_save_restore_address", "u64", _S), ("ctx_save_restore_size", "u32", _S),
        ("ctl_stack_size", "u32", _S),
        ("sdma_engine_id", "u32", 15), ("pad", "u32", 15),  # 1.15: SDMA_BY_ENG_ID
    ],
    "kfd_ioctl_destroy_queue_args": [("queue_id", "u32", _S), ("pad", "u32", _S)],
    "kfd_ioctl_update_queue_args": [
        ("ring_base_address", "u64", _S), ("queue_id", "u32", _S), ("ring_size", "u32", _S),
        ("queue_percentage", "u32", _S), ("queue_priority", "u32", _S),
    ],
    "kfd_ioctl_set_cu_mask_args": [("queue_id", "u32", _S), ("num_cu_mask", "u32", _S), ("cu_mask_ptr", "u64", _S)],
    "kfd_ioctl_alloc_memory_of_gpu_args": [
        ("va_addr", "u64", _S), ("size", "u64", _S), ("handle", "u64", _S), ("mmap_offset", "u64", _S),
        ("gpu_id", "u32", _S), ("flags", "u32", _S),
    ],
    "kfd_runtime_info": [("r_debug", "u64", _S), ("runtime_state", "u32", _S), ("ttmp_setup", "u32", _S)],
    "kfd_ioctl_runtime_enable_args": [("r_debug", "u64", _S), ("mode_mask", "u32", _S), ("capabilities_mask", "u32", _S)],
    "kfd_queue_snapshot_entry": [
        ("exception_status", "u64", _S), ("ring_base_address", "u64", _S),
        ("write_pointer_address", "u64", _S), ("read_pointer_address", "u64", _S),
        ("ctx_save_restore_address", "u64", _S), ("queue_id", "u32", _S), ("gpu_id", "u32", _S),
        ("ring_size", "u32", _S), ("queue_type", "u32", _S), ("ctx_save_restore_area_size", "u32", _S),
        ("reserved", "u32", _S),
    ],
    # DBG_TRAP op argument structs (the union members of kfd_ioctl_dbg_trap_args)
    "kfd_ioctl_dbg_trap_enable_args": [("exception_mask", "u64", _S), ("rinfo_ptr", "u64", _S), ("rinfo_size", "u32", _S), ("dbg_fd", "u32", _S)],
    "kfd_ioctl_dbg_trap_send_runtime_event_args": [("exception_mask", "u64", _S), ("gpu_id", "u32", _S), ("queue_id", "u32", _S)],
    "kfd_ioctl_dbg_trap_suspend_queues_args": [("exception_mask", "u64", _S), ("queue_array_ptr", "u64", _S), ("num_queues", "u32", _S), ("grace_period", "u32", _S)],
    "kfd_ioctl_dbg_trap_resume_queues_args": [("queue_array_ptr", "u64", _S), ("num_queues", "u32", _S), ("pad", "u32", _S)],
    "kfd_ioctl_dbg_trap_query_debug_event_args": [("exception_mask", "u64", _S), ("gpu_id", "u32", _S), ("queue_id", "u32", _S)],
    "kfd_ioctl_dbg_trap_queue_snapshot_args": [("exception_mask", "u64", _S), ("snapshot_buf_ptr", "u64", _S), ("num_queues", "u32", _S), ("entry_size", "u32", _S)],
    "kfd_ioctl_dbg_trap_device_snapshot_args": [("exception_mask", "u64", _S), ("snapshot_buf_ptr", "u64", _S), ("num_devices", "u32", _S), ("entry_size", "u32", _S)],
    # ROCm's pre-upstream DBG_TRAP (nr 0x82, 40 bytes; ROCm's thunk calls it _deprecated)
    "rocm_kfd_ioctl_dbg_trap_args": [
        ("exception_mask", "u64", _S), ("ptr", "u64", _S), ("pid", "u32", _S), ("op", "u32", _S),
        ("data1", "u32", _S), ("data2", "u32", _S), ("data3", "u32", _S), ("data4", "u32", _S),
    ],
}
# the minor version in which a struct first appeared (structs not listed: 1.0)
SINCE_MINOR = {name: 13 for name in STRUCTS if "dbg_trap" in name or name in (
    "kfd_runtime_info", "kfd_ioctl_runtime_enable_args", "kfd_queue_snapshot_entry")}
SINCE_MINOR["kfd_ioctl_dbg_trap_args"] = 13
OUT_OF_TREE = {"rocm_kfd_ioctl_dbg_trap_args"}  # no upstream header has it

# kfd_ioctl_dbg_trap_args = {u32 pid, u32 op, union {...} (24 bytes)}: op -> (name, union member, struct)
DBG_TRAP_HEADER = [("pid", "u32", _S), ("op", "u32", _S)]
DBG_TRAP_UNION_OFFSET, DBG_TRAP_UNION_SIZE = 8, 24
DBG_TRAP_OPS: dict[int, tuple[str, str, str | None]] = {
    0: ("ENABLE", "enable", "kfd_ioctl_dbg_trap_enable_args"),
    1: ("DISABLE", "", None),
    2: ("SEND_RUNTIME_EVENT", "send_runtime_event", "kfd_ioctl_dbg_trap_send_runtime_event_args"),
    6: ("SUSPEND_QUEUES", "suspend_queues", "kfd_ioctl_dbg_trap_suspend_queues_args"),
    7: ("RESUME_QUEUES", "resume_queues", "kfd_ioctl_dbg_trap_resume_queues_args"),
    11: ("QUERY_DEBUG_EVENT", "query_debug_event", "kfd_ioctl_dbg_trap_query_debug_event_args"),
    13: ("GET_QUEUE_SNAPSHOT", "queue_snapshot", "kfd_ioctl_dbg_trap_queue_snapshot_args"),
    14: ("GET_DEVICE_SNAPSHOT", "device_snapshot", "kfd_ioctl_dbg_trap_device_snapshot_args"),
}
DBG_TRAP_OP = {name: op for op, (name, _, _) in DBG_TRAP_OPS.items()}

# ROCm's DBG_TRAP 0x82 ops that name queues (ROCm thunk source; no header here has them)
ROCM_DBG_TRAP_OPS = {3: "NODE_SUSPEND", 4: "NODE_RESUME"}
ROCM_DBG_TRAP_OP = {name: op for op, name in ROCM_DBG_TRAP_OPS.items()}

# Every KFD ioctl by name: (_IOC_NR, the KFD ioctl minor version whose header first has it). The
# recorder names calls by _IOC_NR (recorder/ioctls.py); the compile check asserts each nr against
# every header whose minor has it, and that AMDKFD_COMMAND_END is one past the last of them (a header
# with an ioctl this table lacks fails). Scheme B's are in kernel/uapi_scheme_b.json.
IOCTL_NRS: dict[str, tuple[int, int | None]] = {
    "AMDKFD_IOC_GET_VERSION": (0x01, _S),
    "AMDKFD_IOC_CREATE_QUEUE": (0x02, _S),
    "AMDKFD_IOC_DESTROY_QUEUE": (0x03, _S),
    "AMDKFD_IOC_SET_MEMORY_POLICY": (0x04, _S),
    "AMDKFD_IOC_GET_CLOCK_COUNTERS": (0x05, _S),
    "AMDKFD_IOC_GET_PROCESS_APERTURES": (0x06, _S),
    "AMDKFD_IOC_UPDATE_QUEUE": (0x07, _S),
    "AMDKFD_IOC_CREATE_EVENT": (0x08, _S),
    "AMDKFD_IOC_DESTROY_EVENT": (0x09, _S),
    "AMDKFD_IOC_SET_EVENT": (0x0A, _S),
    "AMDKFD_IOC_RESET_EVENT": (0x0B, _S),
    "AMDKFD_IOC_WAIT_EVENTS": (0x0C, _S),
    "AMDKFD_IOC_DBG_REGISTER_DEPRECATED": (0x0D, _S),
    "AMDKFD_IOC_DBG_UNREGISTER_DEPRECATED": (0x0E, _S),
    "AMDKFD_IOC_DBG_ADDRESS_WATCH_DEPRECATED": (0x0F, _S),
    "AMDKFD_IOC_DBG_WAVE_CONTROL_DEPRECATED": (0x10, _S),
    "AMDKFD_IOC_SET_SCRATCH_BACKING_VA": (0x11, _S),
    "AMDKFD_IOC_GET_TILE_CONFIG": (0x12, _S),
    "AMDKFD_IOC_SET_TRAP_HANDLER": (0x13, _S),
    "AMDKFD_IOC_GET_PROCESS_APERTURES_NEW": (0x14, _S),
    "AMDKFD_IOC_ACQUIRE_VM": (0x15, _S),
    "AMDKFD_IOC_ALLOC_MEMORY_OF_GPU": (0x16, _S),
    "AMDKFD_IOC_FREE_MEMORY_OF_GPU": (0x17, _S),
    "AMDKFD_IOC_MAP_MEMORY_TO_GPU": (0x18, _S),
    "AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU": (0x19, _S),
    "AMDKFD_IOC_SET_CU_MASK": (0x1A, _S),
    "AMDKFD_IOC_GET_QUEUE_WAVE_STATE": (0x1B, _S),
    "AMDKFD_IOC_GET_DMABUF_INFO": (0x1C, _S),
    "AMDKFD_IOC_IMPORT_DMABUF": (0x1D, _S),
    "AMDKFD_IOC_ALLOC_QUEUE_GWS": (0x1E, _S),
    "AMDKFD_IOC_SMI_EVENTS": (0x1F, _S),
    "AMDKFD_IOC_SVM": (0x20, _S),
    "AMDKFD_IOC_SET_XNACK_MODE": (0x21, _S),
    "AMDKFD_IOC_CRIU_OP": (0x22, _S),
    "AMDKFD_IOC_AVAILABLE_MEMORY": (0x23, _S),
    "AMDKFD_IOC_EXPORT_DMABUF": (0x24, 12),
    "AMDKFD_IOC_RUNTIME_ENABLE": (0x25, 13),
    "AMDKFD_IOC_DBG_TRAP": (0x26, 13),
    "AMDKFD_IOC_CREATE_PROCESS": (0x27, 19),  # newer than both headers here: not checked
    # ROCm (out of tree, numbers from 0x80; no header here has them)
    "AMDKFD_IOC_IPC_IMPORT_HANDLE": (0x80, _S),
    "AMDKFD_IOC_IPC_EXPORT_HANDLE": (0x81, _S),
    "AMDKFD_IOC_DBG_TRAP_DEPRECATED": (0x82, _S),  # ROCm's pre-upstream DBG_TRAP (0xC0284B82)
    "AMDKFD_IOC_CROSS_MEMORY_COPY_DEPRECATED": (0x83, _S),
    "AMDKFD_IOC_RLC_SPM": (0x84, _S),
    "AMDKFD_IOC_PC_SAMPLE": (0x85, _S),
    "AMDKFD_IOC_PROFILER": (0x86, _S),
}
ROCM_NR_START = 0x80  # nrs from here on are ROCm's own (out of tree)

# ioctls whose argument layout is defined here: name -> (nr, direction, argument struct)
IOCTLS: dict[str, tuple[int, str, str]] = {name: (IOCTL_NRS[name][0], d, sname) for name, (d, sname) in {
    "AMDKFD_IOC_GET_VERSION": ("r", "kfd_ioctl_get_version_args"),
    "AMDKFD_IOC_CREATE_QUEUE": ("rw", "kfd_ioctl_create_queue_args"),
    "AMDKFD_IOC_DESTROY_QUEUE": ("rw", "kfd_ioctl_destroy_queue_args"),
    "AMDKFD_IOC_UPDATE_QUEUE": ("w", "kfd_ioctl_update_queue_args"),
    "AMDKFD_IOC_ALLOC_MEMORY_OF_GPU": ("rw", "kfd_ioctl_alloc_memory_of_gpu_args"),
    "AMDKFD_IOC_SET_CU_MASK": ("w", "kfd_ioctl_set_cu_mask_args"),
    "AMDKFD_IOC_RUNTIME_ENABLE": ("rw", "kfd_ioctl_runtime_enable_args"),
    "AMDKFD_IOC_DBG_TRAP": ("rw", "kfd_ioctl_dbg_trap_args"),
    "AMDKFD_IOC_DBG_TRAP_DEPRECATED": ("rw", "rocm_kfd_ioctl_dbg_trap_args"),  # ROCm, out of tree
}.items()}

# constants (C name -> value), checked against the headers that define them
CONSTANTS: dict[str, tuple[int, int | None]] = {  # name -> (value, since_minor)
    "KFD_IOCTL_MAJOR_VERSION": (1, _S),
    "KFD_IOC_QUEUE_TYPE_COMPUTE": (0, _S), "KFD_IOC_QUEUE_TYPE_SDMA": (1, _S),
    "KFD_IOC_QUEUE_TYPE_COMPUTE_AQL": (2, _S), "KFD_IOC_QUEUE_TYPE_SDMA_XGMI": (3, _S),
    "KFD_IOC_QUEUE_TYPE_SDMA_BY_ENG_ID": (4, 15),
    "EC_QUEUE_NEW": (31, 13), "EC_PROCESS_RUNTIME": (48, 13),
    "KFD_DBG_QUEUE_ERROR_BIT": (30, 13), "KFD_DBG_QUEUE_INVALID_BIT": (31, 13),
    "KFD_RUNTIME_ENABLE_MODE_ENABLE_MASK": (1, 13),
    "DEBUG_RUNTIME_STATE_DISABLED": (0, 13), "DEBUG_RUNTIME_STATE_ENABLED": (1, 13),
    **{f"KFD_IOC_DBG_TRAP_{name}": (op, 13) for op, (name, _, _) in DBG_TRAP_OPS.items()},
}
for _k, (_v, _m) in list(CONSTANTS.items()):
    globals()[_k] = _v

DEBUGGER_MIN_MINOR = 13  # KFD ioctl 1.13 added RUNTIME_ENABLE and DBG_TRAP
DBG_QUEUE_ERROR_MASK = 1 << CONSTANTS["KFD_DBG_QUEUE_ERROR_BIT"][0]
DBG_QUEUE_INVALID_MASK = 1 << CONSTANTS["KFD_DBG_QUEUE_INVALID_BIT"][0]
DBG_QUEUE_ID_MASK = DBG_QUEUE_ERROR_MASK - 1  # the queue id: the bits below both flags

# A DBG_TRAP SUSPEND/RESUME_QUEUES writes each id back with its status in the flag bits (the KFD sets
# INVALID when the queue does not exist or is new, ERROR on a hardware failure). Decoded here only:
# status index -> name (the events column queue_id_status, the controller's queue results).
QUEUE_ID_STATUSES = ("ok", "invalid", "error")


def queue_id_status(word):
    """Status index (into QUEUE_ID_STATUSES) of a written-back queue id word: 1 invalid (bit 31),
    2 error (bit 30), 0 ok; INVALID wins when both are set. Elementwise on numpy uint32 arrays."""
    invalid = (word >> CONSTANTS["KFD_DBG_QUEUE_INVALID_BIT"][0]) & 1
    error = (word >> CONSTANTS["KFD_DBG_QUEUE_ERROR_BIT"][0]) & 1
    return invalid + 2 * error * (1 - invalid)


def split_queue_id(word: int) -> tuple[int, str]:
    """(queue id, status name) of one written-back queue id word."""
    return word & DBG_QUEUE_ID_MASK, QUEUE_ID_STATUSES[queue_id_status(word)]
SUSPEND_MAX_QUEUES = 1024  # the KFD refuses num_queues > 1024 (EINVAL)


def ec_mask(code: int) -> int:
    """KFD_EC_MASK(code) = 1 << (code - 1)."""
    return 1 << (code - 1)


# queue types: uapi number -> schema.QUEUE_TYPES name (the uapi queue-type map, once)
UAPI_QUEUE_TYPES = {v: k.removeprefix("KFD_IOC_QUEUE_TYPE_").lower() for k, (v, _) in CONSTANTS.items()
                    if k.startswith("KFD_IOC_QUEUE_TYPE_")}

_SIZES = {"u8": 1, "u16": 2, "u32": 4, "s32": 4, "u64": 8, "s64": 8}
_CTYPES = {"u8": ctypes.c_uint8, "u16": ctypes.c_uint16, "u32": ctypes.c_uint32, "s32": ctypes.c_int32,
           "u64": ctypes.c_uint64, "s64": ctypes.c_int64}


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    offset: int


@dataclass(frozen=True)
class Layout:
    name: str
    size: int
    fields: tuple[Field, ...]

    def offset(self, field: str) -> int:
        for f in self.fields:
            if f.name == field:
                return f.offset
        raise KeyError(f"{self.name} has no field {field!r}")


def _lay_out(name: str, spec, minor: int | None = None) -> Layout:
    off, align, out = 0, 1, []
    for fname, ftype, since in spec:
        if minor is not None and since is not None and minor < since:
            continue
        sz = _SIZES[ftype]
        off = (off + sz - 1) // sz * sz
        out.append(Field(fname, ftype, off))
        off += sz
        align = max(align, sz)
    return Layout(name, (off + align - 1) // align * align, tuple(out))


def layout(name: str, minor: int | None = None) -> Layout:
    """The layout of a struct at KFD ioctl minor version `minor` (None: the newest defined here)."""
    if name == "kfd_ioctl_dbg_trap_args":
        return Layout(name, DBG_TRAP_UNION_OFFSET + DBG_TRAP_UNION_SIZE,
                      tuple(_lay_out(name, DBG_TRAP_HEADER).fields))
    if name in STRUCTS:
        return _lay_out(name, STRUCTS[name], minor)
    sb = scheme_b()
    if name in sb.structs:
        return sb.structs[name]
    raise KeyError(f"unknown uapi struct {name!r}")


def dbg_trap_field_offset(op_name: str, field: str) -> int:
    """Offset of an op's argument field inside kfd_ioctl_dbg_trap_args (union at byte 8)."""
    _, _, sname = DBG_TRAP_OPS[DBG_TRAP_OP[op_name]]
    return DBG_TRAP_UNION_OFFSET + layout(sname).offset(field)


def request(name: str, minor: int | None = None) -> int:
    """The full request number of an ioctl (struct size at `minor`; None = newest)."""
    if name in IOCTLS:
        nr, d, sname = IOCTLS[name]
        return ioc(DIRS[d], nr, layout(sname, minor).size)
    sb = scheme_b()
    if name in sb.ioctls:
        return sb.ioctls[name].request
    raise KeyError(f"unknown KFD ioctl {name!r}")


# ---- scheme B: kernel/uapi_scheme_b.json, one accepted shape -------------------------------------
@dataclass(frozen=True)
class SchemeBIoctl:
    name: str
    nr: int
    dir: str
    arg_struct: str
    request: int


@dataclass(frozen=True)
class SchemeB:
    ioctls: dict  # name -> SchemeBIoctl
    structs: dict  # name -> Layout
    constants: dict  # name -> int


class UapiShapeError(ValueError):
    pass


def parse_scheme_b(doc: dict) -> SchemeB:
    """The scheme-B uapi document, in its one shape:
    {"ioctl_type": "K", "ioctls": {NAME: {nr, dir (r|w|rw), arg_struct, arg_size, request}},
     "structs": {NAME: {size, fields: [{name, offset, type}]}}, "constants": {NAME: int}}.
    Offsets and sizes must be the natural layout of the listed types and every request number must be
    _IOC(dir, 'K', nr, arg_size): anything else is refused (UapiShapeError), never guessed."""
    try:
        if doc.get("ioctl_type") != "K":
            raise UapiShapeError("ioctl_type must be \"K\"")
        structs = {}
        for sname, s in doc["structs"].items():
            spec = [(f["name"], f["type"], None) for f in s["fields"]]
            lay = _lay_out(sname, spec)
            given = [(f["name"], f["offset"]) for f in s["fields"]]
            if [(f.name, f.offset) for f in lay.fields] != given or lay.size != s["size"]:
                raise UapiShapeError(f"{sname}: offsets/size {given}/{s['size']} are not the natural layout {lay}")
            structs[sname] = lay
        ioctls = {}
        for name, i in doc["ioctls"].items():
            if not name.startswith("AMDKFD_IOC_"):
                raise UapiShapeError(f"{name}: not an AMDKFD_IOC_ name")
            lay = structs[i["arg_struct"]]
            if i["arg_size"] != lay.size:
                raise UapiShapeError(f"{name}: arg_size {i['arg_size']} != sizeof {i['arg_struct']} {lay.size}")
            req = ioc(DIRS[i["dir"]], int(i["nr"]), lay.size)
            if int(i["request"]) != req:
                raise UapiShapeError(f"{name}: request {i['request']:#x} != _IOC {req:#x}")
            ioctls[name] = SchemeBIoctl(name, int(i["nr"]), i["dir"], i["arg_struct"], req)
        consts = {k: int(v) for k, v in doc.get("constants", {}).items()}
    except UapiShapeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UapiShapeError(f"not the scheme-B uapi shape: {e.__class__.__name__}: {e}") from None
    return SchemeB(ioctls, structs, consts)


@lru_cache(maxsize=1)
def scheme_b() -> SchemeB:
    """kernel/uapi_scheme_b.json (shipped with the package) parsed by parse_scheme_b."""
    from . import resources

    return parse_scheme_b(json.loads(resources.scheme_b_uapi().read_text()))


# ---- ctypes classes (generated from the layouts) --------------------------------------------------
def _ctypes_class(lay: Layout, cls_name: str):
    fields = [(f.name, _CTYPES[f.type]) for f in lay.fields]
    cls = type(cls_name, (ctypes.Structure,), {"_fields_": fields, "__doc__": f"struct {lay.name} ({lay.size} bytes)"})
    assert ctypes.sizeof(cls) == lay.size, lay
    return cls


@cache
def struct(name: str, minor: int | None = None):
    """The ctypes class of a uapi struct (at KFD minor version `minor`; None = newest)."""
    if name == "kfd_ioctl_dbg_trap_args":
        members = [(member, struct(sname)) for _, (_, member, sname) in sorted(DBG_TRAP_OPS.items()) if sname]
        members.append(("raw", ctypes.c_uint8 * DBG_TRAP_UNION_SIZE))
        union = type("DbgTrapUnion", (ctypes.Union,), {"_fields_": members})
        cls = type("DbgTrapArgs", (ctypes.Structure,), {
            "_fields_": [("pid", ctypes.c_uint32), ("op", ctypes.c_uint32), ("u", union)],
            "_anonymous_": ("u",), "__doc__": "struct kfd_ioctl_dbg_trap_args (32 bytes): pid, op, union"})
        assert ctypes.sizeof(cls) == DBG_TRAP_UNION_OFFSET + DBG_TRAP_UNION_SIZE
        return cls
    cls_name = "".join(p.capitalize() for p in name.removeprefix("kfd_ioctl_").removeprefix("kfd_").split("_"))
    return _ctypes_class(layout(name, minor), cls_name)


GetVersionArgs = struct("kfd_ioctl_get_version_args")
CreateQueueArgs = struct("kfd_ioctl_create_queue_args", 11)  # 88 bytes, what 1.11..1.14 take
CreateQueueArgs117 = struct("kfd_ioctl_create_queue_args")  # 96 bytes (1.15+)
DestroyQueueArgs = struct("kfd_ioctl_destroy_queue_args")
UpdateQueueArgs = struct("kfd_ioctl_update_queue_args")
SetCuMaskArgs = struct("kfd_ioctl_set_cu_mask_args")
RuntimeInfo = struct("kfd_runtime_info")
RuntimeEnableArgs = struct("kfd_ioctl_runtime_enable_args")
QueueSnapshotEntry = struct("kfd_queue_snapshot_entry")
DbgTrapArgs = struct("kfd_ioctl_dbg_trap_args")
DbgTrapEnableArgs = struct("kfd_ioctl_dbg_trap_enable_args")
DbgTrapSendRuntimeEventArgs = struct("kfd_ioctl_dbg_trap_send_runtime_event_args")
DbgTrapSuspendQueuesArgs = struct("kfd_ioctl_dbg_trap_suspend_queues_args")
DbgTrapResumeQueuesArgs = struct("kfd_ioctl_dbg_trap_resume_queues_args")
DbgTrapQueryDebugEventArgs = struct("kfd_ioctl_dbg_trap_query_debug_event_args")
DbgTrapQueueSnapshotArgs = struct("kfd_ioctl_dbg_trap_queue_snapshot_args")
DbgTrapDeviceSnapshotArgs = struct("kfd_ioctl_dbg_trap_device_snapshot_args")
RocmDbgTrapArgs = struct("rocm_kfd_ioctl_dbg_trap_args")
PreemptQueuesArgs = struct("kfd_ioctl_preempt_queues_args")  # scheme B
PreemptEntry = struct("kfd_queue_preempt_entry")  # scheme B

def dbg_trap_args(pid: int, op: str, **fields) -> DbgTrapArgs:
    """A kfd_ioctl_dbg_trap_args for op name `op` (e.g. "SUSPEND_QUEUES") with the op's fields set."""
    a = DbgTrapArgs(pid=pid, op=DBG_TRAP_OP[op])
    _, member, _ = DBG_TRAP_OPS[DBG_TRAP_OP[op]]
    for k, v in fields.items():
        setattr(getattr(a, member), k, v)
    return a


GET_VERSION = request("AMDKFD_IOC_GET_VERSION")  # 0x80084B01
CREATE_QUEUE = request("AMDKFD_IOC_CREATE_QUEUE", 11)  # 0xC0584B02 (1.17: 0xC0604B02, same nr)
DESTROY_QUEUE = request("AMDKFD_IOC_DESTROY_QUEUE")  # 0xC0084B03
UPDATE_QUEUE = request("AMDKFD_IOC_UPDATE_QUEUE")  # 0x40184B07
SET_CU_MASK = request("AMDKFD_IOC_SET_CU_MASK")  # 0x40104B1A
ALLOC_MEMORY_OF_GPU = request("AMDKFD_IOC_ALLOC_MEMORY_OF_GPU")  # 0xC0284B16
RUNTIME_ENABLE = request("AMDKFD_IOC_RUNTIME_ENABLE")  # 0xC0104B25
DBG_TRAP = request("AMDKFD_IOC_DBG_TRAP")  # 0xC0204B26
ROCM_DBG_TRAP = request("AMDKFD_IOC_DBG_TRAP_DEPRECATED")  # 0xC0284B82
PREEMPT_QUEUES = request("AMDKFD_IOC_PREEMPT_QUEUES")  # scheme B
RESUME_QUEUES = request("AMDKFD_IOC_RESUME_QUEUES")  # scheme B


# ---- the C header for tracers/ioctl.bpf.c ---------------------------------------------------------
HEADER_NAME = "kfd_uapi.h"


def _macro(*parts: str) -> str:
    return "GPT_UAPI_" + "__".join(p.upper() if i == 0 else p for i, p in enumerate(parts))


def _tag(name: str) -> str:
    """Macro tag of a struct: kfd_ioctl_X_args -> X, kfd_X -> X, rocm_kfd_ioctl_X_args -> rocm_X."""
    rocm = name.startswith("rocm_")
    base = name.removeprefix("rocm_").removeprefix("kfd_ioctl_").removeprefix("kfd_").removesuffix("_args")
    return ("rocm_" if rocm else "") + base


def c_header() -> str:
    """tracers/kfd_uapi.h: sizes, field offsets and request numbers (generated; do not edit)."""
    lines = ["/* SPDX-License-Identifier: GPL-2.0 */",
             "/* GENERATED by `make codegen` from gpreempt_trace/contracts/uapi.py — do not edit.",
             " * KFD uapi argument layouts: GPT_UAPI_<STRUCT>__SIZE, GPT_UAPI_<STRUCT>__<field> = byte offset,",
             " * GPT_UAPI_DBG_TRAP_<OP>__<field> = offset inside kfd_ioctl_dbg_trap_args, GPT_UAPI_NR_* = _IOC_NR. */",
             "#ifndef GPT_KFD_UAPI_H", "#define GPT_KFD_UAPI_H", ""]

    def emit(tag: str, lay: Layout, base: int = 0):
        lines.append(f"#define {_macro(tag, 'SIZE')} {lay.size}")
        for f in lay.fields:
            lines.append(f"#define {_macro(tag, f.name)} {base + f.offset}")

    op_structs = {sname for _, _, sname in DBG_TRAP_OPS.values() if sname}
    for name in STRUCTS:
        if name in op_structs:  # emitted below as offsets inside kfd_ioctl_dbg_trap_args
            continue
        emit(_tag(name), layout(name, 11) if name == "kfd_ioctl_create_queue_args" else layout(name))
        lines.append("")
    emit("dbg_trap", layout("kfd_ioctl_dbg_trap_args"))
    for op, (oname, member, sname) in sorted(DBG_TRAP_OPS.items()):
        lines.append(f"#define GPT_UAPI_DBG_OP_{oname} {op}")
        if sname:
            lines.append(f"#define {_macro('dbg_trap_' + oname.lower(), 'SIZE')} {layout(sname).size}")
            for f in layout(sname).fields:
                lines.append(f"#define {_macro('dbg_trap_' + oname.lower(), f.name)} {DBG_TRAP_UNION_OFFSET + f.offset}")
    lines.append("")
    sb = scheme_b()
    for sname, lay in sb.structs.items():
        emit(_tag(sname), lay)
    lines.append(f"#define GPT_UAPI_IOC_TYPE {KFD_IOC_TYPE:#04x} /* 'K' */")
    for op, oname in sorted(ROCM_DBG_TRAP_OPS.items()):
        lines.append(f"#define GPT_UAPI_ROCM_DBG_OP_{oname} {op}")
    for num, qname in UAPI_QUEUE_TYPES.items():  # uapi KFD_IOC_QUEUE_TYPE_* numbers
        lines.append(f"#define GPT_UAPI_QUEUE_TYPE_{qname.upper()} {num}")
    # uapi queue type -> enum gpt_qtype (gpt_event.h, the index into schema.QUEUE_TYPES); -1: unknown
    lines.append("#define GPT_UAPI_QTYPE(t) ( \\")
    for qname in UAPI_QUEUE_TYPES.values():
        lines.append(f"\t(t) == GPT_UAPI_QUEUE_TYPE_{qname.upper()} ? GPT_QT_{qname.upper()} : \\")
    lines.append("\t-1)")
    for name, nr, _, _ in [(n, *IOCTLS[n]) for n in IOCTLS]:
        lines.append(f"#define GPT_UAPI_NR_{name.removeprefix('AMDKFD_IOC_')} {nr:#04x}")
    for name, i in sb.ioctls.items():
        lines.append(f"#define GPT_UAPI_NR_{name.removeprefix('AMDKFD_IOC_')} {i.nr:#04x}")
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def c_checks(minor: int) -> str:
    """C source of _Static_asserts of every definition a uapi header of KFD minor `minor` has
    (include <linux/kfd_ioctl.h> before it)."""
    out = ["#include <stddef.h>", "#include <linux/kfd_ioctl.h>",
           f"_Static_assert(KFD_IOCTL_MINOR_VERSION == {minor}, \"minor version\");"]

    def check(cname: str, lay: Layout, prefix: str = ""):
        out.append(f"_Static_assert(sizeof(struct {cname}) == {lay.size}, \"sizeof {cname}\");")
        for f in lay.fields:
            out.append(f"_Static_assert(offsetof(struct {cname}, {prefix}{f.name}) == {f.offset}, \"{cname}.{f.name}\");")
            out.append(f"_Static_assert(sizeof(((struct {cname} *)0)->{prefix}{f.name}) == {_SIZES[f.type]}, \"{cname}.{f.name} size\");")

    for name in STRUCTS:
        if name in OUT_OF_TREE or SINCE_MINOR.get(name, 0) > minor:
            continue
        check(name, layout(name, minor))
    if minor >= 13:
        check("kfd_ioctl_dbg_trap_args", layout("kfd_ioctl_dbg_trap_args"))
        for op, (oname, member, sname) in DBG_TRAP_OPS.items():
            if sname:
                for f in layout(sname).fields:
                    out.append(f"_Static_assert(offsetof(struct kfd_ioctl_dbg_trap_args, {member}.{f.name}) == "
                               f"{DBG_TRAP_UNION_OFFSET + f.offset}, \"dbg_trap {member}.{f.name}\");")
    for name in IOCTLS:
        sname = IOCTLS[name][2]
        if sname in OUT_OF_TREE or SINCE_MINOR.get(sname, 0) > minor:
            continue
        out.append(f"_Static_assert({name} == {request(name, minor):#x}u, \"{name}\");")
    upstream = [(name, nr) for name, (nr, since) in IOCTL_NRS.items()
                if nr < ROCM_NR_START and (since or 0) <= minor]
    for name, nr in upstream:
        out.append(f"_Static_assert(_IOC_NR({name}) == {nr:#04x} && _IOC_TYPE({name}) == {KFD_IOC_TYPE:#x}, \"{name} nr\");")
    # the table names every ioctl of the header: as many distinct nrs as the header's command range
    out.append(f"_Static_assert(AMDKFD_COMMAND_START == {min(nr for _, nr in upstream):#04x}, \"AMDKFD_COMMAND_START\");")
    out.append(f"_Static_assert(AMDKFD_COMMAND_END == {max(nr for _, nr in upstream) + 1:#04x}, \"AMDKFD_COMMAND_END\");")
    out.append(f"_Static_assert(AMDKFD_COMMAND_END - AMDKFD_COMMAND_START == {len(upstream)}, "
               "\"every ioctl of the header is in IOCTL_NRS\");")
    for cname, (value, since) in CONSTANTS.items():
        if since is None or since <= minor:
            out.append(f"_Static_assert({cname} == {value}, \"{cname}\");")
    return "\n".join(out) + "\n"
