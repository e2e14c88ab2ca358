/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The portable KFD path: syscalls:sys_enter_ioctl / sys_exit_ioctl, no kprobes needed.
 *
 * Entry keeps the calls of type 'K' made on the KFD device (its kernel dev_t comes as GPT_KFD_RDEV;
 * the fd is walked current->files->fdt->fd[fd]->f_inode->i_rdev with BTF offsets of the running
 * kernel), or, without GPT_KFD_RDEV, the _IOC_NRs user space put in gpt_ioctl_known. It builds the
 * record (argument structs read from user memory at entry) in a per-tid map; exit adds the return
 * value, the outputs (CREATE_QUEUE queue_id/doorbell) and the duration, and submits one kfd_ioctl row.
 *
 * -D knobs: GPT_IOCTL_FUNC_ID, GPT_KFD_RDEV, GPT_OFF_task_struct__files, GPT_OFF_files_struct__fdt,
 * GPT_OFF_fdtable__max_fds, GPT_OFF_fdtable__fd, GPT_OFF_file__f_inode, GPT_OFF_inode__i_rdev,
 * GPT_NR_PREEMPT_QUEUES / GPT_NR_RESUME_QUEUES (scheme B nrs, from kernel/uapi_scheme_b.json).
 * Argument offsets below are the uapi layouts (gpreempt_trace/recorder/ioctls.py has the same as ctypes).
 */
#include "common.h"

#ifndef GPT_IOCTL_FUNC_ID
#define GPT_IOCTL_FUNC_ID 0
#endif
#ifndef GPT_IOCTL_INFLIGHT
#define GPT_IOCTL_INFLIGHT 16384
#endif

#define GPT_IOC_TYPE(c) (((c) >> 8) & 0xff)
#define GPT_IOC_NR(c) ((c) & 0xff)
#define GPT_IOC_SIZE(c) (((c) >> 16) & 0x3fff)
#define GPT_KFD_TYPE 0x4b /* 'K' */

struct gpt_ioctl_inflight_t {
	struct gpt_event ev;
	u64 arg; /* user pointer to the argument struct */
};

BPF_HASH(gpt_ioctl_inflight, u64, struct gpt_ioctl_inflight_t, GPT_IOCTL_INFLIGHT);
BPF_PERCPU_ARRAY(gpt_ioctl_scratch, struct gpt_ioctl_inflight_t, 1);
BPF_ARRAY(gpt_ioctl_known, u8, 256); /* _IOC_NR -> 1 when known (used without GPT_KFD_RDEV) */

static __always_inline int gpt_fd_is_kfd(u32 fd)
{
#ifdef GPT_KFD_RDEV
	u64 task = bpf_get_current_task();
	u64 files = 0, fdt = 0, fdarr = 0, file = 0, inode = 0;
	u32 max_fds = 0, rdev = 0;
	bpf_probe_read_kernel(&files, sizeof(files), (void *)(task + GPT_OFF_task_struct__files));
	if (!files)
		return 0;
	bpf_probe_read_kernel(&fdt, sizeof(fdt), (void *)(files + GPT_OFF_files_struct__fdt));
	if (!fdt)
		return 0;
	bpf_probe_read_kernel(&max_fds, sizeof(max_fds), (void *)(fdt + GPT_OFF_fdtable__max_fds));
	if (fd >= max_fds)
		return 0;
	bpf_probe_read_kernel(&fdarr, sizeof(fdarr), (void *)(fdt + GPT_OFF_fdtable__fd));
	if (!fdarr)
		return 0;
	bpf_probe_read_kernel(&file, sizeof(file), (void *)(fdarr + (u64)fd * 8));
	if (!file)
		return 0;
	bpf_probe_read_kernel(&inode, sizeof(inode), (void *)(file + GPT_OFF_file__f_inode));
	if (!inode)
		return 0;
	bpf_probe_read_kernel(&rdev, sizeof(rdev), (void *)(inode + GPT_OFF_inode__i_rdev));
	return rdev == GPT_KFD_RDEV;
#else
	return 1;
#endif
}

/* uapi KFD_IOC_QUEUE_TYPE_* -> enum gpt_qtype */
static __always_inline void gpt_set_uapi_qtype(struct gpt_event *e, u32 t)
{
	switch (t) {
	case 0: GPT_SET(e, qtype_id, GPT_QT_COMPUTE); break;
	case 1: GPT_SET(e, qtype_id, GPT_QT_SDMA); break;
	case 2: GPT_SET(e, qtype_id, GPT_QT_COMPUTE_AQL); break;
	case 3: GPT_SET(e, qtype_id, GPT_QT_SDMA_XGMI); break;
	case 4: GPT_SET(e, qtype_id, GPT_QT_SDMA_BY_ENG_ID); break;
	}
}

/* read up to GPT_MAX_QUEUE_IDS queue ids from a user array, one id per read with constant indices
 * (older verifiers, e.g. 6.1, cannot bound a loop over e->qids[i]); DBG_TRAP calls are rare */
#define GPT_QID(i)                                                                                   \
	if (ok && (i) < num) {                                                                       \
		ok = bpf_probe_read_user(&e->qids[i], sizeof(u32), (void *)(uptr + stride * (i))) == 0; \
	}
static __always_inline void gpt_read_qids_stride(struct gpt_event *e, u64 uptr, u32 num, u32 stride)
{
	int ok = uptr != 0 && num != 0;
	GPT_QID(0) GPT_QID(1) GPT_QID(2) GPT_QID(3) GPT_QID(4) GPT_QID(5) GPT_QID(6) GPT_QID(7)
	GPT_QID(8) GPT_QID(9) GPT_QID(10) GPT_QID(11) GPT_QID(12) GPT_QID(13) GPT_QID(14) GPT_QID(15)
	if (ok)
		e->valid |= GPT_V_qids;
}
#undef GPT_QID

static __always_inline void gpt_read_qids(struct gpt_event *e, u64 uptr, u32 num)
{
	gpt_read_qids_stride(e, uptr, num, sizeof(u32));
}

struct gpt_create_queue_in {
	u64 ring_base_address, write_pointer_address, read_pointer_address, doorbell_offset;
	u32 ring_size, gpu_id, queue_type, queue_percentage, queue_priority, queue_id;
};

static __always_inline void gpt_decode_entry(struct gpt_event *e, u32 cmd, u64 arg)
{
	u32 nr = GPT_IOC_NR(cmd);
	if (nr == 0x02) { /* CREATE_QUEUE */
		struct gpt_create_queue_in a = {};
		if (bpf_probe_read_user(&a, sizeof(a), (void *)arg))
			return;
		GPT_SET(e, ring_base, a.ring_base_address);
		GPT_SET(e, ring_size, a.ring_size);
		GPT_SET(e, gpu_id, a.gpu_id);
		gpt_set_uapi_qtype(e, a.queue_type);
		GPT_SET(e, queue_percentage, a.queue_percentage);
		GPT_SET(e, priority, (s32)a.queue_priority);
	} else if (nr == 0x03) { /* DESTROY_QUEUE */
		u32 qid;
		if (bpf_probe_read_user(&qid, sizeof(qid), (void *)arg) == 0)
			GPT_SET(e, queue_id, (s32)qid);
	} else if (nr == 0x07) { /* UPDATE_QUEUE: ring_base@0 queue_id@8 ring_size@12 pct@16 prio@20 */
		struct { u64 ring_base; u32 queue_id, ring_size, pct, prio; } a = {};
		if (bpf_probe_read_user(&a, sizeof(a), (void *)arg))
			return;
		GPT_SET(e, ring_base, a.ring_base);
		GPT_SET(e, queue_id, (s32)a.queue_id);
		GPT_SET(e, ring_size, a.ring_size);
		GPT_SET(e, queue_percentage, a.pct);
		GPT_SET(e, priority, (s32)a.prio);
	} else if (nr == 0x1a) { /* SET_CU_MASK: queue_id@0 num_cu_mask@4 cu_mask_ptr@8 */
		u32 qid;
		if (bpf_probe_read_user(&qid, sizeof(qid), (void *)arg) == 0)
			GPT_SET(e, queue_id, (s32)qid);
	} else if (nr == 0x26 && GPT_IOC_SIZE(cmd) >= 32) { /* DBG_TRAP (1.13+): pid@0 op@4 union@8 */
		struct { u32 pid, op; u64 u0, u1; u32 u2, u3; } a = {};
		if (bpf_probe_read_user(&a, sizeof(a), (void *)arg))
			return;
		GPT_SET(e, target_pid, (s32)a.pid);
		GPT_SET(e, dbg_op, a.op);
		if (a.op == 6) { /* SUSPEND_QUEUES: exception_mask@8 ptr@16 num@24 grace@28 */
			GPT_SET(e, num_queues, a.u2);
			GPT_SET(e, grace_period, a.u3);
			gpt_read_qids(e, a.u1, a.u2);
		} else if (a.op == 7) { /* RESUME_QUEUES: ptr@8 num@16 */
			GPT_SET(e, num_queues, (u32)a.u1);
			gpt_read_qids(e, a.u0, (u32)a.u1);
		}
#if defined(GPT_NR_PREEMPT_QUEUES) && defined(GPT_NR_RESUME_QUEUES)
	} else if ((nr == GPT_NR_PREEMPT_QUEUES || nr == GPT_NR_RESUME_QUEUES) && GPT_IOC_SIZE(cmd) >= 24) {
		/* scheme B (kernel/uapi_scheme_b.json): entries@0 (u32 queue_id, s32 result) pid@8 num@12 grace@16 flags@20 */
		struct { u64 entries; u32 pid, num, grace, flags; } a = {};
		if (bpf_probe_read_user(&a, sizeof(a), (void *)arg))
			return;
		GPT_SET(e, target_pid, (s32)a.pid);
		GPT_SET(e, num_queues, a.num);
		if (nr == GPT_NR_PREEMPT_QUEUES)
			GPT_SET(e, grace_period, a.grace);
		gpt_read_qids_stride(e, a.entries, a.num, 8);
#endif
	} else if (nr == 0x82 && GPT_IOC_SIZE(cmd) >= 40) { /* ROCm DBG_TRAP: mask@0 ptr@8 pid@16 op@20 data1..4@24 */
		struct { u64 mask, ptr; u32 pid, op, d1, d2, d3, d4; } a = {};
		if (bpf_probe_read_user(&a, sizeof(a), (void *)arg))
			return;
		GPT_SET(e, target_pid, (s32)a.pid);
		GPT_SET(e, dbg_op, a.op);
		if (a.op == 3) { /* NODE_SUSPEND: data1 = num_queues, data2 = grace period */
			GPT_SET(e, num_queues, a.d1);
			GPT_SET(e, grace_period, a.d2);
			gpt_read_qids(e, a.ptr, a.d1);
		} else if (a.op == 4) { /* NODE_RESUME: data1 = num_queues */
			GPT_SET(e, num_queues, a.d1);
			gpt_read_qids(e, a.ptr, a.d1);
		}
	}
}

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
	u32 cmd = (u32)args->cmd;
	if (GPT_IOC_TYPE(cmd) != GPT_KFD_TYPE)
		return 0;
#ifndef GPT_KFD_RDEV
	u32 nr = GPT_IOC_NR(cmd);
	u8 *known = gpt_ioctl_known.lookup(&nr);
	if (!known || !*known)
		return 0;
#endif
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!gpt_wanted(pid_tgid >> 32))
		return 0;
	if (!gpt_fd_is_kfd((u32)args->fd))
		return 0;
	int zero = 0;
	struct gpt_ioctl_inflight_t *s = gpt_ioctl_scratch.lookup(&zero);
	if (!s)
		return 0;
	struct gpt_event *e = &s->ev;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->event_id = GPT_EV_KFD_IOCTL;
	GPT_SET(e, func_id, GPT_IOCTL_FUNC_ID);
	GPT_SET(e, tgid, (s32)(pid_tgid >> 32));
	GPT_SET(e, tid, (s32)(u32)pid_tgid);
	GPT_SET(e, cpu, (s32)bpf_get_smp_processor_id());
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	e->valid |= GPT_V_comm;
	GPT_SET(e, ioctl_nr, cmd);
	s->arg = args->arg;
	gpt_decode_entry(e, cmd, args->arg);
	u64 key = ((u64)GPT_IOCTL_FUNC_ID << 32) | (u32)pid_tgid;
	gpt_ioctl_inflight.update(&key, s);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
	u64 key = ((u64)GPT_IOCTL_FUNC_ID << 32) | (u32)bpf_get_current_pid_tgid();
	struct gpt_ioctl_inflight_t *s = gpt_ioctl_inflight.lookup(&key);
	if (!s)
		return 0;
	u64 now = bpf_ktime_get_ns();
	struct gpt_event *e = gpt_events.ringbuf_reserve(sizeof(struct gpt_event));
	if (!e) {
		gpt_count_lost();
		gpt_ioctl_inflight.delete(&key);
		return 0;
	}
	__builtin_memcpy(e, &s->ev, sizeof(*e));
	u64 arg = s->arg;
	gpt_ioctl_inflight.delete(&key);
	s64 ret = args->ret;
	GPT_SET(e, dur_ns, now - e->ts_ns);
	GPT_SET(e, ret, ret);
	if (ret == 0 && GPT_IOC_NR(e->ioctl_nr) == 0x02) { /* CREATE_QUEUE outputs */
		u64 doorbell = 0;
		u32 qid = 0;
		if (bpf_probe_read_user(&doorbell, sizeof(doorbell), (void *)(arg + 24)) == 0)
			GPT_SET(e, doorbell_off, (u32)doorbell); /* low 32 bits of the uapi mmap offset */
		if (bpf_probe_read_user(&qid, sizeof(qid), (void *)(arg + 52)) == 0)
			GPT_SET(e, queue_id, (s32)qid);
	}
	gpt_submit(e);
	return 0;
}
