"""Scheme A (KFD debugger: ptrace + DBG_TRAP SUSPEND/RESUME_QUEUES) and scheme B (the kernel/ series'
PREEMPT/RESUME_QUEUES ioctls) as state machines over an injectable Io (io.py).

Every method runs on the controller's one owner thread (owner.py): KFD accepts DBG_TRAP ops other than
DISABLE only from the target's ptrace parent *thread*, so attach, the runtime handshake, suspend,
resume and detach all happen there.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from ..contracts import uapi as U
from ..errors import GptError
from . import io as P

EVENTS = U.ec_mask(U.EC_PROCESS_RUNTIME) | U.ec_mask(U.EC_QUEUE_NEW)
GROUP_STOP_SIGNALS = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}


@dataclass
class QueueResult:
    queue_id: int
    result: str  # ok | invalid | error | <errno name lowercased> (scheme B)
    raw: int  # the word the kernel wrote back (A: id | bits; B: result errno, negative)


@dataclass
class CallResult:
    op: str  # preempt | resume
    queue_ids: list
    ts_request_ns: int
    ts_done_ns: int
    ret: int | None = None  # the ioctl's return value (A: count acted on); None when it failed
    errno: int = 0
    queues: list = field(default_factory=list)  # QueueResult
    issued: bool = True  # False: nothing to do (no queues), no ioctl

    @property
    def ok(self) -> bool:
        return self.errno == 0

    @property
    def all_ok(self) -> bool:
        """The call succeeded and the kernel acted on every queue."""
        return self.errno == 0 and all(q.result == "ok" for q in self.queues)

    @property
    def label(self) -> str:
        return "ok" if self.errno == 0 else errno.errorcode.get(self.errno, str(self.errno))

    def as_dict(self) -> dict:
        return {"op": self.op, "ok": self.ok, "label": self.label, "errno": self.errno, "ret": self.ret,
                "queue_ids": self.queue_ids, "queues": [[q.queue_id, q.result, q.raw] for q in self.queues],
                "ts_request_ns": self.ts_request_ns, "ts_done_ns": self.ts_done_ns, "issued": self.issued}


def _nothing(op: str) -> CallResult:
    now = time.monotonic_ns()
    return CallResult(op, [], now, now, ret=0, issued=False)


def _errname(e: int) -> str:
    return errno.errorcode.get(e, str(e))


class Scheme:
    name = "?"

    def __init__(self, io: P.Io, pid: int, unchecked_ids: bool = False):
        self.io, self.pid, self.unchecked_ids = io, pid, unchecked_ids
        self.held: list | None = None  # ids suspended and not yet resumed
        self.alive = True
        self.minor: int | None = None
        self.queues: dict[int, int] = {}  # queue_id -> gpu_id, from the last snapshot (scheme A)
        self.notes: list[str] = []
        self._built: dict[tuple, tuple] = {}  # see _args
        self._seen: dict[tuple, QueueResult] = {}  # (queue id, word the kernel wrote back) -> its result

    def version(self) -> tuple[int, int]:
        v = U.GetVersionArgs()
        self.io.ioctl("AMDKFD_IOC_GET_VERSION", U.GET_VERSION, v)
        self.minor = v.minor_version
        return v.major_version, v.minor_version

    def fds(self) -> list[int]:
        return []

    def _build(self, op: str, ids, grace: int) -> tuple:
        """(ioctl name, request, argument, queue array) of a preempt/resume call."""
        raise NotImplementedError

    def _args(self, op: str, ids, grace: int) -> tuple:
        """_build's result, built once per (op, ids, grace) and reused: each call first restores the
        argument and the array from their bytes as built (the kernel writes results into them)."""
        key = (op, ids if isinstance(ids, str) else tuple(ids), grace)
        hit = self._built.get(key)
        if hit is None:
            if len(self._built) >= 64:
                self._built.clear()
            name, req, a, arr = self._build(op, ids, grace)
            hit = self._built[key] = (name, req, a, arr, memoryview(a).cast("B"), bytes(a), memoryview(arr).cast("B"), bytes(arr))
        else:
            _, _, _, _, va, a0, varr, arr0 = hit
            va[:] = a0  # a memoryview store: no ctypes call
            varr[:] = arr0
        return hit[:4]

    def service(self, events: bool = True) -> None:
        """Handle whatever the target or the kernel reported (ptrace stops, debugger events).
        events=False: the fds() are known to be empty (the caller polls them); skip reading them."""

    def resolve(self, queues) -> list[int]:
        """`all` or a list of ids → the ids to act on; ids the target does not own are bad input."""
        if queues == "all":
            return sorted(self.queues)
        ids = [int(q) for q in queues]
        if not self.unchecked_ids:
            missing = [q for q in ids if q not in self.queues]
            if missing:
                raise GptError(f"pid {self.pid} owns no queue {', '.join(map(str, missing))} "
                               f"(its queues: {sorted(self.queues) or 'none'})",
                               "name queues from `preempt status`, use --queues all, or --unchecked-ids to send them as given")
        return ids

    # ---- suspend / resume: the raw call (the hot path) and its CallResult (built when needed) ----------
    # A raw call is (op, ids, ts_request_ns, ts_done_ns, ret, errno, words): words are what the kernel
    # wrote back per queue (scheme A: id | bits, after a successful call; scheme B: each entry's result).
    def _raw(self, op: str, ids, grace: int) -> tuple:
        raise NotImplementedError

    def result(self, raw: tuple) -> CallResult:
        """The CallResult of a raw call (the answer and the markers are made from it)."""
        raise NotImplementedError

    def suspend_raw(self, ids, grace: int) -> tuple | None:
        """Suspend `ids`: the raw call, or None when there is nothing to do (no ioctl). GptError when held."""
        raise NotImplementedError

    def resume_raw(self, ids=None) -> tuple | None:
        """Resume `ids` (default: what is held): the raw call, or None when there is nothing to do (no ioctl)."""
        raise NotImplementedError

    def suspend(self, ids, grace: int) -> CallResult:
        raw = self.suspend_raw(ids, grace)
        return _nothing("preempt") if raw is None else self.result(raw)

    def resume(self, ids=None) -> CallResult:
        raw = self.resume_raw(ids)
        return _nothing("resume") if raw is None else self.result(raw)

    def gpu_id(self, ids) -> int | None:
        gpus = {self.queues[q] for q in ids if q in self.queues}
        return gpus.pop() if len(gpus) == 1 else None


class StopWatch(threading.Thread):
    """Tells the owner thread that the target has a stop (or its exit) to report, so that it need not
    poll waitpid: blocks in waitid(WNOWAIT) (any thread of the tracer's process may wait for its
    tracees; nothing is consumed), writes a byte to its pipe, and waits until the owner has serviced
    the stop. Ends on ECHILD (the target is no longer traced or gone) or when closed; the owner sets
    `done` before its PTRACE_INTERRUPT, whose stop wakes this thread for the last time."""

    def __init__(self, pid: int):
        super().__init__(name="gpt-stopwatch", daemon=True)
        self.pid = pid
        self.rd, self.wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.serviced = threading.Event()
        self.lock = threading.Lock()
        self.done = False
        self.start()

    def run(self) -> None:
        while not self.done:
            try:
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WSTOPPED | os.WNOWAIT | P.WALL)
            except ChildProcessError:
                return
            self.serviced.clear()
            with self.lock:
                if self.done:
                    return
                os.write(self.wr, b"s")
            self.serviced.wait()

    def acknowledge(self) -> None:
        """The owner serviced what was reported: drain the pipe, let the thread wait for the next stop."""
        try:
            os.read(self.rd, 4096)
        except BlockingIOError:
            pass
        self.serviced.set()

    def close(self) -> None:
        with self.lock:
            self.done = True
        self.serviced.set()
        self.join(1.0)
        with self.lock:
            os.close(self.wr)
        os.close(self.rd)


class SchemeA(Scheme):
    """KFD debugger suspend/resume (KFD ioctl ≥ 1.13)."""

    name = "A"

    def __init__(self, io: P.Io, pid: int, unchecked_ids: bool = False):
        super().__init__(io, pid, unchecked_ids)
        self.seized = self.enabled = False
        self.rd = self.wr = -1
        self.rinfo = U.RuntimeInfo()
        self.runtime_state: int | None = None
        self.handshakes = 0
        self.signals_passed = 0
        self.group_stopped = False
        self.new_tasks: set[int] = set()
        self.watch: StopWatch | None = None  # with real ptrace: wakes the owner on the target's stops

    # ---- attach ----------------------------------------------------------------------------------
    def attach(self) -> None:
        self.io.open_kfd()
        major, minor = self.version()
        if minor < U.DEBUGGER_MIN_MINOR:
            raise GptError(f"scheme A refused: this kernel's KFD ioctl is {major}.{minor}, the debugger ABI "
                           f"(DBG_TRAP SUSPEND/RESUME_QUEUES) needs 1.{U.DEBUGGER_MIN_MINOR}",
                           "use Linux >= 6.5 or ROCm's amdgpu DKMS (KFD 1.17 on 6.12), or scheme B on a kernel with kernel/'s series")
        try:
            self.io.ptrace(P.PTRACE_SEIZE, self.pid, 0, P.SEIZE_OPTIONS)
        except OSError as e:
            raise GptError(f"cannot ptrace pid {self.pid}: {e.strerror}",
                           "another tracer (rocgdb, strace, rocprofv3 --attach) holds it, or Yama ptrace_scope / permissions forbid it") from None
        self.seized = True
        if self.io.real_ptrace:
            self.watch = StopWatch(self.pid)
        self.rd, self.wr = self.io.pipe()  # a pipe: KFD's 1-byte event write to an eventfd is refused
        a = U.dbg_trap_args(self.pid, "ENABLE", exception_mask=EVENTS, rinfo_ptr=ctypes.addressof(self.rinfo),
                            rinfo_size=ctypes.sizeof(self.rinfo), dbg_fd=self.wr)
        try:
            self.io.ioctl("AMDKFD_IOC_DBG_TRAP:ENABLE", U.DBG_TRAP, a, (self.rinfo,))
        except OSError as e:
            raise GptError(f"DBG_TRAP ENABLE on pid {self.pid} failed: {_errname(e.errno)}", {
                errno.EALREADY: "the target already has a KFD debugger (rocgdb, rocprofv3 --attach or another controller)",
                errno.EBUSY: "PC sampling is active on the target (rocprofv3 --pc-sampling): stop it, then attach",
                errno.EINVAL: "every DBG_TRAP op is EINVAL when amdgpu runs with sched_policy=2 (no HWS); check /sys/module/amdgpu/parameters/sched_policy",
                errno.EPERM: "KFD does not see this controller as the target's ptrace parent",
                errno.ESRCH: "the target has no KFD process",
                errno.EBADF: "KFD refused the event pipe",
            }.get(e.errno, "see dmesg")) from None
        self.enabled = True
        self.runtime_state = self.rinfo.runtime_state
        self.service_events()
        self.snapshot()

    # ---- the debugger's duties -------------------------------------------------------------------
    def fds(self) -> list[int]:
        return [fd for fd in (self.rd, self.watch.rd if self.watch else -1) if fd >= 0]

    @property
    def busy_poll(self) -> bool:
        """Stops must be polled for (no StopWatch, or new tasks waiting to be detached)."""
        return self.seized and (self.watch is None or not self.watch.is_alive() or bool(self.new_tasks))

    def service(self, events: bool = True) -> None:
        if self.seized:
            self.service_ptrace()
        if self.watch is not None and events:
            self.watch.acknowledge()
        if self.enabled and events:
            try:
                if os.read(self.rd, 4096):
                    self.service_events()
            except BlockingIOError:
                pass

    def service_events(self) -> None:
        """QUERY_DEBUG_EVENT until EAGAIN; answer EC_PROCESS_RUNTIME (the target's RUNTIME_ENABLE blocks
        until we do) and refresh the snapshot on EC_QUEUE_NEW (new queues are un-suspendable until then)."""
        new_queue = False
        for _ in range(256):
            q = U.dbg_trap_args(self.pid, "QUERY_DEBUG_EVENT", exception_mask=EVENTS)
            try:
                self.io.ioctl("AMDKFD_IOC_DBG_TRAP:QUERY_DEBUG_EVENT", U.DBG_TRAP, q)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.ENODATA):
                    self.notes.append(f"QUERY_DEBUG_EVENT: {_errname(e.errno)}")
                break
            status = q.query_debug_event.exception_mask
            if status & U.ec_mask(U.EC_PROCESS_RUNTIME):
                s = U.dbg_trap_args(self.pid, "SEND_RUNTIME_EVENT", exception_mask=U.ec_mask(U.EC_PROCESS_RUNTIME),
                                    gpu_id=q.query_debug_event.gpu_id, queue_id=q.query_debug_event.queue_id)
                try:
                    self.io.ioctl("AMDKFD_IOC_DBG_TRAP:SEND_RUNTIME_EVENT", U.DBG_TRAP, s)
                    self.handshakes += 1
                    self.runtime_state = None  # toggled; unknown until the next snapshot/ENABLE
                except OSError as e:
                    self.notes.append(f"SEND_RUNTIME_EVENT: {_errname(e.errno)}")
            if status & U.ec_mask(U.EC_QUEUE_NEW):
                new_queue = True
        if new_queue:
            self.snapshot()

    def snapshot(self) -> dict[int, int]:
        """GET_QUEUE_SNAPSHOT (count, then entries), clearing EC_QUEUE_NEW; queue_id -> gpu_id."""
        entry = ctypes.sizeof(U.QueueSnapshotEntry)
        a = U.dbg_trap_args(self.pid, "GET_QUEUE_SNAPSHOT", exception_mask=U.ec_mask(U.EC_QUEUE_NEW),
                            snapshot_buf_ptr=0, num_queues=0, entry_size=entry)
        try:
            self.io.ioctl("AMDKFD_IOC_DBG_TRAP:GET_QUEUE_SNAPSHOT", U.DBG_TRAP, a)
            n = a.queue_snapshot.num_queues
            queues: dict[int, int] = {}
            if n:
                buf = (U.QueueSnapshotEntry * n)()
                a = U.dbg_trap_args(self.pid, "GET_QUEUE_SNAPSHOT", exception_mask=U.ec_mask(U.EC_QUEUE_NEW),
                                    snapshot_buf_ptr=ctypes.addressof(buf), num_queues=n, entry_size=entry)
                self.io.ioctl("AMDKFD_IOC_DBG_TRAP:GET_QUEUE_SNAPSHOT", U.DBG_TRAP, a, (buf,))
                queues = {buf[i].queue_id: buf[i].gpu_id for i in range(min(n, a.queue_snapshot.num_queues))}
            self.queues = queues
        except OSError as e:
            self.notes.append(f"GET_QUEUE_SNAPSHOT: {_errname(e.errno)}")
        return self.queues

    def service_ptrace(self) -> None:
        """Restart every stop at once: signal-delivery-stops get their signal passed on, group-stops are
        LISTENed (the target stays stopped as the user asked), event stops (exec, exit, clone, fork) go on;
        new children/threads are detached as soon as they report (only the thread-group leader is held)."""
        while self.alive:
            try:
                pid, status = self.io.waitpid(self.pid, os.WNOHANG | P.WALL)
            except ChildProcessError:
                self.alive = False
                break
            if pid == 0:
                break
            self._on_stop(status)
        for tid in list(self.new_tasks):
            try:
                pid, status = self.io.waitpid(tid, os.WNOHANG | P.WALL)
            except ChildProcessError:
                self.new_tasks.discard(tid)
                continue
            if pid and os.WIFSTOPPED(status):
                sig = os.WSTOPSIG(status) if (status >> 16) == 0 and os.WSTOPSIG(status) != signal.SIGSTOP else 0
                self._try(P.PTRACE_DETACH, tid, sig)
                self.new_tasks.discard(tid)
            elif pid:
                self.new_tasks.discard(tid)

    def _try(self, req: int, pid: int, data: int = 0) -> None:
        try:
            self.io.ptrace(req, pid, 0, data)
        except ProcessLookupError:
            pass

    def _on_stop(self, status: int) -> int | None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.alive = False
            self.seized = self.enabled = False
            return None
        if not os.WIFSTOPPED(status):
            return None
        sig, event = os.WSTOPSIG(status), status >> 16
        if event == P.PTRACE_EVENT_STOP:
            if sig in GROUP_STOP_SIGNALS:
                self.group_stopped = True
                self._try(P.PTRACE_LISTEN, self.pid)
            else:
                self.group_stopped = False
                self._try(P.PTRACE_CONT, self.pid)
        elif event in (P.PTRACE_EVENT_FORK, P.PTRACE_EVENT_VFORK, P.PTRACE_EVENT_CLONE):
            msg = ctypes.c_ulong(0)
            try:
                self.io.ptrace(P.PTRACE_GETEVENTMSG, self.pid, 0, ctypes.addressof(msg))
                if msg.value:
                    self.new_tasks.add(msg.value)
            except OSError:
                pass
            self._try(P.PTRACE_CONT, self.pid)
        elif event:  # exec, exit
            self._try(P.PTRACE_CONT, self.pid)
        else:  # signal-delivery-stop: pass it on now
            self.signals_passed += 1
            self._try(P.PTRACE_CONT, self.pid, sig)
        return sig

    # ---- suspend / resume ------------------------------------------------------------------------
    def _build(self, op: str, ids: list[int], grace: int) -> tuple:
        n = len(ids)
        arr = (ctypes.c_uint32 * max(n, 1))(*ids)
        if op == "preempt":
            a = U.dbg_trap_args(self.pid, "SUSPEND_QUEUES", exception_mask=0, queue_array_ptr=ctypes.addressof(arr),
                                num_queues=n, grace_period=grace)
            return "AMDKFD_IOC_DBG_TRAP:SUSPEND_QUEUES", U.DBG_TRAP, a, arr
        a = U.dbg_trap_args(self.pid, "RESUME_QUEUES", queue_array_ptr=ctypes.addressof(arr), num_queues=n)
        return "AMDKFD_IOC_DBG_TRAP:RESUME_QUEUES", U.DBG_TRAP, a, arr

    def _raw(self, op: str, ids: list[int], grace: int) -> tuple:
        name, req, a, arr = self._args(op, ids, grace)
        t0 = time.monotonic_ns()
        try:
            ret, err = self.io.ioctl(name, req, a, (arr,)), 0
        except OSError as e:
            ret, err = None, e.errno
        return op, ids, t0, time.monotonic_ns(), ret, err, () if err else tuple(arr[:])  # arr[:]: one ctypes read

    def result(self, raw: tuple) -> CallResult:
        op, ids, t0, t1, ret, err, words = raw
        res = CallResult(op, list(ids), t0, t1, ret, err)
        if err == 0:
            seen = self._seen
            for q, w in zip(ids, words):
                r = seen.get((q, w))
                if r is None:  # results are never changed once made: one object per (id, word written back)
                    if len(seen) >= 4096:
                        seen.clear()
                    r = seen[q, w] = QueueResult(q, U.split_queue_id(w)[1], w)
                res.queues.append(r)
        return res

    def suspend_raw(self, ids: list[int], grace: int) -> tuple | None:
        if self.held is not None:
            raise GptError("queues are already suspended", "resume them first")
        if not ids:
            return None
        raw = self._raw("preempt", ids, grace)
        if raw[5] == 0:
            self.held = list(ids)
        return raw

    def resume_raw(self, ids: list[int] | None = None) -> tuple | None:
        ids = list((self.held if ids is None else ids) or [])
        if not ids:
            return None
        raw = self._raw("resume", ids, 0)
        if raw[5] == 0:
            self.held = None
        return raw

    # ---- detach ----------------------------------------------------------------------------------
    def detach(self) -> list[str]:
        """Resume what is held, DISABLE, ptrace-detach, close. Returns notes (never raises)."""
        notes = []
        if self.held is not None and self.alive and self.enabled:
            r = self.resume()
            if not r.ok:
                notes.append(f"resume at detach: {r.label}")
        if self.enabled and self.alive:
            try:
                self.io.ioctl("AMDKFD_IOC_DBG_TRAP:DISABLE", U.DBG_TRAP, U.dbg_trap_args(self.pid, "DISABLE"))
            except OSError as e:
                notes.append(f"DISABLE: {_errname(e.errno)}")
            self.enabled = False
        if self.watch is not None:
            self.watch.done = True  # the PTRACE_INTERRUPT stop (or the exit) is the last it reports
            self.watch.serviced.set()  # (not left waiting for an acknowledgement that will not come)
        if self.seized and self.alive:
            self._ptrace_detach(notes)
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        self.seized = False
        for fd in (self.rd, self.wr):
            if fd >= 0:
                os.close(fd)
        self.rd = self.wr = -1
        self.io.close_kfd()
        return notes

    def _ptrace_detach(self, notes: list) -> None:
        try:
            self.io.ptrace(P.PTRACE_INTERRUPT, self.pid)
        except ProcessLookupError:
            return
        except OSError as e:
            notes.append(f"PTRACE_INTERRUPT: {e.strerror}")
            return
        if self.watch is not None:
            # let the StopWatch see that stop (its waitid does not consume it) and end before the waitpid
            # below consumes it: a waitid that missed it would block for good (PTRACE_DETACH wakes no waiter)
            self.watch.join(1.0)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                pid, status = self.io.waitpid(self.pid, os.WNOHANG | P.WALL)
            except ChildProcessError:
                return
            if pid == 0:
                if isinstance(self.io, P.DryRunIo):
                    return
                time.sleep(0.0005)
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.alive = False
                return
            sig, event = os.WSTOPSIG(status), status >> 16
            if event in (P.PTRACE_EVENT_FORK, P.PTRACE_EVENT_VFORK, P.PTRACE_EVENT_CLONE):
                self._on_stop(status)
                continue
            # any ptrace-stop allows DETACH; a pending signal is delivered by passing it along
            self._try(P.PTRACE_DETACH, self.pid, sig if event == 0 else 0)
            for tid in list(self.new_tasks):
                try:
                    self.io.waitpid(tid, P.WALL)
                    self._try(P.PTRACE_DETACH, tid)
                except ChildProcessError:
                    pass
            return
        notes.append("the target did not stop for PTRACE_DETACH within 5 s (it stays traced until the controller exits)")


class SchemeB(Scheme):
    """kernel/'s AMDKFD_IOC_PREEMPT_QUEUES / RESUME_QUEUES (no ptrace)."""

    name = "B"

    def __init__(self, io: P.Io, pid: int, unchecked_ids: bool = True):
        super().__init__(io, pid, unchecked_ids=True)  # the kernel checks ids per entry (ENOENT)
        sb = U.scheme_b()
        self.flag_all = sb.constants["KFD_PREEMPT_QUEUES_FLAG_ALL"]
        self.grace_default = sb.constants["KFD_PREEMPT_GRACE_PERIOD_DEFAULT"]

    def attach(self) -> None:
        self.io.open_kfd()
        self.version()
        probe = U.PreemptQueuesArgs()  # all zero: EINVAL where the ioctls exist, ENOTTY where not
        try:
            self.io.ioctl("AMDKFD_IOC_RESUME_QUEUES", U.RESUME_QUEUES, probe)
        except OSError as e:
            if e.errno == errno.ENOTTY:
                raise GptError("scheme B refused: this kernel has no AMDKFD_IOC_PREEMPT_QUEUES/RESUME_QUEUES (ENOTTY)",
                               "boot a kernel with kernel/'s patch series (see kernel/README.md), or use --scheme A") from None
            if e.errno != errno.EINVAL:
                raise GptError(f"scheme B probe failed: {_errname(e.errno)}", "see dmesg") from None

    def resolve(self, queues):
        return "all" if queues == "all" else [int(q) for q in queues]

    def service(self, events: bool = True) -> None:
        """No ptrace here: notice the target's exit from /proc (state Z/X or gone)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            state = "X"
        if state in ("Z", "X"):
            self.alive = False

    def _build(self, op: str, ids, grace: int) -> tuple:
        every = ids == "all"
        n = 0 if every else len(ids)
        entries = (U.PreemptEntry * max(n, 1))(*[U.PreemptEntry(queue_id=q) for q in ([] if every else ids)])
        a = U.PreemptQueuesArgs(queue_array_ptr=0 if every else ctypes.addressof(entries), pid=self.pid, num_queues=n,
                                grace_period=grace, flags=self.flag_all if every else 0)
        name, req = ("AMDKFD_IOC_PREEMPT_QUEUES", U.PREEMPT_QUEUES) if op == "preempt" else ("AMDKFD_IOC_RESUME_QUEUES", U.RESUME_QUEUES)
        return name, req, a, entries

    def _raw(self, op: str, ids, grace: int) -> tuple:
        every = ids == "all"
        name, req, a, entries = self._args(op, ids, grace)
        t0 = time.monotonic_ns()
        try:
            ret, err = self.io.ioctl(name, req, a, () if every else (entries,)), 0
        except OSError as e:
            ret, err = None, e.errno
        t1 = time.monotonic_ns()
        return op, ids, t0, t1, ret, err, () if every else tuple([entries[i].result for i in range(len(ids))])

    def result(self, raw: tuple) -> CallResult:
        op, ids, t0, t1, ret, err, words = raw
        every = ids == "all"
        res = CallResult(op, [] if every else list(ids), t0, t1, ret, err)
        for q, r in zip([] if every else ids, words):
            res.queues.append(QueueResult(q, "ok" if r == 0 else _errname(-r).lower(), r))
        return res

    def suspend_raw(self, ids, grace: int) -> tuple | None:
        if self.held is not None:
            raise GptError("queues are already preempted", "resume them first")
        if not ids:
            return None
        raw = self._raw("preempt", ids, self.grace_default if grace == 0 else grace)
        if raw[5] == 0:
            self.held = ids if ids == "all" else list(ids)
        return raw

    def resume_raw(self, ids=None) -> tuple | None:
        ids = self.held if ids is None else ids
        if not ids:
            return None
        raw = self._raw("resume", ids, self.grace_default)
        if raw[5] == 0:
            self.held = None
        return raw

    def detach(self) -> list[str]:
        notes = []
        if self.held is not None:
            r = self.resume()
            if not r.ok:
                notes.append(f"resume at detach: {r.label}")
        self.io.close_kfd()
        return notes
