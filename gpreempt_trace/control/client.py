"""`Client(socket)`: what an online server calls to take the offline process's queues off the GPU.

    from gpreempt_trace.control import Client
    c = Client("/tmp/gpreempt-trace-preempt-1234.sock")
    with c.preempted():          # preempt on enter, resume on exit (also on exceptions)
        run_latency_critical_request()
    c.status()

One JSON line per request and per answer over a Unix stream socket (`preempt serve`). A hold is tied
to the connection: if the client disconnects (or dies) while holding, the service resumes at once —
unless the preempt asked for keep=True (what the one-shot CLI `preempt suspend` does; --max-hold still
bounds it).

Waiting for an answer: the client first stays awake for up to `spin_us` (default SPIN_US), looking for
the answer without blocking and yielding its CPU between looks (a service on the same CPU runs at
once), and only then sleeps in recv. A sleeping client costs an idle CPU's wake-up on each answer, and
the service's own wake-up on the request is slower when the client's CPU has gone idle: on the 2-vCPU
VM, client and service on two CPUs, 51-52 us round trips became 25-31 us (docs/controller.md). The
price is up to `spin_us` of CPU per request; spin_us=0 sleeps at once. A client that shares its only
CPU with the service (both pinned to it, checked at connect) sleeps at once too: there the answer cannot
come while it is awake, and on the VM staying awake cost p99 2.1x the floor against 1.8x asleep.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..errors import GptError
from . import wire

TIMEOUT_S = 5.0  # a service that answers nothing for this long is stopped or hung (its calls take ms)
MAX_ANSWER = 1 << 20  # bytes of one answer line
SPIN_US = 100  # how long a client stays awake for an answer before it sleeps (module docstring)
_PLAIN = wire.PLAIN


class ControlError(GptError):
    """The service refused or failed a request; `.answer` holds its reply."""

    def __init__(self, what: str, hint: str = "", answer: dict | None = None):
        super().__init__(what, hint)
        self.answer = answer or {}


def _one_cpu_with_peer(sock: socket.socket) -> bool:
    """Whether this thread and the service at the other end of `sock` may each run on one CPU only, the
    same one (their affinities; the service's read from its pid, SO_PEERCRED). Then no answer can come
    while this thread holds the CPU: staying awake for it only delays the service."""
    try:
        pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        mine = os.sched_getaffinity(0)
        return pid > 0 and len(mine) == 1 and os.sched_getaffinity(pid) == mine  # pid 0: not in our pid namespace
    except OSError:  # gone, or not ours to read: assume it may run elsewhere
        return False


def _spin(sock: socket.socket, spin_ns: int) -> bytes:
    """What arrives on `sock` within spin_ns, looked for without blocking, the CPU yielded between looks;
    b"" when nothing came (or the service closed: the blocking recv after it says so)."""
    now, recv, yield_cpu = time.monotonic_ns, sock.recv, os.sched_yield
    end = now() + spin_ns
    while True:
        try:
            return recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if now() >= end:
                return b""
            yield_cpu()


class Client:
    def __init__(self, socket_path: str, timeout_s: float | None = TIMEOUT_S, spin_us: int = SPIN_US):
        self.path = str(socket_path)
        self.timeout_s = timeout_s
        if spin_us < 0:
            raise GptError(f"spin_us {spin_us} is negative", "give 0 (sleep at once) or more microseconds")
        self.spin_ns = int(spin_us * 1000)
        self._spin_ns = self.spin_ns  # this connection's: 0 when client and service share their only CPU
        self._sock: socket.socket | None = None
        self._buf = b""

    @property
    def awake_us(self) -> int:
        """How long this connection stays awake for an answer: spin_us, or 0 where it shares its only CPU
        with the service (decided at connect)."""
        return self._spin_ns // 1000

    # ---- connection ------------------------------------------------------------------------------
    def connect(self) -> Client:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if self.timeout_s is not None:
                # a blocking socket with kernel-side timeouts: one syscall per message (a Python socket
                # timeout would poll() before every send and recv); expiry is EAGAIN
                sec = int(self.timeout_s)
                tv = struct.pack("ll", sec, max(int((self.timeout_s - sec) * 1e6), 0 if sec else 1))  # 0 0: never
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)  # send and connect
            try:
                s.connect(self.path)
            except OSError as e:
                s.close()
                raise ControlError(f"no preempt service at {self.path}: {e.strerror or e}",
                                   "start one with `gpreempt-trace preempt serve --pid TGID --socket PATH`") from None
            self._sock = s
            self._spin_ns = 0 if self.spin_ns and _one_cpu_with_peer(s) else self.spin_ns
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buf = b""

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, op: str, **kw) -> dict:
        """Send one request, return the service's answer (a dict with "ok")."""
        return self._exchange(op, wire.request(op, kw) if kw else wire.PLAIN.get(op) or wire.request(op, kw))

    def _exchange(self, op: str, msg: bytes) -> dict:
        sock = self._sock or self.connect()._sock
        buf = self._buf
        try:
            sock.sendall(msg)
            if self._spin_ns and b"\n" not in buf:
                buf += _spin(sock, self._spin_ns)
            while b"\n" not in buf:
                if len(buf) > MAX_ANSWER:
                    break
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the service closed the connection")
                buf += chunk
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO/SO_SNDTIMEO expired
            self.close()
            raise ControlError(f"preempt service at {self.path} did not answer {op} within {self.timeout_s:g} s",
                               "check that `preempt serve` is running and not stopped, or allow a slow one more time "
                               "(preempt --timeout, workload --controller-timeout)") from None
        except OSError as e:
            self.close()
            raise ControlError(f"preempt service at {self.path}: {e}", "is `preempt serve` still running?") from None
        line, _, self._buf = buf.partition(b"\n")
        ans = wire.parse_answer(line)
        if not isinstance(ans, dict) or not isinstance(ans.get("ok"), bool):
            self.close()
            shown = repr(line[:60]) + ("..." if len(line) > 60 else "")
            raise ControlError(f"{self.path} answered {op} with {shown}, not a preempt service answer (a JSON object with \"ok\": true|false)",
                               "give the socket of `gpreempt-trace preempt serve`")
        return ans

    def _checked(self, op: str, **kw) -> dict:
        ans = self.request(op, **kw) if kw or op not in _PLAIN else self._exchange(op, _PLAIN[op])  # plain: sent as is
        if not ans["ok"]:
            raise ControlError(f"{op} failed: {ans.get('error') or ans.get('label')}", "", ans)
        return ans

    # ---- the API ---------------------------------------------------------------------------------
    def preempt(self, queues: str | Sequence[int] | None = None, grace: int | None = None, keep: bool = False) -> dict:
        """Suspend the target's queues (the service's --queues unless given). Returns the answer: ok,
        label, queue_ids, queues [[id, result, raw]], ts_request_ns/ts_done_ns (CLOCK_MONOTONIC), seq."""
        if queues is None and grace is None and not keep:
            return self._checked("preempt")  # the hot call: the plain line, no request built
        q = queues if queues is None or isinstance(queues, str) else [int(x) for x in queues]
        return self._checked("preempt", queues=q, grace=grace, keep=keep or None)

    def resume(self) -> dict:
        """Resume what is held (a no-op answer with issued=False when nothing is)."""
        return self._checked("resume")

    def status(self) -> dict:
        """scheme, pid, alive, held ids, known queues, held_ms, handshakes, signals_passed."""
        return self._checked("status")

    @contextmanager
    def preempted(self, queues: str | Sequence[int] | None = None, grace: int | None = None) -> Iterator[dict]:
        """Preempt on enter, resume on exit (exceptions included)."""
        ans = self.preempt(queues, grace)
        try:
            yield ans
        finally:
            self.resume()
