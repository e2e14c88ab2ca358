"""Scheme B's guard against the controller's own SIGKILL: a small process started by the controller's
owner thread with PR_SET_PDEATHSIG(SIGTERM). When the controller dies the kernel sends it SIGTERM and it
resumes every queue of the target (RESUME_QUEUES with FLAG_ALL), then exits. A clean controller exit
dismisses it first (SIGKILL).

    python -m gpreempt_trace.control.watchdog TGID KFD_PATH CONTROLLER_PID
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


class Watchdog:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def dismiss(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def _set_pdeathsig() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start_watchdog(pid: int, kfd_path: str) -> Watchdog:
    proc = subprocess.Popen([sys.executable, "-m", "gpreempt_trace.control.watchdog", str(pid), kfd_path, str(os.getpid())],
                            preexec_fn=_set_pdeathsig, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
    if proc.stdout.readline().strip() != b"armed":  # wait until its handler is in place
        proc.kill()
        proc.wait()
        from ..errors import GptError

        raise GptError("scheme B watchdog did not start", "see its stderr")
    return Watchdog(proc)


def resume_all(pid: int, kfd_path: str) -> int:
    from ..contracts import uapi as U

    sb = U.scheme_b()
    a = U.PreemptQueuesArgs(pid=pid, num_queues=0, grace_period=sb.constants["KFD_PREEMPT_GRACE_PERIOD_DEFAULT"],
                            flags=sb.constants["KFD_PREEMPT_QUEUES_FLAG_ALL"])
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(kfd_path, os.O_RDWR | os.O_CLOEXEC)
    try:
        ret = libc.ioctl(fd, ctypes.c_ulong(U.RESUME_QUEUES), ctypes.byref(a))
        return 0 if ret >= 0 else ctypes.get_errno()
    finally:
        os.close(fd)


def main(argv=None) -> int:
    pid, kfd_path, parent = (argv or sys.argv[1:])[:3]
    fired = []
    signal.signal(signal.SIGTERM, lambda *a: fired.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal ^C goes to the controller, which resumes itself
    if os.getppid() != int(parent):  # the controller died before PDEATHSIG was armed
        fired.append(1)
    print("armed", flush=True)
    while not fired:
        signal.pause()
    err = resume_all(int(pid), kfd_path)
    print(f"gpreempt-trace watchdog: controller {parent} died; RESUME_QUEUES(all) of pid {pid}: "
          f"{'ok' if err == 0 else os.strerror(err)}", file=sys.stderr)
    return 0 if err == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
