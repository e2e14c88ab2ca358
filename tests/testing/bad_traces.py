"""Malformed traces: each damage is applied in place to a good trace (e.g. testing.traces.write_trace),
with what a reader must do about it — "error" (one line, non-zero exit), "warn" (the damaged segment
is skipped with a warning naming it; the rest reads) or "ok" (readers ignore it: an extra column or key)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from gpreempt_trace.trace.writer import SCHEMA_FILE


def edit_meta(trace: Path, **fields) -> Path:
    """Set meta.json fields (a value of DELETE removes the key)."""
    mp = Path(trace) / "meta.json"
    meta = json.loads(mp.read_text())
    for k, v in fields.items():
        if v is DELETE:
            meta.pop(k, None)
        else:
            meta[k] = v
    mp.write_text(json.dumps(meta))
    return trace


DELETE = object()


def edit_segments(trace: Path, table: str, fn: Callable[[pa.Table], pa.Table]) -> list[Path]:
    """Rewrite every closed segment of `table` (not its schema.parquet) as fn(rows); returns them."""
    files = [f for f in sorted((Path(trace) / table).glob("*.parquet")) if f.name != SCHEMA_FILE]
    for f in files:
        pq.write_table(fn(pq.read_table(f)), f)
    return files


def drop_column(name: str):
    return lambda t: t.drop_columns([name])


def retype_column(name: str, typ: pa.DataType = pa.string()):
    return lambda t: t.set_column(t.schema.get_field_index(name), name, pa.array([str(i) for i in range(t.num_rows)], typ))


def extra_column(t: pa.Table) -> pa.Table:
    return t.append_column("not_in_the_schema", pa.array([1] * t.num_rows, pa.int64()))


def _table_as_file(table: str):
    def f(trace: Path):
        shutil.rmtree(Path(trace) / table)
        (Path(trace) / table).write_text("not a folder\n")
    return f


def _meta_text(text: str):
    def f(trace: Path):
        (Path(trace) / "meta.json").write_text(text)
    return f


def _meta_dir(trace: Path):
    (Path(trace) / "meta.json").unlink()
    (Path(trace) / "meta.json").mkdir()


# name -> (damage, expected: "error" | "warn" | "ok")
DAMAGES: dict[str, tuple[Callable[[Path], object], str]] = {
    "events without run_id": (lambda t: edit_segments(t, "events", drop_column("run_id")), "warn"),
    "events without event": (lambda t: edit_segments(t, "events", drop_column("event")), "warn"),
    "events without ts_ns": (lambda t: edit_segments(t, "events", drop_column("ts_ns")), "warn"),
    "events.tgid as text": (lambda t: edit_segments(t, "events", retype_column("tgid")), "warn"),
    "events.ts_ns as text": (lambda t: edit_segments(t, "events", retype_column("ts_ns")), "warn"),
    "events with an extra column": (lambda t: edit_segments(t, "events", extra_column), "ok"),
    "markers without kind": (lambda t: edit_segments(t, "markers", drop_column("kind")), "warn"),
    "markers.seq as text": (lambda t: edit_segments(t, "markers", retype_column("seq")), "warn"),
    "events/ is a file": (_table_as_file("events"), "error"),
    "markers/ is a file": (_table_as_file("markers"), "error"),
    "meta.json without run_id": (lambda t: edit_meta(t, run_id=DELETE), "error"),
    "meta.json run_id null": (lambda t: edit_meta(t, run_id=None), "error"),
    "meta.json run_id with a slash": (lambda t: edit_meta(t, run_id="../x"), "error"),
    "meta.json counters a string": (lambda t: edit_meta(t, counters="x"), "error"),
    "meta.json counter a string": (lambda t: edit_meta(t, counters={"events_written": "5", "events_lost": 0}), "error"),
    "meta.json counter negative": (lambda t: edit_meta(t, counters={"events_written": 5, "events_lost": -1}), "error"),
    "meta.json labels a list": (lambda t: edit_meta(t, labels=[1]), "error"),
    "meta.json start_ns a string": (lambda t: edit_meta(t, start_ns="a"), "error"),
    "meta.json stop_ns a float": (lambda t: edit_meta(t, stop_ns=1.5), "error"),
    "meta.json synthetic a string": (lambda t: edit_meta(t, synthetic="yes"), "error"),
    "meta.json attach_plan an object": (lambda t: edit_meta(t, attach_plan={"a": 1}), "error"),
    "meta.json schema_version 99": (lambda t: edit_meta(t, schema_version=99), "error"),
    "meta.json schema_version a string": (lambda t: edit_meta(t, schema_version="2"), "error"),
    "meta.json version a string": (lambda t: edit_meta(t, version="1"), "error"),
    "meta.json version true": (lambda t: edit_meta(t, version=True), "error"),
    "meta.json without format": (lambda t: edit_meta(t, format=DELETE), "error"),
    "meta.json without counters": (lambda t: edit_meta(t, counters=DELETE), "ok"),
    "meta.json without version": (lambda t: edit_meta(t, version=DELETE), "error"),
    "process_reads.tgid as text": (lambda t: edit_segments(t, "process_reads", retype_column("tgid")), "ok"),
    "meta.json with an unknown key": (lambda t: edit_meta(t, something_new={"x": 1}), "ok"),
    "meta.json not JSON": (_meta_text("{not json"), "error"),
    "meta.json NaN": (_meta_text('{"format": "gpreempt-trace", "version": 1, "run_id": "r", "start_ns": NaN}'), "error"),
    "meta.json a list": (_meta_text("[1, 2]"), "error"),
    "meta.json not UTF-8": (lambda t: (Path(t) / "meta.json").write_bytes(b'{"format": "\xff\xfe"}'), "error"),
    "meta.json empty": (_meta_text(""), "error"),
    "meta.json a folder": (_meta_dir, "error"),
}
