"""The `process_reads` table: what /proc said about each process a writer saw (issue 21).

Every writer of a trace that sees a process (the recorder: a tgid or owner_tgid of its events; a live
snapshot: the tgids of its rows; a marker writer: the tgid and target_tgid of its markers) reads
/proc/PID once when it first sees it, and writes a row: ts_ns (when /proc was read), source, the facts
of containers.read_process, first_seen_ts_ns. When it stops it writes one more row per process:
last_seen_ts_ns and the facts read again (NULL for a process that has exited, or whose pid now
belongs to another process). The `processes` view (queries/prelude.sql) folds these rows into one
per (run_id, tgid).

Facts of a process that is not on this host now (imported debugfs captures) are not read: NULL; nor
are they when the writer runs outside the host's pid namespace (its /proc numbers other processes).
"""
from __future__ import annotations

import os
import time
from typing import Iterable, Optional

import numpy as np

from .containers import INIT_PIDNS_INO, PROC, ProcessFacts, pidns_inode, read_process

TABLE = "process_reads"


def start_ticks(tgid: int, proc: str = PROC) -> Optional[int]:
    """starttime (field 22 of /proc/PID/stat): tells a process from a later one with the same pid."""
    try:
        with open(f"{proc}/{tgid}/stat", "rb") as f:
            s = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    try:
        return int(s[s.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _values(col) -> np.ndarray:
    """An integer column as numpy, NULL as 0, from its buffers: ChunkedArray.to_numpy and
    pyarrow.compute.fill_null import pandas (~35 MiB of the recorder's RSS)."""
    parts = []
    for c in col.chunks:
        dt = np.dtype(c.type.to_pandas_dtype())
        v = np.frombuffer(c.buffers()[1], dt, len(c), offset=c.offset * dt.itemsize)
        if c.null_count:
            bits = np.unpackbits(np.frombuffer(c.buffers()[0], np.uint8), count=c.offset + len(c), bitorder="little")
            v = np.where(bits[c.offset:].astype(bool), v, 0)
        parts.append(v)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class ProcessLog:
    """Per writer: remembers the tgids it saw (first and last time) and writes their /proc reads into
    `process_reads` of the trace writer `tw` (None: write nothing). read=False: never read /proc (the
    process is not on this host: facts NULL)."""

    def __init__(self, tw, source: str, read: bool = True, proc: str = PROC):
        self.tw = tw
        self.source = source
        # pids in rows are host pids: a writer outside the host's pid namespace (a container without
        # --pid=host) would read another process under the same number, so it reads nothing (NULL facts)
        own = pidns_inode(os.getpid()) if proc == PROC else INIT_PIDNS_INO
        self.read = read and own in (None, INIT_PIDNS_INO)
        self.proc = proc
        self.seen: dict[int, list] = {}  # tgid -> [first_ts, last_ts, start_ticks at the first read]
        self.rows_written = 0

    def _facts(self, tgid: int) -> ProcessFacts:
        if not self.read:
            return ProcessFacts(tgid, None, None, None, None, None, None)
        return read_process(tgid, self.proc)

    def _write(self, rows: list[dict]) -> None:
        if rows and self.tw is not None:
            self.tw.writer(TABLE).append_rows(rows)
            self.rows_written += len(rows)

    def see(self, tgid: Optional[int], ts_ns: int) -> None:
        if tgid is None or tgid <= 0:
            return
        s = self.seen.get(tgid)
        if s is not None:
            if ts_ns > s[1]:
                s[1] = ts_ns
            return
        self.see_many([tgid], [ts_ns], [ts_ns])

    def see_many(self, tgids: Iterable[int], first: Iterable[int], last: Iterable[int]) -> None:
        """Processes seen between first[i] and last[i] (ns); new ones are read from /proc now."""
        rows = []
        now = time.monotonic_ns()
        for t, f, l in zip(tgids, first, last):
            t, f, l = int(t), int(f), int(l)
            if t <= 0:
                continue
            s = self.seen.get(t)
            if s is not None:
                s[0], s[1] = min(s[0], f), max(s[1], l)
                continue
            ticks = start_ticks(t, self.proc) if self.read else None
            facts = self._facts(t)
            self.seen[t] = [f, l, ticks]
            rows.append(dict(facts.as_row(), ts_ns=now, source=self.source, first_seen_ts_ns=f, last_seen_ts_ns=None))
        self._write(rows)

    def see_arrays(self, tgid: np.ndarray, ts: np.ndarray) -> None:
        """A batch of events: tgid (int, <= 0 or masked = none) and ts_ns columns as numpy arrays."""
        if not len(tgid):
            return
        ok = tgid > 0
        tgid, ts = tgid[ok], ts[ok]
        if not len(tgid):
            return
        # runs of one tgid first (events come in bursts per process: linear, and few runs are left to sort)
        runs = np.flatnonzero(np.concatenate(([True], tgid[1:] != tgid[:-1])))
        rt, rf, rl = tgid[runs], np.minimum.reduceat(ts, runs), np.maximum.reduceat(ts, runs)
        order = np.argsort(rt, kind="stable")
        rt, rf, rl = rt[order], rf[order], rl[order]
        uniq, start = np.unique(rt, return_index=True)
        first = np.minimum.reduceat(rf, start)
        last = np.maximum.reduceat(rl, start)
        known = self.seen
        new = [i for i, t in enumerate(uniq.tolist()) if t not in known]
        if len(new) != len(uniq):
            for t, f, l in zip(uniq.tolist(), first.tolist(), last.tolist()):
                s = known.get(t)
                if s is not None:
                    s[0], s[1] = min(s[0], f), max(s[1], l)
        if new:
            self.see_many(uniq[new].tolist(), first[new].tolist(), last[new].tolist())

    def see_table(self, tbl, columns: tuple[str, ...] = ("tgid", "owner_tgid")) -> None:
        """A decoded events table: every process named by `columns` (NULL = none) at its rows' ts_ns."""
        if tbl.num_rows == 0:
            return
        ts = _values(tbl.column("ts_ns"))
        for name in columns:
            if name not in tbl.column_names:
                continue
            col = tbl.column(name)
            if col.null_count == len(col):
                continue
            self.see_arrays(_values(col), ts)

    def finish(self) -> None:
        """One row per process seen: last_seen_ts_ns and the facts read again (NULL when it is gone or
        its pid now names another process)."""
        rows = []
        now = time.monotonic_ns()
        for t, (f, l, ticks) in sorted(self.seen.items()):
            facts = ProcessFacts(t, None, None, None, None, None, None)
            if self.read and ticks is not None and start_ticks(t, self.proc) == ticks:
                facts = self._facts(t)
            rows.append(dict(facts.as_row(), ts_ns=now, source=self.source, first_seen_ts_ns=None, last_seen_ts_ns=l))
        self._write(rows)
