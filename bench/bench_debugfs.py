"""How long one debugfs snapshot takes to parse and write: the embedded 8-GPU MI308X-like capture
(768 CP + 32 HIQ + 512 SDMA HQD blocks, 3 compute queues x 4 XCC MQDs). This bounds --interval."""
from __future__ import annotations

import tempfile
import time

from gpreempt_trace.debugfs import MI308X_SAMPLE, parse_capture, read_capture_dir
from gpreempt_trace.debugfs.snapshot import Snapshotter
from gpreempt_trace.trace.directory import TraceWriter


def main() -> int:
    cap = read_capture_dir(MI308X_SAMPLE / "01-during")
    size = sum(len(t) for t, _ in cap.files.values())
    n = 10
    t0 = time.perf_counter()
    for _ in range(n):
        rows, _ = parse_capture(cap)
    parse_ms = (time.perf_counter() - t0) / n * 1e3
    with tempfile.TemporaryDirectory() as d:
        tw = TraceWriter.create(f"{d}/t")
        s = Snapshotter(tw, captures_only=True)
        t0 = time.perf_counter()
        for _ in range(n):
            s.take("during", capture=cap)
        take_ms = (time.perf_counter() - t0) / n * 1e3
        tw.close()
    print(f"capture {size / 1e3:.0f} kB text, {len(rows)} rows")
    print(f"parse+join   {parse_ms:8.1f} ms/snapshot")
    print(f"take (write) {take_ms:8.1f} ms/snapshot")
    return 0
