/* SPDX-License-Identifier: GPL-2.0 */
/*
 * KFD function probes: one kprobe (entry) + kretprobe (return) pair per logical probe, paired per tid in
 * the kernel. The record is emitted at return with ts_ns = entry time, dur_ns, ret, and the fields of
 * the queue / process / device the call works on.
 *
 * Compiled after common.h (and ioctl.bpf.c) into ONE BCC program text. Everything kernel-specific comes
 * as -D macros from gpreempt_trace/recorder/plan.py, resolved from BTF, never from kernel headers:
 *   GPT_FID_<probe>          func_id of the probe (index into meta.json func_names)
 *   GPT_ARG_<probe>_<ROLE>   argument position of Q, QPD, DQM, PM, PROC, FILTER, FPARAM, GRACE, NQ, QIDS,
 *                            CMD, PASID, DEV (-1: not an argument of this function, or not trusted: GCC clone)
 *   GPT_OFF_<FIELD>          byte offset of a struct member (absent macro = member absent = never read)
 *   GPT_KQT_* / GPT_KQF_AQL / GPT_KUF_*   kernel enum values (queue type, AQL format, unmap filter)
 * Handlers are named kfd_entry__<probe> / kfd_return__<probe>; the planner attaches them.
 */
#include "common.h"

#ifndef GPT_KFD_MAX_INFLIGHT
#define GPT_KFD_MAX_INFLIGHT 10240
#endif

struct kfd_entry {
	u64 ts;
	u64 arg[6];
	u8 act, evi, sus; /* queue flags at entry */
	u8 pre;	  /* which of them were read: 1 act, 2 evi, 4 sus */
};

/* key: (u64)func_id << 32 | tid */
BPF_HASH(kfd_entries, u64, struct kfd_entry, GPT_KFD_MAX_INFLIGHT);

#define KFD_RD(dst, base, off) bpf_probe_read_kernel(&(dst), sizeof(dst), (const void *)((u64)(base) + (off)))

static __always_inline u64 kfd_key(u16 fid)
{
	return ((u64)fid << 32) | (u32)bpf_get_current_pid_tgid();
}

static __always_inline u64 kfd_arg(const struct kfd_entry *en, int i)
{
	switch (i) {
	case 0: return en->arg[0];
	case 1: return en->arg[1];
	case 2: return en->arg[2];
	case 3: return en->arg[3];
	case 4: return en->arg[4];
	case 5: return en->arg[5];
	}
	return 0;
}

static __always_inline void kfd_read_flags(u64 q, u8 *act, u8 *evi, u8 *sus, u8 *have)
{
	*have = 0;
	if (!q)
		return;
#ifdef GPT_OFF_Q_IS_ACTIVE
	if (!KFD_RD(*act, q, GPT_OFF_Q_IS_ACTIVE))
		*have |= 1;
#endif
#ifdef GPT_OFF_Q_IS_EVICTED
	if (!KFD_RD(*evi, q, GPT_OFF_Q_IS_EVICTED))
		*have |= 2;
#endif
#ifdef GPT_OFF_Q_IS_SUSPENDED
	if (!KFD_RD(*sus, q, GPT_OFF_Q_IS_SUSPENDED))
		*have |= 4;
#endif
}

/* kernel enum kfd_queue_type (+ AQL format) -> GPT_QT_*; -1 unknown */
static __always_inline int kfd_qtype(u32 t, u32 fmt, int have_fmt)
{
#ifdef GPT_KQT_COMPUTE
	if (t == GPT_KQT_COMPUTE) {
#ifdef GPT_KQF_AQL
		if (have_fmt && fmt == GPT_KQF_AQL)
			return GPT_QT_COMPUTE_AQL;
#endif
		return GPT_QT_COMPUTE;
	}
#endif
#ifdef GPT_KQT_SDMA
	if (t == GPT_KQT_SDMA)
		return GPT_QT_SDMA;
#endif
#ifdef GPT_KQT_HIQ
	if (t == GPT_KQT_HIQ)
		return GPT_QT_HIQ;
#endif
#ifdef GPT_KQT_DIQ
	if (t == GPT_KQT_DIQ)
		return GPT_QT_DIQ;
#endif
#ifdef GPT_KQT_SDMA_XGMI
	if (t == GPT_KQT_SDMA_XGMI)
		return GPT_QT_SDMA_XGMI;
#endif
#ifdef GPT_KQT_SDMA_BY_ENG_ID
	if (t == GPT_KQT_SDMA_BY_ENG_ID)
		return GPT_QT_SDMA_BY_ENG_ID;
#endif
	return -1;
}

/* kernel enum kfd_unmap_queues_filter -> column encoding (1 by pasid, 2 all, 3 dynamic); -1 unknown */
static __always_inline int kfd_filter(u64 f)
{
#ifdef GPT_KUF_ALL
	if (f == GPT_KUF_ALL)
		return 2;
#endif
#ifdef GPT_KUF_DYNAMIC
	if (f == GPT_KUF_DYNAMIC)
		return 3;
#endif
#ifdef GPT_KUF_BY_PASID
	if (f == GPT_KUF_BY_PASID)
		return 1;
#endif
	return -1;
}

static __always_inline int kfd_on_entry(struct pt_regs *ctx, u16 fid, int qi)
{
	struct kfd_entry en = {};
	en.ts = bpf_ktime_get_ns();
	en.arg[0] = PT_REGS_PARM1(ctx);
	en.arg[1] = PT_REGS_PARM2(ctx);
	en.arg[2] = PT_REGS_PARM3(ctx);
	en.arg[3] = PT_REGS_PARM4(ctx);
	en.arg[4] = PT_REGS_PARM5(ctx);
	en.arg[5] = PT_REGS_PARM6(ctx);
	if (qi >= 0)
		kfd_read_flags(kfd_arg(&en, qi), &en.act, &en.evi, &en.sus, &en.pre);
	u64 key = kfd_key(fid);
	kfd_entries.update(&key, &en);
	return 0;
}

/* follow the pointers a call gives to the device and the owning process */
static __always_inline void kfd_resolve(u64 q, u64 qpd, u64 dqm, u64 pm, u64 *dev_out, u64 *proc_io, s32 *owner_out)
{
	u64 dev = 0, proc = *proc_io;
#ifdef GPT_OFF_PM_DQM
	if (!dqm && pm)
		KFD_RD(dqm, pm, GPT_OFF_PM_DQM);
#endif
#ifdef GPT_OFF_QPD_DQM
	if (!dqm && qpd)
		KFD_RD(dqm, qpd, GPT_OFF_QPD_DQM);
#endif
#ifdef GPT_OFF_Q_DEVICE
	if (q)
		KFD_RD(dev, q, GPT_OFF_Q_DEVICE);
#endif
#ifdef GPT_OFF_DQM_DEV
	if (!dev && dqm)
		KFD_RD(dev, dqm, GPT_OFF_DQM_DEV);
#endif
#ifdef GPT_OFF_Q_PROCESS
	if (!proc && q)
		KFD_RD(proc, q, GPT_OFF_Q_PROCESS);
#endif
#if defined(GPT_OFF_QPD_PQM) && defined(GPT_OFF_PQM_PROCESS)
	if (!proc && qpd) {
		u64 pqm = 0;
		KFD_RD(pqm, qpd, GPT_OFF_QPD_PQM);
		if (pqm)
			KFD_RD(proc, pqm, GPT_OFF_PQM_PROCESS);
	}
#endif
	s32 owner = 0;
#if defined(GPT_OFF_PROC_LEAD_THREAD) && defined(GPT_OFF_TASK_TGID)
	if (proc) {
		u64 task = 0;
		KFD_RD(task, proc, GPT_OFF_PROC_LEAD_THREAD);
		if (task)
			KFD_RD(owner, task, GPT_OFF_TASK_TGID);
	}
#endif
	*dev_out = dev;
	*proc_io = proc;
	*owner_out = owner;
}

/* gpu_id, pasid, owner_tgid */
static __always_inline void kfd_fill_owner(struct gpt_event *e, u64 dev, u64 proc, u64 qpd, s32 owner)
{
	if (owner > 0)
		GPT_SET(e, owner_tgid, owner);
#ifdef GPT_OFF_DEV_ID
	if (dev) {
		u32 gpu_id = 0;
		if (!KFD_RD(gpu_id, dev, GPT_OFF_DEV_ID))
			GPT_SET(e, gpu_id, gpu_id);
	}
#endif
#ifdef GPT_OFF_PROC_PASID
	if (proc) {
		u32 pasid = 0;
		if (!KFD_RD(pasid, proc, GPT_OFF_PROC_PASID))
			GPT_SET(e, pasid, pasid);
	}
#elif defined(GPT_OFF_PDD_PASID) && defined(GPT_OFF_PDD_QPD)
	if (qpd) { /* per-device PASID (>= 6.14): the qpd is embedded in its kfd_process_device */
		u32 pasid = 0;
		if (!KFD_RD(pasid, qpd - GPT_OFF_PDD_QPD, GPT_OFF_PDD_PASID))
			GPT_SET(e, pasid, pasid);
	}
#endif
}

/* the queue's own fields (not its flags) */
static __always_inline void kfd_fill_queue(struct gpt_event *e, u64 q)
{
#ifdef GPT_OFF_Q_QUEUE_ID
	u32 qid = 0;
	if (!KFD_RD(qid, q, GPT_OFF_Q_QUEUE_ID))
		GPT_SET(e, queue_id, (s32)qid);
#endif
#ifdef GPT_OFF_Q_TYPE
	u32 qt = 0, fmt = 0;
	int have_fmt = 0;
#ifdef GPT_OFF_Q_FORMAT
	have_fmt = !KFD_RD(fmt, q, GPT_OFF_Q_FORMAT);
#endif
	if (!KFD_RD(qt, q, GPT_OFF_Q_TYPE)) {
		int t = kfd_qtype(qt, fmt, have_fmt);
		if (t >= 0)
			GPT_SET(e, qtype_id, (u8)t);
	}
#endif
#ifdef GPT_OFF_Q_DOORBELL_OFF
	u32 db = 0;
	if (!KFD_RD(db, q, GPT_OFF_Q_DOORBELL_OFF))
		GPT_SET(e, doorbell_off, db);
#endif
#ifdef GPT_OFF_Q_PRIORITY
	u32 prio = 0;
	if (!KFD_RD(prio, q, GPT_OFF_Q_PRIORITY))
		GPT_SET(e, priority, (s32)prio);
#endif
#ifdef GPT_OFF_Q_QUEUE_PERCENT
	u32 pct = 0;
	if (!KFD_RD(pct, q, GPT_OFF_Q_QUEUE_PERCENT))
		GPT_SET(e, queue_percentage, pct);
#endif
#ifdef GPT_OFF_Q_QUEUE_SIZE
	u64 size = 0;
	if (!KFD_RD(size, q, GPT_OFF_Q_QUEUE_SIZE))
		GPT_SET(e, ring_size, size);
#endif
#ifdef GPT_OFF_Q_QUEUE_ADDRESS
	u64 addr = 0;
	if (!KFD_RD(addr, q, GPT_OFF_Q_QUEUE_ADDRESS))
		GPT_SET(e, ring_base, addr);
#endif
}

static __always_inline int kfd_on_return(struct pt_regs *ctx, u16 fid, u16 ev, int ret64, int qi, int qpdi, int dqmi,
					 int pmi, int proci, int filti, int fpi, int gri, int nqi, int qidsi, int cmdi,
					 int pasidi, int devi)
{
	u64 key = kfd_key(fid);
	struct kfd_entry *found = kfd_entries.lookup(&key);
	if (!found)
		return 0;
	struct kfd_entry en = *found;
	kfd_entries.delete(&key);
	u64 now = bpf_ktime_get_ns();
	u64 rc = PT_REGS_RC(ctx);

	u64 q = qi >= 0 ? kfd_arg(&en, qi) : 0;
	u64 qpd = qpdi >= 0 ? kfd_arg(&en, qpdi) : 0;
	u64 proc = proci >= 0 ? kfd_arg(&en, proci) : 0;
	u64 dev = 0;
	s32 owner = 0;
	kfd_resolve(q, qpd, dqmi >= 0 ? kfd_arg(&en, dqmi) : 0, pmi >= 0 ? kfd_arg(&en, pmi) : 0, &dev, &proc, &owner);
	if (devi >= 0) /* the function names its device (struct kfd_node / kfd_dev) itself */
		dev = kfd_arg(&en, devi);

	struct gpt_event *e = gpt_reserve_owned(ev, fid, (u32)owner);
	if (!e)
		return 0;
	e->ts_ns = en.ts;
	GPT_SET(e, dur_ns, now - en.ts);
	GPT_SET(e, ret, ret64 ? (s64)rc : (s64)(s32)rc);
	kfd_fill_owner(e, dev, proc, qpd, owner);

	if (q) {
		if (en.pre & 1)
			GPT_SET(e, is_active, en.act);
		if (en.pre & 2)
			GPT_SET(e, is_evicted, en.evi);
		if (en.pre & 4)
			GPT_SET(e, is_suspended, en.sus);
		u8 act = 0, evi = 0, sus = 0, have = 0;
		kfd_read_flags(q, &act, &evi, &sus, &have);
		if (have & 1)
			GPT_SET(e, is_active_after, act);
		if (have & 2)
			GPT_SET(e, is_evicted_after, evi);
		if (have & 4)
			GPT_SET(e, is_suspended_after, sus);
		kfd_fill_queue(e, q);
	}

	if (filti >= 0) {
		int f = kfd_filter(kfd_arg(&en, filti));
		if (f >= 0)
			GPT_SET(e, unmap_filter, f);
	}
	if (fpi >= 0)
		GPT_SET(e, filter_param, (u32)kfd_arg(&en, fpi));
	if (gri >= 0)
		GPT_SET(e, grace_period, (u32)kfd_arg(&en, gri));
	if (cmdi >= 0)
		GPT_SET(e, ioctl_nr, (u32)kfd_arg(&en, cmdi));
	if (proci >= 0 && owner > 0)
		GPT_SET(e, target_pid, owner);
	if (pasidi >= 0)
		GPT_SET(e, pasid, (u32)(u16)kfd_arg(&en, pasidi)); /* u16 pasid argument (reset_queues_cpsch) */
	if (nqi >= 0) {
		u32 n = (u32)kfd_arg(&en, nqi);
		GPT_SET(e, num_queues, n);
		u64 ids = qidsi >= 0 ? kfd_arg(&en, qidsi) : 0;
		if (ids) {
			/* constant indices (a loop gets rewritten into pointer arithmetic the verifier rejects) */
#define KFD_QID(i) \
	if ((i) < n) \
		bpf_probe_read_user(&e->qids[i], sizeof(u32), (const void *)(ids + 4 * (i)));
			KFD_QID(0) KFD_QID(1) KFD_QID(2) KFD_QID(3) KFD_QID(4) KFD_QID(5) KFD_QID(6) KFD_QID(7)
			KFD_QID(8) KFD_QID(9) KFD_QID(10) KFD_QID(11) KFD_QID(12) KFD_QID(13) KFD_QID(14) KFD_QID(15)
#undef KFD_QID
			e->valid |= GPT_V_qids;
		}
	}
	gpt_submit(e);
	return 0;
}

/* One entry + one return handler per logical probe (the planner attaches the ones this kernel has). */
#define KFD_PROBE(P, EV, RET64)                                                                              \
	int kfd_entry__##P(struct pt_regs *ctx)                                                              \
	{                                                                                                    \
		return kfd_on_entry(ctx, GPT_FID_##P, GPT_ARG_##P##_Q);                                      \
	}                                                                                                    \
	int kfd_return__##P(struct pt_regs *ctx)                                                             \
	{                                                                                                    \
		return kfd_on_return(ctx, GPT_FID_##P, EV, RET64, GPT_ARG_##P##_Q, GPT_ARG_##P##_QPD,        \
				     GPT_ARG_##P##_DQM, GPT_ARG_##P##_PM, GPT_ARG_##P##_PROC,                \
				     GPT_ARG_##P##_FILTER, GPT_ARG_##P##_FPARAM, GPT_ARG_##P##_GRACE,        \
				     GPT_ARG_##P##_NQ, GPT_ARG_##P##_QIDS, GPT_ARG_##P##_CMD,                \
				     GPT_ARG_##P##_PASID, GPT_ARG_##P##_DEV);                                \
	}

KFD_PROBE(create_queue_cpsch, GPT_EV_QUEUE_CREATE, 0)
KFD_PROBE(create_queue_nocpsch, GPT_EV_QUEUE_CREATE, 0)
KFD_PROBE(destroy_queue_cpsch, GPT_EV_QUEUE_DESTROY, 0)
KFD_PROBE(destroy_queue_nocpsch, GPT_EV_QUEUE_DESTROY, 0)
KFD_PROBE(update_queue, GPT_EV_QUEUE_UPDATE, 0)
KFD_PROBE(execute_queues_cpsch, GPT_EV_QUEUES_EXECUTE, 0)
KFD_PROBE(map_queues_cpsch, GPT_EV_QUEUES_MAP, 0)
KFD_PROBE(unmap_queues_cpsch, GPT_EV_QUEUES_UNMAP, 0)
KFD_PROBE(evict_process_queues_cpsch, GPT_EV_PROCESS_EVICT, 0)
KFD_PROBE(evict_process_queues_nocpsch, GPT_EV_PROCESS_EVICT, 0)
KFD_PROBE(restore_process_queues_cpsch, GPT_EV_PROCESS_RESTORE, 0)
KFD_PROBE(restore_process_queues_nocpsch, GPT_EV_PROCESS_RESTORE, 0)
KFD_PROBE(kfd_process_evict_queues, GPT_EV_PROCESS_EVICT, 0)
KFD_PROBE(kfd_process_restore_queues, GPT_EV_PROCESS_RESTORE, 0)
KFD_PROBE(suspend_queues, GPT_EV_QUEUES_SUSPEND, 0)
KFD_PROBE(resume_queues, GPT_EV_QUEUES_RESUME, 0)
KFD_PROBE(pm_send_runlist, GPT_EV_RUNLIST_SUBMIT, 0)
KFD_PROBE(pm_send_set_resources, GPT_EV_SET_RESOURCES, 0)
/* entry of pm_send_unmap_queue .. return of amdkfd_fence_wait_timeout: the CP's unmap time */
KFD_PROBE(hw_unmap_wait, GPT_EV_HW_UNMAP_WAIT, 0)
KFD_PROBE(kfd_ioctl, GPT_EV_KFD_IOCTL, 1)
KFD_PROBE(add_queue_mes, GPT_EV_MES_ADD_QUEUE, 0)
KFD_PROBE(remove_queue_mes, GPT_EV_MES_REMOVE_QUEUE, 0)
/* the debugger ABI (6.12): target_pid = the target process's tgid */
KFD_PROBE(kfd_ioctl_runtime_enable, GPT_EV_RUNTIME_ENABLE, 0)
KFD_PROBE(kfd_dbg_trap_enable, GPT_EV_DBG_TRAP_ENABLE, 0)
KFD_PROBE(kfd_dbg_trap_disable, GPT_EV_DBG_TRAP_DISABLE, 0)
/* the reset path: queue reset after a failed unmap, HWS hang, GPU reset signalled to processes */
KFD_PROBE(reset_queues_cpsch, GPT_EV_QUEUE_RESET, 0)
/* u64 ret: the reset queue's address, 0 = failed */
KFD_PROBE(kgd_gfx_v9_hqd_reset, GPT_EV_QUEUE_RESET, 1)
KFD_PROBE(kgd_gfx_v10_hqd_reset, GPT_EV_QUEUE_RESET, 1)
KFD_PROBE(kgd_gfx_v11_hqd_reset, GPT_EV_QUEUE_RESET, 1)
KFD_PROBE(kfd_hws_hang, GPT_EV_HWS_HANG, 0)
KFD_PROBE(kfd_signal_reset_event, GPT_EV_GPU_RESET, 0)

/* kfd:* tracepoints of the kernel series (kernel/patches), as raw tracepoints: handlers generated from
 * gpreempt_trace/recorder/tracepoints.py (the one table of tracepoint -> event -> columns). */
#include "kfd_tracepoints.h"
