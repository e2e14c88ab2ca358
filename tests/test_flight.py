"""Flight-recorder mode (issue 23 item 2), at the decoder and writer level with synthetic records and
the clock passed in: which segments retention keeps and deletes (by time and by size), what a trigger
saves (the window's start/stop, its segments, its counters and loss), that a saved segment survives
retention, that a second trigger while one is pending is recorded (not extended), and that a saved
trace opens in every query module, the report and the Perfetto export. `record` itself (SIGUSR1,
--keep on a live run) is in tests/test_record_flight.py."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from gpreempt_trace import api
from gpreempt_trace.sql import query
from gpreempt_trace.trace import directory as T
from gpreempt_trace.recorder.decode import EventDecoder
from gpreempt_trace.errors import GptError
from gpreempt_trace.recorder import flight as F
from gpreempt_trace.recorder import ioctls
from gpreempt_trace.synthetic.records import records

S = 10 ** 9
MS = 10 ** 6
FUNCS = ["reset_queues_cpsch", "unmap_queues_cpsch", "kfd_hws_hang", "suspend_queues", "hw_unmap_wait", "kfd_ioctl"]


def test_keep_and_trigger_parsing():
    assert F.parse_keep("10m") == F.Keep(seconds=600.0)
    assert F.parse_keep("90") == F.Keep(seconds=90.0)
    assert F.parse_keep("1.5h") == F.Keep(seconds=5400.0)
    assert F.parse_keep("2GiB") == F.Keep(bytes=2 << 30)
    assert F.parse_keep("500MB") == F.Keep(bytes=500_000_000)
    assert F.parse_triggers("queue_reset,hws_hang,preempt_over=5ms") == F.Triggers(("queue_reset", "hws_hang"), 5 * MS)
    assert F.parse_triggers("preempt_over=250us") == F.Triggers((), 250_000)
    for bad in ("", "0", "-1m", "10 parsecs", "GiB", "nan"):
        with pytest.raises(GptError, match="is not a positive time or size"):
            F.parse_keep(bad)
    for bad, msg in (("gpu_reset", "unknown trigger 'gpu_reset'"), ("preempt_over", "unknown trigger 'preempt_over'"),
                     ("preempt_over=5", "'5' is not a duration"), ("queue_reset=1", "unknown trigger"), (",", "no trigger given")):
        with pytest.raises(GptError, match=msg):
            F.parse_triggers(bad)


class Run:
    """A trace being written, with segments of chosen ts_ns closed on demand, and a FlightRecorder."""

    def __init__(self, path, keep=None, triggers=None, after_s=2.0):
        self.tw = T.TraceWriter.create(path)
        self.tw.meta["start_ns"] = 0  # the run's clock starts at 0 here
        self.dec = EventDecoder(self.tw.run_id, FUNCS, ioctls.ioctl_name)
        self.lost = 0
        self.fl = F.FlightRecorder(self.tw, keep, triggers, after_s, lost=lambda: self.lost)
        self.names: list[str] = []

    def segment(self, *rows: dict, table="events") -> str:
        """One closed segment holding these rows; returns its file name."""
        if table == "events":
            tbl = self.dec.decode(records([{"func": "kfd_ioctl", "event": "kfd_ioctl", "tgid": 7, **r} for r in rows], FUNCS))
            self.tw.writer("events").append_table(tbl)
            self.fl.check(tbl, rows[-1]["ts_ns"])
        else:
            self.tw.writer(table).append_rows(rows)
        w = self.tw.writers[table]
        name = f"seg-{w._seg_index:06d}.parquet"
        w.cut()
        self.names.append(name)
        return name

    def second(self, k: int, n: int = 3, **extra) -> str:
        """A segment of n kfd_ioctl rows at k s, k s + 1 ms, ..."""
        return self.segment(*[{"ts_ns": k * S + i * MS, "dur_ns": 1000, **extra} for i in range(n)])

    def on_disk(self, table="events") -> list[str]:
        return sorted(p.name for p in (self.tw.path / table).glob("seg-*.parquet"))


def test_keep_by_time_deletes_whole_segments_oldest_first(tmp_path):
    r = Run(tmp_path / "t", keep=F.Keep(seconds=3.0))
    names = [r.second(k) for k in range(10)]  # newest rows at k s + 2 ms
    r.fl.tick(6 * S + 2 * MS)  # keep rows newer than 3 s + 2 ms: the segment of 3 s (newest 3.002 s) stays
    assert r.on_disk() == names[3:]
    r.fl.tick(6 * S + 2 * MS + 1)  # 1 ns later it is older than the window
    assert r.on_disk() == names[4:]
    assert r.fl.deleted["events"] == 4 * 3 and r.fl.segments_deleted == 4
    assert r.fl.deleted_upto_ns == 3 * S + 2 * MS
    r.fl.tick(100 * S)  # everything is old: every closed segment goes, the folder still reads
    assert r.on_disk() == [] and (r.tw.path / "events" / "schema.parquet").exists()
    r.fl.close(100 * S)
    r.tw.close()
    meta = T.read_meta(r.tw.path)
    c = meta["counters"]
    assert (c["events_written"], c["events_deleted"], c["segments_deleted"]) == (30, 30, 10)
    assert c["bytes_deleted"] > 0 and c["markers_deleted"] == 0
    assert meta["recorder"]["flight"]["keep"] == {"seconds": 3.0, "bytes": None}
    assert query.run("events.overview", [str(r.tw.path)]).num_rows == 0  # a trace with every segment deleted opens


def test_keep_by_size_keeps_the_newest_that_fit_and_never_process_reads(tmp_path):
    r = Run(tmp_path / "t", keep=F.Keep(bytes=1))
    names = [r.second(k) for k in range(6)]
    reads = r.segment({"ts_ns": 0, "source": "recorder", "tgid": 7}, table="process_reads")
    sizes = {n: (r.tw.path / "events" / n).stat().st_size for n in names}
    reads_size = (r.tw.path / "process_reads" / reads).stat().st_size
    budget = reads_size + sizes[names[4]] + sizes[names[5]]  # room for the two newest events segments, exactly
    r.fl.keep = F.Keep(bytes=budget)
    r.fl.tick(6 * S)
    assert r.on_disk() == names[4:]
    r.fl.keep = F.Keep(bytes=budget - 1)  # one byte less: the older of the two goes too
    r.fl.tick(6 * S)
    assert r.on_disk() == names[5:]
    r.fl.keep = F.Keep(bytes=1)  # process_reads is never deleted, even over the budget
    r.fl.tick(6 * S)
    assert r.on_disk() == [] and r.on_disk("process_reads") == [reads]


def test_a_trigger_saves_the_kept_window_plus_after_as_a_trace(tmp_path):
    r = Run(tmp_path / "t", keep=F.Keep(seconds=3.0), triggers=F.parse_triggers("queue_reset,hws_hang,preempt_over=5ms"), after_s=2.0)
    names = [r.second(k) for k in range(5)]  # 0..4 s
    r.lost = 4
    r.fl.tick(4 * S + 500 * MS)  # deletes 0 s and 1 s (newest rows 0.002, 1.002 < 1.5 s)
    assert r.on_disk() == names[2:]
    # a preemption of 4 ms does not fire; one of 6 ms does (queues_unmap: preempt_over)
    r.second(5, n=1, event="queues_unmap", func="unmap_queues_cpsch", dur_ns=4 * MS)
    assert r.fl.pending is None
    r.lost = 5
    r.fl.tick(5 * S)  # deletes nothing more (2 s: newest 2.002 s, not older than 2 s)
    fire = r.second(6, n=1, event="queues_unmap", func="unmap_queues_cpsch", dur_ns=6 * MS, gpu_id=0x1234)
    assert r.fl.pending is not None and r.fl.pending.cause == "preempt_over"
    pend = r.fl.pending.dir
    assert pend.parent == r.tw.path / "triggered" and pend.name.startswith(".") and pend.name.endswith("-preempt_over.partial")
    # the kept segments are linked at the trigger: retention during the after period cannot remove them
    assert sorted(p.name for p in (pend / "events").glob("seg-*")) == names[2:] + [r.names[5]]  # 6 s: still open
    # a queue_reset while the save is pending is recorded in it, not a new save, and does not extend it
    r.second(7, n=1, event="queue_reset", func="reset_queues_cpsch", gpu_id=0x1234)
    r.lost = 7
    r.fl.tick(7 * S + 100 * MS)  # deletes 2, 3, 4 s (newest rows < 4.1 s): the saved links stay
    assert names[2] not in r.on_disk() and (pend / "events" / names[2]).exists()
    late = r.second(8)  # closed after the trigger, before the cut at 6 s + 2 s
    assert not r.fl.due(8 * S - 1) and r.fl.due(8 * S)
    r.fl.tick(8 * S)  # rows at 8.000..8.002 s are in this segment, decoded before the cut
    assert r.fl.pending is None and len(r.fl.saved) == 1
    saved = r.fl.saved[0]
    assert saved.name == pend.name[1:-len(".partial")] and not pend.exists()
    assert sorted(p.name for p in (saved / "events").glob("seg-*")) == names[2:] + r.names[5:7] + [r.names[7], late]
    meta = T.read_meta(saved)
    assert meta["run_id"] == r.tw.run_id
    # start: one past the newest row deleted before the trigger (1.002 s); stop: trigger (6.002 s detected) + 2 s
    assert meta["start_ns"] == 1 * S + 2 * MS + 1
    assert meta["stop_ns"] == 6 * S + 2 * S
    fl = meta["flight"]
    assert fl["cause"] == "preempt_over" and fl["detected_ns"] == 6 * S and fl["cut_by"] == "after" and fl["cut_ns"] == 8 * S
    assert fl["trigger"] == {"event": "queues_unmap", "func": "unmap_queues_cpsch", "ts_ns": 6 * S, "dur_ns": 6 * MS, "tgid": 7,
                             "gpu_id": 0x1234, "queue_id": None, "pasid": None, "ret": None}
    assert fl["triggers_while_pending"] == 1
    assert [(m["cause"], m["event"], m["ts_ns"]) for m in fl["more_triggers"]] == [("queue_reset", "queue_reset", 7 * S)]
    c = meta["counters"]
    # rows: 2, 3, 4 s (3 each), 5 s and 6 s (1 each), 7 s (1), 8 s (3); loss: the counter at the cut (7) minus
    # its value at the window's start (no tick before 1.002 s: 0)
    assert c["events_written"] == 3 * 3 + 1 + 1 + 1 + 3 == T.table_on_disk(saved, "events").rows
    assert c["events_lost"] == 7 - 0
    run = query.connect([str(saved)]).execute("SELECT start_ns, stop_ns, events_written, events_lost FROM runs").fetchall()
    assert run == [(1 * S + 2 * MS + 1, 8 * S, 15, 7)]
    # the run's own meta counts what was deleted and names the saved window
    r.fl.close(9 * S)
    r.tw.close()
    rm = T.read_meta(r.tw.path)
    assert rm["counters"]["events_deleted"] == 15 and rm["recorder"]["flight"]["saved"] == [f"triggered/{saved.name}"]
    # the saved trace is not read as part of the run's trace (only its own meta.json's folder)
    assert T.find_traces([r.tw.path]) == [r.tw.path]


def test_loss_in_a_window_is_the_counter_change_since_its_start(tmp_path):
    r = Run(tmp_path / "t", keep=F.Keep(seconds=1.0), triggers=F.parse_triggers("hws_hang"), after_s=0.0)
    r.second(0)
    r.lost = 2
    r.fl.tick(500 * MS)  # loss 2 at 0.5 s
    r.second(1)
    r.lost = 3
    r.fl.tick(2 * S)  # deletes 0 s (newest 0.002 s < 1 s): the window starts at 0.002 s + 1 ns
    r.second(3, n=1, event="hws_hang", func="kfd_hws_hang")
    r.lost = 10
    r.fl.tick(3 * S)  # after 0: cut at once
    meta = T.read_meta(r.fl.saved[0])
    assert meta["start_ns"] == 2 * MS + 1 and meta["flight"]["cause"] == "hws_hang"
    assert meta["counters"]["events_lost"] == 10 - 0  # nothing was lost before 0.5 s: all 10 fall after the start
    r.lost = None  # the kernel's counter became unreadable: a later window's loss is unknown, never 0
    r.fl.trigger("signal", {"signal": "SIGUSR1"}, 4 * S)
    r.fl.tick(4 * S)
    meta2 = T.read_meta(r.fl.saved[1])
    assert meta2["flight"]["cause"] == "signal" and meta2["flight"]["trigger"] == {"signal": "SIGUSR1"}
    assert meta2["counters"]["events_lost"] is None
    assert r.fl.saved[1].name.endswith("-signal") and r.fl.saved[0].name.endswith("-hws_hang")


def test_a_save_pending_at_the_stop_is_cut_there(tmp_path):
    r = Run(tmp_path / "t", keep=None, after_s=5.0)
    a = r.second(0)
    r.fl.trigger("signal", {"signal": "SIGUSR1"}, 1 * S)
    b = r.second(1)
    r.fl.tick(1 * S + 100 * MS)
    r.fl.close(2 * S)
    meta = T.read_meta(r.fl.saved[0])
    assert (meta["start_ns"], meta["stop_ns"], meta["flight"]["cut_by"]) == (0, 2 * S, "stop")
    assert sorted(p.name for p in (r.fl.saved[0] / "events").glob("seg-*")) == [a, b]


def test_a_saved_window_opens_in_every_query_the_report_and_perfetto(tmp_path):
    """A scheme-A-shaped window: markers, events and process reads, saved by hws_hang."""
    r = Run(tmp_path / "t", keep=F.Keep(seconds=2.0), triggers=F.parse_triggers("hws_hang,preempt_over=1ms"), after_s=1.0)
    r.second(0)
    r.segment({"ts_ns": 1 * S, "source": "controller", "kind": "preempt_request", "tgid": 1, "target_tgid": 7, "gpu_id": 0x1234,
               "scheme": "A", "seq": 1}, table="markers")
    r.segment({"ts_ns": 1 * S, "source": "recorder", "tgid": 7, "comm": "python"}, table="process_reads")
    r.segment({"ts_ns": 1 * S + MS, "event": "queues_suspend", "func": "suspend_queues", "dur_ns": 3 * MS, "target_pid": 7,
               "gpu_id": 0x1234, "num_queues": 1, "queue_ids": [3], "ret": 1},
              {"ts_ns": 1 * S + 2 * MS, "event": "queues_unmap", "func": "unmap_queues_cpsch", "dur_ns": 2 * MS, "gpu_id": 0x1234},
              {"ts_ns": 1 * S + 3 * MS, "event": "hws_hang", "func": "kfd_hws_hang", "gpu_id": 0x1234})
    r.segment({"ts_ns": 1 * S + 10 * MS, "source": "controller", "kind": "preempt_done", "tgid": 1, "target_tgid": 7,
               "gpu_id": 0x1234, "scheme": "A", "seq": 1, "value_ns": 5 * MS}, table="markers")
    r.fl.tick(3 * S)  # the save is due (detected at 1.003 s + 1 s) and cut; then retention deletes 0 s
    saved = r.fl.saved[0]
    meta = T.read_meta(saved)
    assert meta["flight"]["cause"] == "preempt_over" and meta["flight"]["triggers_while_pending"] == 2
    assert meta["counters"] == {"events_written": 6, "markers_written": 2, "snapshots_written": 0, "events_lost": 0,
                                "process_reads_written": 1}
    for name in sorted(query.list_modules()):
        query.run(name, [str(saved)])  # every module opens it
    pre = query.run("preempt.preemption", [str(saved)], {"scheme": "A"}).to_pylist()
    assert [(p["seq"], p["preempt_latency_ns"]) for p in pre] == [(1, 4 * MS)]  # request 1 s -> unmap end 1.004 s
    out = api.report([str(saved)], str(tmp_path / "report"))
    assert out.exists() and out.stat().st_size > 0
    api.export_perfetto(str(saved), str(tmp_path / "w.pftrace"))
    assert os.path.getsize(tmp_path / "w.pftrace") > 0
    for f in saved.rglob("*.parquet"):
        pq.read_metadata(f)
    # nothing was deleted before the trigger: the window starts at the run's start, and the 0 s segment,
    # deleted from the run after the save, is still in it
    assert json.loads((saved / "meta.json").read_text())["start_ns"] == 0
    assert not (r.tw.path / "events" / r.names[0]).exists() and (saved / "events" / r.names[0]).exists()


def test_retention_never_deletes_a_segment_while_a_reader_has_the_trace_open(tmp_path):
    """A query connection holds the trace's readers lock (shared) from before it lists the segments until
    it is closed: retention waits (deletions_deferred) and deletes the same segments afterwards."""
    import gc

    r = Run(tmp_path / "t", keep=F.Keep(seconds=1.0))
    names = [r.second(k) for k in range(4)]
    con = query.connect([str(r.tw.path)])
    r.fl.tick(10 * S)  # every segment is old, but a reader listed them
    assert r.on_disk() == names and r.fl.deferred == 1
    assert con.execute("SELECT count(*) FROM events").fetchone() == (12,)  # what it listed still reads
    del con
    gc.collect()
    r.fl.tick(10 * S)
    assert r.on_disk() == [] and r.fl.segments_deleted == 4 and r.fl.deferred == 1


@pytest.mark.parametrize("args, line", [
    (["--keep", "10parsecs"], "Error: Invalid value for '--keep': '10parsecs' is not a positive time or size: give e.g. --keep 10m "
                              "(s, m, h, d) or --keep 2GiB (MB, GB, MiB, GiB)"),
    (["--keep", "0"], "Error: Invalid value for '--keep': '0' is not a positive time or size: give e.g. --keep 10m "
                      "(s, m, h, d) or --keep 2GiB (MB, GB, MiB, GiB)"),
    (["--trigger", "gpu_reset"], "Error: Invalid value for '--trigger': unknown trigger 'gpu_reset': choose from queue_reset, "
                                 "hws_hang, preempt_over=T (e.g. 5ms)"),
    (["--trigger", "preempt_over=5"], "Error: Invalid value for '--trigger': '5' is not a duration: give a number and a unit: "
                                      "ns, us, ms, s (e.g. 5ms)"),
    (["--after", "-1"], "Error: Invalid value for '--after': -1.0 is not in the range 0<=x<=10000000"),
])
def test_bad_flight_options_are_a_one_line_usage_error(tmp_path, args, line):
    from click.testing import CliRunner

    from gpreempt_trace.cli.main import main

    res = CliRunner().invoke(main, ["record", "-o", str(tmp_path / "t"), "--kfd-path", "/dev/null", *args])
    assert res.exit_code == 2
    assert res.output.splitlines() == [line + ": see 'gpreempt-trace record --help'"]
    assert not (tmp_path / "t").exists()


def test_saved_windows_are_read_only_when_named(tmp_path):
    """A folder holding a flight recorder's trace finds the run once (not its windows below it, which
    carry the same run_id); the hive export copies the run without triggered/ or the readers lock."""
    r = Run(tmp_path / "runs" / "t", keep=F.Keep(seconds=100.0))
    r.second(0)
    r.fl.trigger("signal", {"signal": "SIGUSR1"}, 1 * S)
    r.fl.close(1 * S)
    r.tw.close()
    saved = r.fl.saved[0]
    assert T.find_traces([tmp_path / "runs"]) == [r.tw.path]
    assert T.find_traces([saved]) == [saved]
    assert T.find_traces([tmp_path / "runs", saved]) == [r.tw.path, saved]
    out = api.export_hive([str(r.tw.path)], str(tmp_path / "hive"))
    assert sorted(p.name for p in out[0].iterdir()) == ["events", "markers", "meta.json", "process_reads", "snapshots"]
    assert query.run("events.overview", [str(tmp_path / "runs")]).num_rows == query.run("events.overview", [str(saved)]).num_rows


def test_a_table_folder_unchanged_for_a_second_is_not_listed_again(tmp_path, monkeypatch):
    import time

    r = Run(tmp_path / "t", keep=F.Keep(seconds=100.0))
    a = r.second(0)
    d = r.tw.path / "events"
    listed = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: listed.append(os.path.basename(p)) or real(p))
    past = time.time_ns() - 10 * S
    os.utime(d, ns=(past, past))
    r.fl.tick(1 * S)
    assert ("events", a) in r.fl.kept and listed.count("events") == 1
    r.fl.tick(1 * S + 100 * MS)  # unchanged for more than a second: not listed
    assert listed.count("events") == 1
    b = r.second(1)  # a segment closed: the folder's mtime moved
    r.fl.tick(2 * S)
    assert listed.count("events") == 2 and ("events", b) in r.fl.kept
