"""Segment writer and trace directory format v1."""
import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest

from gpreempt_trace.recorder import decode
from gpreempt_trace.trace import directory as trace
from gpreempt_trace.synthetic import records as synth
from gpreempt_trace.errors import GptError, NewerFormat, NotATrace
from gpreempt_trace.trace.writer import SCHEMA_FILE, SegmentWriter


def _events(n, start=0):
    return decode.EventDecoder("run-x").decode(
        synth.records([dict(ts_ns=start + i, event="kfd_ioctl", tgid=100 + i % 3, ret=0) for i in range(n)])
    )


def test_segments_rotate_and_are_renamed(tmp_path):
    w = SegmentWriter(tmp_path / "events", "events", "run-x", rows_per_group=4, group_ms=1e9, segment_s=3600)
    w.append_table(_events(10))  # one row group of 10 rows (over the threshold)
    assert w.rows_flushed == 10 and w.rows_written == 0
    tmp = list((tmp_path / "events").glob(".seg-*.tmp"))
    assert len(tmp) == 1 and not list((tmp_path / "events").glob("seg-*.parquet"))
    w.tick(now_ns=time.monotonic_ns() + 3600 * 10**9)  # segment age passed → closed
    w.append_table(_events(3, start=10))
    w.close()
    segs = sorted((tmp_path / "events").glob("seg-*.parquet"))
    assert [s.name for s in segs] == ["seg-000000.parquet", "seg-000001.parquet"]
    assert [pq.read_metadata(s).num_rows for s in segs] == [10, 3]
    assert w.rows_written == 13 and w.segments_closed == 2
    assert not list((tmp_path / "events").glob(".*.tmp"))


def test_row_groups_by_size(tmp_path):
    w = SegmentWriter(tmp_path / "e", "events", "run-x", rows_per_group=5, group_ms=1e9)
    for i in range(4):
        w.append_table(_events(3, start=3 * i))
    w.close()
    md = pq.read_metadata(tmp_path / "e" / "seg-000000.parquet")
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [6, 6]


def test_provenance_and_compression(tmp_path):
    with SegmentWriter(tmp_path / "e", "events", "run-x") as w:
        w.append_table(_events(2))
    md = pq.read_metadata(tmp_path / "e" / "seg-000000.parquet")
    meta = md.schema.to_arrow_schema().metadata
    assert meta[b"gpreempt_trace.run_id"] == b"run-x"
    assert meta[b"gpreempt_trace.schema_version"] == b"2"
    assert b"gpreempt_trace.tool_version" in meta
    assert md.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_metadata(tmp_path / "e" / SCHEMA_FILE).num_rows == 0


def test_markers_from_rows(tmp_path):
    tw = trace.TraceWriter.create(tmp_path / "t", labels={"model": "m"})
    tw.writer("markers").append_rows([dict(ts_ns=5, source="controller", kind="preempt_request", seq=1, queue_ids=[1, 2], scheme="A")])
    tw.close()
    rows = pq.read_table(tmp_path / "t" / "markers" / "seg-000000.parquet").to_pylist()
    assert rows == [dict(run_id=tw.run_id, ts_ns=5, source="controller", kind="preempt_request", tgid=None, target_tgid=None,
                         gpu_id=None, scheme="A", queue_ids=[1, 2], seq=1, label=None, value_ns=None, container_id=None)]
    meta = json.loads((tmp_path / "t" / "meta.json").read_text())
    assert meta["counters"]["markers_written"] == 1 and meta["labels"] == {"model": "m"}
    assert meta["format"] == "gpreempt-trace" and meta["version"] == 1 and meta["clock"] == "CLOCK_MONOTONIC"
    assert meta["stop_ns"] >= meta["start_ns"] > 0


CRASHER = textwrap.dedent(
    """
    import sys, time
    from gpreempt_trace.recorder import decode
    from gpreempt_trace.trace import directory as trace
    from gpreempt_trace.synthetic import records as synth
    tw = trace.TraceWriter.create(sys.argv[1])
    w = tw.writer("events", rows_per_group=100, group_ms=1e9, segment_s=3600)
    dec = decode.EventDecoder(tw.run_id)
    ts = 0
    for seg in range(3):
        w.append_table(dec.decode(synth.records([dict(ts_ns=ts + i, event="queue_create", queue_id=seg) for i in range(250)])))
        ts += 250
        w._close_segment()
        print(w.rows_written, flush=True)
    w.append_table(dec.decode(synth.records([dict(ts_ns=ts + i, event="queue_destroy") for i in range(250)])))
    print("open", flush=True)
    time.sleep(60)
    """
)


def test_kill_9_loses_only_the_open_segment(tmp_path):
    out = tmp_path / "t"
    p = subprocess.Popen([sys.executable, "-c", CRASHER, str(out)], stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in p.stdout:
            lines.append(line.strip())
            if line.strip() == "open":
                break
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    assert lines == ["250", "500", "750", "open"]
    assert len(list((out / "events").glob(".seg-*.tmp"))) == 1  # the open segment, lost
    files = trace.segment_files(out, "events")
    assert [f.name for f in files] == ["seg-000000.parquet", "seg-000001.parquet", "seg-000002.parquet"]
    for k, f in enumerate(files):
        rows = pq.read_table(f).to_pylist()
        assert [r["ts_ns"] for r in rows] == list(range(250 * k, 250 * (k + 1)))
        assert {r["queue_id"] for r in rows} == {k} and {r["event"] for r in rows} == {"queue_create"}
    meta = trace.read_meta(out)
    assert meta["stop_ns"] is None  # killed: never finished, still readable


def test_output_dir_rules(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(GptError, match="is not empty"):
        trace.TraceWriter.create(tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(GptError, match="not a directory"):
        trace.TraceWriter.create(tmp_path / "file")
    tw = trace.TraceWriter.create(tmp_path / "empty-ok")
    tw.close()


def test_a_second_run_into_a_trace_is_refused_and_leaves_the_first_intact(tmp_path):
    tw = trace.TraceWriter.create(tmp_path / "t", run_id="first")
    tw.writer("events").append_table(_events(3))
    tw.close()
    before = (tmp_path / "t" / "meta.json").read_bytes()
    with pytest.raises(GptError) as e:
        trace.TraceWriter.create(tmp_path / "t")
    assert e.value.line() == (f"output {tmp_path / 't'} already holds a trace (run first): write each run into its own "
                              "directory (-o NEW); query runs together by naming both traces")
    assert (tmp_path / "t" / "meta.json").read_bytes() == before
    assert json.loads(before)["counters"]["events_written"] == 3


def test_read_meta_rejects(tmp_path):
    with pytest.raises(NotATrace, match="no meta.json"):
        trace.read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(NotATrace, match="not valid JSON"):
        trace.read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(NotATrace, match="not a gpreempt-trace meta"):
        trace.read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "gpreempt-trace", "version": 2}))
    with pytest.raises(NewerFormat, match="format v2, this tool reads up to v1"):
        trace.read_meta(tmp_path)


def test_corrupt_segment_warned_and_skipped(tmp_path):
    tw = trace.TraceWriter.create(tmp_path / "t")
    w = tw.writer("events")
    w.append_table(_events(4))
    w.close()
    good = tmp_path / "t" / "events" / "seg-000000.parquet"
    bad = tmp_path / "t" / "events" / "seg-000001.parquet"
    bad.write_bytes(good.read_bytes()[:-20])  # truncated footer
    with pytest.warns(UserWarning, match="seg-000001.parquet"):
        files = trace.segment_files(tmp_path / "t", "events")
    assert files == [good]


def test_find_traces_hive_layout(tmp_path):
    for r in ("a", "b"):
        trace.TraceWriter.create(tmp_path / "runs" / f"run_id={r}", run_id=r).close()
    found = trace.find_traces([tmp_path / "runs"])
    assert [p.name for p in found] == ["run_id=a", "run_id=b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotATrace, match="no meta.json in it or below"):
        trace.find_traces([tmp_path / "empty"])
    with pytest.raises(NotATrace, match="does not exist"):
        trace.find_traces([tmp_path / "nope"])


def test_labels_parse():
    assert trace.parse_labels(["model=resnet50", "x=a=b"]) == {"model": "resnet50", "x": "a=b"}
    with pytest.raises(GptError, match="is not key=value"):
        trace.parse_labels(["oops"])


def test_join_adds_rows_without_touching_meta(tmp_path):
    owner = trace.TraceWriter.create(tmp_path / "t")
    owner.writer("markers").append_rows([dict(ts_ns=1, source="recorder", kind="workload_start")])
    before = (tmp_path / "t" / "meta.json").read_text()
    guest = trace.TraceWriter.join(tmp_path / "t", prefix="wl42")
    guest.writer("markers").append_rows([dict(ts_ns=2, source="workload", kind="request_start", seq=1)])
    guest.close()
    assert (tmp_path / "t" / "meta.json").read_text() == before
    owner.close()
    names = sorted(p.name for p in (tmp_path / "t" / "markers").glob("*.parquet"))
    assert names == ["schema.parquet", "seg-000000.parquet", "wl42-000000.parquet"]
    rows = sorted(r["ts_ns"] for f in trace.segment_files(tmp_path / "t", "markers") for r in pq.read_table(f).to_pylist())
    assert rows == [1, 2]
    assert trace.read_meta(tmp_path / "t")["counters"]["markers_written"] == 1  # the owner's own count


def test_a_row_is_in_a_closed_segment_one_segment_age_after_it_arrived(tmp_path):
    """The kill -9 bound at the writer: with the default ages, whatever was appended at t is in a closed
    (renamed, readable) segment at the first tick at or after t + DEFAULT_SEGMENT_S, the rows pending in
    a row group included; until then it is in the open segment or pending."""
    from gpreempt_trace.trace import writer

    w = SegmentWriter(tmp_path / "e", "events", "run-x")
    t = time.monotonic_ns()
    seg_ns = int(writer.DEFAULT_SEGMENT_S * 1e9)
    w.append_table(_events(5, start=0))  # first row of the segment at ~t
    w.tick(now_ns=t + int(writer.DEFAULT_GROUP_MS * 1e6))  # a row group: written into the open segment
    w.append_table(_events(2, start=5))  # still pending (younger than a row group)
    w.tick(now_ns=t + seg_ns - 1)
    assert w.rows_written == 0 and w.segments_closed == 0
    w.tick(now_ns=time.monotonic_ns() + seg_ns)
    assert w.rows_written == 7 and w.segments_closed == 1
    assert pq.read_metadata(tmp_path / "e" / "seg-000000.parquet").num_rows == 7
    w.close()


def test_docs_quote_the_row_group_and_segment_ages_of_the_code():
    from pathlib import Path

    from gpreempt_trace.trace import writer

    docs = Path(__file__).resolve().parent.parent / "docs"
    for name in ("trace-format.md", "recorder.md"):
        text = docs.joinpath(name).read_text()
        ages = re.findall(r"row groups?[^.]*?(\d+) ms", text)
        segs = re.findall(r"segments? (?:of|every) ([\d.]+) s\b", text)
        assert ages and set(ages) == {str(writer.DEFAULT_GROUP_MS)}, (name, ages)
        assert segs and {float(x) for x in segs} == {writer.DEFAULT_SEGMENT_S}, (name, segs)


def test_counters_are_null_until_known_and_derivable_from_the_segments(tmp_path):
    tw = trace.TraceWriter.create(tmp_path / "t")
    w = tw.writer("events")
    w.append_table(_events(4, start=100))
    w.tick(now_ns=time.monotonic_ns() + 10**10)  # closed by age
    meta = trace.read_meta(tmp_path / "t")  # a killed run leaves this meta.json
    assert meta["counters"] == {"events_written": None, "events_lost": None, "markers_written": None, "snapshots_written": None}
    assert meta["stop_ns"] is None
    assert trace.disk_counters(tmp_path / "t") == {"events_written": 4, "markers_written": 0, "snapshots_written": 0}
    ev = trace.table_on_disk(tmp_path / "t", "events")
    assert (ev.rows, ev.segments, ev.min_ts_ns, ev.max_ts_ns) == (4, 1, 100, 103)
    tw.close()
    c = trace.read_meta(tmp_path / "t")["counters"]
    assert c == {"events_written": 4, "events_lost": None, "markers_written": 0, "snapshots_written": 0}  # nobody counted losses


def test_time_columns_are_written_without_dictionary_and_read_back_exactly_by_duckdb(tmp_path):
    import duckdb

    w = SegmentWriter(tmp_path / "events", "events", "run-x")
    tbl = _events(1000, start=10**15)
    w.append_table(tbl)
    w.close()
    seg = sorted((tmp_path / "events").glob("seg-*.parquet"))[0]
    rg = pq.read_metadata(seg).row_group(0)
    enc = {rg.column(i).path_in_schema: rg.column(i).encodings for i in range(rg.num_columns)}
    assert "DELTA_BINARY_PACKED" in enc["ts_ns"] and not any("DICT" in e for e in enc["ts_ns"])
    assert not any("DICT" in e for e in enc["dur_ns"]) and any("DICT" in e for e in enc["tgid"])
    got = duckdb.sql(f"SELECT ts_ns, tgid FROM '{seg}' ORDER BY ts_ns").fetchall()
    assert got == list(zip(tbl.column("ts_ns").to_pylist(), tbl.column("tgid").to_pylist()))
    assert pq.read_table(seg).equals(tbl.replace_schema_metadata(pq.read_table(seg).schema.metadata))


def test_row_groups_by_event_family_with_min_max_per_family(tmp_path):
    """Events of one batch are written ordered by `event` (within a family as they came), a row group per
    family of MIN_FAMILY_ROWS rows or more and one for the small ones, so each large family's row groups
    carry min = max = its name (what lets a filter on `event` skip the rest); the rows read back unchanged."""
    import duckdb

    from gpreempt_trace.trace import writer

    big = writer.MIN_FAMILY_ROWS
    fams = ["queues_unmap"] * big + ["kfd_ioctl"] * (big + 5) + ["queue_create"] * 3 + ["queue_destroy"] * 2
    rows = [dict(ts_ns=i, event=fams[(i * 7919) % len(fams)], tgid=100, ret=0) for i in range(len(fams))]  # interleaved
    tbl = decode.EventDecoder("run-x").decode(synth.records(rows))
    w = SegmentWriter(tmp_path / "e", "events", "run-x", group_ms=1e9)
    w.append_table(tbl)
    w.close()
    f = tmp_path / "e" / "seg-000000.parquet"
    md = pq.read_metadata(f)
    col = pq.read_schema(f).get_field_index("event")
    groups = [(md.row_group(i).num_rows, md.row_group(i).column(col).statistics.min, md.row_group(i).column(col).statistics.max)
              for i in range(md.num_row_groups)]
    assert groups == [(big + 5, "kfd_ioctl", "kfd_ioctl"), (5, "queue_create", "queue_destroy"), (big, "queues_unmap", "queues_unmap")]
    got = pq.read_table(f).column("event").to_pylist()
    assert got == sorted(got)
    back = duckdb.sql(f"SELECT ts_ns, event FROM '{f}' ORDER BY ts_ns").fetchall()
    assert back == [(r["ts_ns"], r["event"]) for r in rows]
    ts_unmap = duckdb.sql(f"SELECT ts_ns FROM '{f}' WHERE event = 'queues_unmap'").fetchall()
    assert [t for (t,) in ts_unmap] == [r["ts_ns"] for r in rows if r["event"] == "queues_unmap"]  # in arrival order


def test_family_groups_merge_small_neighbours():
    import pyarrow as pa

    from gpreempt_trace.trace.writer import family_groups

    t = pa.table({"event": ["b", "a", "c", "a", "b", "z"] * 3, "i": list(range(18))})
    parts = [p.to_pydict() for p in family_groups(t, "event", min_rows=4)]
    assert parts == [{"event": ["a"] * 6, "i": [1, 3, 7, 9, 13, 15]}, {"event": ["b"] * 6, "i": [0, 4, 6, 10, 12, 16]},
                     {"event": ["c"] * 3 + ["z"] * 3, "i": [2, 8, 14, 5, 11, 17]}]
    small = pa.table({"event": ["x", "a", "x"], "i": [2, 1, 0]})  # no family reaches min_rows: kept as it came
    assert [p.to_pydict() for p in family_groups(small, "event", min_rows=3)] == [small.to_pydict()]
