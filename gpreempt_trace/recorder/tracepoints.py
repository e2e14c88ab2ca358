"""The kfd:* tracepoints of kernel/patches ↔ the recorder: ONE table.

For every tracepoint of the series (TRACE_SYSTEM kfd, drivers/gpu/drm/amd/amdkfd/kfd_trace.h): its
name, the logical event its rows get (schema.EVENTS), its TP_PROTO (a raw tracepoint receives these
arguments, in this order) and each TP_STRUCT__entry field with the Parquet column it fills.

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
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import resources, schema

HEADER_NAME = "kfd_tracepoints.h"


@dataclass(frozen=True)
class TpField:
    name: str  # TP_STRUCT__entry field
    ctype: str  # its type there (u32, s32, u64, s64, bool)
    column: Optional[str]  # Parquet column of the events table it fills; None = not recorded (say why in note)
    reader: Optional[str] = None  # queue class: the kfd.bpf.c helper that fills the column
    conv: Optional[str] = None  # args class: C function translating the kernel value (kfd_filter)
    note: str = ""


@dataclass(frozen=True)
class TracepointSpec:
    name: str  # kfd:<name>
    event: str  # logical event (schema.EVENTS)
    klass: Optional[str]  # DECLARE_EVENT_CLASS it is a DEFINE_EVENT of; None for a TRACE_EVENT
    proto: tuple[tuple[str, str], ...]  # TP_PROTO (type, name), in order
    fields: tuple[TpField, ...]
    supersedes: tuple[str, ...] = ()  # kprobe probes (plan.PROBES) it replaces when it exists
    owner: Optional[str] = None  # TP_PROTO argument naming the tgid acted upon (passes the -p filter too)
    doc: str = ""

    @property
    def kind(self) -> str:
        return "queue" if self.proto == QUEUE_PROTO else "args"


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
)

BY_NAME = {t.name: t for t in TRACEPOINTS}

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


def render() -> str:
    """The C of tracers/kfd_tracepoints.h (raw-tracepoint handlers kfd_rtp__<name>)."""
    out = ["/* GENERATED by `make codegen` from gpreempt_trace/recorder/tracepoints.py.",
           " * Do not edit: change the table and regenerate (tests/test_tracepoint_contract.py checks it is current).",
           " *",
           " * The kfd:* tracepoints of kernel/patches, attached as raw tracepoints: the arguments are TP_PROTO's.",
           " * Included by kfd.bpf.c after its queue readers (kfd_resolve, kfd_fill_owner, kfd_fill_queue,",
           " * kfd_read_flags, kfd_filter). */", "", _QUEUE_HELPER]
    for t in TRACEPOINTS:
        if t.kind == "queue":
            out.append(f"/* kfd:{t.name} -> {t.event}: {t.doc} */")
            out.append(f"int kfd_rtp__{t.name}(struct bpf_raw_tracepoint_args *ctx) "
                       f"{{ return kfd_rtp_queue(ctx, GPT_FID_tp_{t.name}, {_ev_macro(t.event)}); }}")
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
