/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The KFD ioctl path: one kfd_ioctl row per KFD ioctl, its argument struct decoded. Two variants are
 * compiled in; the planner (recorder/plan.py, IoctlPlan) attaches the first that works:
 *   kprobe     kprobe + kretprobe on kfd_ioctl(filep, cmd, arg), KFD's unlocked_ioctl: runs only for calls
 *              on the KFD device, so processes that never touch it pay nothing (needs -DGPT_IOCTL_KPROBE_FUNC_ID)
 *   tracepoint syscalls:sys_enter_ioctl / sys_exit_ioctl, no kprobes needed; runs on every ioctl of every
 *              process (and routes every syscall through the syscall-tracing slow path while attached)
 * Neither is a TRACEPOINT_PROBE: BCC would attach that on load, whichever variant is chosen.
 *
 * Entry keeps the calls of type 'K'; the tracepoint variant also needs the fd to be the KFD device (its
 * kernel dev_t comes as GPT_KFD_RDEV; the fd is walked current->files->fdt->fd[fd]->f_inode->i_rdev with
 * BTF offsets of the running kernel), or, without GPT_KFD_RDEV, the _IOC_NRs user space put in
 * gpt_ioctl_known. It builds the record (argument structs read from user memory at entry) in the thread's
 * slot of gpt_ioctl_inflight; exit adds the return value, the outputs (CREATE_QUEUE queue_id/doorbell: KFD
 * has copied them back by then, in both variants) and the duration, and submits the row. A thread's slot
 * is made by its first KFD ioctl and kept (filled in place by later ones: no map update per call, which
 * cost about as much as the rest of the program) until the thread exits (sched_process_exit). A slot
 * that cannot be made (map full) counts the call as lost.
 *
 * -D knobs: GPT_IOCTL_FUNC_ID (func_id of tracepoint rows), GPT_IOCTL_KPROBE_FUNC_ID (func_id of kprobe
 * rows; absent: no kprobe variant), GPT_IOCTL_NO_TRACEPOINT (no tracepoint variant: --probes kfd),
 * GPT_KFD_RDEV, GPT_OFF_task_struct__files, GPT_OFF_files_struct__fdt, GPT_OFF_fdtable__max_fds,
 * GPT_OFF_fdtable__fd, GPT_OFF_file__f_inode, GPT_OFF_inode__i_rdev,
 * GPT_NR_PREEMPT_QUEUES / GPT_NR_RESUME_QUEUES (scheme B nrs, from kernel/uapi_scheme_b.json).
 * Argument offsets and sizes come from kfd_uapi.h, generated from gpreempt_trace/contracts/uapi.py (the one
 * definition; its ctypes classes are generated from the same tables).
 */
#include "common.h"
#include "kfd_uapi.h"

#ifndef GPT_NR_PREEMPT_QUEUES
#define GPT_NR_PREEMPT_QUEUES GPT_UAPI_NR_PREEMPT_QUEUES
#endif
#ifndef GPT_NR_RESUME_QUEUES
#define GPT_NR_RESUME_QUEUES GPT_UAPI_NR_RESUME_QUEUES
#endif

#ifndef GPT_IOCTL_FUNC_ID
#define GPT_IOCTL_FUNC_ID 0
#endif
#ifndef GPT_IOCTL_INFLIGHT
#define GPT_IOCTL_INFLIGHT 16384
#endif

#define GPT_IOC_TYPE(c) (((c) >> 8) & 0xff)
#define GPT_IOC_NR(c) ((c) & 0xff)
#define GPT_IOC_SIZE(c) (((c) >> 16) & 0x3fff)

struct gpt_ioctl_inflight_t {
	struct gpt_event ev;
	u64 arg; /* user pointer to the argument struct */
	u64 active; /* 1 between the entry and the exit of a KFD ioctl */
};

/* one slot per thread that issued a KFD ioctl, key GPT_IOCTL_FUNC_ID << 32 | tid */
BPF_HASH(gpt_ioctl_inflight, u64, struct gpt_ioctl_inflight_t, GPT_IOCTL_INFLIGHT);
BPF_PERCPU_ARRAY(gpt_ioctl_scratch, struct gpt_ioctl_inflight_t, 1); /* zeroed: a new thread's slot */
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

/* uapi KFD_IOC_QUEUE_TYPE_* -> enum gpt_qtype (the map is generated into kfd_uapi.h from uapi.py) */
static __always_inline void gpt_set_uapi_qtype(struct gpt_event *e, u32 t)
{
	int qt = GPT_UAPI_QTYPE(t);
	if (qt >= 0)
		GPT_SET(e, qtype_id, (u8)qt);
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

/* read a whole uapi argument struct into an 8-byte aligned stack buffer, fields by generated offset */
#define GPT_ARGBUF(name, size) u64 name[((size) + 7) / 8] = {}
#define GPT_U32(buf, off) (*(u32 *)((u8 *)(buf) + (off)))
#define GPT_U64(buf, off) (*(u64 *)((u8 *)(buf) + (off)))

static __always_inline void gpt_decode_entry(struct gpt_event *e, u32 cmd, u64 arg)
{
	u32 nr = GPT_IOC_NR(cmd);
	if (nr == GPT_UAPI_NR_CREATE_QUEUE) { /* inputs up to queue_id (the 1.11 and 1.15+ sizes agree) */
		GPT_ARGBUF(a, GPT_UAPI_CREATE_QUEUE__queue_id);
		if (bpf_probe_read_user(a, GPT_UAPI_CREATE_QUEUE__queue_id, (void *)arg))
			return;
		GPT_SET(e, ring_base, GPT_U64(a, GPT_UAPI_CREATE_QUEUE__ring_base_address));
		GPT_SET(e, ring_size, GPT_U32(a, GPT_UAPI_CREATE_QUEUE__ring_size));
		GPT_SET(e, gpu_id, GPT_U32(a, GPT_UAPI_CREATE_QUEUE__gpu_id));
		gpt_set_uapi_qtype(e, GPT_U32(a, GPT_UAPI_CREATE_QUEUE__queue_type));
		GPT_SET(e, queue_percentage, GPT_U32(a, GPT_UAPI_CREATE_QUEUE__queue_percentage));
		GPT_SET(e, priority, (s32)GPT_U32(a, GPT_UAPI_CREATE_QUEUE__queue_priority));
	} else if (nr == GPT_UAPI_NR_DESTROY_QUEUE) {
		u32 qid;
		if (bpf_probe_read_user(&qid, sizeof(qid), (void *)(arg + GPT_UAPI_DESTROY_QUEUE__queue_id)) == 0)
			GPT_SET(e, queue_id, (s32)qid);
	} else if (nr == GPT_UAPI_NR_UPDATE_QUEUE) {
		GPT_ARGBUF(a, GPT_UAPI_UPDATE_QUEUE__SIZE);
		if (bpf_probe_read_user(a, GPT_UAPI_UPDATE_QUEUE__SIZE, (void *)arg))
			return;
		GPT_SET(e, ring_base, GPT_U64(a, GPT_UAPI_UPDATE_QUEUE__ring_base_address));
		GPT_SET(e, queue_id, (s32)GPT_U32(a, GPT_UAPI_UPDATE_QUEUE__queue_id));
		GPT_SET(e, ring_size, GPT_U32(a, GPT_UAPI_UPDATE_QUEUE__ring_size));
		GPT_SET(e, queue_percentage, GPT_U32(a, GPT_UAPI_UPDATE_QUEUE__queue_percentage));
		GPT_SET(e, priority, (s32)GPT_U32(a, GPT_UAPI_UPDATE_QUEUE__queue_priority));
	} else if (nr == GPT_UAPI_NR_SET_CU_MASK) {
		u32 qid;
		if (bpf_probe_read_user(&qid, sizeof(qid), (void *)(arg + GPT_UAPI_SET_CU_MASK__queue_id)) == 0)
			GPT_SET(e, queue_id, (s32)qid);
	} else if (nr == GPT_UAPI_NR_DBG_TRAP && GPT_IOC_SIZE(cmd) >= GPT_UAPI_DBG_TRAP__SIZE) { /* 1.13+ */
		GPT_ARGBUF(a, GPT_UAPI_DBG_TRAP__SIZE);
		if (bpf_probe_read_user(a, GPT_UAPI_DBG_TRAP__SIZE, (void *)arg))
			return;
		u32 op = GPT_U32(a, GPT_UAPI_DBG_TRAP__op);
		GPT_SET(e, target_pid, (s32)GPT_U32(a, GPT_UAPI_DBG_TRAP__pid));
		GPT_SET(e, dbg_op, op);
		if (op == GPT_UAPI_DBG_OP_SUSPEND_QUEUES) {
			u32 num = GPT_U32(a, GPT_UAPI_DBG_TRAP_SUSPEND_QUEUES__num_queues);
			GPT_SET(e, num_queues, num);
			GPT_SET(e, grace_period, GPT_U32(a, GPT_UAPI_DBG_TRAP_SUSPEND_QUEUES__grace_period));
			gpt_read_qids(e, GPT_U64(a, GPT_UAPI_DBG_TRAP_SUSPEND_QUEUES__queue_array_ptr), num);
		} else if (op == GPT_UAPI_DBG_OP_RESUME_QUEUES) {
			u32 num = GPT_U32(a, GPT_UAPI_DBG_TRAP_RESUME_QUEUES__num_queues);
			GPT_SET(e, num_queues, num);
			gpt_read_qids(e, GPT_U64(a, GPT_UAPI_DBG_TRAP_RESUME_QUEUES__queue_array_ptr), num);
		}
	} else if ((nr == GPT_NR_PREEMPT_QUEUES || nr == GPT_NR_RESUME_QUEUES) &&
		   GPT_IOC_SIZE(cmd) >= GPT_UAPI_PREEMPT_QUEUES__SIZE) { /* scheme B (kernel/uapi_scheme_b.json) */
		GPT_ARGBUF(a, GPT_UAPI_PREEMPT_QUEUES__SIZE);
		if (bpf_probe_read_user(a, GPT_UAPI_PREEMPT_QUEUES__SIZE, (void *)arg))
			return;
		u32 num = GPT_U32(a, GPT_UAPI_PREEMPT_QUEUES__num_queues);
		GPT_SET(e, target_pid, (s32)GPT_U32(a, GPT_UAPI_PREEMPT_QUEUES__pid));
		GPT_SET(e, num_queues, num);
		if (nr == GPT_NR_PREEMPT_QUEUES)
			GPT_SET(e, grace_period, GPT_U32(a, GPT_UAPI_PREEMPT_QUEUES__grace_period));
		gpt_read_qids_stride(e, GPT_U64(a, GPT_UAPI_PREEMPT_QUEUES__queue_array_ptr), num,
				     GPT_UAPI_QUEUE_PREEMPT_ENTRY__SIZE);
	} else if (nr == GPT_UAPI_NR_DBG_TRAP_DEPRECATED && GPT_IOC_SIZE(cmd) >= GPT_UAPI_ROCM_DBG_TRAP__SIZE) {
		/* ROCm's pre-upstream DBG_TRAP: NODE_SUSPEND data1 = num, data2 = grace; NODE_RESUME data1 = num */
		GPT_ARGBUF(a, GPT_UAPI_ROCM_DBG_TRAP__SIZE);
		if (bpf_probe_read_user(a, GPT_UAPI_ROCM_DBG_TRAP__SIZE, (void *)arg))
			return;
		u32 op = GPT_U32(a, GPT_UAPI_ROCM_DBG_TRAP__op);
		u32 num = GPT_U32(a, GPT_UAPI_ROCM_DBG_TRAP__data1);
		GPT_SET(e, target_pid, (s32)GPT_U32(a, GPT_UAPI_ROCM_DBG_TRAP__pid));
		GPT_SET(e, dbg_op, op);
		if (op == GPT_UAPI_ROCM_DBG_OP_NODE_SUSPEND || op == GPT_UAPI_ROCM_DBG_OP_NODE_RESUME) {
			GPT_SET(e, num_queues, num);
			if (op == GPT_UAPI_ROCM_DBG_OP_NODE_SUSPEND)
				GPT_SET(e, grace_period, GPT_U32(a, GPT_UAPI_ROCM_DBG_TRAP__data2));
			gpt_read_qids(e, GPT_U64(a, GPT_UAPI_ROCM_DBG_TRAP__ptr), num);
		}
	}
}

/* entry of a KFD ioctl (type 'K', the caller passed the filters): fill the thread's slot */
static __always_inline int gpt_ioctl_enter(u32 cmd, u64 arg, u16 func_id)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u64 key = ((u64)GPT_IOCTL_FUNC_ID << 32) | (u32)pid_tgid;
	struct gpt_ioctl_inflight_t *s = gpt_ioctl_inflight.lookup(&key);
	if (!s) { /* the thread's first KFD ioctl: make its slot */
		int zero = 0;
		struct gpt_ioctl_inflight_t *z = gpt_ioctl_scratch.lookup(&zero);
		if (!z || gpt_ioctl_inflight.update(&key, z) || !(s = gpt_ioctl_inflight.lookup(&key))) {
			gpt_count_lost();
			return 0;
		}
	}
	struct gpt_event *e = &s->ev;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->event_id = GPT_EV_KFD_IOCTL;
	GPT_SET(e, func_id, func_id);
	GPT_SET(e, tgid, (s32)(pid_tgid >> 32));
	GPT_SET(e, tid, (s32)(u32)pid_tgid);
	GPT_SET(e, cpu, (s32)bpf_get_smp_processor_id());
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	e->valid |= GPT_V_comm;
	GPT_SET(e, ioctl_nr, cmd);
	s->arg = arg;
	gpt_decode_entry(e, cmd, arg);
	s->active = 1;
	return 0;
}

/* return of the thread's KFD ioctl: the row, with the return value and the outputs */
static __always_inline int gpt_ioctl_exit(s64 ret)
{
	u64 key = ((u64)GPT_IOCTL_FUNC_ID << 32) | (u32)bpf_get_current_pid_tgid();
	struct gpt_ioctl_inflight_t *s = gpt_ioctl_inflight.lookup(&key);
	if (!s || !s->active)
		return 0;
	s->active = 0;
	u64 now = bpf_ktime_get_ns();
	struct gpt_event *e = gpt_events.ringbuf_reserve(sizeof(struct gpt_event));
	if (!e) {
		gpt_count_lost();
		return 0;
	}
	__builtin_memcpy(e, &s->ev, sizeof(*e));
	u64 arg = s->arg;
	GPT_SET(e, dur_ns, now - e->ts_ns);
	GPT_SET(e, ret, ret);
	if (ret == 0 && GPT_IOC_NR(e->ioctl_nr) == GPT_UAPI_NR_CREATE_QUEUE) { /* CREATE_QUEUE outputs */
		u64 doorbell = 0;
		u32 qid = 0;
		if (bpf_probe_read_user(&doorbell, sizeof(doorbell), (void *)(arg + GPT_UAPI_CREATE_QUEUE__doorbell_offset)) == 0)
			GPT_SET(e, doorbell_off, (u32)doorbell); /* low 32 bits of the uapi mmap offset */
		if (bpf_probe_read_user(&qid, sizeof(qid), (void *)(arg + GPT_UAPI_CREATE_QUEUE__queue_id)) == 0)
			GPT_SET(e, queue_id, (s32)qid);
	}
	gpt_submit(e);
	return 0;
}

#ifndef GPT_IOCTL_NO_TRACEPOINT
/* the tracepoint variant (attached by the planner, as syscalls:sys_enter_ioctl / sys_exit_ioctl) */
int gpt_ioctl_tp_enter(struct tracepoint__syscalls__sys_enter_ioctl *args)
{
	u32 cmd = (u32)args->cmd;
	if (GPT_IOC_TYPE(cmd) != GPT_UAPI_IOC_TYPE)
		return 0;
#ifndef GPT_KFD_RDEV
	u32 nr = GPT_IOC_NR(cmd);
	u8 *known = gpt_ioctl_known.lookup(&nr);
	if (!known || !*known)
		return 0;
#endif
	if (!gpt_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	if (!gpt_fd_is_kfd((u32)args->fd))
		return 0;
	return gpt_ioctl_enter(cmd, args->arg, GPT_IOCTL_FUNC_ID);
}

int gpt_ioctl_tp_exit(struct tracepoint__syscalls__sys_exit_ioctl *args)
{
	return gpt_ioctl_exit(args->ret);
}
#endif

#ifdef GPT_IOCTL_KPROBE_FUNC_ID
/* the kprobe variant: kfd_ioctl(struct file *filep, unsigned int cmd, unsigned long arg) -> long.
 * Only KFD's file reaches it, so no fd walk; its return is the syscall's for type 'K' (vfs_ioctl passes
 * it through; KFD never returns -ENOIOCTLCMD) */
int gpt_ioctl_kp_enter(struct pt_regs *ctx)
{
	u32 cmd = (u32)PT_REGS_PARM2(ctx);
	if (GPT_IOC_TYPE(cmd) != GPT_UAPI_IOC_TYPE)
		return 0;
	if (!gpt_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return gpt_ioctl_enter(cmd, PT_REGS_PARM3(ctx), GPT_IOCTL_KPROBE_FUNC_ID);
}

int gpt_ioctl_kp_exit(struct pt_regs *ctx)
{
	return gpt_ioctl_exit((s64)PT_REGS_RC(ctx));
}
#endif

/* a thread's slot goes with the thread (and, following the launched command, its tgid entry) */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	u64 key = ((u64)GPT_IOCTL_FUNC_ID << 32) | tid;
	gpt_ioctl_inflight.delete(&key);
#ifdef GPT_FOLLOW_FORK
	if (tid != (u32)(pid_tgid >> 32))
		gpt_tgids.delete(&tid); /* a thread's entry; a process's own entry stays until its reaping is moot */
#endif
	return 0;
}
