"""The KFD tracepoints ↔ the recorder: ONE table, for two systems.

  kfd     the project's own series (kernel/patches, TRACE_SYSTEM kfd, drivers/gpu/drm/amd/amdkfd/kfd_trace.h)
  amdkfd  the tracepoints ROCm's out-of-tree amdgpu-dkms defines in its own kfd_trace.h (TRACE_SYSTEM
          amdkfd): the eviction/restore workers, which need no BTF (see "amdkfd" below)

For every tracepoint: its name, the logical event its rows get (schema.EVENTS), its TP_PROTO (a raw
tracepoint receives these arguments, in this order) and each TP_STRUCT__entry field with the Parquet
column it fills.

The recorder's raw-tracepoint handlers are generated from this table into tracers/kfd_tracepoints.h
(`make codegen`; kfd.bpf.c includes it) and the plan (recorder/plan.py)
imports TRACEPOINTS from here. tests/test_tracepoint_contract.py parses every TRACE_EVENT/DEFINE_EVENT
out of kernel/patches and checks set equality with this table, both ways, and that the header is current.

Two kinds of handler:
  queue  TP_PROTO(const struct queue *q): every field is read from the queue through the BTF offsets of
         the running kernel (kfd_rtp_queue, the same readers as the kprobe handlers); `reader` names the
         C helper that fills the column.
  args   scalar TP_PROTO: each field is the TP_PROTO argument of the same name (args[i] of the raw
         tracepoint), cast as TP_PROTO declares it. A dur_ns field makes the row start at now - dur_ns
         (the tracepoint fires when the operation is done).
Both are kfd:* (raw tracepoints: no tracefs format needed). The DKMS ones are a third kind:
  format amdkfd:* classic tracepoints: the program gets the event's record, and each field is read at the
         offset its tracefs format file (events/amdkfd/<name>/format) gives, found at plan time and passed
         as -DGPT_TPO_<name>__<field>=offset (never a fixed offset: DKMS builds differ). Their TP_PROTO
         (struct kfd_process *p) would need the module BTF that DKMS hosts lack. A `begin`/`end` pair
         (the *_start/*_end of one worker, same kernel thread) makes one row: ts_ns at the start, dur_ns
         to the end, written by the end's handler.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..contracts import resources
from ..trace import schema

HEADER_NAME = "kfd_tracepoints.h"


@dataclass(frozen=True)
class TpField:
    name: str  # TP_STRUCT__entry field
    ctype: str  # its type there (u32, s32, u64, s64, bool)
    column: Optional[str]  # Parquet column of the events table it fills; None = not recorded (say why in note)
    reader: Optional[str] = None  # queue class: the kfd.bpf.c helper that fills the column
    conv: Optional[str] = None  # args/format class: C function translating the kernel value (kfd_filter, amdkfd_status_ok)
    note: str = ""
    also: tuple[str, ...] = ()  # more columns filled with the same value
    optional: bool = False  # format class: a format without this field is not a drift (older/newer trees)


@dataclass(frozen=True)
class TracepointSpec:
    name: str  # kfd:<name>
    event: str  # logical event (schema.EVENTS)
    klass: Optional[str]  # DECLARE_EVENT_CLASS it is a DEFINE_EVENT of; None for a TRACE_EVENT
    proto: tuple[tuple[str, str], ...]  # TP_PROTO (type, name), in order
    fields: tuple[TpField, ...]
    supersedes: tuple[str, ...] = ()  # kprobe probes (plan.PROBES) it replaces when it exists
    owner: Optional[str] = None  # TP_PROTO argument (format: field) naming the tgid acted upon (passes the -p filter too)
    doc: str = ""
    system: str = "kfd"  # TRACE_SYSTEM: kfd (kernel/patches) or amdkfd (ROCm DKMS)
    span: Optional[str] = None  # format class: "begin" (stores the start time) or "end" (writes the row)
    begin: Optional[str] = None  # span "end": the tracepoint that began it

    @property
    def kind(self) -> str:
        if self.system == "amdkfd":
            return "format"
        return "queue" if self.proto == QUEUE_PROTO else "args"

    @property
    def probe(self) -> str:
        """its attach-plan row name, as tracefs names it"""
        return f"{self.system}:{self.name}"

    @property
    def handler(self) -> str:
        """the generated BPF function"""
        return f"amdkfd_tp__{self.name}" if self.kind == "format" else f"kfd_rtp__{self.name}"

    @property
    def mechanism(self) -> str:
        return "tracepoint" if self.kind == "format" else "raw_tracepoint"

    @property
    def absent(self) -> str:
        """the plan row's reason when the kernel does not have it"""
        return "kernel without the DKMS amdkfd:* tracepoints" if self.system == "amdkfd" else "kernel without the kfd:* tracepoint series"


QUEUE_PROTO = (("const struct queue *", "q"),)

# DECLARE_EVENT_CLASS(kfd_queue): one queue's state, read from struct queue
QUEUE_FIELDS = (
    TpField("gpu_id", "u32", "gpu_id", "kfd_fill_owner"),
    TpField("pasid", "u32", "pasid", "kfd_fill_owner"),
    TpField("owner_tgid", "s32", "owner_tgid", "kfd_fill_owner"),
    TpField("queue_id", "s32", "queue_id", "kfd_fill_queue"),
    TpField("queue_type", "u32", "queue_type", "kfd_fill_queue", note="kernel kfd_queue_type (+ AQL format) -> schema.QUEUE_TYPES"),
    TpField("doorbell_off", "u32", "doorbell_off", "kfd_fill_queue"),
    TpField("priority", "s32", "priority", "kfd_fill_queue"),
    TpField("queue_percentage", "u32", "queue_percentage", "kfd_fill_queue"),
    TpField("ring_base", "u64", "ring_base", "kfd_fill_queue"),
    TpField("ring_size", "u64", "ring_size", "kfd_fill_queue"),
    TpField("is_active", "bool", "is_active", "kfd_read_flags"),
    TpField("is_evicted", "bool", "is_evicted", "kfd_read_flags"),
    TpField("is_suspended", "bool", "is_suspended", "kfd_read_flags", note="queue_properties.is_suspended: the debugger's suspend (>= 6.5)"),
    TpField("is_preempted", "bool", None,
            note="scheme B's flag (queue_properties.is_preempted); no events column in format v1: "
                 "the queue_preempt/queue_unpreempt rows say when it changes"),
)

SCHED_PROTO = (("s32", "target_pid"), ("u32", "num_queues"), ("u32", "grace_period"), ("u64", "dur_ns"), ("int", "ret"))
SCHED_FIELDS = (
    TpField("target_pid", "s32", "target_pid"),
    TpField("num_queues", "u32", "num_queues", note="in: entries named (0 with FLAG_ALL); the kernel reports the queues changed"),
    TpField("grace_period", "u32", "grace_period"),
    TpField("dur_ns", "u64", "dur_ns"),
    TpField("ret", "s64", "ret"),
)


def _queue(name: str, event: str, supersedes: tuple[str, ...] = (), doc: str = "") -> TracepointSpec:
    return TracepointSpec(name, event, "kfd_queue", QUEUE_PROTO, QUEUE_FIELDS, supersedes, None, doc)


# --- amdkfd:* (ROCm amdgpu-dkms, its own amd/amdkfd/kfd_trace.h, TRACE_SYSTEM amdkfd) -------------------
# Each event writes one u32 naming the process: `pid` (p->lead_thread->pid, the owner's tgid) in the
# 6.12-era trees, whose struct kfd_process has no pasid; `pasid` (p->pasid) in older ones
# (ROCm/ROCK-Kernel-Driver 1d3797e7). The *_end events add a __string status message. The worker pairs
# run in a kworker, where the caller's tgid says nothing: `pid` is what attributes the row (and passes -p).
# tests/fixtures/tracefs/amdkfd-dkms-6.12/ holds the format files derived from the DKMS source (see its
# README); tests/test_dkms_tracepoints.py checks this table against them field by field.
DKMS_PROC_PROTO = (("struct kfd_process *", "p"),)
DKMS_END_PROTO = (("struct kfd_process *", "p"), ("char *", "pStatusMsg"))
_PID_NOTE = "p->lead_thread->pid: the tgid of the process whose queues the worker evicts/restores (6.12-era trees)"
_PASID_NOTE = "p->pasid, in older trees whose struct kfd_process still has one (ROCK-Kernel-Driver 1d3797e7)"
_BEGIN_FIELDS = (
    TpField("pid", "unsigned int", None, optional=True, note="the row is written at the span's end, whose record has the same pid"),
    TpField("pasid", "unsigned int", None, optional=True, note="the row is written at the span's end, whose record has the same pasid"),
)
_END_FIELDS = (
    TpField("pid", "unsigned int", "owner_tgid", also=("target_pid",), optional=True, note=_PID_NOTE),
    TpField("pasid", "unsigned int", "pasid", optional=True, note=_PASID_NOTE),
    TpField("pStatusMsg", "__data_loc char[]", "ret", conv="amdkfd_status_ok",
            note="a message, not an errno: \"Success\" -> ret 0; any other (\"Failed\", \"Rescheduled restore\", ...) leaves ret NULL"),
)


def _dkms_span(worker: str, event: str, doc: str) -> tuple[TracepointSpec, TracepointSpec]:
    begin = TracepointSpec(f"kfd_{worker}_start", event, None, DKMS_PROC_PROTO, _BEGIN_FIELDS, (), None,
                           doc, system="amdkfd", span="begin")
    end = TracepointSpec(f"kfd_{worker}_end", event, None, DKMS_END_PROTO, _END_FIELDS, (), "pid",
                         doc, system="amdkfd", span="end", begin=begin.name)
    return begin, end


# the process-level kprobes stay: kfd_process_evict_queues/evict_process_queues_* are called from more
# paths than these workers (suspend, debugger, SVM, quiesce_mm), so the workers supersede none of them
DKMS_TRACEPOINTS = (
    *_dkms_span("evict_process_worker", "process_evict",
                "evict_process_worker: a TTM eviction of the process (kfd_process_evict_queues on each of its GPUs, "
                "the eviction fence signalled, the restore scheduled)"),
    *_dkms_span("restore_process_worker", "process_restore",
                "restore_process_worker: the process's BOs revalidated and kfd_process_restore_queues"),
)

# the DKMS kfd_trace.h events the table leaves out, and why (the fixture has them all)
DKMS_LEFT_OUT = {
    "kfd_map_memory_to_gpu_start": "memory mapping (AMDKFD_IOC_MAP_MEMORY_TO_GPU): no logical event in schema.EVENTS",
    "kfd_map_memory_to_gpu_end": "memory mapping (AMDKFD_IOC_MAP_MEMORY_TO_GPU): no logical event in schema.EVENTS",
    "kfd_kgd2kfd_schedule_evict_and_restore_process": "the eviction fence asking for an eviction (pid, delay_jiffies): no logical "
        "event in schema.EVENTS and no column for the delay; the evict worker's row follows it",
}

TRACEPOINTS: tuple[TracepointSpec, ...] = (
    _queue("kfd_queue_create", "queue_create", ("create_queue_cpsch", "create_queue_nocpsch"), "a user queue was created"),
    _queue("kfd_queue_destroy", "queue_destroy", ("destroy_queue_cpsch", "destroy_queue_nocpsch"), "a user queue is about to be destroyed"),
    _queue("kfd_queue_update", "queue_update", ("update_queue",), "the MQD of a queue was updated"),
    # per queue: the process-level evict/restore kprobes stay
    _queue("kfd_queue_evict", "process_evict", (), "a queue was taken off the hardware by a process eviction"),
    _queue("kfd_queue_restore", "process_restore", (), "an evicted queue is active again"),
    _queue("kfd_queue_suspend", "queue_preempt", (), "AMDKFD_IOC_PREEMPT_QUEUES took this queue off the runlist"),
    _queue("kfd_queue_resume", "queue_unpreempt", (), "AMDKFD_IOC_RESUME_QUEUES released this queue"),
    TracepointSpec(
        "kfd_queues_unmap", "queues_unmap", None,
        (("u32", "gpu_id"), ("int", "unmap_filter"), ("u32", "filter_param"), ("u32", "grace_period"), ("u64", "dur_ns"), ("int", "ret")),
        (TpField("gpu_id", "u32", "gpu_id"),
         TpField("unmap_filter", "s32", "unmap_filter", conv="kfd_filter", note="kernel enum -> column encoding"),
         TpField("filter_param", "u32", "filter_param"),
         TpField("grace_period", "u32", "grace_period"),
         TpField("dur_ns", "u64", "dur_ns"),
         TpField("ret", "s64", "ret")),
        ("unmap_queues_cpsch",), None, "HWS: UNMAP_QUEUES sent to the HIQ and its fence waited for"),
    TracepointSpec(
        "kfd_queues_map", "queues_map", None,
        (("u32", "gpu_id"), ("u32", "num_queues"), ("u64", "dur_ns"), ("int", "ret")),
        (TpField("gpu_id", "u32", "gpu_id"), TpField("num_queues", "u32", "num_queues"),
         TpField("dur_ns", "u64", "dur_ns"), TpField("ret", "s64", "ret")),
        ("map_queues_cpsch",), None, "HWS: a runlist was submitted to the HIQ"),
    TracepointSpec(
        "kfd_hw_unmap_wait", "hw_unmap_wait", None,
        (("u32", "gpu_id"), ("u64", "dur_ns"), ("int", "ret")),
        (TpField("gpu_id", "u32", "gpu_id"), TpField("dur_ns", "u64", "dur_ns"), TpField("ret", "s64", "ret")),
        ("hw_unmap_wait",), None, "HWS: the preemption fence wait (QUERY_STATUS after UNMAP_QUEUES)"),
    TracepointSpec("kfd_queues_preempt", "queues_preempt", "kfd_queues_sched", SCHED_PROTO, SCHED_FIELDS, (), "target_pid",
                   "one AMDKFD_IOC_PREEMPT_QUEUES call"),
    TracepointSpec("kfd_queues_unpreempt", "queues_unpreempt", "kfd_queues_sched", SCHED_PROTO, SCHED_FIELDS, (), "target_pid",
                   "one AMDKFD_IOC_RESUME_QUEUES call"),
    *DKMS_TRACEPOINTS,
)

BY_NAME = {t.name: t for t in TRACEPOINTS}

# format class: the tracefs field type the table declares -> (C type read, size, signed; None = the
# architecture's char, either)
FORMAT_TYPES = {
    "unsigned int": ("u32", 4, False),
    "int": ("s32", 4, True),
    "__data_loc char[]": ("u32", 4, None),
}


def tpo_macro(t: TracepointSpec, field_name: str) -> str:
    """-D macro carrying a format field's offset in the record"""
    return f"GPT_TPO_{t.name}__{field_name}"


def format_check(t: TracepointSpec, fmt) -> tuple[list[str], list[str], list[str]]:
    """(-D offset flags, problems, notes) of a format-class tracepoint against its tracefs format
    (tpformat.EventFormat). A problem means the format drifted from the table (a field of another size,
    signedness or kind, a required field missing, none of its fields there): the tracepoint is not used."""
    flags: list[str] = []
    problems: list[str] = []
    notes: list[str] = []
    found = 0
    for f in t.fields:
        ff = fmt.field(f.name)
        _, size, signed = FORMAT_TYPES[f.ctype]
        if ff is None:
            if not f.optional:
                problems.append(f"no field {f.name}")
            continue
        found += 1
        bad = []
        if ff.size != size:
            bad.append(f"{f.name} has size {ff.size}, the table reads {size}")
        if signed is not None and ff.signed != signed:
            bad.append(f"{f.name} has signed:{int(ff.signed)}, the table has signed:{int(signed)}")
        if ff.data_loc != f.ctype.startswith("__data_loc"):
            bad.append(f"{f.name} is {ff.type!r}, the table has {f.ctype!r}")
        problems += bad
        if not bad:
            flags.append(f"-D{tpo_macro(t, f.name)}={ff.offset}")
    if not found:
        problems.append("none of its fields (" + ", ".join(f.name for f in t.fields) + ")")
    if t.owner and fmt.field(t.owner) is None and not problems:
        notes.append(f"no {t.owner} field in this build: rows carry no owner_tgid")
    extra = [ff.name for ff in fmt.fields if ff.name not in {f.name for f in t.fields}]
    if extra:
        notes.append("fields the table does not read: " + ", ".join(extra))
    return flags, problems, notes


# C cast of a raw tracepoint argument (u64 slot) by its TP_PROTO type
_CAST = {"u32": "(u32)", "int": "(s32)", "s32": "(s32)", "u64": "", "s64": "(s64)", "bool": "(u8)"}
# C type of a column in struct gpt_event -> cast of the value stored
_COL_CAST = {"u32": "(u32)", "s32": "(s32)", "u64": "(u64)", "s64": "(s64)", "bool": "(u8)"}


def _column_ctype(col: str) -> str:
    for c in schema.EVENT_COLUMNS:
        if c.name == col:
            return c.c or ""
    raise KeyError(col)


def _ev_macro(event: str) -> str:
    return "GPT_EV_" + "".join(ch if ch.isalnum() else "_" for ch in event).upper()


_QUEUE_HELPER = """\
/* TP_PROTO(const struct queue *q): the queue is read through the BTF offsets, as in the kprobe handlers */
static __always_inline int kfd_rtp_queue(struct bpf_raw_tracepoint_args *ctx, u16 fid, u16 ev)
{
	u64 q = ctx->args[0], proc = 0, dev = 0;
	s32 owner = 0;
	if (!q)
		return 0;
	kfd_resolve(q, 0, 0, 0, &dev, &proc, &owner);
	struct gpt_event *e = gpt_reserve_owned(ev, fid, (u32)owner);
	if (!e)
		return 0;
	e->ts_ns = bpf_ktime_get_ns();
	kfd_fill_owner(e, dev, proc, 0, owner);
	u8 act = 0, evi = 0, sus = 0, have = 0;
	kfd_read_flags(q, &act, &evi, &sus, &have);
	if (have & 1)
		GPT_SET(e, is_active, act);
	if (have & 2)
		GPT_SET(e, is_evicted, evi);
	if (have & 4)
		GPT_SET(e, is_suspended, sus);
	kfd_fill_queue(e, q);
	gpt_submit(e);
	return 0;
}
"""


def _args_handler(t: TracepointSpec) -> list[str]:
    pos = {name: i for i, (_, name) in enumerate(t.proto)}
    ptype = {name: ty for ty, name in t.proto}
    proto = ", ".join(f"{ty} {n}" for ty, n in t.proto)
    owner = f"(u32){_CAST[ptype[t.owner]]}ctx->args[{pos[t.owner]}]" if t.owner else "0"
    out = [f"/* kfd:{t.name} -> {t.event}: {t.doc}; TP_PROTO({proto}) */",
           f"int kfd_rtp__{t.name}(struct bpf_raw_tracepoint_args *ctx)", "{",
           "\tu64 now = bpf_ktime_get_ns();",
           f"\tstruct gpt_event *e = gpt_reserve_owned({_ev_macro(t.event)}, GPT_FID_tp_{t.name}, {owner});",
           "\tif (!e)", "\t\treturn 0;"]
    for f in t.fields:
        i = pos[f.name]
        val = f"{_CAST[ptype[f.name]]}ctx->args[{i}]"
        if f.column is None:
            out.append(f"\t/* {f.name}: not recorded ({f.note}) */")
            continue
        if f.name == "dur_ns":
            out += [f"\te->ts_ns = now - ctx->args[{i}];", f"\tGPT_SET(e, {f.column}, ctx->args[{i}]);"]
        elif f.conv:
            out += ["\t{", f"\t\tint v = {f.conv}({val});", "\t\tif (v >= 0)", f"\t\t\tGPT_SET(e, {f.column}, v);", "\t}"]
        else:
            cast = _COL_CAST.get(_column_ctype(f.column), "")
            cast = "" if cast == _CAST[ptype[f.name]] else cast  # widen only (int ret -> s64 column)
            out.append(f"\tGPT_SET(e, {f.column}, {cast}{val});")
    out += ["\tgpt_submit(e);", "\treturn 0;", "}"]
    return out


_FORMAT_HELPER = """\
/* amdkfd:* (ROCm DKMS) classic tracepoints: ctx is the event's record; a field sits at the offset its
 * tracefs format file gives (-DGPT_TPO_<event>__<field>, set by the planner; absent = not read). */
#define AMDKFD_FIELD(ctx, off) ((const void *)((u64)(ctx) + (off)))

/* a __string field (__data_loc: u32 of length << 16 | offset in the record): 1 when it is "Success" */
static __always_inline int amdkfd_status_ok(void *ctx, int loc_off)
{
	u32 loc = 0;
	char s[8] = {};
	if (bpf_probe_read_kernel(&loc, sizeof(loc), AMDKFD_FIELD(ctx, loc_off)))
		return 0;
	if (bpf_probe_read_kernel(s, sizeof(s), AMDKFD_FIELD(ctx, loc & 0xffff)))
		return 0;
	return s[0] == 'S' && s[1] == 'u' && s[2] == 'c' && s[3] == 'c' && s[4] == 'e' && s[5] == 's' && s[6] == 's' && s[7] == 0;
}
"""


def _format_handler(t: TracepointSpec) -> list[str]:
    fid = f"GPT_FID_tp_{t.name}"
    head = [f"/* {t.probe} -> {t.event}{f' ({t.span})' if t.span else ''}: {t.doc} */", f"int {t.handler}(void *ctx)", "{"]
    if t.span == "begin":  # the start time, per thread; the end's handler writes the row
        for f in t.fields:
            head.append(f"\t/* {f.name}: not read here ({f.note}) */")
        return head + ["\tstruct kfd_entry en = {};", "\ten.ts = bpf_ktime_get_ns();", f"\tu64 key = kfd_key({fid});",
                       "\tkfd_entries.update(&key, &en);", "\treturn 0;", "}"]
    out = head + ["\tu64 now = bpf_ktime_get_ns();"]
    if t.span == "end":
        out += [f"\tu64 key = kfd_key(GPT_FID_tp_{t.begin});", "\tstruct kfd_entry *found = kfd_entries.lookup(&key);",
                "\tif (!found)", "\t\treturn 0; /* its start was not seen (recording began mid-span) */",
                "\tu64 ts = found->ts;", "\tkfd_entries.delete(&key);"]
    if t.owner:
        m = tpo_macro(t, t.owner)
        out += ["\tu32 owner = 0;", f"#ifdef {m}", f"\tbpf_probe_read_kernel(&owner, sizeof(owner), AMDKFD_FIELD(ctx, {m}));", "#endif"]
    out += [f"\tstruct gpt_event *e = gpt_reserve_owned({_ev_macro(t.event)}, {fid}, {'owner' if t.owner else '0'});",
            "\tif (!e)", "\t\treturn 0;"]
    out += ["\te->ts_ns = ts;", "\tGPT_SET(e, dur_ns, now - ts);"] if t.span == "end" else ["\te->ts_ns = now;"]
    for f in t.fields:
        if f.column is None:
            out.append(f"\t/* {f.name}: not recorded ({f.note}) */")
            continue
        m = tpo_macro(t, f.name)
        cols = (f.column, *f.also)
        out.append(f"#ifdef {m}")
        if f.conv:  # a predicate on the field: true -> the column is 0
            out += [f"\tif ({f.conv}(ctx, {m}))", f"\t\tGPT_SET(e, {f.column}, 0);"]
        elif f.name == t.owner:
            out += ["\tif (owner) {", *(f"\t\tGPT_SET(e, {c}, {_COL_CAST[_column_ctype(c)]}owner);" for c in cols), "\t}"]
        else:
            cty = FORMAT_TYPES[f.ctype][0]
            out += ["\t{", f"\t\t{cty} v = 0;", f"\t\tif (!bpf_probe_read_kernel(&v, sizeof(v), AMDKFD_FIELD(ctx, {m}))) {{",
                    *(f"\t\t\tGPT_SET(e, {c}, {_COL_CAST[_column_ctype(c)]}v);" for c in cols), "\t\t}", "\t}"]
        out.append("#endif")
    out += ["\tgpt_submit(e);", "\treturn 0;", "}"]
    return out


def render() -> str:
    """The C of tracers/kfd_tracepoints.h (raw-tracepoint handlers kfd_rtp__<name>, classic-tracepoint
    handlers amdkfd_tp__<name>)."""
    out = ["/* GENERATED by `make codegen` from gpreempt_trace/recorder/tracepoints.py.",
           " * Do not edit: change the table and regenerate (tests/test_tracepoint_contract.py checks it is current).",
           " *",
           " * The kfd:* tracepoints of kernel/patches, attached as raw tracepoints: the arguments are TP_PROTO's;",
           " * the amdkfd:* tracepoints of ROCm's DKMS driver, attached as classic tracepoints: fields at the offsets",
           " * of their tracefs format files.",
           " * Included by kfd.bpf.c after its queue readers (kfd_resolve, kfd_fill_owner, kfd_fill_queue,",
           " * kfd_read_flags, kfd_filter) and its kfd_entries map. */", "", _QUEUE_HELPER, _FORMAT_HELPER]
    for t in TRACEPOINTS:
        if t.kind == "queue":
            out.append(f"/* kfd:{t.name} -> {t.event}: {t.doc} */")
            out.append(f"int kfd_rtp__{t.name}(struct bpf_raw_tracepoint_args *ctx) "
                       f"{{ return kfd_rtp_queue(ctx, GPT_FID_tp_{t.name}, {_ev_macro(t.event)}); }}")
        elif t.kind == "format":
            out += _format_handler(t)
        else:
            out += _args_handler(t)
        out.append("")
    return "\n".join(out)


def header_path() -> Path:
    return resources.tracers() / HEADER_NAME


INCLUDE_LINE = f'#include "{HEADER_NAME}"'


def inline_header(source: str) -> str:
    """kfd.bpf.c with the generated header spliced in: BCC makes programs only of functions in the main
    file, so the handlers must not stay behind an #include."""
    if INCLUDE_LINE not in source:
        return source
    return source.replace(INCLUDE_LINE, header_path().read_text(), 1)
