"""The doctor's checks: what the recorder can attach to on this kernel and what the controller can do.

Live mode checks the running machine (privileges, kprobes, fentry, tracefs, debugfs, /dev/kfd and its
ioctl version, BTF, the amdgpu module) and plans against /proc/kallsyms + /sys/kernel/btf. Offline
mode (--kallsyms and/or --btf) only plans. Every failed check carries a fix hint. Input errors (BTF
unreadable or from another build, unknown probe) raise GptError: one line, non-zero exit. report.py runs them and renders the result.
"""
from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..contracts import uapi
from ..trace.containers import INIT_PIDNS_INO, PROC, SHORT_ID, _read, parse_cgroup, pidns_inode
from ..recorder.plan import IOCTL_COST, KFD_IOCTL, MODULE, SYS_BTF, TRACEFS_DIRS, KfdPlan, ioctl_kprobe_target

AMDKFD_IOC_GET_VERSION = uapi.GET_VERSION  # _IOR('K', 0x01, struct kfd_ioctl_get_version_args {u32 major, minor})
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


@dataclass
class Check:
    name: str
    ok: bool | None  # None: informational
    detail: str
    hint: str = ""
    value: object = None  # what was measured, for callers (e.g. /dev/kfd: the KFD ioctl version (major, minor))

    def as_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint or None}


def _exists(p: Path, dir_: bool = False) -> bool:
    try:
        return p.is_dir() if dir_ else p.exists()
    except OSError:  # e.g. tracefs/debugfs entries are root-only
        return False


def _hidden(p: Path) -> bool:
    """A directory this user may not read (debugfs is 0700: even stat() of tracing/ under it is refused)."""
    try:
        return p.is_dir() and not os.access(p, os.R_OK | os.X_OK)
    except PermissionError:
        return True
    except OSError:
        return False


def _caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _mounted(fstype: str) -> list[str]:
    try:
        return [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines() if ln.split()[2] == fstype]
    except OSError:
        return []


def kfd_ioctl_version(dev: str = "/dev/kfd") -> tuple[int, int]:
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, AMDKFD_IOC_GET_VERSION, buf)
        return struct.unpack("<II", buf)
    finally:
        os.close(fd)


KFD_DEV = "/dev/kfd"


def kfd_device_check(dev: str = KFD_DEV) -> Check:
    """/dev/kfd and its KFD ioctl version (value: (major, minor)); a failure's detail says why in one sentence."""
    if not _exists(Path(dev)):
        return Check("/dev/kfd", False, f"no {dev}: no AMD GPU with the amdgpu/KFD driver on this machine",
                     f"load {MODULE} on a machine with a supported AMD GPU")
    try:
        major, minor = kfd_ioctl_version(dev)
    except PermissionError:
        return Check("/dev/kfd", False, f"{dev}: permission denied", "run as root or join the render group")
    except OSError as e:
        return Check("/dev/kfd", False, f"{dev} GET_VERSION failed: {e.strerror}", "check dmesg for amdgpu/KFD init errors")
    return Check("/dev/kfd", True, f"KFD ioctl version {major}.{minor}", value=(major, minor))


def scheme_a_check(kfd: Check) -> Check:
    """Scheme A (KFD debugger suspend/resume) needs KFD ioctl 1.DEBUGGER_MIN_MINOR or later."""
    if not kfd.ok:
        return Check("scheme A", False, kfd.detail, kfd.hint)
    major, minor = kfd.value
    if minor < uapi.DEBUGGER_MIN_MINOR:
        return Check("scheme A", False, f"KFD ioctl {major}.{minor} < 1.{uapi.DEBUGGER_MIN_MINOR}: no debugger ABI "
                     "(scheme A needs kernel 6.5+ or ROCm's amdgpu DKMS)", "boot kernel 6.5+ or install ROCm's amdgpu DKMS")
    return Check("scheme A", True, f"KFD ioctl {major}.{minor}: debugger ABI (suspend/resume queues)")


def scheme_b_check(kfd: Check, dev: str = KFD_DEV) -> Check:
    """The kernel/ series' PREEMPT_QUEUES ioctl probed with an empty request: ENOTTY = not there."""
    import errno

    name, hint = "scheme B ioctls", "apply the kernel/ series (kernel/README.md)"
    if not kfd.ok:
        return Check(name, False, kfd.detail, kfd.hint)
    try:
        size = uapi.ioc_size(uapi.PREEMPT_QUEUES)
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except (OSError, Exception) as e:  # noqa: BLE001 - no scheme B uapi or no device: say which
        return Check(name, False, f"cannot probe scheme B ({e})", hint)
    try:
        fcntl.ioctl(fd, uapi.PREEMPT_QUEUES, bytearray(size))
        return Check(name, True, "scheme B ioctls present")
    except OSError as e:
        if e.errno == errno.ENOTTY:
            return Check(name, False, "this kernel has no scheme B ioctls (ENOTTY: the kernel/ series is not applied)", hint)
        return Check(name, True, f"scheme B ioctls present (empty probe: {errno.errorcode.get(e.errno, e.errno)})")
    finally:
        os.close(fd)


def _kernel_has_fs(name: str) -> bool:
    try:
        return any(line.split()[-1] == name for line in Path("/proc/filesystems").read_text().splitlines() if line.strip())
    except OSError:
        return False


def live_checks(plan: KfdPlan, tracefs=None) -> list[Check]:
    out: list[Check] = []
    caps = _caps()
    root = os.geteuid() == 0
    can_bpf = root or (caps >> CAP_SYS_ADMIN) & 1 or ((caps >> CAP_BPF) & 1 and (caps >> CAP_PERFMON) & 1)
    out.append(Check("privileges", bool(can_bpf), "root" if root else f"uid {os.geteuid()}, CapEff {caps:#x}",
                     "" if can_bpf else "run as root (or with CAP_BPF + CAP_PERFMON)"))

    d = SYS_BTF
    vm_ok = _exists(d / "vmlinux")
    out.append(Check("btf vmlinux", vm_ok, str(d / "vmlinux") + (" present" if vm_ok else " missing"),
                     "" if vm_ok else "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y"))
    out += module_checks(plan)

    kp = _exists(Path("/sys/bus/event_source/devices/kprobe"), True) or any(_exists(t / "kprobe_events") for t in TRACEFS_DIRS)
    out.append(Check("kprobes", kp, "kprobe PMU present" if kp else "this kernel has no kprobes (CONFIG_KPROBES off)",
                     "" if kp else "KFD function probes need a kernel with CONFIG_KPROBES=y (Debian's kernels have it; the QEMU lab uses one)"))
    out.append(ioctl_path_check(plan, kp))
    fentry = Path("/proc/kallsyms").exists() and _kallsyms_has("bpf_trampoline_link_prog")
    out.append(Check("fentry", None, "BPF trampolines present (unused: BCC resolves fentry targets in vmlinux only, KFD is in amdgpu)" if fentry
                     else "no BPF trampolines (fentry/fexit unavailable)"))

    tfs = [Path(tracefs)] if tracefs else [t for t in TRACEFS_DIRS if _exists(t / "events", True)]
    hidden = not tfs and any(_hidden(t) for t in TRACEFS_DIRS)
    # not mounted, but root on a kernel with tracefs: record mounts it itself (recorder.runtime._ensure_tracefs)
    mountable = not tfs and not tracefs and root and not hidden and _kernel_has_fs("tracefs") and TRACEFS_DIRS[0].is_dir()
    out.append(Check("tracefs", bool(tfs) or mountable,
                     f"{tfs[0]}" if tfs else ("not readable by this user" if hidden else
                                              f"not mounted; record mounts it at {TRACEFS_DIRS[0]} (root)" if mountable else "not mounted"),
                     "" if tfs or mountable else ("run as root" if hidden else "mount -t tracefs nodev /sys/kernel/tracing (the ioctl tracepoints need it)")))
    tp = [p.target for p in plan.probes if p.mechanism == "raw_tracepoint"]
    out.append(Check("kfd tracepoints", None, ", ".join(tp) if tp else "none (kernel without the kfd:* tracepoint series): kprobes are planned"))
    dkms_tp = [p.target for p in plan.probes if p.mechanism == "tracepoint" and p.status == "planned"]
    out.append(Check("dkms tracepoints", None, (", ".join(dkms_tp) + " (ROCm DKMS; read from tracefs format files, no BTF needed)")
                     if dkms_tp else "none (not a ROCm DKMS module with amdkfd:* tracepoints)"))

    dbg = _mounted("debugfs")
    kfd_dbg = _exists(Path("/sys/kernel/debug/kfd"), True)
    out.append(Check("debugfs", bool(dbg) and kfd_dbg,
                     (f"mounted at {dbg[0]}" if dbg else "not mounted") + ("; kfd/ present" if kfd_dbg else "; no kfd/ directory"),
                     "" if dbg and kfd_dbg else ("mount -t debugfs none /sys/kernel/debug" if not dbg else f"kfd/ appears when {MODULE} is loaded (CONFIG_DEBUG_FS=y)")))

    kfd = kfd_device_check()
    out += [kfd, scheme_a_check(kfd), scheme_b_check(kfd)]

    lock = Path("/sys/kernel/security/lockdown")
    if _exists(lock) and os.access(lock, os.R_OK):
        mode = next((w.strip("[]") for w in lock.read_text().split() if w.startswith("[")), "none")
        out.append(Check("lockdown", mode != "confidentiality", mode,
                         "" if mode != "confidentiality" else "lockdown=confidentiality forbids reading kernel memory from BPF; boot with lockdown=integrity or none"))
    attachable = [p for p in plan.probes if p.status == "planned"]
    out.append(Check("kfd probes", bool(attachable), f"{len(attachable)} of {len(plan.probes)} planned",
                     "" if attachable else f"nothing to attach: see the plan below ({MODULE} loaded? kprobes?)"))
    if attachable and not kp:
        out[-1] = Check("kfd probes", False, f"{len(attachable)} planned, but kprobes are unavailable", "use a kernel with CONFIG_KPROBES=y")
    out += container_checks()
    return out


def ioctl_path_check(plan: KfdPlan, kprobes: bool | None) -> Check:
    """Which variant of the ioctl path `record` will attach (kprobe on kfd_ioctl, else the syscall tracepoints)
    and what it costs the rest of the machine. kprobes None: not known (offline)."""
    row, why = ioctl_kprobe_target(plan)
    if row is not None and kprobes is not False:
        where = "" if kprobes else " (if the target kernel has kprobes)"
        return Check("ioctl path", True, f"kprobe on {row.entry_target}{where}: {IOCTL_COST['kprobe']}")
    why = why if row is None else "this kernel has no kprobes"
    return Check("ioctl path", None, f"syscall tracepoints sys_enter/exit_ioctl ({why}): {IOCTL_COST['tracepoint']}",
                 f"with {MODULE} loaded and kprobes, the ioctls are decoded from a kprobe on {KFD_IOCTL} at no cost to other "
                 "processes (`python -m bench tax` measures both)")


def module_checks(plan: KfdPlan, root: str = "/") -> list[Check]:
    """The amdgpu module (in-tree or ROCm DKMS), where the recorder's struct offsets come from, and the
    tools `btf build` needs when they must be built."""
    from ..recorder import btf_build, btf_cache, dkms

    info = dkms.module_info(MODULE, root=root)
    out = []
    if not info.loaded:
        out.append(Check(f"{MODULE} module", False, "not loaded (no AMD GPU driver in this kernel)",
                         f"modprobe {MODULE} on a machine with an AMD GPU (or use the QEMU lab: make lab)"))
    else:
        what = []
        if info.out_of_tree:
            what.append(f"out-of-tree (DKMS) {info.version or 'version unknown'}")
        else:
            what.append("in-tree" + (f", version {info.version}" if info.version else ""))
        if info.taint:
            what.append(f"taint {info.taint}")
        if info.dkms_sources:
            what.append("DKMS source " + ", ".join(str(s) for s in info.dkms_sources))
        for st in info.dkms_status or []:
            what.append(f"dkms: {st.module}/{st.version} {st.kernel or ''} {st.state}".replace("  ", " "))
        out.append(Check(f"{MODULE} module", True, "loaded, " + "; ".join(what)))
    src = plan.btf_source or {}
    kind = src.get("kind")
    if kind == "module":
        out.append(Check(f"btf {MODULE}", True, f"{src.get('path')} (the module's own BTF)"))
    elif kind in ("cache", "dir"):
        built = src.get("built_for") or {}
        when = f", built {built['built_at']}" if built.get("built_at") else ""
        out.append(Check(f"btf {MODULE}", True, f"{src.get('path')}: no BTF of its own; offsets from " +
                         ("the built BTF" if built else "--btf") + when))
    elif not info.loaded:
        out.append(Check(f"btf {MODULE}", None, f"not looked for: {MODULE} is not loaded"))
    else:
        cmd = btf_cache.build_command(info, root)
        out.append(Check(f"btf {MODULE}", False, f"missing: every KFD struct field would be NULL ({src.get('detail') or 'no BTF'})",
                         f"run `{cmd}` once (needs the amdgpu source, this kernel's headers and pahole; docs/recorder.md 'DKMS hosts')"))
    if info.loaded and kind in ("none", "cache", None):
        missing = [f"{tool} ({pkg})" for tool, found, pkg in btf_build.tool_status() if not found]
        out.append(Check("btf build tools", None if not missing else (False if kind == "none" else None),
                         "pahole, make, gcc, ld, objcopy present" if not missing else "missing: " + ", ".join(missing),
                         "" if not missing else "install them to run btf build"))
    return out


# ---- gpreempt-trace itself running in a container (issue 21) ----------------------------------------------
CAPS_NEEDED = {21: "SYS_ADMIN", 38: "PERFMON", 39: "BPF", 19: "SYS_PTRACE"}  # bit -> docker --cap-add name
# what a tools container needs: the host's pids and /proc, BPF and ptrace, the kernel's debugfs, tracefs,
# BTF, modules/headers (BCC) and the KFD device
DOCKER_RUN = ("docker run --rm -it --pid=host --privileged "
              "-v /sys/kernel/debug:/sys/kernel/debug -v /sys/kernel/tracing:/sys/kernel/tracing "
              "-v /sys/kernel/btf:/sys/kernel/btf:ro -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro "
              "--device /dev/kfd IMAGE gpreempt-trace ...")
DOCKER_RUN_CAPS = ("without --privileged: --cap-add SYS_ADMIN --cap-add BPF --cap-add PERFMON --cap-add SYS_PTRACE "
                   "--security-opt seccomp=unconfined --security-opt apparmor=unconfined, and the same --pid=host, -v and --device")


def container_checks(proc: str = PROC, root: str = "/", release: str | None = None) -> list[Check]:
    """doctor's checks for running gpreempt-trace inside a container: the host's pid namespace, the
    kernel's debugfs, tracefs, BTF and modules, the capabilities; every failure says the docker run flags."""
    r = Path(root)
    release = release or os.uname().release
    ns = pidns_inode(os.getpid(), proc) if proc == PROC else pidns_inode(1, proc)
    own = parse_cgroup(_read(f"{proc}/self/cgroup") or "")
    # (/.dockerenv alone proves nothing: VM images built with docker keep it)
    in_ct = (ns is not None and ns != INIT_PIDNS_INO) or bool(own.container_id)
    if not in_ct:
        return [Check("container", None, "not in a container (the host's pid namespace, no container cgroup)")]
    what = [f"container {own.container_id[:SHORT_ID]}" if own.container_id else "a container"]
    out = []
    hint = f"run it on the host, or in a tools container: {DOCKER_RUN}"
    if ns is not None and ns != INIT_PIDNS_INO:
        out.append(Check("container pid ns", False, f"pid:[{ns}] is not the host's (pid:[{INIT_PIDNS_INO}]): the kernel's pids in every event "
                         "and -p/--container/--pid name host processes this /proc does not show", hint))
    else:
        what.append("host pid namespace")
    debug = r / "sys/kernel/debug"
    try:
        missing = [] if debug.is_dir() and any(debug.iterdir()) else [f"{debug} (debugfs)"]
    except OSError:
        missing = [f"{debug} (debugfs)"]
    missing += [str(p) for p in (r / "sys/kernel/btf/vmlinux", r / f"lib/modules/{release}") if not p.exists()]
    if not (r / "sys/kernel/tracing/events").is_dir() and not (r / "sys/kernel/debug/tracing/events").is_dir():
        missing.append(str(r / "sys/kernel/tracing"))
    if missing:
        out.append(Check("container mounts", False, "missing: " + ", ".join(missing), hint))
    status = _read(f"{proc}/self/status") or ""
    caps = next((int(ln.split()[1], 16) for ln in status.splitlines() if ln.startswith("CapEff:")), 0)
    lacking = [n for b, n in CAPS_NEEDED.items() if not caps >> b & 1]
    if lacking:
        out.append(Check("container caps", False, "missing " + ", ".join(f"CAP_{n}" for n in lacking), f"{hint}; {DOCKER_RUN_CAPS}"))
    out.insert(0, Check("container", not out, "running in " + ", ".join(what) + ("" if out else ": it sees what the host sees")))
    return out


def _kallsyms_has(name: str) -> bool:
    try:
        with open("/proc/kallsyms") as f:
            return any(line.split()[2] == name for line in f if name in line)
    except OSError:
        return False
