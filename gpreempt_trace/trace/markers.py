"""The marker vocabulary (one source) and the one way to write markers into a trace.

Markers are user-space facts on CLOCK_MONOTONIC next to the kernel events: what a controller asked for
and when it returned, when a workload's request started and ended, when a launched command started and
exited. Every writer (controller, workload, recorder, snapshot, experiment, synthetic) uses `KINDS`;
a test checks that every kind written anywhere in the package and read by any SQL module is listed.
"""
from __future__ import annotations

import os
import time
from typing import Optional

# kind -> (who writes it, what the row means and which columns it fills)
KINDS: dict[str, tuple[str, str]] = {
    "preempt_request": ("controller", "About to take the target's queues off the GPU; scheme, target_tgid (host pid), container_id, gpu_id, queue_ids, seq."),
    "preempt_done": ("controller", "The preempt/suspend call returned; same seq; label 'ok' or the errno name; value_ns = call duration; queue_ids = ids acted on."),
    "resume_request": ("controller", "About to put the target's queues back; scheme, target_tgid (host pid), container_id, gpu_id, queue_ids, seq."),
    "resume_done": ("controller", "The resume call returned; same seq; label 'ok' or the errno name; value_ns = call duration."),
    "queue_result": ("controller", "Per-queue result of a preempt/resume (one row per queue id): seq, queue_ids=[id], label ok/invalid/error."),
    "controller_attach": ("controller", "The controller attached to target_tgid, the host pid (scheme A: ptrace + debug trap enabled); container_id: its container (NULL on the host). Every controller marker carries both."),
    "controller_detach": ("controller", "The controller detached from target_tgid; label says why (exit, signal, max-hold, error)."),
    "request_start": ("workload", "An online request is due (open loop: ts_ns = its scheduled time; seq = request number; value_ns = queueing delay until it started)."),
    "request_end": ("workload", "An online request ends (same seq); value_ns = its response time from the scheduled time (queueing included)."),
    "step_start": ("workload", "An offline step starts (seq = step number)."),
    "step_done": ("workload", "An offline step ends (seq = step number); value_ns = its duration."),
    "workload_start": ("workload, launcher", "A workload process starts; launcher (record/snapshot -- CMD): tgid = target_tgid = its pid, label = its command line; workload: tgid = its own pid, label = what it runs."),
    "workload_exit": ("workload, launcher", "A workload process ends; launcher: same pids, value_ns = run time, label 'exit_code=N' (128+N: signal N); workload: value_ns = iterations."),
    "snapshot_phase": ("snapshot", "A debugfs snapshot phase begins (label baseline, during, after)."),
    "experiment_phase": ("experiment", "An experiment step begins or ends (label = step)."),
}


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"marker kind {kind!r} is not in gpreempt_trace.trace.markers.KINDS")
    return kind


class MarkerWriter:
    """Append markers to a trace that another process may own (TraceWriter.join with a per-process
    prefix), or to nowhere when `trace` is None. `source` is fixed per writer; tgid defaults to ours.

    `batch_ms` > 0: rows wait in memory and go to the segment writer together, at tick() or close(), or
    at the add() that finds the oldest waiting row batch_ms old (one Arrow conversion costs ~0.2 ms
    whatever its row count: the controller adds rows on its request path and ticks when idle). A kill
    loses the waiting rows too: at most batch_ms (plus the time to the next tick) more than the open
    segment the trace format already allows to lose."""

    def __init__(self, trace: Optional[str | os.PathLike], source: str, prefix: Optional[str] = None,
                 batch_ms: float = 0):
        from .directory import TraceWriter

        from .processes import ProcessLog

        self.source = source
        self.tw = TraceWriter.join(trace, prefix=prefix or f"{source[:4]}{os.getpid()}") if trace else None
        self.plog = ProcessLog(self.tw, source)  # /proc facts of the processes its markers name (issue 21)
        self.batch_ns = int(batch_ms * 1e6)
        self.waiting: list[dict] = []  # rows not yet handed to the segment writer (batch_ms > 0)
        self._since = 0  # when the oldest waiting row was added

    def add(self, kind: str, ts_ns: Optional[int] = None, **cols) -> None:
        if self.tw is None:
            return
        now = time.monotonic_ns()
        row = dict(cols, kind=check_kind(kind), source=self.source, ts_ns=now if ts_ns is None else ts_ns)
        row.setdefault("tgid", os.getpid())
        if not self.waiting:
            self._since = now
        self.waiting.append(row)
        for t in (row["tgid"], row.get("target_tgid")):
            self.plog.see(t, row["ts_ns"])
        if now - self._since >= self.batch_ns:
            self._hand_over()

    def _hand_over(self) -> None:
        if self.waiting:
            rows, self.waiting = self.waiting, []
            self.tw.writer("markers").append_rows(rows)

    def tick(self) -> None:
        """Hand the waiting rows over; let the segment writer close a row group / segment that is old
        enough (call it periodically)."""
        if self.tw is not None:
            self._hand_over()
            self.tw.tick()

    def close(self) -> None:
        if self.tw is not None:
            self._hand_over()
            self.plog.finish()
            self.tw.close()
            self.tw = None

    def __enter__(self) -> "MarkerWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
