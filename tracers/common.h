/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared BPF side of the gpreempt-trace recorder: the ring buffer every probe writes `struct gpt_event`
 * records into, the exact lost-event counter, the tgid filter and the reserve/submit helpers.
 *
 * Compiled by BCC as part of ONE program text: the runtime concatenates common.h + ioctl.bpf.c + kfd.bpf.c
 * (BCC generates tracepoint argument structs only for TRACEPOINT_PROBEs in its main text, so this file is
 * inlined, not #included; the `#include "common.h"` in each .bpf.c is then a no-op), against the stub
 * include tree in tracers/stub (no kernel headers: kernel structs are read only through BTF offsets
 * passed as -D macros). Knobs (all -D, set by gpreempt_trace/recorder/runtime.py):
 *   GPT_RINGBUF_PAGES  ring buffer size in pages (power of two)
 *   GPT_RB_FLAGS       flags for ringbuf_submit (0: adaptive wakeup; 1: BPF_RB_NO_WAKEUP)
 *   GPT_WAKE_EVERY     with GPT_RB_FLAGS 1: wake the reader once every this many records per CPU
 *                      (a power of two; 0 = never: the reader polls on its timer only)
 *   GPT_FILTER_TGID    record only tgids in gpt_tgids (else every process)
 *   GPT_FOLLOW_FORK    add children of filtered tgids to gpt_tgids (the launched command's descendants)
 *   GPT_MAX_TGIDS      capacity of gpt_tgids
 *   GPT_FOLLOW_PIDNS   (with GPT_FOLLOW_FORK) also add a child created in a pid namespace of gpt_pidns
 *                      (record --container: a process entering the container, e.g. by docker exec);
 *                      needs GPT_OFF_task_struct__nsproxy, GPT_OFF_nsproxy__pid_ns_for_children,
 *                      GPT_OFF_pid_namespace__ns_inum (BTF offsets)
 */
#ifndef GPT_COMMON_H
#define GPT_COMMON_H

#include <uapi/linux/ptrace.h> /* struct pt_regs (stub tree) */
#include "gpt_event.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#ifndef GPT_RINGBUF_PAGES
#define GPT_RINGBUF_PAGES 1024
#endif
#ifndef GPT_RB_FLAGS
#define GPT_RB_FLAGS 0
#endif
#ifndef GPT_WAKE_EVERY
#define GPT_WAKE_EVERY 0
#endif
#define GPT_RB_NO_WAKEUP 1 /* BPF_RB_NO_WAKEUP */
#define GPT_RB_FORCE_WAKEUP 2 /* BPF_RB_FORCE_WAKEUP */
#ifndef GPT_MAX_TGIDS
#define GPT_MAX_TGIDS 4096
#endif

BPF_RINGBUF_OUTPUT(gpt_events, GPT_RINGBUF_PAGES);
/* records that could not be reserved (ring full): counted exactly, per cpu, summed in user space */
BPF_PERCPU_ARRAY(gpt_lost, u64, 1);
/* tgids to record (value unused); filled by user space, grown by sched_process_fork */
BPF_HASH(gpt_tgids, u32, u8, GPT_MAX_TGIDS);
#if GPT_WAKE_EVERY
/* records submitted per cpu since start: every GPT_WAKE_EVERY-th wakes the reader (one wakeup per batch,
 * not per record; between them the reader wakes on its own timer) */
BPF_PERCPU_ARRAY(gpt_wake, u64, 1);
#endif

static __always_inline int gpt_wanted(u32 tgid)
{
#ifdef GPT_FILTER_TGID
	return gpt_tgids.lookup(&tgid) != NULL;
#else
	return 1;
#endif
}

static __always_inline void gpt_count_lost(void)
{
	int zero = 0;
	u64 *n = gpt_lost.lookup(&zero);
	if (n)
		(*n)++; /* per-cpu slot: no atomics needed */
}

/* Reserve a zeroed record with the common fields filled in; NULL when the caller is filtered out
 * or the ring is full (then the loss is counted). A call made by a kernel worker on behalf of a
 * recorded process passes the filter too: `owner_tgid` (0 = none) is the queue owner's tgid. */
static __always_inline struct gpt_event *gpt_reserve_owned(u16 event_id, u16 func_id, u32 owner_tgid)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	if (!gpt_wanted(tgid) && !(owner_tgid && gpt_wanted(owner_tgid)))
		return NULL;
	struct gpt_event *e = gpt_events.ringbuf_reserve(sizeof(struct gpt_event));
	if (!e) {
		gpt_count_lost();
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->event_id = event_id;
	GPT_SET(e, func_id, func_id);
	GPT_SET(e, tgid, (s32)tgid);
	GPT_SET(e, tid, (s32)(u32)pid_tgid);
	GPT_SET(e, cpu, (s32)bpf_get_smp_processor_id());
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	e->valid |= GPT_V_comm;
	return e;
}

static __always_inline struct gpt_event *gpt_reserve(u16 event_id, u16 func_id)
{
	return gpt_reserve_owned(event_id, func_id, 0);
}

static __always_inline u64 gpt_submit_flags(void)
{
#if GPT_WAKE_EVERY
	int zero = 0;
	u64 *n = gpt_wake.lookup(&zero);
	if (n && ((++*n) & (GPT_WAKE_EVERY - 1)) == 0)
		return GPT_RB_FORCE_WAKEUP;
#endif
	return GPT_RB_FLAGS;
}

static __always_inline void gpt_submit(struct gpt_event *e)
{
	gpt_events.ringbuf_submit(e, gpt_submit_flags());
}

static __always_inline void gpt_discard(struct gpt_event *e)
{
	gpt_events.ringbuf_discard(e, GPT_RB_FLAGS);
}

#ifdef GPT_FOLLOW_PIDNS
/* pid namespaces (inode numbers) of the containers being recorded; filled by user space */
BPF_HASH(gpt_pidns, u32, u8, 64);

/* the child of this fork lands in current->nsproxy->pid_ns_for_children: is that one of gpt_pidns? */
static __always_inline int gpt_child_pidns_wanted(void)
{
	u64 task = bpf_get_current_task();
	u64 nsp = 0, pns = 0;
	u32 inum = 0;
	if (bpf_probe_read_kernel(&nsp, sizeof(nsp), (void *)(task + GPT_OFF_task_struct__nsproxy)) || !nsp)
		return 0;
	if (bpf_probe_read_kernel(&pns, sizeof(pns), (void *)(nsp + GPT_OFF_nsproxy__pid_ns_for_children)) || !pns)
		return 0;
	if (bpf_probe_read_kernel(&inum, sizeof(inum), (void *)(pns + GPT_OFF_pid_namespace__ns_inum)))
		return 0;
	return gpt_pidns.lookup(&inum) != NULL;
}
#endif

#ifdef GPT_FOLLOW_FORK
/* the launched command and its descendants: a child of a recorded tgid is recorded too (and, with
 * GPT_FOLLOW_PIDNS, a child created in a recorded container's pid namespace).
 * (Threads show up here as well; their tid is added and removed again at exit.) */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent_tgid = bpf_get_current_pid_tgid() >> 32;
#ifdef GPT_FOLLOW_PIDNS
	if (!gpt_tgids.lookup(&parent_tgid) && !gpt_child_pidns_wanted())
		return 0;
#else
	if (!gpt_tgids.lookup(&parent_tgid))
		return 0;
#endif
	u32 child = args->child_pid;
	u8 one = 1;
	gpt_tgids.update(&child, &one);
	return 0;
}

#ifndef GPT_IOCTL_FUNC_ID /* with the ioctl path, its own sched_process_exit handler does this too */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	if (tid != (u32)(pid_tgid >> 32))
		gpt_tgids.delete(&tid); /* a thread's entry; a process's own entry stays until its reaping is moot */
	return 0;
}
#endif
#endif

#endif /* GPT_COMMON_H */
