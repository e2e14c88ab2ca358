"""Segment-writer throughput for the event schema, and DuckDB time for per-tgid queue counts."""
from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path

from gpreempt_trace import api
from gpreempt_trace.recorder import decode
from gpreempt_trace.trace import directory as trace
from gpreempt_trace.synthetic import records as synth

BATCH = 65536


def _decoded_batches(k: int) -> list:
    recs = synth.bulk_records(BATCH * k, seed=1)
    dec = decode.EventDecoder("bench", ["f0", "f1", "f2", "f3"], lambda nr: "AMDKFD_IOC_CREATE_QUEUE")
    return recs, dec, [dec.decode(recs[i * BATCH:(i + 1) * BATCH]) for i in range(k)]


def _pipeline(path: Path, n: int, recs, dec, background: bool) -> float:
    """decode raw records + write, as the recorder does; returns seconds."""
    tw = trace.TraceWriter.create(path, synthetic=True)
    w = tw.writer("events", background=background)
    k = len(recs) // BATCH
    t0 = time.perf_counter()
    for i in range(n // BATCH):
        w.append_table(dec.decode(recs[(i % k) * BATCH:((i % k) + 1) * BATCH]))
    tw.close()
    return time.perf_counter() - t0


def _writer_only(path: Path, n: int, tables, background: bool) -> float:
    tw = trace.TraceWriter.create(path, synthetic=True)
    w = tw.writer("events", background=background)
    t0 = time.perf_counter()
    for i in range(n // BATCH):
        w.append_table(tables[i % len(tables)])
    tw.close()
    return time.perf_counter() - t0


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gpt-bench-"))
    try:
        n = BATCH * 61  # ≈ 4 M rows
        recs, dec, tables = _decoded_batches(4)
        t0 = time.perf_counter()
        for i in range(n // BATCH):
            dec.decode(recs[(i % 4) * BATCH:((i % 4) + 1) * BATCH])
        t_dec = time.perf_counter() - t0
        t_w = _writer_only(tmp / "w", n, tables, background=False)
        size = sum(f.stat().st_size for f in (tmp / "w" / "events").glob("*.parquet"))
        t_pipe = _pipeline(tmp / "p", n, recs, dec, background=True)
        print(f"writer: Arrow batches -> zstd Parquet segments: {n / t_w / 1e6:.2f} M rows/s ({size / n:.1f} bytes/row) "
              f"(target >= 2 M rows/s; before issue 14: 1.37)")
        print(f"decode: raw ring-buffer records -> Arrow: {n / t_dec / 1e6:.2f} M rows/s (before issue 14: 1.95)")
        print(f"pipeline: decode + write (background encoder thread): {n / t_pipe / 1e6:.2f} M rows/s "
              f"(target >= 2 M rows/s; before issue 14: 0.72)")
        n_big = 10_000_000 // BATCH * BATCH
        _writer_only(tmp / "big", n_big, tables, background=True)
        t0 = time.perf_counter()
        rows = api.query("queues.per_tgid", [str(tmp / "big")])
        t_q = time.perf_counter() - t0
        con = api.connect([str(tmp / "big")])
        t0 = time.perf_counter()
        con.sql("SELECT tgid, count(DISTINCT queue_id) FROM events WHERE event = 'queue_create' GROUP BY tgid").fetchall()
        t_raw = time.perf_counter() - t0
        print(f"duckdb: queues.per_tgid over {n_big:,} event rows: {t_q:.2f} s ({rows.num_rows} groups); "
              f"bare per-tgid distinct queue count: {t_raw:.2f} s")
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from . import writer_compaction

    writer_compaction.main()  # record --compact: files per day, open+count a day both ways, merge CPU


if __name__ == "__main__":
    main()
