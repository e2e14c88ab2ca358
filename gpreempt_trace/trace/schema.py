"""The one source of truth for every table a trace holds.

Each column is declared once: its name, how the kernel record stores it (C type, or none when it is
filled in user space), its Arrow type, its unit and a one-line doc. The BPF header
(`tracers/gpt_event.h`), the ctypes record, the numpy dtype used to decode ring-buffer batches and the
Arrow schemas are all generated from these lists (see `recorder/record_layout.py`); `tests/test_schema.py` proves
they agree by compiling the header.

Rules: NULL means unknown (never -1); units are in names (`_ns`); columns are only ever added.
"""
from __future__ import annotations

import pyarrow as pa

from .columns import Column

SCHEMA_VERSION = 2  # 2: events.queue_ids without the KFD's flag bits, which are events.queue_id_status


# Logical event names, independent of the hooked function. The kernel record carries the index.
EVENTS = (
    "unknown",
    "queue_create",
    "queue_destroy",
    "queue_update",
    "queues_map",
    "queues_unmap",
    "process_evict",
    "process_restore",
    "queues_suspend",
    "queues_resume",
    "runlist_submit",
    "hw_unmap_wait",
    "kfd_ioctl",
    "set_resources",
    "mes_add_queue",
    "mes_remove_queue",
    "queues_preempt",  # scheme B (kernel/ series)
    "queues_unpreempt",  # scheme B (kernel/ series)
    "queues_execute",  # execute_queues_cpsch: unmap + remap in one call (kernels that do not inline it)
    "queue_preempt",  # scheme B, per queue (kfd:kfd_queue_suspend)
    "queue_unpreempt",  # scheme B, per queue (kfd:kfd_queue_resume)
    "runtime_enable",  # kfd_ioctl_runtime_enable (6.12: RUNTIME_ENABLE, enable and disable)
    "dbg_trap_enable",  # kfd_dbg_trap_enable: a debugger attaches to the target process
    "dbg_trap_disable",  # kfd_dbg_trap_disable: ... and detaches (queues resumed)
    "queue_reset",  # reset_queues_cpsch / kgd_gfx_v9_hqd_reset: a queue that would not unmap is reset
    "hws_hang",  # kfd_hws_hang: the scheduler firmware hung (a GPU reset follows)
    "gpu_reset",  # kfd_signal_reset_event: KFD tells the processes of a GPU reset
)

# Canonical queue types. The kernel's enum kfd_queue_type and the uapi KFD_IOC_QUEUE_TYPE_* differ;
# tracers translate both into these indices.
QUEUE_TYPES = (
    "compute",
    "sdma",
    "hiq",
    "diq",
    "sdma_xgmi",
    "compute_aql",
    "sdma_by_eng_id",
)

MAX_QUEUE_IDS = 16  # queue ids captured per DBG_TRAP suspend/resume record

EVENT_COLUMNS: tuple[Column, ...] = (
    Column("run_id", None, pa.string(), "", "Trace run this row belongs to (constant per trace).", nullable=False),
    Column("ts_ns", "u64", pa.int64(), "ns", "CLOCK_MONOTONIC time at function entry (or of the instant event).", nullable=False),
    Column("dur_ns", "u64", pa.int64(), "ns", "Return time minus entry time; NULL for instant events."),
    Column("event", None, pa.string(), "", "Logical event name (queue_create, queues_unmap, kfd_ioctl, ...).", nullable=False, derive="event_id"),
    Column("func", None, pa.string(), "", "Kernel function or tracepoint that produced the row.", derive="func_id"),
    Column("tgid", "s32", pa.int32(), "", "Process (thread group) id of the caller."),
    Column("tid", "s32", pa.int32(), "", "Thread id of the caller."),
    Column("cpu", "s32", pa.int32(), "", "CPU the entry ran on."),
    Column("comm", "char[16]", pa.string(), "", "Command name of the caller."),
    Column("gpu_id", "u32", pa.uint32(), "", "KFD gpu_id of the device (as in /sys/class/kfd/kfd/topology)."),
    Column("queue_id", "s32", pa.int32(), "", "KFD queue id within its process."),
    Column("pasid", "u32", pa.uint32(), "", "Process address-space id of the queue's process."),
    Column("queue_type", None, pa.string(), "", "compute, sdma, sdma_xgmi, compute_aql, hiq, diq.", derive="qtype_id"),
    Column("doorbell_off", "u32", pa.uint32(), "", "Doorbell offset of the queue (dwords; joins debugfs HQD/MQD doorbell)."),
    Column("priority", "s32", pa.int32(), "", "Queue priority (0..15)."),
    Column("is_active", "bool", pa.bool_(), "", "Queue active (mapped to hardware) at entry."),
    Column("ret", "s64", pa.int64(), "", "Return value (negative errno on failure)."),
    Column("ioctl_cmd", None, pa.string(), "", "AMDKFD_IOC_* name of the ioctl; NULL when the number has no known name.", derive="ioctl_nr"),
    # --- additions beyond the v1 minimum ---
    Column("ioctl_nr", "u32", pa.uint32(), "", "Raw ioctl request number (kept even when it has no name)."),
    Column("is_evicted", "bool", pa.bool_(), "", "Queue evicted at entry."),
    Column("is_suspended", "bool", pa.bool_(), "", "Queue suspended (debugger) at entry."),
    Column("is_active_after", "bool", pa.bool_(), "", "Queue active at return."),
    Column("is_evicted_after", "bool", pa.bool_(), "", "Queue evicted at return."),
    Column("is_suspended_after", "bool", pa.bool_(), "", "Queue suspended at return."),
    Column("owner_tgid", "s32", pa.int32(), "", "Tgid of the process that owns the queue (kfd_process lead_thread)."),
    Column("queue_percentage", "u32", pa.uint32(), "", "CREATE/UPDATE_QUEUE queue_percentage."),
    Column("ring_size", "u64", pa.uint64(), "bytes", "Ring buffer size of the queue."),
    Column("ring_base", "u64", pa.uint64(), "", "Ring buffer GPU virtual address (joins debugfs PQ base)."),
    Column("unmap_filter", "s32", pa.int32(), "", "Unmap filter, kernel enum kfd_unmap_queues_filter: 1 all queues, 2 dynamic queues, 3 by PASID (view unmap_filters)."),
    Column("filter_param", "u32", pa.uint32(), "", "Unmap filter parameter (pasid for by-pasid)."),
    Column("grace_period", "u32", pa.uint32(), "", "Preemption grace period (firmware units, 1K cycles)."),
    Column("dbg_op", "u32", pa.uint32(), "", "DBG_TRAP op: KFD_IOC_DBG_TRAP_* of AMDKFD_IOC_DBG_TRAP (1.13+), or of ROCm's AMDKFD_IOC_DBG_TRAP_DEPRECATED (view dbg_trap_ops names the suspend/resume ones)."),
    Column("target_pid", "s32", pa.int32(), "", "Target process of a DBG_TRAP or scheme-B call."),
    Column("num_queues", "u32", pa.uint32(), "", "Number of queues named by the call."),
    Column("queue_ids", None, pa.list_(pa.int32()), "", f"Queue ids named by the call (first {MAX_QUEUE_IDS}), without the status bits the KFD writes back into them (queue_id_status).", derive="qids"),
    Column("queue_id_status", None, pa.list_(pa.string()), "", "Per queue_ids entry, the status the KFD wrote back into the id's flag bits: ok, invalid (KFD_DBG_QUEUE_INVALID_MASK: no such queue, or a new one), error (KFD_DBG_QUEUE_ERROR_MASK: hardware failure). Known on rows that read the ids after the KFD answered (queues_suspend, queues_resume); NULL on kfd_ioctl rows (the caller's ids, read at entry) and in traces of schema_version 1 read without the tool.", derive="qids"),
    # --- kernel-only fields (decoded into the columns above) ---
    Column("event_id", "u16", None, "", "Index into EVENTS.", nullable=False),
    Column("func_id", "u16", None, "", "Index into the recorder's probe table (meta.json attach_plan)."),
    Column("qtype_id", "u8", None, "", "Index into QUEUE_TYPES."),
    Column("qids", f"u32[{MAX_QUEUE_IDS}]", None, "", "Raw queue id array; num_queues says how many are valid."),
)

MARKER_COLUMNS: tuple[Column, ...] = (
    Column("run_id", None, pa.string(), "", "Trace run this row belongs to.", nullable=False),
    Column("ts_ns", None, pa.int64(), "ns", "CLOCK_MONOTONIC time of the marker.", nullable=False),
    Column("source", None, pa.string(), "", "Who wrote it: controller, workload, recorder, snapshot, ...", nullable=False),
    Column("kind", None, pa.string(), "", "preempt_request, preempt_done, resume_request, resume_done, request_start, request_end, ...", nullable=False),
    Column("tgid", None, pa.int32(), "", "Process that wrote the marker."),
    Column("target_tgid", None, pa.int32(), "", "Process acted upon (e.g. the preempted one)."),
    Column("gpu_id", None, pa.uint32(), "", "KFD gpu_id concerned."),
    Column("scheme", None, pa.string(), "", "'A' (debug-trap suspend), 'B' (batch preempt ioctls) or NULL."),
    Column("queue_ids", None, pa.list_(pa.int32()), "", "Queue ids concerned."),
    Column("seq", None, pa.int64(), "", "Pairs a request with its done."),
    Column("label", None, pa.string(), "", "Free text (model name, request id, error)."),
    Column("value_ns", None, pa.int64(), "ns", "A duration or value measured by the writer."),
    Column("container_id", None, pa.string(), "", "Container (64 hex) of target_tgid, where the writer knew it (the controller: from /proc when it started); NULL on the host or unknown."),
)


def arrow_schema(columns: tuple[Column, ...], table: str) -> pa.Schema:
    """Parquet schema of a table, with provenance metadata."""
    fields = [
        pa.field(c.name, c.arrow, nullable=c.nullable, metadata={"unit": c.unit, "doc": c.doc})
        for c in columns
        if c.in_parquet
    ]
    return pa.schema(fields, metadata={"gpreempt_trace.table": table, "gpreempt_trace.schema_version": str(SCHEMA_VERSION)})


# One row per read of /proc about a process a writer saw (gpreempt_trace/trace/processes.py); the view
# `processes` (queries/prelude.sql) folds them into one row per (run_id, tgid).
PROCESS_COLUMNS: tuple[Column, ...] = (
    Column("run_id", None, pa.string(), "", "Trace run this row belongs to.", nullable=False),
    Column("ts_ns", None, pa.int64(), "ns", "CLOCK_MONOTONIC time /proc was read.", nullable=False),
    Column("source", None, pa.string(), "", "Who saw the process: recorder (a tgid or owner_tgid of its events), snapshot (a debugfs row), controller, launcher, workload (a marker).", nullable=False),
    Column("tgid", None, pa.int32(), "", "Host process id (as events.tgid, snapshots.tgid, markers.tgid/target_tgid).", nullable=False),
    Column("ns_tgid", None, pa.int32(), "", "Its pid inside its own pid namespace (last NSpid field of /proc/PID/status): the pid a container shows; = tgid on the host."),
    Column("pidns", None, pa.int64(), "", "Inode of its pid namespace (/proc/PID/ns/pid)."),
    Column("cgroup", None, pa.string(), "", "Its cgroup path (the v2 path, or the v1 hierarchy that names its container, else name=systemd's)."),
    Column("container_id", None, pa.string(), "", "Container id (64 hex) from the cgroup path; NULL for a host process."),
    Column("container_runtime", None, pa.string(), "", "docker, containerd, podman or crio, from the cgroup path; NULL when not in a container or the layout does not say (kubepods cgroupfs)."),
    Column("comm", None, pa.string(), "", "Command name (/proc/PID/comm)."),
    Column("first_seen_ts_ns", None, pa.int64(), "ns", "First row of the writer naming this process (event ts_ns, marker ts_ns, snapshot ts_ns); NULL on end-of-run rows."),
    Column("last_seen_ts_ns", None, pa.int64(), "ns", "Last row of the writer naming this process; set on the end-of-run row, NULL on first-seen rows."),
)

from .schema_snapshots import SNAPSHOT_COLUMNS  # noqa: E402  (declared in its own module, same style)

TABLES: dict[str, tuple[Column, ...]] = {
    "events": EVENT_COLUMNS,
    "markers": MARKER_COLUMNS,
    "snapshots": SNAPSHOT_COLUMNS,
    "process_reads": PROCESS_COLUMNS,
}


def table_schema(name: str) -> pa.Schema:
    return arrow_schema(TABLES[name], name)
