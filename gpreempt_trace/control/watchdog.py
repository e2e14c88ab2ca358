"""The guard against a controller that dies or stops while it holds: a small process started by the
controller with PR_SET_PDEATHSIG(SIGTERM).

- The controller dies (SIGKILL included): the kernel sends the watchdog SIGTERM; for scheme B it resumes
  every queue of the target (RESUME_QUEUES with FLAG_ALL), then exits (scheme A needs nothing: KFD's
  debugger exit path disables the target, resuming its queues).
- The controller holds past overdue_ms(--max-hold) (2 x --max-hold, at least --max-hold + 2 s) without
  resuming (SIGSTOPped, hung): the controller
  stores each hold's start (CLOCK_MONOTONIC ns; 0 when nothing is held) in an 8-byte memfd both map
  (a memory store: no system call on the preempt path); the watchdog reads it every CHECK_S and SIGKILLs
  a controller whose hold is overdue; that is the death above, which resumes.
A clean controller exit dismisses it first (SIGKILL).

    python -m gpreempt_trace.control.watchdog TGID KFD_PATH CONTROLLER_PID [SCHEME [MAX_HOLD_MS HELD_FD]]
"""
from __future__ import annotations

import ctypes
import mmap
import os
import signal
import struct
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
SLACK_MS = 2000  # past --max-hold, how long the controller's own resume may be late: at least this, or
# --max-hold again (under QEMU TCG, with a trace to write, the owner's own max-hold resume came >2 s late)


def overdue_ms(max_hold_ms: int) -> int:
    """How long a hold may last before the watchdog SIGKILLs the controller."""
    return max_hold_ms + max(SLACK_MS, max_hold_ms)
CHECK_S = 0.05  # how often the watchdog reads the hold slot


class Watchdog:
    def __init__(self, proc: subprocess.Popen, slot: mmap.mmap | None = None):
        self.proc = proc
        self.slot = slot

    def held(self, since_ns: int | None) -> None:
        """A hold started at since_ns (CLOCK_MONOTONIC) or ended (None): a store into the shared slot."""
        if self.slot is not None:
            struct.pack_into("=Q", self.slot, 0, since_ns or 0)

    def dismiss(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        if self.slot is not None:
            self.slot.close()
            self.slot = None


def _set_pdeathsig() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start_watchdog(pid: int, kfd_path: str, scheme: str = "B", max_hold_ms: int | None = None) -> Watchdog:
    """Start and arm the watchdog of target `pid`; with max_hold_ms, Watchdog.held() arms the max-hold check."""
    argv = [str(pid), kfd_path, str(os.getpid()), scheme]
    slot, fd = None, -1
    if max_hold_ms is not None:
        fd = os.memfd_create("gpreempt-trace-hold", os.MFD_CLOEXEC)
        os.ftruncate(fd, 8)
        slot = mmap.mmap(fd, 8)
        argv += [str(int(max_hold_ms)), str(fd)]
    try:
        proc = subprocess.Popen([sys.executable, "-m", "gpreempt_trace.control.watchdog", *argv], preexec_fn=_set_pdeathsig,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, pass_fds=(fd,) if fd >= 0 else ())
    finally:
        if fd >= 0:
            os.close(fd)  # the mapping stays
    if proc.stdout.readline().strip() != b"armed":  # wait until its handler is in place
        proc.kill()
        proc.wait()
        from ..errors import GptError

        raise GptError("controller watchdog did not start", "see its stderr")
    return Watchdog(proc, slot)


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
    args = argv or sys.argv[1:]
    pid, kfd_path, parent = args[:3]
    scheme = args[3] if len(args) > 3 else "B"
    max_hold_ns, slot = None, None
    if len(args) > 5:
        max_hold_ns = int(args[4]) * 1_000_000
        slot = mmap.mmap(int(args[5]), 8, access=mmap.ACCESS_READ)
    fired = []
    signal.signal(signal.SIGTERM, lambda *a: fired.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal ^C goes to the controller, which resumes itself
    if os.getppid() != int(parent):  # the controller died before PDEATHSIG was armed
        fired.append(1)
    print("armed", flush=True)
    killed = False
    while not fired:
        if slot is None:
            signal.pause()
            continue
        time.sleep(CHECK_S)  # the SIGTERM handler runs during it; the loop then sees `fired`
        since = struct.unpack_from("=Q", slot, 0)[0]
        if since and not killed and time.monotonic_ns() - since > overdue_ms(max_hold_ns // 1_000_000) * 1_000_000:
            print(f"gpreempt-trace watchdog: controller {parent} held pid {pid}'s queues {overdue_ms(max_hold_ns // 1_000_000)} ms "
                  f"(--max-hold {max_hold_ns // 1_000_000} ms) without resuming (stopped or hung): SIGKILL",
                  file=sys.stderr, flush=True)
            os.kill(int(parent), signal.SIGKILL)  # its death resumes (PDEATHSIG below; scheme A: KFD's exit path)
            killed = True
    if scheme != "B":  # scheme A: KFD's debugger exit path has resumed the target's queues
        return 0
    err = resume_all(int(pid), kfd_path)
    print(f"gpreempt-trace watchdog: controller {parent} died; RESUME_QUEUES(all) of pid {pid}: "
          f"{'ok' if err == 0 else os.strerror(err)}", file=sys.stderr)
    return 0 if err == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
