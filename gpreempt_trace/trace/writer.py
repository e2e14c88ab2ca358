"""Parquet segment writer: fixed schema, row groups by size or age, one segment file per interval.

A segment is written as `.seg-NNNNNN.parquet.tmp` (hidden from DuckDB's `*.parquet` globs and from
Spark, which skips dot files) and renamed to `seg-NNNNNN.parquet` when closed, so a `kill -9` loses
at most the open segment and every closed one reads. A segment is closed (its pending rows flushed
into it) once its first row is DEFAULT_SEGMENT_S old, so a row handed to the writer at time t is in
a closed segment by the first tick() at or after t + segment_s: that bounds what a kill loses. Each table folder also gets a zero-row
`schema.parquet` so that plain-SQL globs always match and carry the full schema.
Events and markers are written in row groups by family (FAMILY_COLUMNS: docs/trace-format.md).

Compaction (compact_s): closed segments are merged, by a short-lived child process (started from a
thread of their own; its buffers never enter the writer's heap), into one
`seg-LO-HI.parquet` per compact_s seconds of segments (or COMPACT_MAX_ROWS rows), LO..HI the indices it
covers, same rows, same row-group layout (family groups of at most rows_per_group rows). The merged file is
written hidden and renamed; only then are the small ones unlinked (while no reader holds the trace's
READERS_LOCK shared; later otherwise). A reader lists through `live_segments`, which drops a small segment
a present merged one covers, so a listing between the rename and the unlinks (or after a kill there)
counts each row once; the writer's next start removes such leftovers.
"""
from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from . import schema
from .arrays import empty_table, table_from_rows, to_numpy

DEFAULT_ROWS_PER_GROUP = 65536
DEFAULT_GROUP_MS = 100  # a row group is written once its oldest row is this old (or has rows_per_group rows)
DEFAULT_SEGMENT_S = 0.5  # a segment is closed once its oldest row is this old
SCHEMA_FILE = "schema.parquet"  # zero rows: plain globs (DuckDB, Spark) always match
# min/max statistics only where readers filter (they cost ~30 % of write time on all columns)
STATS_COLUMNS = ("run_id", "ts_ns", "event", "tgid", "gpu_id", "snapshot_seq", "kind")
MAX_INFLIGHT_GROUPS = 2  # background writes queued before append blocks (bounds memory)
# no dictionary for columns nearly unique per row: Parquet would build (and then drop) a dictionary of
# every value of each row group, ~40 % of the write time of the events table; ts_ns is stored as deltas
NO_DICTIONARY_COLUMNS = ("ts_ns", "dur_ns", "value_ns")
DELTA_COLUMNS = ("ts_ns",)
# Row groups by family: a group's rows are ordered by this column (stably: within a family, as they came)
# and each family gets row groups of its own, so the column's min/max statistics let a reader skip every
# family its filter does not name (preempt.summary reads queues_unmap/queues_map rows and request/done
# markers, a quarter of the rows). Families under MIN_FAMILY_ROWS rows share a row group with their
# small neighbours (a row group per family of 50 rows would cost more to read than it saves).
FAMILY_COLUMNS = {"events": "event", "markers": "kind"}
MIN_FAMILY_ROWS = 8192
DEFAULT_COMPACT_S = 60.0  # record: one merged segment per minute of small ones (a day: 1,440 files per table)
COMPACT_MAX_ROWS = 1 << 21  # ... or per this many rows (bounds a merged file and its merge's work)
CLOSE_UNLINK_WAIT_S = 0.5  # at close, how long covered segments wait for readers to let go
READERS_LOCK = ".readers.lock"  # readers hold it shared; segments are unlinked only under it exclusively
# one lock per process: a merge's rename, retention's unlinks and a flight save's links never interleave
COMPACT_LOCK = threading.Lock()
_MERGED = re.compile(r"^(?P<prefix>.+)-(?P<lo>[0-9]{6,})-(?P<hi>[0-9]{6,})\.parquet$")
_SMALL = re.compile(r"^(?P<prefix>.+)-(?P<n>[0-9]{6,})\.parquet$")


def merged_range(name: str) -> tuple[str, int, int] | None:
    """(prefix, lo, hi) of a merged segment's file name; None for any other name."""
    m = _MERGED.match(name)
    return (m["prefix"], int(m["lo"]), int(m["hi"])) if m else None


def covered_names(names: Iterable[str]) -> set[str]:
    """The small segments among `names` that a merged segment among them covers (same prefix, index in
    its range): their rows are in the merged file, a reader skips them."""
    names = list(names)
    ranges: dict[str, list[tuple[int, int]]] = {}
    for n in names:
        r = merged_range(n)
        if r:
            ranges.setdefault(r[0], []).append(r[1:])
    if not ranges:
        return set()
    out = set()
    for n in names:
        m = None if merged_range(n) else _SMALL.match(n)
        if m and any(lo <= int(m["n"]) <= hi for lo, hi in ranges.get(m["prefix"], ())):
            out.add(n)
    return out


def live_segments(names: Iterable[str]) -> list[str]:
    """Segment file names a reader reads: visible `*.parquet` ones, schema file and covered ones left out."""
    names = [n for n in names if n.endswith(".parquet") and not n.startswith(".") and n != SCHEMA_FILE]
    drop = covered_names(names)
    return sorted(n for n in names if n not in drop)


def try_exclusive(lock_path: Path | None) -> int | None:
    """The readers lock taken exclusively without waiting: its fd (close to release), -1 when there is
    no lock file (nobody can hold it), None when a reader holds it."""
    if lock_path is None:
        return -1
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _parquet_options(sch: pa.Schema) -> dict:
    """ParquetWriter keyword arguments of a segment of this schema (statistics, dictionaries, encodings)."""
    enc = {c: "DELTA_BINARY_PACKED" for c in DELTA_COLUMNS if c in sch.names}
    return {"write_statistics": [c for c in STATS_COLUMNS if c in sch.names],
            "use_dictionary": [c for c in sch.names if c not in NO_DICTIONARY_COLUMNS], "column_encoding": enc or None}


def write_batch(w: pq.ParquetWriter, tbl: pa.Table, family: str | None, rows_per_group: int) -> None:
    """Write one batch: as one row group, or one per family (FAMILY_COLUMNS) when `family` is given."""
    if family is None or tbl.num_rows < 2:
        w.write_table(tbl, max(rows_per_group, tbl.num_rows))
        return
    for part in family_groups(tbl, family):
        w.write_table(part, max(rows_per_group, part.num_rows))


def merge_files(table: str, run_id: str, rows_per_group: int, compression: str, smalls: list, tmp) -> bool:
    """Write the rows of segments `smalls` (in order) into `tmp` as one segment: row groups of at most
    rows_per_group rows, by family. False when one of them is gone (retention deleted it meanwhile)."""
    sch = _with_provenance(schema.table_schema(table), run_id)
    family = FAMILY_COLUMNS.get(table)
    w = pq.ParquetWriter(tmp, sch, compression=compression, **_parquet_options(sch))
    buf: list[pa.Table] = []
    nbuf = 0

    try:
        for p in smalls:
            try:
                t = pq.ParquetFile(p).read(use_threads=False)
                if not t.schema.equals(sch, check_metadata=True):
                    t = t.cast(sch)
            except FileNotFoundError:
                return False
            buf.append(t)
            nbuf += t.num_rows
            while nbuf >= rows_per_group:  # row groups of rows_per_group rows, in order, by family
                t = pa.concat_tables(buf)
                write_batch(w, t.slice(0, rows_per_group), family, rows_per_group)
                rest = t.slice(rows_per_group)
                buf, nbuf = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        if nbuf:
            write_batch(w, pa.concat_tables(buf), family, rows_per_group)
    finally:
        w.close()
    return True


MERGE_MISSING = 3  # the merge child's exit status when a segment is gone
MERGE_TIMEOUT_S = 600.0  # a merge child still running after this is killed (its small segments stay)


def _merge_child_main(argv: list[str]) -> int:
    """The merge child: `python -c '...' JSON` (SegmentWriter._merge_in_child)."""
    import json
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the recorder's group: the recorder decides
    a = json.loads(argv[0])
    ok = merge_files(a["table"], a["run_id"], a["rows_per_group"], a["compression"], a["smalls"], a["tmp"])
    return 0 if ok else MERGE_MISSING


def _with_provenance(sch: pa.Schema, run_id: str) -> pa.Schema:
    meta = dict(sch.metadata or {})
    meta.update({b"gpreempt_trace.run_id": run_id.encode(), b"gpreempt_trace.tool_version": __version__.encode()})
    return sch.with_metadata(meta)


def family_groups(tbl: pa.Table, column: str, min_rows: int = MIN_FAMILY_ROWS) -> list[pa.Table]:
    """The rows of tbl ordered by `column` (stable) and cut where the family changes: a family of
    min_rows or more is a part of its own, smaller neighbours share one. A batch without such a family
    stays as it came (one part: sorting it would buy no statistics)."""
    enc = tbl.column(column).combine_chunks().dictionary_encode()
    ix = enc.indices  # int32; read from its buffer: pyarrow.compute and Array.to_numpy import pandas
    if ix.null_count:
        return [tbl]
    codes = np.frombuffer(ix.buffers()[1], np.int32, len(ix), ix.offset * 4)
    if np.bincount(codes).max() < min_rows:
        return [tbl]
    words = enc.dictionary.to_pylist()
    rank = np.empty(len(words), np.int32)
    rank[sorted(range(len(words)), key=words.__getitem__)] = np.arange(len(words), dtype=np.int32)
    key = rank[codes]
    order = np.argsort(key, kind="stable")
    key = key[order]
    tbl = tbl.take(pa.array(order))
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(key)]
    parts, start = [], 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # runs of one family
        if lo > start and (lo - start >= min_rows or hi - lo >= min_rows):
            parts.append(tbl.slice(start, lo - start))
            start = lo
    parts.append(tbl.slice(start))
    return parts


class SegmentWriter:
    """Append Arrow tables (or row dicts) of one fixed schema into rotating Parquet segments."""

    def __init__(
        self,
        table_dir: str | os.PathLike,
        table: str,
        run_id: str,
        rows_per_group: int = DEFAULT_ROWS_PER_GROUP,
        group_ms: float = DEFAULT_GROUP_MS,
        segment_s: float = DEFAULT_SEGMENT_S,
        compression: str = "zstd",
        background: bool = False,
        prefix: str = "seg",
        compact_s: float | None = None,
        compact_rows: int = COMPACT_MAX_ROWS,
        compact_background: bool = True,
        readers_lock: str | os.PathLike | None = None,
        age_from_ts: bool = False,
    ):
        self.dir = Path(table_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # a second process appending to the same table (snapshotter, workload markers) uses its own
        # prefix, so segment names never collide
        self.prefix = prefix
        self.run_id = run_id
        self.table = table
        self.schema = _with_provenance(schema.table_schema(table), run_id)
        self.rows_per_group = rows_per_group
        self.group_ns = int(group_ms * 1e6)
        self.segment_ns = int(segment_s * 1e9)
        # age_from_ts: a segment's age counts from its oldest row's ts_ns (CLOCK_MONOTONIC, as the recorder's
        # events) when that is older than its first append: rows that waited in the ring or behind a slow
        # start are on disk segment_s after they happened, not segment_s after they reached the writer
        self._age_col = "ts_ns" if age_from_ts and "ts_ns" in self.schema.names else None
        self.compression = compression
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_since = 0
        self._writer: pq.ParquetWriter | None = None
        self._seg_started = 0
        self._seg_index = self._next_index()
        self.rows_written = 0  # rows in closed segments
        self.rows_flushed = 0  # rows handed to a row group (closed or open segment)
        self.segments_closed = 0
        # background=True: Parquet encoding runs on a worker thread (it releases the GIL), so the
        # caller's decoding overlaps with writing; order is kept by the single worker.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gpt-writer") if background else None
        self._inflight: deque[Future] = deque()
        self._options = _parquet_options(self.schema)
        self._family = FAMILY_COLUMNS.get(table)
        # compaction (module docstring): closed small segments not merged yet, as (index, first row ns, rows)
        self.compact_ns = None if compact_s is None else int(compact_s * 1e9)
        self.compact_rows = compact_rows
        self._closed: list[tuple[int, int, int]] = []
        self._unlink_later: list[Path] = []  # covered small segments a reader kept from being unlinked
        self._compactor = (ThreadPoolExecutor(1, thread_name_prefix="gpt-compact")
                           if compact_s is not None and compact_background else None)
        self._merging: Future | None = None
        self._readers_lock = Path(readers_lock) if readers_lock is not None else None
        self.segments_merged = 0  # merged files written
        self.merge_cpu_s = 0.0  # CPU time the merges took (the merge children's, with compact_background)
        self.merge_failures: list[str] = []  # merges that failed (their small segments stay, readable)
        self._cleanup()
        pq.write_table(empty_table(self.schema), self.dir / SCHEMA_FILE)

    def _next_index(self) -> int:
        top = -1
        for p in self.dir.glob(f"{self.prefix}-*.parquet"):
            r = merged_range(p.name)
            if r and r[0] == self.prefix:
                top = max(top, r[2])
                continue
            tail = p.stem[len(self.prefix) + 1:]
            if tail.isdigit():
                top = max(top, int(tail))
        return top + 1

    def _cleanup(self) -> None:
        """A start after a kill between a merge's rename and its unlinks: remove this prefix's small
        segments a merged one covers, and unfinished merged files."""
        names = [e.name for e in os.scandir(self.dir)]
        for n in covered_names(names):
            if _SMALL.match(n)["prefix"] == self.prefix:
                (self.dir / n).unlink(missing_ok=True)
        for n in names:
            r = merged_range(n[1:-4]) if n.startswith(".") and n.endswith(".tmp") else None
            if r and r[0] == self.prefix:
                (self.dir / n).unlink(missing_ok=True)

    def _paths(self) -> tuple[Path, Path]:
        name = f"{self.prefix}-{self._seg_index:06d}.parquet"
        return self.dir / f".{name}.tmp", self.dir / name

    # -- appending ---------------------------------------------------------------------------
    def append_table(self, tbl: pa.Table, now_ns: int | None = None) -> None:
        """Add rows; now_ns: the clock (tests pass their own, as to tick)."""
        if tbl.num_rows == 0:
            return
        if not tbl.schema.equals(self.schema, check_metadata=False):
            tbl = tbl.select(self.schema.names).cast(self.schema)
        now = time.monotonic_ns() if now_ns is None else now_ns
        if not self._pending:
            self._pending_since = now
            if self._writer is None:
                self._seg_started = self._pending_since  # a segment's age counts from its first row
                if self._age_col is not None:
                    lo = self._oldest(tbl)
                    if lo is not None and lo < now:
                        self._seg_started = lo
        self._pending.append(tbl)
        self._pending_rows += tbl.num_rows
        if self._pending_rows >= self.rows_per_group:
            self._flush_group()
        self.tick(now)

    def _oldest(self, tbl: pa.Table) -> int | None:
        col = tbl.column(self._age_col)
        if col.null_count or tbl.num_rows == 0:
            return None
        return int(min(to_numpy(c).min() for c in col.chunks if len(c)))

    def append_rows(self, rows: Iterable[Mapping]) -> None:
        rows = [dict(r, run_id=self.run_id) for r in rows]
        if rows:
            self.append_table(table_from_rows(rows, self.schema))  # pa.Table.from_pylist would import pandas

    def tick(self, now_ns: int | None = None) -> None:
        """Flush by age and rotate segments; call this periodically even when no rows arrive."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        if (self._writer is not None or self._pending) and now - self._seg_started >= self.segment_ns:
            self._flush_group()  # the pending rows go into the segment being closed
            self._close_segment()
        elif self._pending and now - self._pending_since >= self.group_ns:
            self._flush_group()
        if self.compact_ns is not None:
            self._compact_tick()

    # -- compaction ---------------------------------------------------------------------------
    def _compact_tick(self) -> None:
        if self._merging is not None:
            if not self._merging.done():
                return
            self._merging.result()  # a merge's error surfaces here
            self._merging = None
        if self._unlink_later:
            self._unlink(self._unlink_later)
        c = self._closed
        if c and (c[-1][1] - c[0][1] >= self.compact_ns or sum(x[2] for x in c) >= self.compact_rows):
            self._closed = []
            idx = [x[0] for x in c]
            if self._compactor is None:
                self._merge(idx)
            else:
                self._merging = self._compactor.submit(self._merge, idx)

    def wait_compaction(self) -> None:
        """Wait for a running merge (tests, benchmarks)."""
        if self._merging is not None:
            self._merging.result()
            self._merging = None

    def _small(self, i: int) -> Path:
        return self.dir / f"{self.prefix}-{i:06d}.parquet"

    def _merge(self, idx: list[int]) -> None:
        """Merge closed segments idx (ascending) into prefix-LO-HI.parquet: written hidden (by a child
        process with compact_background, else here), renamed under COMPACT_LOCK only when every one still
        exists (retention may have deleted one: then the merge is dropped, the rest stays as it is), then
        the small ones unlinked. A failed merge leaves the small segments as they are (readable)."""
        if len(idx) < 2:
            return
        name = f"{self.prefix}-{idx[0]:06d}-{idx[-1]:06d}.parquet"
        tmp, final = self.dir / f".{name}.tmp", self.dir / name
        smalls = [self._small(i) for i in idx]
        cpu0 = time.thread_time()
        try:
            if self._compactor is not None:
                ok = self._merge_in_child(smalls, tmp)
            else:
                ok = merge_files(self.table, self.run_id, self.rows_per_group, self.compression, smalls, tmp)
            if not ok:
                return
            with COMPACT_LOCK:
                if not all(p.exists() for p in smalls):
                    return
                os.replace(tmp, final)
            self.segments_merged += 1
            self._unlink(smalls)
        finally:
            tmp.unlink(missing_ok=True)
            self.merge_cpu_s += time.thread_time() - cpu0

    def _merge_in_child(self, smalls: list[Path], tmp: Path) -> bool:
        """merge_files in a child process: the recorder's RSS stays what it holds (in-process merges left
        +35-45 MB in its heaps and peaked +60-75 MB, measured at ~3k events/s on the 2-CPU VM). Its CPU
        time is added to merge_cpu_s. False: a segment was gone, or the child failed (noted)."""
        import json
        import subprocess
        import sys

        args = json.dumps({"table": self.table, "run_id": self.run_id, "rows_per_group": self.rows_per_group,
                           "compression": self.compression, "smalls": [str(p) for p in smalls], "tmp": str(tmp)})
        root = str(Path(__file__).resolve().parents[2])  # the folder holding this gpreempt_trace package
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH")) if x))
        code = "import sys; from gpreempt_trace.trace.writer import _merge_child_main; sys.exit(_merge_child_main(sys.argv[1:]))"
        p = subprocess.Popen([sys.executable, "-c", code, args], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        hung = threading.Timer(MERGE_TIMEOUT_S, p.kill)  # a stuck child must not hold up the stop (close waits for it)
        hung.start()
        err = p.stderr.read().decode(errors="replace")
        p.stderr.close()
        hung.cancel()  # (a kill landing before the reap below hits a zombie: harmless)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = rc = os.waitstatus_to_exitcode(status)
        self.merge_cpu_s += ru.ru_utime + ru.ru_stime
        if rc == 0:
            return True
        if rc != MERGE_MISSING and len(self.merge_failures) < 100:
            last = (err.strip().splitlines() or [f"exit {rc}"])[-1]
            self.merge_failures.append(f"{tmp.name[1:-4]}: {last[:200]}")
        return False

    def _unlink(self, paths: list[Path]) -> None:
        """Unlink covered small segments once no reader holds the trace (else on a later tick)."""
        fd = try_exclusive(self._readers_lock)
        if fd is None:
            self._unlink_later = [p for p in dict.fromkeys([*self._unlink_later, *paths])]
            return
        try:
            with COMPACT_LOCK:
                for p in paths:
                    p.unlink(missing_ok=True)
            self._unlink_later = [p for p in self._unlink_later if p not in paths]
        finally:
            if fd >= 0:
                os.close(fd)

    # -- internals ----------------------------------------------------------------------------
    def _run(self, fn, *args) -> None:
        if self._pool is None:
            fn(*args)
            return
        while len(self._inflight) >= MAX_INFLIGHT_GROUPS:
            self._inflight.popleft().result()
        self._inflight.append(self._pool.submit(fn, *args))

    def _drain(self) -> None:
        while self._inflight:
            self._inflight.popleft().result()

    def _flush_group(self) -> None:
        if not self._pending:
            return
        tbl = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_rows = [], 0
        if self._writer is None:
            tmp, _ = self._paths()
            self._writer = pq.ParquetWriter(tmp, self.schema, compression=self.compression, **self._options)
            self._seg_rows = 0
        self._seg_rows += tbl.num_rows
        self.rows_flushed += tbl.num_rows
        self._run(self._write_group, self._writer, tbl)

    def _write_group(self, writer: pq.ParquetWriter, tbl: pa.Table) -> None:
        write_batch(writer, tbl, self._family, self.rows_per_group)

    def _close_segment(self) -> None:
        if self._writer is None:
            return
        self._drain()
        self._writer.close()
        self._writer = None
        tmp, final = self._paths()
        os.replace(tmp, final)
        if self.compact_ns is not None:
            self._closed.append((self._seg_index, self._seg_started, self._seg_rows))
        self._seg_index += 1
        self.rows_written += self._seg_rows
        self.segments_closed += 1

    def cut(self) -> None:
        """Close the open segment now, with every row handed to the writer so far (flight recorder: a
        saved window ends at a segment boundary)."""
        self._flush_group()
        self._close_segment()

    def close(self) -> None:
        self._flush_group()
        self._close_segment()
        if self._pool is not None:
            self._pool.shutdown()
        if self._compactor is not None:  # a running merge finishes (or its rename never happens: a kill)
            self.wait_compaction()
            self._compactor.shutdown()
            self._compactor = None
        deadline = time.monotonic() + CLOSE_UNLINK_WAIT_S  # a reader holding the trace: wait a little for it
        while self._unlink_later:
            self._unlink(self._unlink_later)
            if not self._unlink_later or time.monotonic() >= deadline:
                break  # left covered: readers skip them, the next start with this prefix removes them
            time.sleep(0.05)

    def __enter__(self) -> "SegmentWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
