"""Compaction (trace/writer.py, issue 23): closed segments merged into PREFIX-LO-HI.parquet with the same
rows and family row groups; readers never count a row twice (both present after a kill between the
rename and the unlinks); the next writer start cleans up; a reader holding the trace defers the
unlinks; the flight recorder's retention and saves with merged segments; and the kill -9 bound of the
recorder's events writer with a simulated clock. Clocks are passed in: no timing is asserted."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpreempt_trace import api
from gpreempt_trace.errors import GptError
from gpreempt_trace.recorder import flight as F
from gpreempt_trace.recorder import runtime
from gpreempt_trace.trace import directory as T
from gpreempt_trace.trace import writer as W
from gpreempt_trace.trace.arrays import table_from_rows
from gpreempt_trace.trace.schema import table_schema

S = 10 ** 9
MS = 10 ** 6


def events(ts: list[int], event: str | list[str] = "kfd_ioctl", run_id: str = "r") -> pa.Table:
    evs = [event] * len(ts) if isinstance(event, str) else event
    rows = [{"run_id": run_id, "ts_ns": t, "event": e, "tgid": 7, "pid": 7, "cpu": 0, "gpu_id": 1, "dur_ns": 1000}
            for t, e in zip(ts, evs)]
    return table_from_rows(rows, table_schema("events"))


def stream(w: W.SegmentWriter, seconds: float, per_tick: int = 5, t0: int = 0, period_ns: int = 100 * MS) -> list[int]:
    """Append per_tick rows (ts_ns = the tick's time) every period over `seconds` of simulated clock, ticking
    the writer each time; returns every ts_ns appended."""
    out = []
    for k in range(int(seconds * S / period_ns)):
        now = t0 + k * period_ns
        ts = [now] * per_tick
        w.append_table(events(ts), now_ns=now)
        w.tick(now)
        out += ts
    return out


def names(d) -> list[str]:
    return sorted(p.name for p in d.glob("*.parquet") if p.name != W.SCHEMA_FILE)


def rows_of(trace, table="events") -> list[int]:
    return sorted(t for f in T.segment_files(trace, table) for t in pq.read_table(f, columns=["ts_ns"]).column(0).to_pylist())


def test_merged_segment_holds_the_small_segments_rows_in_family_row_groups(tmp_path):
    d = tmp_path / "e"
    w = W.SegmentWriter(d, "events", "r", segment_s=0.25, compact_s=1.0, compact_background=False, rows_per_group=20000)
    big = events([i for i in range(10000)] + [i for i in range(10000)], ["queues_unmap"] * 10000 + ["kfd_ioctl"] * 10000)
    w.append_table(big, now_ns=0)
    w.tick(S // 4)  # closes seg 0
    ts = stream(w, 1.5, t0=S // 2)
    w.close()
    got = names(d)
    merged = [n for n in got if W.merged_range(n)]
    # segment 0 (first row at 0), 1 (0.5-0.8 s), 2 (0.9-1.2 s), 3 (1.3-1.6 s): first rows 1 s apart at 3
    assert merged == ["seg-000000-000003.parquet"]
    assert [n for n in got if not W.merged_range(n)] == ["seg-000004.parquet"]  # 1.7-1.9 s, closed by close()
    f = d / merged[0]
    tbl = pq.read_table(f)
    assert sorted(tbl.column("ts_ns").to_pylist()) == sorted(list(range(10000)) * 2 + [t for t in ts if t <= 16 * S // 10])
    assert tbl.num_rows == 20000 + 3 * 4 * 5
    assert rows_of(tmp_path, "e") == sorted(list(range(10000)) * 2 + ts)  # every row once over the table
    md = pq.read_metadata(f)
    ev = md.schema.names.index("event")
    fams = [(md.row_group(g).column(ev).statistics.min, md.row_group(g).column(ev).statistics.max) for g in range(md.num_row_groups)]
    # the 20,000-row batch: one row group per family (each >= MIN_FAMILY_ROWS); the small rest: one group
    assert fams[:2] == [("kfd_ioctl", "kfd_ioctl"), ("queues_unmap", "queues_unmap")]
    assert all(md.row_group(g).num_rows <= 20000 for g in range(md.num_row_groups))
    def stats(m):
        return {m.schema.column(i).name for i in range(m.num_columns) if m.row_group(0).column(i).statistics is not None
                and m.row_group(0).column(i).statistics.has_min_max}
    assert stats(md) == stats(pq.read_metadata(d / "seg-000004.parquet")) == {"run_id", "ts_ns", "event", "tgid", "gpu_id"}
    assert md.metadata[b"gpreempt_trace.run_id"] == b"r"
    assert w.segments_merged == 1


def test_a_day_equivalent_stream_is_one_file_per_compact_s(tmp_path):
    d = tmp_path / "e"
    w = W.SegmentWriter(d, "events", "r", segment_s=0.25, compact_s=60.0, compact_background=False)
    ts = stream(w, 600, per_tick=1)  # 10 minutes of simulated clock, 2,400 small segments
    w.close()
    got = names(d)
    merged = [n for n in got if W.merged_range(n)]
    # a segment per 4 ticks (0.4 s): 1,500 small ones; one merge per 151 of them (first rows 60 s apart)
    assert w._seg_index == 1500
    assert merged == [f"seg-{i * 151:06d}-{i * 151 + 150:06d}.parquet" for i in range(9)]
    assert len(got) == 9 + (1500 - 9 * 151)  # the last minute's small segments wait for its merge
    assert rows_of(tmp_path, "e") == sorted(ts)


def test_a_reader_listing_both_counts_each_row_once_and_the_next_start_cleans_up(tmp_path, monkeypatch):
    tw = T.TraceWriter.create(tmp_path / "t")
    tw.compact_s = 1.0
    w = tw.writer("events", segment_s=0.25, compact_background=False)
    other = T.TraceWriter.join(tmp_path / "t", prefix="wl9").writer("events")  # another process's prefix
    other.append_table(events([5 * S]))
    other.close()
    monkeypatch.setattr(W.SegmentWriter, "_unlink", lambda self, paths: None)  # killed between rename and unlinks
    ts = stream(w, 2.0)
    w._flush_group()
    w._close_segment()
    d = tmp_path / "t" / "events"
    on_disk = names(d)
    assert "seg-000000-000003.parquet" in on_disk and "seg-000000.parquet" in on_disk  # both present
    assert rows_of(tmp_path / "t") == sorted(ts + [5 * S])
    assert T.table_on_disk(tmp_path / "t", "events").rows == len(ts) + 1
    con = api.connect([str(tmp_path / "t")])
    assert con.execute("SELECT count(*), count(DISTINCT ts_ns) FROM events").fetchone() == (len(ts) + 1, len(set(ts)) + 1)
    monkeypatch.undo()
    # a dot-file left by a merge killed before its rename is removed too
    (d / ".seg-000005-000009.parquet.tmp").write_bytes(b"partial")
    w2 = T.TraceWriter.join(tmp_path / "t", prefix="seg").writer("events")
    left = names(d)
    assert [n for n in left if n.startswith("seg-")] == ["seg-000000-000003.parquet", "seg-000004.parquet"]
    assert "wl9-000000.parquet" in left  # another prefix's segment is its own writer's
    assert not (d / ".seg-000005-000009.parquet.tmp").exists()
    assert w2._seg_index == w._seg_index  # past both the merged range and the rest
    assert rows_of(tmp_path / "t") == sorted(ts + [5 * S])


def test_a_reader_holding_the_trace_defers_the_unlinks(tmp_path):
    tw = T.TraceWriter.create(tmp_path / "t")
    tw.compact_s = 1.0
    w = tw.writer("events", segment_s=0.25, compact_background=False)
    fd = T.hold_for_reading(tmp_path / "t")
    assert fd is not None  # compaction made the trace lockable
    ts = stream(w, 2.0)
    d = tmp_path / "t" / "events"
    assert "seg-000000-000003.parquet" in names(d) and "seg-000002.parquet" in names(d)  # the reader's files stay
    assert rows_of(tmp_path / "t") == sorted(t for t in ts if t <= 19 * S // 10)  # merged 0-3 and 4, once each
    os.close(fd)
    w.tick(2 * S)
    assert "seg-000002.parquet" not in names(d)
    w.close()
    assert rows_of(tmp_path / "t") == sorted(ts)


def test_a_merge_whose_segment_retention_deleted_is_dropped(tmp_path):
    d = tmp_path / "e"
    w = W.SegmentWriter(d, "events", "r", segment_s=0.25, compact_s=100.0, compact_background=False)
    stream(w, 1.5)
    os.unlink(d / "seg-000001.parquet")  # retention took it
    w._merge([0, 1, 2])
    assert names(d)[:2] == ["seg-000000.parquet", "seg-000002.parquet"] and not any(W.merged_range(n) for n in names(d))
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp") and W.merged_range(p.name[1:-4])]
    w.close()


def test_covered_names():
    assert W.covered_names(["seg-000001.parquet", "seg-000000-000003.parquet", "seg-000004.parquet", "wl1-000002.parquet",
                            "schema.parquet"]) == {"seg-000001.parquet"}
    assert W.merged_range("snap42-000010-000020.parquet") == ("snap42", 10, 20)
    assert W.merged_range("seg-000010.parquet") is None


class Flight:
    def __init__(self, path, keep=None, triggers=None, after_s=2.0):
        self.tw = T.TraceWriter.create(path)
        self.tw.compact_s = 2.0
        self.tw.meta["start_ns"] = 0
        self.w = self.tw.writer("events", segment_s=0.5, compact_background=False)
        self.fl = F.FlightRecorder(self.tw, keep, triggers, after_s, lost=lambda: 0)

    def run(self, t0: int, t1: int) -> list[int]:
        """One row per 100 ms from t0 to t1 (ns), the writer and flight recorder ticked as record does."""
        out = []
        for now in range(t0, t1, 100 * MS):
            self.w.append_table(events([now], run_id=self.tw.run_id), now_ns=now)
            self.w.tick(now)
            self.fl.tick(now)
            out.append(now)
        return out


def test_retention_deletes_merged_segments_whole_and_counts_their_rows(tmp_path):
    f = Flight(tmp_path / "t", keep=F.Keep(seconds=5.0))
    ts = f.run(0, 20 * S)
    f.w.close()
    f.fl.close(20 * S)
    kept = rows_of(tmp_path / "t")
    assert f.fl.deleted["events"] == len(ts) - len(kept)  # each deleted row counted once
    assert kept == ts[len(ts) - len(kept):]  # the newest, contiguous
    # segments of 0.5 s (5 rows) merged per 2 s (5 segments): 0-9.9 s went in merged files; the last
    # deletion (at 17 s) took the one ending 11.9 s, older than 17 - 5 s
    assert kept[0] == 12 * S and len(kept) == 80
    assert names(tmp_path / "t" / "events") == ["seg-000020-000024.parquet", "seg-000025-000029.parquet",
                                                *[f"seg-{i:06d}.parquet" for i in range(30, 34)]]
    assert f.fl.deleted_upto_ns == kept[0] - 100 * MS  # whole segments: the next row starts the kept window


def test_retention_of_a_merged_segment_takes_its_leftover_small_ones(tmp_path, monkeypatch):
    f = Flight(tmp_path / "t", keep=F.Keep(seconds=3.0))
    monkeypatch.setattr(W.SegmentWriter, "_unlink", lambda self, paths: None)  # smalls left next to the merged ones
    ts = f.run(0, 10 * S)
    f.w.close()
    f.fl.close(10 * S)
    kept = rows_of(tmp_path / "t")
    assert kept == ts[len(ts) - len(kept):] and f.fl.deleted["events"] == len(ts) - len(kept)
    d = tmp_path / "t" / "events"
    # merged 0-4 and 5-9 were deleted with their leftover small segments (uncovered, they would come back);
    # 10-14's leftovers stay covered by it
    assert names(d) == ["seg-000010-000014.parquet", *[f"seg-{i:06d}.parquet" for i in range(10, 17)]]
    assert kept == [t for t in ts if t >= 6 * S] and len(kept) == 40


def test_a_save_with_merges_during_its_window_holds_each_row_once(tmp_path):
    f = Flight(tmp_path / "t", keep=F.Keep(seconds=30.0), after_s=6.0)
    ts = f.run(0, 3 * S)
    f.fl.trigger("signal", {"signal": "SIGUSR1"}, 3 * S)  # links segments 0..5, then merges replace them
    ts += f.run(3 * S, 12 * S)
    assert f.fl.saved
    saved = f.fl.saved[0]
    got = rows_of(saved)
    assert len(got) == len(set(got))  # once each
    assert got == ts[:len(got)] and got[-1] >= 9 * S  # the run's start to the cut
    sd = saved / "events"
    assert not W.covered_names(os.listdir(sd))
    assert any(W.merged_range(n) for n in os.listdir(sd))
    meta = T.read_meta(saved)
    assert meta["counters"]["events_written"] == len(got)
    con = api.connect([str(saved)])
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == len(got)
    f.w.close()
    f.fl.close(12 * S)


def test_a_killed_recording_loses_at_most_the_segment_age_plus_a_loop_period(tmp_path):
    """The recorder's events writer (age from ts_ns, 0.25 s segments): events every 1 ms read from the
    ring every loop period (100 ms) and appended late by `lag`; at any kill time k the newest row in a
    closed segment is at most EVENTS_SEGMENT_S + DECODE_EVERY_S older than k (+ one period of lag)."""
    seg = runtime.EVENTS_SEGMENT_S
    period = int(runtime.DECODE_EVERY_S * S)
    for lag_ms in (0, 300, 900):  # a slow start-up: the first read comes late, its rows are old
        d = tmp_path / f"lag{lag_ms}"
        w = W.SegmentWriter(d, "events", "r", segment_s=seg, group_ms=runtime.EVENTS_GROUP_MS, age_from_ts=True,
                            compact_s=60.0, compact_background=False)
        worst = 0
        start = lag_ms * MS
        last_read = 0
        for now in range(start, start + 5 * S, period):  # a loop iteration: read, decode, append, tick
            ts = list(range(last_read, now, MS))
            last_read = now
            if ts:
                w.append_table(events(ts), now_ns=now)
            w.tick(now)
            on_disk = max((t for n in names(d) for t in pq.read_table(d / n, columns=["ts_ns"]).column(0).to_pylist()), default=0)
            if now >= start + period:
                worst = max(worst, now + period - on_disk)  # a kill just before the next iteration
        assert worst <= int(seg * S) + 2 * period, (lag_ms, worst)
        w.close()


def test_compact_option_parsing_and_record_cli(tmp_path):
    assert runtime.parse_compact("60s") == 60.0
    assert runtime.parse_compact("5m") == 300.0
    assert runtime.parse_compact("90") == 90.0
    assert runtime.parse_compact("off") is None
    for bad in ("", "0.5s", "2d", "soon", "-1"):
        with pytest.raises(GptError, match="is not a time from 1s to 1d, or off"):
            runtime.parse_compact(bad)
    from click.testing import CliRunner

    from gpreempt_trace.cli.main import main

    res = CliRunner().invoke(main, ["record", "-o", str(tmp_path / "x"), "--compact", "soon"])
    assert res.exit_code == 2 and "--compact" in res.output and "is not a time from 1s to 1d, or off" in res.output
    assert "Traceback" not in res.output


def test_a_merge_in_a_child_process_writes_what_an_in_process_merge_writes(tmp_path):
    """compact_background (the recorder's setting): the merge runs in a child process (the recorder's heap
    never holds its buffers); same file content as merge_files here, its CPU counted, the smalls unlinked."""
    rows = {}
    for mode in ("child", "here"):
        d = tmp_path / mode
        w = W.SegmentWriter(d, "events", "r", segment_s=0.25, compact_s=1.0, compact_background=mode == "child")
        ts = stream(w, 1.5)
        w.tick(2 * S)  # closes segment 3 (first row at 1.2 s): segments 0-3 span 1 s, merged
        w.wait_compaction()
        w.close()
        got = names(d)
        assert got == ["seg-000000-000003.parquet"]
        rows[mode] = pq.read_table(d / "seg-000000-000003.parquet")
        assert rows_of(tmp_path, mode) == sorted(ts)
        assert w.segments_merged == 1 and w.merge_failures == []
        assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
    assert rows["child"].equals(rows["here"])
    assert rows["child"].schema.metadata == rows["here"].schema.metadata


def test_a_failed_merge_child_keeps_the_small_segments_and_is_reported(tmp_path):
    d = tmp_path / "e"
    w = W.SegmentWriter(d, "events", "r", segment_s=0.25, compact_s=1.0, compact_background=True)
    w.append_table(events([1, 2]), now_ns=0)
    w.tick(S // 4)
    (d / "seg-000000.parquet").write_bytes(b"not parquet")  # the child cannot read it
    ts = stream(w, 1.5, t0=S // 2)
    w.tick(2 * S)
    w.wait_compaction()
    w.close()
    got = names(d)
    assert got == [f"seg-{i:06d}.parquet" for i in range(5)]  # every small segment stays
    assert len(w.merge_failures) == 1 and w.merge_failures[0].startswith("seg-000000-000003.parquet: ")
    assert w.segments_merged == 0
    with pytest.warns(UserWarning, match="skipping unreadable segment"):
        assert rows_of(tmp_path, "e") == sorted(ts)


def test_a_merge_child_that_hangs_is_killed_and_its_segments_stay(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setattr(W, "MERGE_TIMEOUT_S", 0.5)
    orig = subprocess.Popen
    # the merge child replaced by one that never ends
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kw: orig([argv[0], "-c", "import time; time.sleep(60)"], **kw))
    d = tmp_path / "e"
    w = W.SegmentWriter(d, "events", "r", segment_s=0.25, compact_s=1.0, compact_background=True)
    ts = stream(w, 1.5)
    w.tick(2 * S)
    w.wait_compaction()
    w.close()
    assert names(d) == [f"seg-{i:06d}.parquet" for i in range(4)]  # every small segment stays
    assert len(w.merge_failures) == 1 and w.merge_failures[0].startswith("seg-000000-000003.parquet: ")
    assert w.segments_merged == 0
    assert rows_of(tmp_path, "e") == sorted(ts)
