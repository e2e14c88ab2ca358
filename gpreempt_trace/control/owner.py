"""The controller: one OS thread owns the scheme (the ptrace attachment, the KFD debugger session, every
ioctl); callers hand it commands and wait for the answer. It also passes the target's signals on,
services the runtime handshake, enforces --max-hold and writes the markers.

The owner thread sleeps in one epoll wait over its fds (the command pipe, the scheme's fds: KFD's event
pipe and the StopWatch pipe that says the target stopped; the service's sockets) with a timeout that is
the next thing due: the scheme's check (every POLL_S while stops must be polled for, else SERVICE_S),
the max-hold expiry, the trace writer's tick. Nothing wakes it while nothing happens. A request is read,
answered and sent with nothing after the send but the next wait; its markers wait in memory as call
results and are written when the thread is idle (no request for QUIET_S with MARKER_QUIET calls
waiting, or a wait that timed out at the tick) or once MARKER_BATCH calls wait, so neither the Arrow
conversion nor a Parquet write sits between a request and its answer. The service's plain
preempt/resume requests take quick(): the scheme's raw call (state kept exactly as the general path
keeps it), the answer from a per-result template, no CallResult or dict per call: the objects are made
when the markers are written (or when a failure is reported, after the send).
"""
from __future__ import annotations

import os
import queue
import select
import threading
import time
from concurrent.futures import Future
from typing import Callable

from ..errors import GptError
from ..trace.markers import MarkerWriter
from . import wire
from .schemes import CallResult, Scheme

POLL_S = 0.001  # while stops must be polled for (scheme.busy_poll): how often (signals pass within ~1 ms)
SERVICE_S = 0.1  # otherwise: how often the scheme looks at the target anyway (scheme B: has it exited?)
TICK_S = 0.1  # the trace writer's tick, when idle
TICK_LATE_S = 0.5  # ... and at the latest this long after it was due, idle or not
MARKER_BATCH = 1024  # calls whose markers wait in memory before they are written even when the thread is not idle
QUIET_S = 0.002  # no request for this long: the thread is idle (writes the markers of MARKER_QUIET calls or more)
MARKER_QUIET = 64  # (fewer wait for the tick; a write of 256 calls' markers takes ~10-20 ms on the 2-CPU VM)
MARKER_BATCH_MS = 100  # the MarkerWriter's own batch (rows added outside call results: attach)


class Controller:
    def __init__(self, scheme: Scheme, trace: str | None = None, max_hold_ms: int | None = None,
                 grace: int = 0, queues="all", container_id: str | None = None):
        self.scheme = scheme
        self.container_id = container_id  # the target's container (64 hex), on every marker; None: host
        self.trace = trace
        self.max_hold_ns = None if max_hold_ms is None else int(max_hold_ms) * 1_000_000
        self.grace, self.queues = grace, queues
        self.cmds: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ready: Future = Future()
        self.done: Future = Future()
        self.seq = 0
        self.on_hold: Callable[[int | None], None] | None = None  # the watchdog's slot: each hold's start (ns) / end (None)
        self.held_since: int | None = None
        self.detach_why = "exit"
        self.thread = threading.Thread(target=self._main, name="gpt-controller", daemon=True)
        self.markers: MarkerWriter | None = None
        self.say: Callable[[str], None] | None = None  # serve: a line per queue the kernel did not act on, per failed call
        self.readers: dict = {}  # fd -> callback(fd), run on the owner thread (the socket service)
        self._poll = select.epoll()  # epoll: a wait costs the same however many fds are watched
        self._pending: tuple | None = None  # the last call's (result, seq, why), until its answer is out
        self._unmarked: list[tuple] = []  # calls (CallResult or raw call, seq, why) whose markers are not written yet
        self._quick_marks: list = []  # quick()'s calls, flat: (answers entry, t0, t1, seq) each: nothing for the GC per call
        self._answers: dict[tuple, tuple] = {}  # quick(): raw result -> (answer template, all_ok)
        self._resolved: tuple | None = None  # quick(): --queues resolved against the scheme's queue snapshot

    @property
    def held_since(self) -> int | None:
        return self._held_since

    @held_since.setter
    def held_since(self, ns: int | None) -> None:  # every hold's start and end reach the watchdog
        self._held_since = ns
        if self.on_hold is not None:
            self.on_hold(ns)

    # ---- caller side -----------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> dict:
        self.thread.start()
        return self.ready.result(timeout_s)  # re-raises the attach error

    def submit(self, op: str, **kw) -> Future:
        fut: Future = Future()
        self.cmds.put((op, kw, fut))
        os.write(self.wfd, b"x")
        return fut

    def call(self, op: str, **kw) -> dict:
        if threading.current_thread() is self.thread:  # a reader callback: answer inline
            return self.inline(op, **kw)
        if self.done.done():
            raise GptError("the controller has stopped", self.detach_why)
        return self.submit(op, **kw).result()

    def inline(self, op: str, **kw) -> dict:
        """Run a request on the owner thread itself (from a reader callback). Then settle() before
        the answer is sent and say_failures() after it (or after_answer() for both, after it)."""
        try:
            return self._do(op, kw)
        except GptError as e:
            return {"ok": False, "error": e.line()}

    def waiting(self) -> int:
        """Calls whose markers are not written yet."""
        return len(self._unmarked) + len(self._quick_marks) // 4

    def after_answer(self) -> None:
        self._flush_markers()

    def settle(self) -> tuple | None:
        """Before the answer is sent: queue the last call's markers (written when idle). Returns what
        say_failures() should report once the answer is out (a failed call), else None."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        res = pending[0]
        if self.markers is not None and res.issued:
            self._unmarked.append(pending)
        return pending if self.say is not None and not res.all_ok else None

    def quick(self, op: str) -> tuple | None:
        """A plain preempt/resume (no arguments) from a reader callback: what inline(op) does, with the
        least work around the ioctl. Returns (answer line, ok, failed) -- `failed` for say_failures() once
        the answer is out, else None -- or None when no ioctl was issued (nothing to do, already held, a
        bad --queues): then inline() gives the answer. Same answers and markers as inline() (tests)."""
        s = self.scheme
        try:
            if op == "preempt":
                known = self._resolved  # (the snapshot it was resolved against, ids, their key)
                if known is None or known[0] is not s.queues:  # a snapshot replaces the dict
                    ids = s.resolve(self.queues)
                    known = self._resolved = (s.queues, ids, ids if isinstance(ids, str) else tuple(ids))
                raw = s.suspend_raw(known[1], self.grace)
            else:
                raw = s.resume_raw()
                known = None
        except GptError:
            return None
        if raw is None:
            return None
        _, ids, t0, t1, ret, err, words = raw
        if err == 0:
            self.held_since = t1 if op == "preempt" else None
        self.seq = seq = self.seq + 1
        key = (op, known[2] if known else ids if isinstance(ids, str) else tuple(ids), ret, err, words)
        hit = self._answers.get(key)
        if hit is None:
            res = s.result(raw)
            if len(self._answers) >= 256:
                self._answers.clear()
            hit = self._answers[key] = (wire.call_template({**res.as_dict(), "seq": 0}), res.all_ok, key)
        tmpl, all_ok, _ = hit
        out = tmpl % (t0, t1, seq) if tmpl is not None else wire.answer({**s.result(raw).as_dict(), "seq": seq})
        if self.markers is not None:
            self._quick_marks += (hit, t0, t1, seq)
        return out, err == 0, (raw, seq, None) if self.say is not None and not all_ok else None

    def say_failures(self, pending: tuple) -> None:
        """One line per queue the kernel did not act on, one per failed call."""
        res, seq, _ = pending
        if isinstance(res, tuple):  # quick()'s raw call
            res = self.scheme.result(res)
        for q in res.queues:
            if q.result != "ok":
                self.say(f"{res.op} seq {seq}: queue {q.queue_id} {q.result} (kernel wrote {q.raw & 0xFFFFFFFF:#010x})")
        if not res.ok:
            self.say(f"{res.op} seq {seq} failed: {res.label}")

    def add_reader(self, fd: int, callback) -> None:
        """Have the owner thread call callback(fd) when fd is readable (thread-safe)."""
        if threading.current_thread() is self.thread:
            self.readers[fd] = callback
            self._watch(fd)
        else:
            self.submit("_reader", fd=fd, callback=callback).result()

    def remove_reader(self, fd: int) -> None:
        if self.readers.pop(fd, None) is not None:
            try:
                self._poll.unregister(fd)
            except (KeyError, OSError, ValueError):  # OSError: the fd is closed; ValueError: the loop has ended
                pass

    def _watch(self, fd: int) -> None:
        try:
            self._poll.register(fd, select.EPOLLIN)
        except FileExistsError:
            self._poll.modify(fd, select.EPOLLIN)

    def stop(self, why: str = "exit", timeout_s: float = 30.0) -> list:
        if self.thread.is_alive():
            self.submit("stop", why=why)
            self.thread.join(timeout_s)
        return self.done.result(0) if self.done.done() else ["controller thread did not stop"]

    # ---- the owner thread ------------------------------------------------------------------------
    def _mark(self, kind: str, ts_ns: int | None = None, **cols) -> None:
        if self.markers is not None:
            cols.setdefault("scheme", self.scheme.name)
            cols.setdefault("target_tgid", self.scheme.pid)
            cols.setdefault("container_id", self.container_id)
            self.markers.add(kind, ts_ns, **cols)

    def _main(self) -> None:
        notes: list = []
        try:
            self.markers = MarkerWriter(self.trace, "controller", batch_ms=MARKER_BATCH_MS) if self.trace else None
            self.scheme.attach()
        except BaseException as e:  # noqa: BLE001 - handed to start()
            notes = self.scheme.detach()
            if self.markers:
                self.markers.close()
            self.ready.set_exception(e)
            self.done.set_result(notes)
            os.close(self.rfd)
            return
        self._mark("controller_attach", label=f"scheme {self.scheme.name}", queue_ids=sorted(self.scheme.queues))
        self.ready.set_result(self.status())
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - resume and detach on every path
            self.detach_why = f"error: {e.__class__.__name__}: {e}"
        finally:
            notes = self.scheme.detach()
            self._flush_markers()
            self._write_markers()
            self._mark("controller_detach", label=self.detach_why)
            if self.markers:
                self.markers.close()
            self._poll.close()
            self.done.set_result(notes)
            # answer whatever is still queued
            while True:
                try:
                    _, _, fut = self.cmds.get_nowait()
                except queue.Empty:
                    break
                fut.set_result({"ok": False, "error": f"controller stopped ({self.detach_why})"})

    def _loop(self) -> None:
        """Timers first, then commands, then the sockets: a request's answer is the last thing the thread
        sends before it sleeps again (work after a send keeps the woken client off this CPU)."""
        poll, readers, rfd = self._poll, self.readers, self.rfd
        scheme_fds = set(self.scheme.fds())
        for fd in (rfd, *scheme_fds):
            self._watch(fd)
        mono = time.monotonic_ns
        now = mono()
        next_service, next_tick = now, now + int(TICK_S * 1e9)
        last = now  # the last poll that returned events
        quiet_ns = int(QUIET_S * 1e9)
        while True:
            wake = next_service
            held = self._held_since
            if held is not None and self.max_hold_ns is not None:
                wake = min(wake, held + self.max_hold_ns)
            if self.markers is not None:
                wake = min(wake, next_tick, last + quiet_ns) if (
                    len(self._quick_marks) >= 4 * MARKER_QUIET or self._unmarked) else min(wake, next_tick)
            events = poll.poll(max(0.0, (wake - mono()) / 1e9))
            if events:
                last = mono()
                if len(events) == 1 and last < wake and len(self._quick_marks) < 4 * MARKER_BATCH - 4 * len(self._unmarked):
                    cb = readers.get(events[0][0])  # the common case: one socket readable, nothing else due
                    if cb is not None:
                        cb(events[0][0])
                        continue
            now = time.monotonic_ns()
            service = now >= next_service
            cmds = pipe = False
            for fd, _ in events:
                if fd == rfd:
                    cmds = True
                elif fd in scheme_fds:
                    service = pipe = True
            if service:
                self.scheme.service(pipe)
                if not self.scheme.alive:
                    self.detach_why = "target exited"
                    self.held_since = None
                    return
                next_service = now + int((POLL_S if getattr(self.scheme, "busy_poll", False) else SERVICE_S) * 1e9)
            if (self.held_since is not None and self.max_hold_ns is not None
                    and time.monotonic_ns() - self.held_since >= self.max_hold_ns):
                self._do("resume", {"why": "max-hold"})
                self._flush_markers()
            if self.markers is not None and (self.waiting() >= MARKER_BATCH or (
                    not events and self.waiting() >= MARKER_QUIET) or (
                    now >= next_tick and (not events or now >= next_tick + int(TICK_LATE_S * 1e9)))):
                self._write_markers()
                self.markers.tick()
                next_tick = time.monotonic_ns() + int(TICK_S * 1e9)
            if cmds and self._commands():
                return
            for fd, _ in events:
                cb = readers.get(fd)
                if cb is not None:
                    cb(fd)

    def _commands(self) -> bool:
        """Run the queued commands; True when one was stop."""
        try:
            os.read(self.rfd, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                op, kw, fut = self.cmds.get_nowait()
            except queue.Empty:
                return False
            if op == "stop":
                self.detach_why = kw.get("why", "exit")
                fut.set_result({"ok": True})
                return True
            if op == "_reader":
                self.readers[kw["fd"]] = kw["callback"]
                self._watch(kw["fd"])
                fut.set_result({"ok": True})
                continue
            try:
                fut.set_result(self._do(op, kw))
            except GptError as e:
                fut.set_result({"ok": False, "error": e.line()})
            except Exception as e:
                fut.set_result({"ok": False, "error": f"{e.__class__.__name__}: {e}"})
                raise
            self._flush_markers()

    def status(self) -> dict:
        s = self.scheme
        return {"ok": True, "scheme": s.name, "pid": s.pid, "alive": s.alive, "held": s.held,
                "queues": sorted(s.queues), "kfd_minor": s.minor,
                "held_ms": None if self.held_since is None else (time.monotonic_ns() - self.held_since) / 1e6,
                "handshakes": getattr(s, "handshakes", None), "signals_passed": getattr(s, "signals_passed", None),
                "notes": list(s.notes)}

    def _do(self, op: str, kw: dict) -> dict:
        if op == "status":
            return self.status()
        if op == "check":  # --queues against the target's queues, before anything is suspended
            ids = self.scheme.resolve(self.queues)
            return {"ok": True, "queue_ids": ids}
        if op == "preempt":
            queues = kw.get("queues") or self.queues
            ids = self.scheme.resolve(queues)
            grace = self.grace if kw.get("grace") is None else int(kw["grace"])
            res = self.scheme.suspend(ids, grace)
            if res.ok and res.issued:
                self.held_since = res.ts_done_ns
        elif op == "resume":
            res = self.scheme.resume()
            if res.ok:
                self.held_since = None
        else:
            raise GptError(f"unknown request {op!r}", "use preempt, resume or status")
        self.seq += 1
        self._pending = (res, self.seq, kw.get("why"))
        out = res.as_dict()
        out["seq"] = self.seq
        return out

    def _flush_markers(self) -> None:
        """After an answer went out: settle() and say_failures()."""
        loud = self.settle()
        if loud is not None:
            self.say_failures(loud)

    def _write_markers(self) -> None:
        """The marker rows of the queued call results, handed to the trace writer."""
        unmarked, self._unmarked = self._unmarked, []
        quick, self._quick_marks = self._quick_marks, []
        for i in range(0, len(quick), 4):
            (_, _, (op, ids, ret, err, words)), t0, t1, seq = quick[i:i + 4]
            unmarked.append(((op, ids, t0, t1, ret, err, words), seq, None))
        if quick:
            unmarked.sort(key=lambda c: c[1])  # by seq, as they were made
        for res, seq, why in unmarked:
            if isinstance(res, tuple):  # quick()'s raw call
                res = self.scheme.result(res)
            res: CallResult
            base = "preempt" if res.op == "preempt" else "resume"
            ids = res.queue_ids if isinstance(res.queue_ids, list) else []
            gpu = self.scheme.gpu_id(ids)
            self._mark(f"{base}_request", res.ts_request_ns, seq=seq, queue_ids=ids, gpu_id=gpu, label=why)
            acted = [q.queue_id for q in res.queues if q.result == "ok"]
            self._mark(f"{base}_done", res.ts_done_ns, seq=seq, queue_ids=acted if res.queues else ids, gpu_id=gpu,
                       label=res.label, value_ns=res.ts_done_ns - res.ts_request_ns)
            for q in res.queues:
                self._mark("queue_result", res.ts_done_ns, seq=seq, queue_ids=[q.queue_id], gpu_id=gpu,
                           label=q.result, value_ns=q.raw)
        if unmarked and self.markers is not None:
            self.markers.tick()
