"""When an online workload asks the controller to preempt and resume the offline job.

- none: never.
- per-request: preempt when a request starts and no other request is in flight; resume as soon as
  none is in flight (the open-loop stream counts a request as in flight from its due time).
- burst: preempt the same way, but resume only after the online side has been idle for `gap_ms`
  (a request due within the gap finds the offline job still preempted: no preempt/resume pair).

The policy talks to the controller service only through its client API
(`gpreempt_trace.control.Client(socket)`: `preempt()`, `resume()`); tests inject any object with
those two methods. `close()` resumes whatever is still preempted, on every exit path.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, Optional

from ..errors import GptError

POLICIES = ("none", "per-request", "burst")


def open_client(socket: str, timeout_s: Optional[float] = None):
    try:
        from ..control import Client
    except ImportError as e:
        raise GptError(f"the controller client is not available ({e})", "this build has no gpreempt_trace.control") from None
    return Client(socket) if timeout_s is None else Client(socket, timeout_s=timeout_s)


class Policy:
    def __init__(self, mode: str, client=None, gap_ms: float = 20.0,
                 clock: Callable[[], int] = time.monotonic_ns, sleep: Callable[[float], None] = time.sleep):
        if mode not in POLICIES:
            raise GptError(f"unknown preempt policy {mode!r}", "choose " + ", ".join(POLICIES))
        if mode != "none" and client is None:
            raise GptError(f"preempt policy {mode} needs a controller client", "pass --controller-socket")
        self.mode, self.client = mode, client
        self.gap_ns = int(gap_ms * 1e6)
        self.clock, self.sleep = clock, sleep
        self.held = False  # the offline job is preempted (or a preempt call did not return cleanly)
        self.idle_since: Optional[int] = None  # burst: when the last in-flight request ended
        self.preempts = self.resumes = 0
        self.calls: list[tuple[str, int, int]] = []  # (op, call start ns, call end ns)

    @classmethod
    def make(cls, mode: str, socket: Optional[str], gap_ms: float = 20.0, client=None, timeout_s: Optional[float] = None, **kw) -> "Policy":
        if mode != "none" and client is None:
            if not socket:
                raise GptError(f"preempt policy {mode} needs --controller-socket", "start `gpreempt-trace preempt serve` first")
            client = open_client(socket, timeout_s)
        return cls(mode, client, gap_ms, **kw)

    # -- the controller calls
    def _preempt(self) -> None:
        t0 = self.clock()
        self.held = True  # set first: if the call fails half-way, close() still resumes
        self.client.preempt()
        self.preempts += 1
        self.calls.append(("preempt", t0, self.clock()))

    def _resume(self) -> None:
        t0 = self.clock()
        self.client.resume()
        self.held = False
        self.idle_since = None
        self.resumes += 1
        self.calls.append(("resume", t0, self.clock()))

    # -- what the workload tells the policy
    def _sleep_until(self, t_ns: int) -> None:
        d = t_ns - self.clock()
        if d > 0:
            self.sleep(d / 1e9)

    def wait_until(self, due_ns: int) -> None:
        """Idle until a request is due; the burst policy resumes when its gap expires first."""
        if self.mode == "burst" and self.held and self.idle_since is not None:
            resume_at = self.idle_since + self.gap_ns
            if resume_at < due_ns:
                self._sleep_until(resume_at)
                self._resume()
        self._sleep_until(due_ns)

    def request_start(self, due_ns: int) -> None:
        """A request starts; no other is in flight unless the offline job is already held for one."""
        self.idle_since = None
        if self.mode != "none" and not self.held:
            self._preempt()

    def request_end(self, now_ns: int, next_due: Optional[int] = None) -> None:
        """A request ended at now_ns; next_due is the next request's due time (None: no more)."""
        if self.mode == "none" or not self.held:
            return
        if next_due is not None and next_due <= now_ns:
            return  # the next request is already due: still in flight, stay preempted
        if self.mode == "per-request":
            self._resume()
        else:
            self.idle_since = now_ns

    def close(self) -> None:
        """Resume anything still preempted and close the client; never raises past a failed resume."""
        try:
            if self.held:
                try:
                    self._resume()
                except Exception as e:  # noqa: BLE001 - report, then still close the client
                    warnings.warn(f"resume at workload exit failed: {e} (the controller resumes when it exits)")
        finally:
            close = getattr(self.client, "close", None)
            if close is not None:
                close()
