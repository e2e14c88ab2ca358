"""Compaction (record --compact, issue 23): files per table for an always-on recording with and without
it, the time to open and count a day of segments both ways, and the CPU the merges cost. Part of
`python -m bench writer`; alone: `python -m bench.writer_compaction`.

The writer is driven with a simulated clock (append_table/tick take now_ns): an hour of an always-on
`record` at RATE events/s in 0.25 s segments (the recorder's events writer), each way; a day is 24 such
hours (file counts scale exactly). Open+count: DuckDB through the trace readers (api.connect: footer
validation + the view) and one count(*); the compacted day is built for real (1,440 merged files), the
uncompacted day's files are measured on a 20,000-file slice and scaled (linear in files: the
footers are read one by one); the floor is one file holding the slice's rows.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from gpreempt_trace import api
from gpreempt_trace.recorder.runtime import EVENTS_SEGMENT_S
from gpreempt_trace.trace import directory as trace
from gpreempt_trace.trace.schema import table_schema
from gpreempt_trace.trace.writer import DEFAULT_COMPACT_S, SCHEMA_FILE, merged_range

RATE = 200  # events/s: 50 rows per 0.25 s segment
HOUR_S = 3600
SLICE = 20_000


def _batch(ts: np.ndarray, run_id: str) -> pa.Table:
    sch = table_schema("events")
    n = len(ts)
    cols = {f.name: pa.nulls(n, f.type) for f in sch}
    cols["run_id"] = pa.array([run_id] * n, pa.string())
    cols["ts_ns"] = pa.array(ts, pa.int64())
    cols["event"] = pa.array(np.where(np.arange(n) % 4 == 0, "queues_unmap", "kfd_ioctl"), pa.string())
    cols["tgid"] = pa.array(np.full(n, 7, np.int32), sch.field("tgid").type)
    return pa.table([cols[f.name].cast(f.type) for f in sch], schema=sch)


def _hour(path: Path, compact_s: float | None) -> tuple[int, int, float, float, int]:
    """An hour of simulated recording; (files, merged files, process CPU s, merge CPU s, rows)."""
    tw = trace.TraceWriter.create(path, synthetic=True)
    tw.compact_s = compact_s
    w = tw.writer("events", segment_s=EVENTS_SEGMENT_S, group_ms=EVENTS_SEGMENT_S * 1000, age_from_ts=True,
                  **({"compact_background": True} if compact_s else {}))
    period = 100_000_000  # the record loop's period
    per = RATE * period // 10 ** 9
    cpu0 = time.process_time()
    rows = 0
    for k in range(HOUR_S * 10):
        now = k * period
        # the rows read in this period: ts_ns in the last period (the ring's age)
        w.append_table(_batch(np.arange(now - period, now, period // per)[:per], tw.run_id), now_ns=now)
        w.tick(now)
        rows += per
    tw.close()
    cpu = time.process_time() - cpu0
    names = [n for n in os.listdir(path / "events") if n.endswith(".parquet") and n != SCHEMA_FILE]
    return len(names), sum(1 for n in names if merged_range(n)), cpu, w.merge_cpu_s, rows


def _open_count(path: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, rows) of api.connect + count(*) on the events."""
    t0, c0 = time.perf_counter(), time.process_time()
    con = api.connect([str(path)])
    n = con.execute("SELECT count(*) FROM events").fetchone()[0]
    return time.perf_counter() - t0, time.process_time() - c0, n


def _fill(path: Path, files: int, rows_per_file: int, merged: bool) -> None:
    """A trace of `files` segments of rows_per_file rows each, as the writer names them."""
    tw = trace.TraceWriter.create(path, synthetic=True)
    d = path / "events"
    import pyarrow.parquet as pq

    span = rows_per_file // (RATE // 4) if merged else 1  # small segments a merged file covers
    for i in range(files):
        name = f"seg-{i * span:06d}-{i * span + span - 1:06d}.parquet" if merged else f"seg-{i:06d}.parquet"
        ts = np.arange(rows_per_file, dtype=np.int64) + i * rows_per_file
        pq.write_table(_batch(ts, tw.run_id), d / name, compression="zstd",
                       write_statistics=["run_id", "ts_ns", "event", "tgid"])
    tw.close()


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gpt-bench-compact-"))
    try:
        load = os.getloadavg()[0]
        print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f}; {RATE} events/s, {EVENTS_SEGMENT_S} s segments, "
              f"--compact {DEFAULT_COMPACT_S:g}s")
        off = _hour(tmp / "off", None)
        on = _hour(tmp / "on", DEFAULT_COMPACT_S)
        day_off, day_on = off[0] * 24, on[1] * 24 + (on[0] - on[1])  # merged files scale; the last minute's smalls do not
        print(f"files per table, one simulated hour: {off[0]:,} without compaction, {on[0]:,} with ({on[1]} merged); "
              f"a day: {day_off:,} vs {day_on:,} ({on[4]:,} rows per hour both)")
        print(f"writer CPU for the hour (this process): {off[2]:.2f} s without, {on[2]:.2f} s with compaction, "
              f"difference {on[2] - off[2]:.2f} s; the merges' own thread: {on[3]:.2f} s; "
              f"a day at this rate: {on[3] * 24:.0f} s of merges")
        shutil.rmtree(tmp / "off"), shutil.rmtree(tmp / "on")
        per_merged = int(DEFAULT_COMPACT_S * RATE)
        day_rows = 86400 * RATE
        _fill(tmp / "day", int(86400 / DEFAULT_COMPACT_S), per_merged, merged=True)
        w_day, c_day, n_day = _open_count(tmp / "day")
        rows_small = RATE * 86400 // day_off
        _fill(tmp / "slice", SLICE, rows_small, merged=False)
        w_sl, c_sl, n_sl = _open_count(tmp / "slice")
        _fill(tmp / "floor", 1, SLICE * rows_small, merged=False)
        w_fl, c_fl, n_fl = _open_count(tmp / "floor")
        scale = day_off / SLICE
        assert n_day == day_rows and n_sl == n_fl == SLICE * rows_small
        # the per-file part (the slice above the floor: footers, file list) scales with the files; the floor's does not
        est_w, est_c = w_fl + (w_sl - w_fl) * scale, c_fl + (c_sl - c_fl) * scale
        print(f"open + count a day ({day_rows:,} rows): compacted, {int(86400 / DEFAULT_COMPACT_S):,} files: {w_day:.2f} s wall "
              f"({c_day:.2f} s CPU); uncompacted, {day_off:,} files of {rows_small} rows: ~{est_w:.0f} s wall (~{est_c:.0f} s CPU), "
              f"from {w_sl:.2f} s wall / {c_sl:.2f} s CPU measured on {SLICE:,} of them, scaled x{scale:.1f} above the floor")
        print(f"floor: the slice's {n_fl:,} rows in 1 file: {w_fl:.2f} s wall ({c_fl:.2f} s CPU)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
