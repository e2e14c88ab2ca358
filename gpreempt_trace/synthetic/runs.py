"""Write a small hive-style runs folder of synthetic traces (for reader checks such as Spark's).

`python -m gpreempt_trace.synthetic.runs DEST` → DEST/run_id=<id>/{meta.json,events,markers,snapshots}
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..recorder import decode
from ..trace import directory as trace
from . import records as synth


def write(dest: str | Path, runs: int = 2, rows: int = 1000) -> list[Path]:
    out = []
    for k in range(runs):
        run_id = f"synthetic-{k}"
        tw = trace.TraceWriter.create(Path(dest) / f"run_id={run_id}", labels={"model": f"m{k % 2}"}, synthetic=True, run_id=run_id)
        tw.writer("events").append_table(decode.EventDecoder(run_id, ["f0", "f1", "f2", "f3"]).decode(synth.bulk_records(rows, seed=k)))
        tw.writer("markers").append_rows([dict(ts_ns=1, source="synthetic", kind="workload_start", tgid=1000 + k)])
        tw.close()
        out.append(tw.path)
    return out


if __name__ == "__main__":
    for p in write(sys.argv[1]):
        print(p)
