"""`preempt serve` and `preempt run`: options, the Unix-socket service, the one-shot mode.

Safety: queues are resumed on every exit path — a request's exception, SIGINT/SIGTERM (turned into
a clean stop), --max-hold expiry (owner thread), a client that disconnects while holding (unless it
preempted with keep=True), the target exiting; the controller's own SIGKILL is covered by KFD itself
for scheme A (the debugger's exit path disables the target, resuming its queues) and by a watchdog
process with PR_SET_PDEATHSIG for scheme B (watchdog.py); a controller that holds past --max-hold
without resuming (SIGSTOPped, hung) is SIGKILLed by that watchdog (both schemes), which resumes.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import statistics
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import GptError
from . import checks
from . import io as P
from . import wire
from .owner import Controller
from .schemes import SchemeA, SchemeB

log = logging.getLogger(__name__)

MAX_HOLD_DEFAULT_MS = 10_000


@dataclass
class PreemptOptions:
    """Options of `preempt serve` (fields named like the flags)."""

    pid: int | None  # the target's host pid (None: resolved from container)
    scheme: str = "A"
    queues: str | list = "all"  # "all" or queue ids
    grace: int = 0  # scheme A: grace period in GPU cycles handed to SUSPEND_QUEUES (0 = KFD default)
    max_hold: int = MAX_HOLD_DEFAULT_MS  # ms
    socket: str | None = None
    output: str | None = None  # trace to write markers into (created when missing)
    unchecked_ids: bool = False
    dry_run: bool = False
    kfd_path: str = "/dev/kfd"
    container: str | None = None  # --container ID: the target is the process of this container with KFD open ...
    ns_pid: int | None = None  # ... or the one with this pid inside it (--ns-pid)


@dataclass
class RunOptions(PreemptOptions):
    """Options of `preempt run` (one-shot)."""

    hold: int = 10  # ms
    repeat: int = 1
    interval: int = 100  # ms


def default_socket(pid: int) -> str:
    return f"/tmp/gpreempt-trace-preempt-{pid}.sock"


def parse_queues(text: str | list | None) -> str | list:
    if text is None or text == "all":
        return "all"
    if isinstance(text, list):
        return [int(q) for q in text]
    try:
        ids = [int(x, 0) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GptError(f"--queues {text!r} is not `all` or a comma-separated list of queue ids", "e.g. --queues 0,1,2") from None
    if not ids or any(q < 0 or q >= 1 << 30 for q in ids):
        raise GptError(f"--queues {text!r}: ids must be 0 .. 2^30-1", "e.g. --queues 0,1,2")
    if len(ids) > 1024 or len(set(ids)) != len(ids):
        raise GptError(f"--queues {text!r}: at most 1024 distinct ids", "name each queue once")
    return ids


def resolve_target(opts: PreemptOptions) -> None:
    """--pid, or --container [--ns-pid]: sets opts.pid to the target's host pid (KFD's DBG_TRAP resolves
    pids in the caller's pid namespace: a pid from inside a container names another process, or none)."""
    if opts.container is None:
        if opts.ns_pid is not None:
            raise GptError("--ns-pid needs --container", "give the container too: --container ID --ns-pid N")
        if opts.pid is None:
            raise GptError("no target given", "give --pid HOSTPID or --container ID")
        return
    if opts.pid is not None:
        raise GptError("give --pid or --container, not both", "--pid is the host pid; --container ID [--ns-pid N] finds it")
    from ..trace.containers import resolve_target as by_container

    opts.pid, _c = by_container(opts.container, opts.ns_pid, opts.kfd_path)


# ---- building a controller ------------------------------------------------------------------------
@contextmanager
def controller(opts: PreemptOptions, io: P.Io | None = None, watchdog: bool | None = None,
               show_ioctl: Callable[[str], None] | None = None):
    """Checks, lock, trace, attach; yields a started Controller; always resumes and detaches.
    `watchdog`: start the watchdog (watchdog.py: resumes when the controller dies, SIGKILLs one that holds
    past --max-hold; default: when the real ioctls are used)
    `show_ioctl(line)`: --dry-run's line per ioctl it would issue (default: logged)."""
    if opts.scheme not in ("A", "B"):
        raise GptError(f"--scheme {opts.scheme!r}", "use A or B")
    queues = parse_queues(opts.queues)
    resolve_target(opts)
    lock = None
    owner_trace = None
    if not opts.dry_run:
        if io is None:
            checks.check_system(opts.scheme)
        checks.check_target(opts.pid, opts.scheme, opts.kfd_path)
        if io is None and opts.scheme == "A":
            checks.check_ptrace(opts.pid)
        lock = checks.TargetLock(opts.pid).acquire()
    if watchdog is None:
        watchdog = io is None and not opts.dry_run
    io = io or (P.DryRunIo(show_ioctl) if opts.dry_run else P.SysIo(opts.kfd_path))
    guard = None
    try:
        if opts.output:
            from ..trace.directory import META, TraceWriter

            if not (Path(opts.output) / META).exists():
                owner_trace = TraceWriter.create(opts.output, labels={"controller": f"scheme {opts.scheme}"})
        unchecked = opts.unchecked_ids or opts.dry_run
        scheme = SchemeA(io, opts.pid, unchecked) if opts.scheme == "A" else SchemeB(io, opts.pid)
        if watchdog and not opts.dry_run:
            from .watchdog import start_watchdog

            guard = start_watchdog(opts.pid, opts.kfd_path, opts.scheme, opts.max_hold)
        from ..trace.containers import container_of

        ctl = Controller(scheme, opts.output, opts.max_hold, opts.grace, queues, container_id=container_of(opts.pid))
        if guard is not None:
            ctl.on_hold = guard.held
        ctl.start()
        try:
            if queues != "all":
                ans = ctl.call("check")
                if not ans.get("ok"):
                    raise GptError(ans["error"])
            yield ctl
        finally:
            for note in ctl.stop(getattr(ctl, "why", "exit")):
                warnings.warn(note, stacklevel=2)
    finally:
        if guard is not None:
            guard.dismiss()
        if owner_trace is not None:
            owner_trace.close()
        if lock is not None:
            lock.release()


class _Stop(Exception):
    def __init__(self, why: str):
        self.why = why


@contextmanager
def _signals_stop():
    """SIGINT/SIGTERM/SIGHUP → _Stop in the main thread (a clean stop that resumes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Stop(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---- the service ----------------------------------------------------------------------------------
SOCKET_PATH_MAX = 107  # bytes: sockaddr_un.sun_path is 108 with its NUL


def _bind(path: str) -> socket.socket:
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise GptError(f"socket path {path} is {len(os.fsencode(path))} bytes, longer than a Unix socket path can be ({SOCKET_PATH_MAX})",
                       "pick a shorter --socket path (e.g. under /tmp or /run)")
    p = Path(path)
    if p.exists() or p.is_symlink():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise GptError(f"socket path {path} is taken (not a socket)", "choose another --socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            probe.close()
            raise GptError(f"socket path {path} is taken (a service answers on it)", "choose another --socket, or stop that service")
        except ConnectionRefusedError:
            p.unlink()  # stale socket of a dead service
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
    except OSError as e:
        s.close()
        raise GptError(f"cannot listen on {path}: {e.strerror or e}", "pick a --socket path on a local file system (e.g. under /tmp or /run)") from None
    os.chmod(path, 0o600)
    s.listen(16)
    s.setblocking(False)
    return s


_QUICK = {wire.PLAIN[op]: op for op in ("preempt", "resume")}  # one whole plain request: Controller.quick


class Service:
    """Answers JSON-line requests on a Unix socket. The socket work runs on the controller's owner
    thread (Controller.add_reader): a request reaches the ioctl with no thread hand-off. A read that
    is exactly one plain preempt/resume line takes Controller.quick (same answer, less work); anything
    else is parsed. Each connection's hold is resumed when the connection goes (unless it preempted
    with keep)."""

    def __init__(self, ctl: Controller, path: str, sock: socket.socket):
        self.ctl, self.path, self.sock = ctl, path, sock
        self.conns: dict[int, socket.socket] = {}
        self.bufs: dict[int, bytes] = {}
        self.holder: int | None = None  # fd of the connection whose preempt is held (not keep)
        ctl.add_reader(sock.fileno(), self._accept)

    def _accept(self, fd: int) -> None:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        self.conns[conn.fileno()] = conn
        self.bufs[conn.fileno()] = b""
        self.ctl.add_reader(conn.fileno(), self._readable)

    def wait(self) -> str:
        """Block the calling (main) thread until the controller stops; signals interrupt it."""
        while not self.ctl.done.done():
            time.sleep(0.2)
        return self.ctl.detach_why

    def close(self) -> None:
        for fd, conn in list(self.conns.items()):
            self.ctl.remove_reader(fd)
            conn.close()
        self.conns.clear()
        self.ctl.remove_reader(self.sock.fileno())

    def _drop(self, fd: int) -> None:
        self.ctl.remove_reader(fd)
        self.bufs.pop(fd, None)
        conn = self.conns.pop(fd, None)
        if conn is not None:
            conn.close()
        if fd == self.holder:
            self.holder = None
            self.ctl.inline("resume", why="client disconnected")
            self.ctl.after_answer()

    def _readable(self, fd: int) -> None:
        conn = self.conns[fd]
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        op = _QUICK.get(data)
        if op is not None and not self.bufs[fd]:
            q = self.ctl.quick(op)
            if q is not None:
                out, ok, failed = q
                if ok:
                    self.holder = fd if op == "preempt" else None
                try:
                    conn.sendall(out)
                except OSError:
                    self._drop(fd)
                finally:
                    if failed is not None:
                        self.ctl.say_failures(failed)
                return
        buf = self.bufs[fd] + data if self.bufs[fd] else data
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            self.bufs[fd] = buf
            out = wire.answer(self._answer(fd, line))
            loud = self.ctl.settle()  # markers queued before the send: nothing but the send and the wait after it
            try:
                conn.sendall(out)
            except OSError:
                self._drop(fd)
                return
            finally:
                if loud is not None:
                    self.ctl.say_failures(loud)

    def _answer(self, fd: int, line: bytes) -> dict:
        try:
            op, req = wire.parse_request(line)
        except ValueError as e:
            return {"ok": False, "error": str(e)}
        if op not in ("preempt", "resume", "status"):
            return {"ok": False, "error": f"unknown op {op!r}: preempt, resume, status"}
        keep = bool(req.pop("keep", False))
        if op == "preempt" and req.get("queues") not in (None, "all"):
            try:
                req["queues"] = parse_queues(req["queues"])
            except GptError as e:
                return {"ok": False, "error": e.line()}
        ans = self.ctl.inline(op, **req)
        if op == "preempt" and ans.get("ok") and ans.get("issued"):
            self.holder = None if keep else fd
        elif op == "resume" and ans.get("ok"):
            self.holder = None
        return ans


def serve(opts: PreemptOptions, io: P.Io | None = None, on_ready=None, watchdog: bool | None = None,
          say: Callable[[str], None] | None = None, show_ioctl: Callable[[str], None] | None = None) -> str:
    """Attach and answer requests on opts.socket until SIGINT/SIGTERM or the target exits. Returns
    why it stopped. `on_ready(status)` is called once the socket listens. `say(line)` gets the
    "serving ..." line and one line per queue the kernel did not act on (the CLI: stderr); without
    it they are logged (INFO). `show_ioctl`: see controller()."""
    say = say or log.info
    resolve_target(opts)
    path = opts.socket or default_socket(opts.pid)
    sock = _bind(path)  # a taken socket path is refused before anything is attached
    with _signals_stop():
        try:
            with controller(opts, io, watchdog, show_ioctl) as ctl:
                ctl.say = say
                svc = Service(ctl, path, sock)
                st = ctl.status()
                say(f"serving scheme {opts.scheme} on pid {opts.pid} (queues {st['queues'] or 'none known'}, "
                    f"max hold {opts.max_hold} ms) at {path}")
                if on_ready:
                    on_ready(st)
                try:
                    why = svc.wait()
                except _Stop as s:
                    why = ctl.why = s.why
                finally:
                    svc.close()
                return why
        except _Stop as s:
            return s.why
        finally:
            sock.close()
            if os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)


# ---- one-shot --------------------------------------------------------------------------------------
@dataclass
class RunResult:
    cycles_done: int
    cycles: int
    preempt_us: list
    resume_us: list
    bad_queues: list  # (cycle, op, queue_id, result)
    failures: list  # (cycle, op, label/error)
    stopped_by: str | None = None

    @property
    def ok(self) -> bool:
        return self.cycles_done == self.cycles and not self.failures and self.stopped_by is None

    def summary(self) -> str:
        def p50(xs):
            return f"{statistics.median(xs):.0f} us" if xs else "n/a"

        return (f"{self.cycles_done}/{self.cycles} cycles; preempt call p50 {p50(self.preempt_us)}, "
                f"resume call p50 {p50(self.resume_us)}; {len(self.bad_queues)} queue results not ok")


def run(opts: RunOptions, io: P.Io | None = None, watchdog: bool | None = None,
        show_ioctl: Callable[[str], None] | None = None) -> RunResult:
    """Preempt, hold, resume, repeat. Exit 0 (RunResult.ok) only when every cycle was carried out and
    every queue resumed (with --unchecked-ids the kernel's per-queue bits are reported, not failures).
    `show_ioctl`: see controller()."""
    res = RunResult(0, opts.repeat, [], [], [], [])
    with _signals_stop():
        try:
            with controller(opts, io, watchdog, show_ioctl) as ctl:
                for cycle in range(opts.repeat):
                    if cycle:
                        time.sleep(opts.interval / 1000)
                    ok = True
                    for op in ("preempt", "resume"):
                        if op == "resume":
                            time.sleep(opts.hold / 1000)
                        ans = ctl.call(op)
                        if not ans.get("ok"):
                            for qid, result, raw in ans.get("queues", []):  # what the kernel said per queue
                                if result != "ok":
                                    res.bad_queues.append((cycle, op, qid, result, raw))
                            res.failures.append((cycle, op, ans.get("error") or ans.get("label")))
                            ok = False
                            if op == "preempt":
                                break
                            continue
                        (res.preempt_us if op == "preempt" else res.resume_us).append(
                            (ans["ts_done_ns"] - ans["ts_request_ns"]) / 1000)
                        for qid, result, raw in ans.get("queues", []):
                            if result != "ok":
                                res.bad_queues.append((cycle, op, qid, result, raw))
                                if not (opts.unchecked_ids or opts.dry_run):
                                    ok = False
                                    res.failures.append((cycle, op, f"queue {qid}: {result}"))
                    if ok:
                        res.cycles_done += 1
                    else:
                        break
                    if not ctl.scheme.alive:
                        res.stopped_by = "target exited"
                        break
        except _Stop as s:
            res.stopped_by = s.why
    return res
