"""Flight-recorder mode (issue 23 item 2): keep only the newest segments, save a window on a trigger.

    record -o OUT --keep 10m [--trigger queue_reset,hws_hang,preempt_over=5ms] [--after 5]

Retention (`--keep 10m` or `--keep 2GiB`): after every tick of the record loop, the closed segments of
`events`, `markers` and `snapshots` (every writer's, the launcher's included) are deleted whole, oldest
first (by the newest row a segment holds, `ts_ns` from its footer statistics): by time, a segment whose
newest row is older than now - keep; by size, while all closed segments (process_reads included) take
more than keep bytes. `process_reads` segments (one row per process and read, what the `processes`
view needs for a process seen long ago) are never deleted. The open segment (`.seg-N.parquet.tmp`) is
never touched. Deleted segments, rows and bytes are counted in meta.json (`counters.*_deleted`).

A trigger (a decoded row of an event named by --trigger, `preempt_over=T`: a queues_unmap,
queues_suspend, queues_preempt, queue_preempt or hw_unmap_wait row whose kernel-measured `dur_ns`
exceeds T; or SIGUSR1, cause `signal`) starts a save: at once, every closed segment then kept is hard
linked into `OUT/triggered/.<name>.partial/` (so retention can no longer remove its data: the trace's
own name is unlinked, the saved one stays), and so is every segment closed afterwards, until the first
tick at or after trigger + after: the writers' open segments are then cut (closed), linked too, the
saved meta.json written and the folder renamed to `OUT/triggered/<UTC time>-<cause>/`, a complete trace.
A trigger that fires while a save is pending does not extend it: it is recorded in the pending save's
meta.json (`flight.more_triggers`, the first 100, and `flight.triggers_while_pending`, all). A save
still pending when the recording stops is cut at the stop (`flight.cut_by` = "stop").

Compaction (record --compact, trace/writer.py): a merged segment `P-LO-HI.parquet` is a segment like any
other here; the small ones it covers are no longer listed (readers skip them), retention deletes it whole
(and any covered small one a reader kept from being unlinked), and when it appears while a save is
pending it is linked and the save's links of the small ones it covers are removed (each row once).
Deletions and links take writer.COMPACT_LOCK, so a merge never renames over a half-done deletion.

The saved window: `start_ns` = one past the newest row of the newest segment deleted before the trigger
(the run's start_ns when none was), so every row of the run with ts_ns >= start_ns is in the saved trace
(kept segments may also hold older rows); `stop_ns` = trigger + after; the saved segments hold every row
decoded up to the cut (the first tick at or after stop_ns, right after a ring read), so a few rows may
be later than stop_ns.
"""
from __future__ import annotations

import copy
import fcntl
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import GptError
from ..trace.directory import COUNTER_OF_TABLE, META, READERS_LOCK, TABLE_NAMES, _write_json_atomic
from ..trace.writer import COMPACT_LOCK, SCHEMA_FILE, covered_names, merged_range

TRIGGERED = "triggered"
KEEP_TABLES = ("events", "markers", "snapshots")  # retention deletes from these; process_reads stays whole
EVENT_TRIGGERS = ("queue_reset", "hws_hang")  # logical events (schema.EVENTS) a trigger names directly
PREEMPT_EVENTS = ("queues_unmap", "queues_suspend", "queues_preempt", "queue_preempt", "hw_unmap_wait")
MORE_TRIGGERS_MAX = 100
TRIGGER_ROW_COLUMNS = ("event", "func", "ts_ns", "dur_ns", "tgid", "gpu_id", "queue_id", "pasid", "ret")

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
               "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_NUM = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class Keep:
    """--keep: seconds or bytes (one of them)."""

    seconds: float | None = None
    bytes: int | None = None

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "bytes": self.bytes}


def parse_keep(text: str) -> Keep:
    """'10m', '90s', '1h', '1.5d' (time: s, m/min, h, d; a bare number is seconds) or '2GiB', '500MB',
    '64KiB' (size: B, kB/MB/GB/TB, KiB/MiB/GiB/TiB)."""
    m = _NUM.match(text or "")
    unit = m.group(2).lower() if m else ""
    if m and (unit in ("", "s", "m", "min", "h", "d")):
        v = float(m.group(1)) * _TIME_UNITS.get(unit or "s")
        if 0 < v <= 10 ** 7:
            return Keep(seconds=v)
    elif m and unit in _SIZE_UNITS:
        v = int(float(m.group(1)) * _SIZE_UNITS[unit])
        if v > 0:
            return Keep(bytes=v)
    raise GptError(f"--keep {text!r} is not a positive time or size", "give e.g. --keep 10m (s, m, h, d) or --keep 2GiB (MB, GB, MiB, GiB)")


def parse_duration_ns(text: str) -> int:
    m = _NUM.match(text or "")
    if not m or m.group(2).lower() not in _TIME_UNITS:
        raise GptError(f"{text!r} is not a duration", "give a number and a unit: ns, us, ms, s (e.g. 5ms)")
    return int(round(float(m.group(1)) * _TIME_UNITS[m.group(2).lower()] * 1e9))


@dataclass(frozen=True)
class Triggers:
    """--trigger: logical events that save a window, and the preemption latency bound."""

    events: tuple[str, ...] = ()
    preempt_over_ns: int | None = None

    def __bool__(self) -> bool:
        return bool(self.events) or self.preempt_over_ns is not None

    def as_dict(self) -> dict:
        return {"events": list(self.events), "preempt_over_ns": self.preempt_over_ns, "preempt_events": list(PREEMPT_EVENTS)}


def parse_triggers(text: str | None) -> Triggers:
    events: list[str] = []
    over = None
    for item in (s.strip() for s in (text or "").split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if name == "preempt_over" and sep:
            over = parse_duration_ns(value)
        elif name in EVENT_TRIGGERS and not sep:
            events.append(name)
        else:
            raise GptError(f"unknown trigger {item!r}", f"choose from {', '.join(EVENT_TRIGGERS)}, preempt_over=T (e.g. 5ms)")
    if not events and over is None:
        raise GptError("no trigger given", f"choose from {', '.join(EVENT_TRIGGERS)}, preempt_over=T (e.g. 5ms)")
    return Triggers(tuple(dict.fromkeys(events)), over)


@dataclass
class Segment:
    table: str
    name: str
    rows: int
    bytes: int
    min_ts_ns: int | None
    max_ts_ns: int | None


def read_segment(path: Path, table: str, now_ns: int) -> Segment | None:
    """A closed segment's rows, size and ts_ns range from its footer (None: unreadable, left alone)."""
    try:
        md = pq.read_metadata(path)
        size = path.stat().st_size
    except Exception:  # noqa: BLE001 - damaged or vanished: retention leaves it, saves skip it
        return None
    lo = hi = None
    ts = next((i for i in range(md.num_columns) if md.schema.column(i).path == "ts_ns"), -1)
    for g in range(md.num_row_groups) if ts >= 0 else ():
        st = md.row_group(g).column(ts).statistics
        if st is not None and st.has_min_max:
            lo = st.min if lo is None else min(lo, st.min)
            hi = st.max if hi is None else max(hi, st.max)
    if hi is None:  # no statistics: as new as the moment it was seen
        lo = hi = now_ns
    return Segment(table, path.name, md.num_rows, size, lo, hi)


def _wall(mono_ns: int, offset_ns: int) -> str:
    w = mono_ns + offset_ns
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(w // 10 ** 9)) + f".{w % 10 ** 9:09d}Z"


@dataclass
class Save:
    """A pending save: its hidden folder, what it holds, and when it is cut."""

    name: str
    dir: Path
    cause: str
    trigger: dict
    triggered_ns: int
    stop_ns: int
    start_ns: int
    lost_at_start: int | None
    linked: dict[tuple[str, str], Segment] = field(default_factory=dict)
    more: list[dict] = field(default_factory=list)
    while_pending: int = 0


class FlightRecorder:
    """Retention and triggered saves for one trace being written (see the module docstring).

    `lost` reads the kernel's loss counter (None: unknown); `cut` closes the writers' open segments.
    Every method takes the CLOCK_MONOTONIC time it runs at (tests pass their own)."""

    def __init__(self, tw, keep: Keep | None, triggers: Triggers | None = None, after_s: float = 5.0,
                 lost: Callable[[], int | None] = lambda: None, cut: Callable[[], None] | None = None):
        self.tw = tw
        self.path = Path(tw.path)
        self.keep = keep
        self.triggers = triggers or Triggers()
        self.after_ns = int(round(after_s * 1e9))
        self._lost = lost
        self._cut = cut or (lambda: [w.cut() for w in tw.writers.values()])
        self.kept: dict[tuple[str, str], Segment] = {}  # closed segments on disk, by (table, name)
        self.deleted = {t: 0 for t in TABLE_NAMES}  # rows deleted per table
        self.segments_deleted = 0
        self.bytes_deleted = 0
        self.deleted_upto_ns: int | None = None  # newest row of the newest deleted segment
        self._lost_samples: list[tuple[int, int | None]] = []  # (time, kernel loss counter) where it changed
        self.pending: Save | None = None
        self.saved: list[Path] = []
        self._wall_offset = time.time_ns() - time.monotonic_ns()
        self._dir_mtime: dict[str, int] = {}  # table folder -> its mtime at the last scan
        self.deferred = 0  # retention passes skipped because a reader (query, report) held the trace
        self._lock_fd = None
        if keep is not None:  # readers hold it shared (trace.hold_for_reading); deletion takes it exclusively
            self._lock_fd = os.open(self.path / READERS_LOCK, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)

    # -- the record loop's entry points ---------------------------------------------------------------
    def check(self, tbl: pa.Table, now_ns: int) -> int:
        """Evaluate the triggers on a decoded batch; returns how many rows fired."""
        if not self.triggers or tbl.num_rows == 0:
            return 0
        ev = tbl.column("event")
        mask = None
        if self.triggers.events:
            mask = pc.is_in(ev, value_set=pa.array(self.triggers.events))
        if self.triggers.preempt_over_ns is not None:
            slow = pc.and_kleene(pc.is_in(ev, value_set=pa.array(PREEMPT_EVENTS)),
                           pc.greater(tbl.column("dur_ns"), pa.scalar(self.triggers.preempt_over_ns, pa.int64())))
            mask = slow if mask is None else pc.or_kleene(mask, slow)
        hits = tbl.filter(pc.fill_null(mask, False))
        if hits.num_rows == 0:
            return 0
        cols = [c for c in TRIGGER_ROW_COLUMNS if c in hits.column_names]
        for i in range(hits.num_rows):
            row = {c: hits.column(c)[i].as_py() for c in cols}
            cause = "preempt_over" if row["event"] in PREEMPT_EVENTS and row["event"] not in self.triggers.events else row["event"]
            self.trigger(cause, row, now_ns)
        return hits.num_rows

    def trigger(self, cause: str, trigger: dict | None, now_ns: int) -> None:
        """Start a save (or, while one is pending, record this trigger in it)."""
        trigger = dict(trigger or {})
        if self.pending is not None:
            self.pending.while_pending += 1
            if len(self.pending.more) < MORE_TRIGGERS_MAX:
                self.pending.more.append({"cause": cause, "detected_ns": now_ns, **trigger})
            return
        self._scan(now_ns)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime((now_ns + self._wall_offset) // 10 ** 9))
        stamp += f".{(now_ns + self._wall_offset) // 10 ** 6 % 1000:03d}Z"
        base = f"{stamp}-{cause}"
        name, k = base, 1
        root = self.path / TRIGGERED
        while (root / name).exists() or (root / f".{name}.partial").exists():
            k += 1
            name = f"{base}-{k}"
        d = root / f".{name}.partial"
        d.mkdir(parents=True)
        for table in TABLE_NAMES:
            (d / table).mkdir()
            src = self.path / table / SCHEMA_FILE
            if src.exists():
                os.link(src, d / table / SCHEMA_FILE)
        start = self.tw.meta.get("start_ns") if self.deleted_upto_ns is None else self.deleted_upto_ns + 1
        self.pending = Save(name, d, cause, trigger, now_ns, now_ns + self.after_ns, start, self._lost_at(start))
        self._link_new()

    def due(self, now_ns: int) -> bool:
        """A pending save is to be cut now (the loop decodes what it has read first)."""
        return self.pending is not None and now_ns >= self.pending.stop_ns

    def tick(self, now_ns: int) -> None:
        """After the writers' tick: see newly closed segments, link them into a pending save, cut a due
        save, then apply retention."""
        lost = self._lost()
        if not self._lost_samples or self._lost_samples[-1][1] != lost:  # changes only: bounded on a quiet run
            self._lost_samples.append((now_ns, lost))
        if self.keep is None and self.pending is None:
            return  # nothing to delete or link: segments are read when a trigger comes
        self._scan(now_ns)
        if self.pending is not None:
            self._link_new()
            if self.due(now_ns):
                self._finish(now_ns, "after")
        self._retain(now_ns)

    def close(self, now_ns: int) -> None:
        """At the stop (the writers are closed): cut a pending save there; the run's counters."""
        self._scan(now_ns)
        if self.pending is not None:
            self._link_new()
            self._finish(now_ns, "stop", cut=False)
        c = self.tw.meta.setdefault("counters", {})
        for table, key in COUNTER_OF_TABLE.items():
            c[key.replace("_written", "_deleted")] = self.deleted.get(table, 0)
        c["segments_deleted"] = self.segments_deleted
        c["bytes_deleted"] = self.bytes_deleted
        self.tw.meta.setdefault("recorder", {})["flight"] = self.meta()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def meta(self) -> dict:
        return {"keep": self.keep.as_dict() if self.keep else None, "triggers": self.triggers.as_dict(),
                "after_s": self.after_ns / 1e9, "deleted_upto_ns": self.deleted_upto_ns, "deletions_deferred": self.deferred,
                "saved": [str(p.relative_to(self.path)) for p in self.saved]}

    # -- internals ----------------------------------------------------------------------------------------
    def _scan(self, now_ns: int) -> None:
        for table in TABLE_NAMES:
            d = self.path / table
            try:
                # a folder unchanged since the last scan (its mtime moves on every rename and unlink) is not
                # listed again: days of segments are not read 10 times a second; within 1 s of a change it
                # is (a coarse mtime could hide a second change in the same tick)
                mtime = d.stat().st_mtime_ns
                if self._dir_mtime.get(table) == mtime and time.time_ns() - mtime > 10 ** 9:
                    continue
                self._dir_mtime[table] = mtime
                names = [e.name for e in os.scandir(d) if e.name.endswith(".parquet") and not e.name.startswith(".")
                         and e.name != SCHEMA_FILE]
            except OSError:
                continue
            # compaction: small segments a merged one covers are read through it; gone ones are forgotten
            drop = covered_names(names)
            names = [n for n in names if n not in drop]
            here = set(names)
            for key in [k for k in self.kept if k[0] == table and k[1] not in here]:
                del self.kept[key]
            for name in names:
                if (table, name) in self.kept:
                    continue
                seg = read_segment(d / name, table, now_ns)
                if seg is not None:
                    self.kept[(table, name)] = seg

    def _link_new(self) -> None:
        s = self.pending
        with COMPACT_LOCK:  # no merge renames or unlinks between a link and its bookkeeping
            for key, seg in list(self.kept.items()):
                if key in s.linked:
                    continue
                try:
                    os.link(self.path / seg.table / seg.name, s.dir / seg.table / seg.name)
                except FileExistsError:
                    pass
                except FileNotFoundError:  # removed by someone else (merged) since the scan
                    continue
                s.linked[key] = seg
                if merged_range(seg.name):  # its small segments linked before: the saved trace reads them once
                    self._unlink_covered(s.dir / seg.table, seg, lambda n: s.linked.pop((seg.table, n), None))

    @staticmethod
    def _unlink_covered(d: Path, merged: Segment, forget: Callable[[str], object]) -> None:
        """Unlink the small segments in folder d that `merged` covers."""
        try:
            names = os.listdir(d)
        except OSError:
            return
        for n in covered_names([merged.name, *(n for n in names if merged_range(n) is None)]):
            try:
                os.unlink(d / n)
            except FileNotFoundError:
                pass
            forget(n)

    def _finish(self, now_ns: int, cut_by: str, cut: bool = True) -> None:
        s = self.pending
        if cut:
            self._cut()  # the open segments end here: rows decoded so far are all in closed segments
            self._scan(now_ns)
            self._link_new()
        lost_now = self._lost()
        meta = copy.deepcopy(self.tw.meta)
        counters = {key: sum(g.rows for g in s.linked.values() if g.table == table) for table, key in COUNTER_OF_TABLE.items()}
        counters["events_lost"] = (lost_now - s.lost_at_start if lost_now is not None and s.lost_at_start is not None
                                   else None)
        counters["process_reads_written"] = sum(g.rows for g in s.linked.values() if g.table == "process_reads")
        stop = s.stop_ns if cut_by == "after" else min(s.stop_ns, now_ns)  # cut short by the run's stop
        meta.update(start_ns=s.start_ns, start_wall=_wall(s.start_ns, self._wall_offset), stop_ns=stop,
                    stop_wall=_wall(stop, self._wall_offset), counters=counters)
        meta["flight"] = {
            "of_trace": str(self.path), "cause": s.cause, "trigger": s.trigger, "detected_ns": s.triggered_ns,
            "detected_wall": _wall(s.triggered_ns, self._wall_offset), "after_s": self.after_ns / 1e9,
            "cut_ns": now_ns, "cut_by": cut_by, "segments": len(s.linked),
            "triggers_while_pending": s.while_pending, "more_triggers": s.more,
            "keep": self.keep.as_dict() if self.keep else None,
        }
        meta.setdefault("recorder", {})["stop_reason"] = f"flight window ({s.cause})"
        _write_json_atomic(s.dir / META, meta)
        final = s.dir.parent / s.name
        os.rename(s.dir, final)
        self.saved.append(final)
        self.pending = None

    def _lost_at(self, t_ns: int | None) -> int | None:
        """The kernel's loss counter at t (the last tick at or before it; 0 before the first tick)."""
        if t_ns is None:
            return None
        v: int | None = 0
        for when, lost in self._lost_samples:
            if when > t_ns:
                break
            v = lost
        return v

    def _retain(self, now_ns: int) -> None:
        if self.keep is None:
            return
        order = sorted((s for s in self.kept.values() if s.table in KEEP_TABLES), key=lambda s: (s.max_ts_ns, s.table, s.name))
        total = sum(s.bytes for s in self.kept.values())
        if not order or (order[0].max_ts_ns >= now_ns - int(self.keep.seconds * 1e9) if self.keep.seconds is not None
                         else total <= self.keep.bytes):
            return  # nothing to delete
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a reader listed the segments and has not finished: delete on a later tick
            self.deferred += 1
            return
        try:
            self._delete(order, total, now_ns)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _delete(self, order: list[Segment], total: int, now_ns: int) -> None:
        with COMPACT_LOCK:  # a merge's check-and-rename never sees half of a deletion
            self._delete_locked(order, total, now_ns)

    def _delete_locked(self, order: list[Segment], total: int, now_ns: int) -> None:
        for seg in order:
            if self.keep.seconds is not None:
                if seg.max_ts_ns >= now_ns - int(self.keep.seconds * 1e9):
                    break
            elif total <= self.keep.bytes:
                break
            try:
                os.unlink(self.path / seg.table / seg.name)
            except FileNotFoundError:
                pass
            if merged_range(seg.name):  # small ones its writer has not unlinked yet would come back uncovered
                self._unlink_covered(self.path / seg.table, seg, lambda n: None)
            del self.kept[(seg.table, seg.name)]
            total -= seg.bytes
            self.deleted[seg.table] += seg.rows
            self.segments_deleted += 1
            self.bytes_deleted += seg.bytes
            self.deleted_upto_ns = seg.max_ts_ns if self.deleted_upto_ns is None else max(self.deleted_upto_ns, seg.max_ts_ns)
        # loss samples older than the kept window: one at or before it is enough
        keep_from = self.deleted_upto_ns
        if keep_from is not None:
            i = 0
            while i + 1 < len(self._lost_samples) and self._lost_samples[i + 1][0] <= keep_from:
                i += 1
            del self._lost_samples[:i]
