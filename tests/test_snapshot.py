"""The snapshotter and `gpreempt-trace snapshot`: capture reading, the workload child, appending to a
trace another process owns, and the error paths."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpreempt_trace.sql import query
from gpreempt_trace.cli.main import main
from gpreempt_trace.debugfs.capture import LIVE_DIR
from gpreempt_trace.errors import GptError
from gpreempt_trace.debugfs.snapshot import SNAPSHOT_META, Snapshotter
from gpreempt_trace.trace.directory import TraceWriter, read_meta
from gpreempt_trace.trace.writer import SCHEMA_FILE

FIX = Path(__file__).parent / "fixtures" / "debugfs"
MI300 = FIX / "v6.5-mi300-4xcc"
ROWS_MI300 = 15 + 25 + 7  # mqds: 2 process + 13 MQD copies; hqds: 4 HIQ + 16 CP + 4 SDMA + 1 device; rls: 1 runlist + 6 packets


def sql(trace, q):
    return query.connect([str(trace)]).execute(q).fetchall()


def test_snapshotter_interface_the_recorder_uses(tmp_path):
    tw = TraceWriter.create(tmp_path / "t", labels={"model": "m"})
    s = Snapshotter(tw, debugfs_dir=MI300)
    assert s.take(phase="during") == ROWS_MI300
    assert s.take(phase="after") == ROWS_MI300
    tw.close()
    assert read_meta(tmp_path / "t")["counters"]["snapshots_written"] == 2 * ROWS_MI300
    assert sql(tmp_path / "t", "SELECT snapshot_seq, phase, count(*) FROM snapshots GROUP BY ALL ORDER BY 1") == [
        (0, "during", ROWS_MI300), (1, "after", ROWS_MI300)]


@pytest.mark.skipif(LIVE_DIR.exists(), reason="this machine has a KFD debugfs")
def test_live_path_missing_is_one_line_error(tmp_path):
    with pytest.raises(GptError):
        Snapshotter(TraceWriter.create(tmp_path / "t0"))
    r = CliRunner().invoke(main, ["snapshot", "-o", str(tmp_path / "t")])
    assert r.exit_code == 1
    assert r.output == ("Error: /sys/kernel/debug/kfd does not exist (no amdgpu/KFD driver with debugfs on this machine): "
                        "run on the GPU host as root, or read a saved capture with --debugfs DIR\n")
    assert not (tmp_path / "t").exists()


def test_workload_child_markers_and_exit_code(tmp_path):
    t = tmp_path / "t"
    r = CliRunner().invoke(main, ["snapshot", "-o", str(t), "--debugfs", str(MI300), "--label", "model=x", "--interval", "0.05",
                                  "--count", "2", "--", sys.executable, "-c", "import time, sys; time.sleep(2); sys.exit(3)"])
    assert r.exit_code == 3, r.output
    assert sql(t, "SELECT phase, count(DISTINCT snapshot_seq) FROM snapshots GROUP BY ALL ORDER BY min(snapshot_seq)") == [
        ("baseline", 1), ("during", 2), ("after", 1)]
    (start_pid, start_label), (exit_pid, exit_label) = sql(
        t, "SELECT target_tgid, label FROM markers WHERE source = 'launcher' ORDER BY ts_ns")
    assert start_pid == exit_pid and start_label.startswith(sys.executable + " -c ")
    assert sql(t, "SELECT kind, source, tgid = target_tgid FROM markers ORDER BY ts_ns") == [
        ("workload_start", "launcher", True), ("workload_exit", "launcher", True)]
    assert exit_label == "exit_code=3"
    meta = read_meta(t)
    assert meta["labels"] == {"model": "x"} and meta["snapshot"]["exit_code"] == 3 and meta["snapshot"]["snapshots_taken"] == 4
    assert meta["counters"]["markers_written"] == 2 and meta["counters"]["snapshots_written"] == 4 * ROWS_MI300


def test_workload_killed_by_a_signal_exits_128_plus_n(tmp_path):
    r = CliRunner().invoke(main, ["snapshot", "-o", str(tmp_path / "t"), "--debugfs", str(MI300), "--interval", "0.05", "--",
                                  sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert r.exit_code == 128 + 9, r.output
    assert sql(tmp_path / "t", "SELECT label FROM markers WHERE kind = 'workload_exit'") == [("exit_code=137",)]


@pytest.mark.parametrize("args, line", [
    (["--interval", "1e308"], "Error: Invalid value for '--interval': 1e+308 is not in the range 0<x<=86400.0."),
    (["--interval", "0"], "Error: Invalid value for '--interval': 0.0 is not in the range 0<x<=86400.0."),
    (["--interval", "nan"], "Error: Invalid value for '--interval': nan is not in the range 0<x<=86400.0."),
    (["--count", "-1"], "Error: Invalid value for '--count': -1 is not in the range 0<=x<=1000000000."),
])
def test_bad_numbers_are_a_one_line_usage_error(tmp_path, args, line):
    r = CliRunner().invoke(main, ["snapshot", "-o", str(tmp_path / "t"), "--debugfs", str(MI300), *args])
    assert r.exit_code == 2
    assert r.output.splitlines() == [line.rstrip(".") + ": see 'gpreempt-trace snapshot --help'"]
    assert not (tmp_path / "t").exists()


def test_append_to_a_trace_being_recorded(tmp_path):
    t = tmp_path / "rec"
    rec = TraceWriter.create(t, labels={"model": "m"})  # what `record` leaves on disk while it runs
    before = (t / "meta.json").read_bytes()
    for n in (1, 2):
        r = CliRunner().invoke(main, ["snapshot", "-o", str(t), "--debugfs", str(MI300), "--label", "k=v"])
        assert r.exit_code == 0, r.output
        assert "appended" in r.output
    assert (t / "meta.json").read_bytes() == before
    names = sorted(p.name for p in (t / "snapshots").glob("*.parquet"))
    assert len([x for x in names if x.startswith("snap")]) == 2 and SCHEMA_FILE in names
    sessions = json.loads((t / "snapshots" / SNAPSHOT_META).read_text())["sessions"]
    assert [s["counters"]["snapshots_written"] for s in sessions] == [ROWS_MI300, ROWS_MI300]
    assert sessions[0]["labels"] == {"k": "v"}
    # each appending session numbers its snapshots in a block of its own (the recorder's start at 0)
    assert sql(t, "SELECT DISTINCT snapshot_seq FROM snapshots ORDER BY 1") == [(1_000_000,), (2_000_000,)]
    rec.close()


def test_garbage_warns_and_still_writes(tmp_path):
    cap = tmp_path / "cap"
    cap.mkdir()
    shutil.copy(FIX / "bad" / "mqds-garbage", cap / "mqds")
    r = CliRunner().invoke(main, ["snapshot", "-o", str(tmp_path / "t"), "--debugfs", str(cap)])
    assert r.exit_code == 0, r.output
    assert f"warning: {cap / 'mqds'}:4: unrecognised line: '### pasted from another terminal ###'" in r.output
    assert sql(tmp_path / "t", "SELECT count(*) FROM snapshots WHERE kind = 'mqd'") == [(2,)]


def test_not_a_dump_and_bad_command_are_errors(tmp_path):
    cap = tmp_path / "cap"
    cap.mkdir()
    shutil.copy(FIX / "bad" / "not-a-dump.txt", cap / "hqds")
    r = CliRunner().invoke(main, ["snapshot", "-o", str(tmp_path / "t"), "--debugfs", str(cap)])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and r.output.count("\n") == 1
    assert "is not a KFD debugfs hqds dump" in r.output
    r = CliRunner().invoke(main, ["snapshot", "-o", str(tmp_path / "t2"), "--debugfs", str(MI300), "--", "/nonexistent/prog"])
    assert r.exit_code == 1 and "Error: cannot start '/nonexistent/prog'" in r.output
    r = CliRunner().invoke(main, ["snapshot", "-o", str(tmp_path / "t3"), "--debugfs", str(tmp_path / "nope")])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "Traceback" not in r.output


def test_failing_snapshot_stops_the_workload(tmp_path):
    cap = tmp_path / "cap"
    cap.mkdir()
    shutil.copy(MI300 / "hqds", cap / "hqds")
    bad = (FIX / "bad" / "not-a-dump.txt").read_text()
    # the workload turns the capture into garbage, then would run for a minute
    child = f"open({str(cap / 'hqds')!r}, 'w').write({bad!r}); import time; time.sleep(60)"
    t = tmp_path / "t"
    r = CliRunner().invoke(main, ["snapshot", "-o", str(t), "--debugfs", str(cap), "--interval", "0.05", "--", sys.executable, "-c", child])
    assert r.exit_code == 1 and "is not a KFD debugfs hqds dump" in r.output
    assert sql(t, "SELECT kind, label FROM markers ORDER BY ts_ns")[1] == ("workload_exit", "exit_code=143")  # SIGTERM
