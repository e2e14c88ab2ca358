"""Snapshots of KFD debugfs (mqds, hqds, rls) into a trace's `snapshots/` table.

    from gpreempt_trace.debugfs.snapshot import Snapshotter
    s = Snapshotter(trace_writer, debugfs_dir=None)   # None = /sys/kernel/debug/kfd (mounts debugfs if needed)
    s.take(phase="during")                             # one read of mqds/hqds/rls -> rows; returns the row count

`run_snapshot(SnapshotOptions(...))` is the `gpreempt-trace snapshot` job: a baseline, snapshots while a
workload (started by gpreempt_trace.trace.launcher, which writes its markers) runs, one after it exits. When the output trace already exists (a running `record` owns meta.json), it only
appends under snapshots/ and markers/ with its own segment names and keeps its settings in
snapshots/_snapshot_meta.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pyarrow.parquet as pq

from .. import debugfs
from ..errors import GptError
from ..trace.launcher import Launcher
from ..trace.processes import ProcessLog
from ..trace.directory import META, TraceWriter, segment_files

SNAPSHOT_META = "_snapshot_meta.json"
MAX_INTERVAL_S = 86400.0  # --interval: at most a day between snapshots
APPEND_SEQ_BLOCK = 1_000_000  # session k appending to a recorded trace numbers its snapshots from k * this


def _next_seq(trace: Path) -> int:
    best = -1
    for f in segment_files(trace, "snapshots", warn=False):
        try:
            col = pq.read_table(f, columns=["snapshot_seq"]).column(0)
        except Exception:  # noqa: BLE001 - a segment we cannot read has no say in the numbering
            continue
        if len(col):
            best = max(best, max(v for v in col.to_pylist() if v is not None))
    return best + 1


class Snapshotter:
    def __init__(self, trace_writer: TraceWriter, debugfs_dir: Optional[str | os.PathLike] = None, first_seq: Optional[int] = None,
                 *, captures_only: bool = False):
        """captures_only: no source of its own; every take() gets a Capture (used by import)."""
        self.tw = trace_writer
        self.live = debugfs_dir is None and not captures_only
        self.dir = None
        if self.live:
            self.dir = debugfs.ensure_live()
        elif debugfs_dir is not None:
            self.dir = Path(debugfs_dir)
            debugfs.read_capture_dir(self.dir)  # fail now, not at the first snapshot
        self.seq = _next_seq(Path(trace_writer.path)) if first_seq is None else first_seq
        self.snapshots_taken = 0
        self.rows_written = 0
        self._warned: set[str] = set()
        # processes its rows name: /proc read only for a live snapshot (a capture's pids are another time's)
        self.plog = ProcessLog(trace_writer, "snapshot", read=self.live)

    def read(self) -> debugfs.Capture:
        if self.dir is None:
            raise GptError("this Snapshotter has no debugfs source", "pass the capture to take()")
        return debugfs.read_live(self.dir) if self.live else debugfs.read_capture_dir(self.dir)

    def take(self, phase: Optional[str] = "during", capture: Optional[debugfs.Capture] = None, ts_ns: Optional[int] = None) -> int:
        """Read mqds/hqds/rls once (or use `capture`), append one row per MQD copy, HQD slot, ... to
        the trace's snapshots table; returns the number of rows."""
        ts = time.monotonic_ns() if ts_ns is None else ts_ns
        cap = capture if capture is not None else self.read()
        rows, problems = debugfs.parse_capture(cap)
        for p in problems:
            if p not in self._warned:
                self._warned.add(p)
                warnings.warn(p, stacklevel=2)
        for r in rows:
            r["ts_ns"] = ts
            r["snapshot_seq"] = self.seq
            r["phase"] = phase
        self.tw.writer("snapshots").append_rows(rows)
        tg = sorted({r["tgid"] for r in rows if r.get("tgid")})
        self.plog.see_many(tg, [ts] * len(tg), [ts] * len(tg))
        self.seq += 1
        self.snapshots_taken += 1
        self.rows_written += len(rows)
        return len(rows)


@dataclass
class SnapshotResult:
    trace: Path
    run_id: str
    snapshots: int
    rows: int
    exit_code: Optional[int] = None  # the workload's, when one ran
    appended: bool = False
    notes: list[str] = field(default_factory=list)


def _open(output: str | os.PathLike, labels: dict[str, str]) -> tuple[TraceWriter, bool]:
    p = Path(output)
    if (p / META).exists():  # a trace another process (the recorder) owns: own segment names, meta left alone
        tw = TraceWriter.join(p, prefix=f"snap{os.getpid()}")
        for table in ("snapshots", "markers"):
            tw.writer(table)
        return tw, True
    return TraceWriter.create(p, labels=labels), False


def _first_seq(tw: TraceWriter, appended: bool) -> Optional[int]:
    """None (continue after the trace's last snapshot) for a trace we own; for one we append to, a
    block of its own, so snapshots the recorder takes at the same time never share a number."""
    if not appended:
        return None
    path = Path(tw.path) / "snapshots" / SNAPSHOT_META
    sessions = len(json.loads(path.read_text()).get("sessions", [])) if path.exists() else 0
    return max(_next_seq(Path(tw.path)), (sessions + 1) * APPEND_SEQ_BLOCK)


def _finish(tw: TraceWriter, appended: bool, settings: dict, labels: dict[str, str]) -> None:
    if not appended:
        tw.meta["snapshot"] = settings
        tw.close()
        return
    for w in tw.writers.values():
        w.close()
    path = Path(tw.path) / "snapshots" / SNAPSHOT_META
    old = json.loads(path.read_text()) if path.exists() else {"sessions": []}
    rows = tw.writers["snapshots"].rows_written
    markers = tw.writers["markers"].rows_written + tw.extra_rows.get("markers", 0)
    old["sessions"].append(dict(settings, labels=labels, pid=os.getpid(), counters={"snapshots_written": rows, "markers_written": markers}))
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(old, indent=2) + "\n")
    os.replace(tmp, path)


@dataclass
class SnapshotOptions:
    """The options of `snapshot`; fields are named like its flags (cmd = the command after --)."""

    output: str
    interval_s: float = 1.0
    count: Optional[int] = None
    labels: dict[str, str] = field(default_factory=dict)
    debugfs_dir: Optional[str] = None
    cmd: tuple[str, ...] = ()
    phase: Optional[str] = None


def run_snapshot(opts: SnapshotOptions) -> SnapshotResult:
    """With `cmd`: a baseline, then a snapshot every `interval_s` while the workload runs (at most
    `count`), then one after it exits. Without: `count` (default 1) snapshots `interval_s` apart."""
    o = opts
    if not 0 < o.interval_s <= MAX_INTERVAL_S:
        raise GptError(f"--interval {o.interval_s} is not in (0, {MAX_INTERVAL_S}]", "give seconds between snapshots, e.g. --interval 0.5")
    if o.count is not None and o.count < 0:
        raise GptError(f"--count {o.count} is negative", "give how many snapshots to take")
    labels = dict(o.labels or {})
    debugfs_dir = o.debugfs_dir
    # check the source before creating the trace, so a bad --debugfs leaves nothing behind
    source = debugfs.ensure_live() if debugfs_dir is None else Path(debugfs_dir)
    if debugfs_dir is not None:
        debugfs.read_capture_dir(source)
    tw, appended = _open(o.output, labels)
    snap = Snapshotter(tw, debugfs_dir, first_seq=_first_seq(tw, appended))
    settings = {"interval_s": o.interval_s, "count": o.count, "debugfs_dir": None if debugfs_dir is None else str(debugfs_dir),
                "cmd": list(o.cmd), "exit_code": None}
    result = SnapshotResult(Path(o.output), tw.run_id, 0, 0, appended=appended)
    try:
        if o.cmd:
            result.exit_code = _with_workload(tw, snap, o.interval_s, o.count, list(o.cmd), result.notes)
            settings["exit_code"] = result.exit_code
        else:
            n = 1 if o.count is None else o.count
            for i in range(n):
                if i:
                    time.sleep(o.interval_s)
                snap.take(o.phase or "during")
                tw.tick()
    finally:
        settings["snapshots_taken"] = snap.snapshots_taken
        result.snapshots, result.rows = snap.snapshots_taken, snap.rows_written
        snap.plog.finish()
        _finish(tw, appended, settings, labels)
    return result


def _with_workload(tw: TraceWriter, snap: Snapshotter, interval_s: float, count: Optional[int], cmd: list[str], notes: list[str]) -> int:
    """The workload through the launcher (markers workload_start/workload_exit); its exit code."""
    snap.take("baseline")
    during = 0
    with Launcher(cmd, trace=tw.path) as child:  # leaving early (a failed snapshot, Ctrl-C) stops it
        child.start()
        try:
            while True:
                try:
                    code = child.wait(timeout=interval_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if count is None or during < count:
                    snap.take("during")
                    during += 1
                tw.tick()
                child.tick()
        finally:
            child.close()
            tw.add_rows_written("markers", child.markers_written)
    snap.take("after")
    if during == 0:
        notes.append("the workload exited before the first snapshot while it ran; use a smaller --interval")
    return code


def run_import(output: str | os.PathLike, paths: Sequence[str | os.PathLike], labels: Optional[dict[str, str]] = None) -> SnapshotResult:
    """Ingest saved captures (see debugfs.collect_imports) as snapshots, in phase and time order."""
    if not paths:
        raise GptError("no capture files given", "give files like baseline_hqds_*.txt or capture folders")
    labels = dict(labels or {})
    caps, notes = debugfs.collect_imports(paths)
    for n in notes:
        warnings.warn(n, stacklevel=2)
    tw, appended = _open(output, labels)
    snap = Snapshotter(tw, first_seq=_first_seq(tw, appended), captures_only=True)
    settings = {"imported": [c.label for c in caps], "clock": "CLOCK_REALTIME of file names (epoch seconds) or mtimes"}
    try:
        for c in caps:
            snap.take(c.phase, capture=c, ts_ns=c.ts_ns)
    finally:
        settings["snapshots_taken"] = snap.snapshots_taken
        snap.plog.finish()
        _finish(tw, appended, settings, labels)
    return SnapshotResult(Path(output), tw.run_id, snap.snapshots_taken, snap.rows_written, appended=appended, notes=notes)
