// SPDX-License-Identifier: GPL-2.0
/*
 * Lab only, never for production: provides ptrace_may_access() to modules
 * on a stock kernel that does not export it, so that the patched amdgpu.ko
 * can be loaded into Debian's unmodified 6.12 (or 6.1) kernel in the QEMU lab.
 * Patch 0002 of the series exports the real function in a rebuilt kernel.
 * The address is looked up once with a kprobe (kallsyms_lookup_name is not
 * exported).
 */
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/ptrace.h>

static bool (*real_ptrace_may_access)(struct task_struct *task,
				      unsigned int mode);

bool ptrace_may_access(struct task_struct *task, unsigned int mode)
{
	return real_ptrace_may_access(task, mode);
}
EXPORT_SYMBOL_GPL(ptrace_may_access);

static int __init shim_init(void)
{
	struct kprobe kp = { .symbol_name = "ptrace_may_access" };
	int ret = register_kprobe(&kp);

	if (ret)
		return ret;
	real_ptrace_may_access = (void *)kp.addr;
	unregister_kprobe(&kp);
	return 0;
}
module_init(shim_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gpreempt-trace lab: ptrace_may_access() for the patched amdgpu.ko");
