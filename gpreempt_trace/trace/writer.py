"""Parquet segment writer: fixed schema, row groups by size or age, one segment file per interval.

A segment is written as `.seg-NNNNNN.parquet.tmp` (hidden from DuckDB's `*.parquet` globs and from
Spark, which skips dot files) and renamed to `seg-NNNNNN.parquet` when closed, so a `kill -9` loses
at most the open segment and every closed one reads. A segment is closed (its pending rows flushed
into it) once its first row is DEFAULT_SEGMENT_S old, so a row handed to the writer at time t is in
a closed segment by the first tick() at or after t + segment_s: that bounds what a kill loses. Each table folder also gets a zero-row
`schema.parquet` so that plain-SQL globs always match and carry the full schema.
Events and markers are written in row groups by family (FAMILY_COLUMNS: docs/trace-format.md).
"""
from __future__ import annotations

import os
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
from .arrays import empty_table, table_from_rows

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
    ):
        self.dir = Path(table_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # a second process appending to the same table (snapshotter, workload markers) uses its own
        # prefix, so segment names never collide
        self.prefix = prefix
        self.run_id = run_id
        self.schema = _with_provenance(schema.table_schema(table), run_id)
        self.rows_per_group = rows_per_group
        self.group_ns = int(group_ms * 1e6)
        self.segment_ns = int(segment_s * 1e9)
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
        self._stats = [c for c in STATS_COLUMNS if c in self.schema.names]
        self._dict = [c for c in self.schema.names if c not in NO_DICTIONARY_COLUMNS]
        self._encoding = {c: "DELTA_BINARY_PACKED" for c in DELTA_COLUMNS if c in self.schema.names}
        self._family = FAMILY_COLUMNS.get(table)
        pq.write_table(empty_table(self.schema), self.dir / SCHEMA_FILE)

    def _next_index(self) -> int:
        tails = [p.stem[len(self.prefix) + 1:] for p in self.dir.glob(f"{self.prefix}-*.parquet")]
        return max((int(t) for t in tails if t.isdigit()), default=-1) + 1

    def _paths(self) -> tuple[Path, Path]:
        name = f"{self.prefix}-{self._seg_index:06d}.parquet"
        return self.dir / f".{name}.tmp", self.dir / name

    # -- appending ---------------------------------------------------------------------------
    def append_table(self, tbl: pa.Table) -> None:
        if tbl.num_rows == 0:
            return
        if not tbl.schema.equals(self.schema, check_metadata=False):
            tbl = tbl.select(self.schema.names).cast(self.schema)
        if not self._pending:
            self._pending_since = time.monotonic_ns()
            if self._writer is None:
                self._seg_started = self._pending_since  # a segment's age counts from its first row
        self._pending.append(tbl)
        self._pending_rows += tbl.num_rows
        if self._pending_rows >= self.rows_per_group:
            self._flush_group()
        self.tick()

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
            self._writer = pq.ParquetWriter(tmp, self.schema, compression=self.compression, write_statistics=self._stats,
                                            use_dictionary=self._dict, column_encoding=self._encoding or None)
            self._seg_rows = 0
        self._seg_rows += tbl.num_rows
        self.rows_flushed += tbl.num_rows
        self._run(self._write_group, self._writer, tbl)

    def _write_group(self, writer: pq.ParquetWriter, tbl: pa.Table) -> None:
        """Write one flushed batch: as one row group, or one per family (FAMILY_COLUMNS)."""
        if self._family is None or tbl.num_rows < 2:
            writer.write_table(tbl, max(self.rows_per_group, tbl.num_rows))
            return
        for part in family_groups(tbl, self._family):
            writer.write_table(part, max(self.rows_per_group, part.num_rows))

    def _close_segment(self) -> None:
        if self._writer is None:
            return
        self._drain()
        self._writer.close()
        self._writer = None
        tmp, final = self._paths()
        os.replace(tmp, final)
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

    def __enter__(self) -> "SegmentWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
