"""Refusals before anything is attached: each names what is wrong and how to fix it (GptError)."""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

from ..trace.containers import uses_kfd  # noqa: F401  (a /proc fact; the controller's checks use it)
from ..errors import GptError, PermissionProblem

YAMA = Path("/proc/sys/kernel/yama/ptrace_scope")
SCHED_POLICY = Path("/sys/module/amdgpu/parameters/sched_policy")


def proc_status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise GptError(f"no process {pid}", "give the TGID of the running offline process (--pid)") from None
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def check_target(pid: int, scheme: str, kfd_path: str = "/dev/kfd") -> dict[str, str]:
    if pid == os.getpid():
        raise GptError(f"pid {pid} is this controller", "give the offline process's TGID")
    st = proc_status(pid)
    if st.get("State", "").startswith(("Z", "X")):
        raise GptError(f"pid {pid} is a zombie ({st.get('State')})", "it has exited; nothing is left to preempt")
    if st.get("Tgid") != str(pid):
        raise GptError(f"pid {pid} is a thread of process {st.get('Tgid')}", f"give the TGID: --pid {st.get('Tgid')}")
    tracer = int(st.get("TracerPid", "0") or 0)
    if tracer and scheme == "A":
        try:
            comm = Path(f"/proc/{tracer}/comm").read_text().strip()
        except OSError:
            comm = "?"
        raise GptError(f"pid {pid} is already traced by pid {tracer} ({comm})",
                       "a process has one tracer: stop rocgdb/strace/rocprofv3 --attach (or the other controller) first")
    if not os.path.exists(kfd_path):
        raise GptError(f"no {kfd_path}", "the amdgpu driver (KFD) is not loaded on this machine")
    if not uses_kfd(pid, kfd_path):
        raise GptError(f"pid {pid} does not use KFD (no {kfd_path} among its fds or maps)",
                       "give the process that runs on the GPU (it opens /dev/kfd)")
    return st


def check_system(scheme: str) -> None:
    if os.geteuid() != 0:
        raise PermissionProblem("the preemption controller needs root", "run it with sudo (ptrace of another user's process, KFD debugger)")
    if scheme == "A":
        try:
            scope = int(YAMA.read_text())
        except (OSError, ValueError):
            scope = None
        if scope == 3:
            raise PermissionProblem("Yama ptrace_scope is 3 (no process may ptrace another)",
                                    "scheme A needs ptrace: it can only be lowered by a reboot; use scheme B")
    try:
        policy = int(SCHED_POLICY.read_text())
    except (OSError, ValueError):
        policy = None
    if policy == 2:
        raise GptError("amdgpu runs with sched_policy=2 (no hardware scheduler)",
                       "the KFD debugger (every DBG_TRAP op EINVAL) and scheme B need HWS: load amdgpu with sched_policy=0")


CAP_SYS_PTRACE = 19


def _caps_eff(status: dict[str, str]) -> int | None:
    try:
        return int(status["CapEff"], 16)
    except (KeyError, ValueError):
        return None


def check_ptrace(pid: int, proc: str = "/proc", yama: Path | None = None) -> None:
    """Scheme A attaches with ptrace: refuse in one line, before anything is touched, when the kernel
    would say EPERM. CAP_SYS_PTRACE is needed for a target of another user or in another user namespace
    (a rootless container), and under Yama ptrace_scope 1 or 2 (the target is no child of ours)."""
    me = {k: v.strip() for k, _, v in (ln.partition(":") for ln in Path(f"{proc}/self/status").read_text().splitlines())}
    try:
        them = {k: v.strip() for k, _, v in (ln.partition(":") for ln in Path(f"{proc}/{pid}/status").read_text().splitlines())}
    except OSError:
        return  # check_target names a missing process
    caps = _caps_eff(me)
    has_cap = caps is not None and bool(caps >> CAP_SYS_PTRACE & 1)
    if has_cap:
        return
    why = []
    my_uid = me.get("Uid", "").split()[1:2]  # effective uid
    if set(them.get("Uid", "").split()[:3]) != set(my_uid):
        why.append(f"it runs as uid {them.get('Uid', '?').split()[0]}")
    try:
        if os.readlink(f"{proc}/self/ns/user") != os.readlink(f"{proc}/{pid}/ns/user"):
            why.append("it is in another user namespace")
    except OSError:
        pass
    if why:
        raise PermissionProblem(f"ptrace of pid {pid} needs CAP_SYS_PTRACE ({', '.join(why)}), which this controller lacks",
                                "run it as root on the host, or start its container with --cap-add SYS_PTRACE (or --privileged)")
    try:
        scope = int((yama or YAMA).read_text())
    except (OSError, ValueError):
        scope = None
    if scope in (1, 2):
        raise PermissionProblem(f"Yama ptrace_scope is {scope} and this controller lacks CAP_SYS_PTRACE (pid {pid} is no child of it)",
                                "run it as root with CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE), or set /proc/sys/kernel/yama/ptrace_scope to 0")


class TargetLock:
    """One controller per target: an flock on <tmp>/gpreempt-trace-control-<pid>.lock holding our pid."""

    def __init__(self, pid: int, directory: str | None = None):
        self.path = Path(directory or tempfile.gettempdir()) / f"gpreempt-trace-control-{pid}.lock"
        self.fd: int | None = None
        self.pid = pid

    def acquire(self) -> TargetLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise GptError(f"pid {self.pid} is already controlled (controller pid {other})",
                           "one controller per target: talk to it with `preempt suspend/resume --socket`, or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
