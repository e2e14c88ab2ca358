"""`record` as a flight recorder on this VM (the ioctl tracepoint path on /dev/null, as root): --keep
deletes a burst's segment once it is older than the window and counts it; SIGUSR1 saves the kept window
plus --after as OUT/triggered/<UTC time>-signal/ holding exactly the calls made inside it (its start is
one past the newest deleted row), while recording goes on; a second SIGUSR1 while a save is pending is
recorded in it; a save still pending at the stop is cut there; SIGUSR1 never kills record (it did:
exit 138, trace left open). Waits poll the disk; every assertion is on exact rows and times."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpreempt_trace.sql import query
from gpreempt_trace.trace import directory as T

from testing import ioctl_calls as W

REPO = Path(__file__).resolve().parent.parent
GPT = [sys.executable, "-m", "gpreempt_trace.cli.main"]
# issues ioctl_calls' rounds on /dev/null: one line "N" on stdin -> N rounds, then prints "done"
PHASES = (f"import sys; sys.path.insert(0, {str(REPO / 'tests' / 'testing')!r}); import ioctl_calls as W\n"
          "for line in sys.stdin:\n    W.issue('/dev/null', int(line))\n    print('done', flush=True)\n")
PER_ROUND = len(W.SEQUENCE)
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="recording needs root")


def _rows(trace: Path) -> list[dict]:
    files = T.segment_files(trace, "events")
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("ts_ns").to_pylist() if files else []


def _until(cond, what: str, timeout_s: float = 120):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _start(trace: Path, *args: str):
    target = subprocess.Popen([sys.executable, "-c", PHASES], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rec = subprocess.Popen([*GPT, "record", "-o", str(trace), "--probes", "ioctl", "--kfd-path", "/dev/null",
                            "-p", str(target.pid), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _until(lambda: "recording_since_ns" in _meta(trace).get("recorder", {}) or rec.poll() is not None, "the recorder to start", 240)
    assert rec.poll() is None, rec.communicate()
    return target, rec


def _meta(trace: Path) -> dict:
    try:
        return json.loads((trace / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def _phase(target: subprocess.Popen, trace: Path, rounds: int, on_disk: int) -> None:
    """Issue `rounds` rounds and wait until the trace's closed segments hold `on_disk` rows."""
    target.stdin.write(f"{rounds}\n")
    target.stdin.flush()
    assert target.stdout.readline().strip() == "done"
    _until(lambda: T.table_on_disk(trace, "events").rows == on_disk, f"{on_disk} rows on disk")


def _saved(trace: Path) -> list[Path]:
    d = trace / "triggered"
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


@root_only
def test_keep_deletes_old_segments_and_sigusr1_saves_the_window_while_recording_goes_on(tmp_path):
    trace = tmp_path / "t"
    target, rec = _start(trace, "--keep", "6s", "--after", "1")
    try:
        _phase(target, trace, 4, 4 * PER_ROUND)
        first = _rows(trace)
        assert len(first) == 4 * PER_ROUND
        # the burst's segment is deleted whole once its newest row is older than 6 s
        _until(lambda: T.table_on_disk(trace, "events").rows == 0, "retention to delete the first burst")
        _phase(target, trace, 3, 3 * PER_ROUND)
        second = _rows(trace)
        rec.send_signal(signal.SIGUSR1)
        saved = _until(lambda: _saved(trace), "the saved window")[0]
        _phase(target, trace, 2, 5 * PER_ROUND)  # recording goes on after the save
        third = _rows(trace)[3 * PER_ROUND:]
    finally:
        target.stdin.close()
        target.wait(timeout=60)
        rec.send_signal(signal.SIGINT)
        _, err = rec.communicate(timeout=120)
    assert rec.returncode == 0, err
    assert err.splitlines()[-1].endswith(f"; 1 window saved under {trace / 'triggered'}")
    assert saved.name.endswith("-signal") and saved.parent == trace / "triggered"
    meta = T.read_meta(saved)
    fl = meta["flight"]
    assert fl["cause"] == "signal" and fl["trigger"] == {"signal": "SIGUSR1"} and fl["cut_by"] == "after"
    # the window: one past the newest deleted row, to the signal + 1 s; exactly the second burst's calls
    assert meta["start_ns"] == max(r["ts_ns"] for r in first) + 1
    assert meta["stop_ns"] == fl["detected_ns"] + 10 ** 9 <= fl["cut_ns"]
    assert meta["run_id"] == _meta(trace)["run_id"]
    assert _rows(saved) == second
    c = meta["counters"]
    assert (c["events_written"], c["events_lost"]) == (3 * PER_ROUND, 0)
    assert query.connect([str(saved)]).execute("SELECT events_written, events_lost, start_ns FROM runs").fetchall() == [
        (3 * PER_ROUND, 0, meta["start_ns"])]
    assert query.run("ioctl.summary", [str(saved)]).num_rows > 0
    assert {r["tgid"] for r in third} == {target.pid} and not set(r["ts_ns"] for r in third) & {r["ts_ns"] for r in _rows(saved)}
    main = _meta(trace)
    mc = main["counters"]
    assert mc["events_written"] == 9 * PER_ROUND and mc["events_deleted"] >= 4 * PER_ROUND and mc["events_lost"] == 0
    assert mc["events_written"] - mc["events_deleted"] == T.table_on_disk(trace, "events").rows
    assert main["recorder"]["flight"]["keep"] == {"seconds": 6.0, "bytes": None}
    assert main["recorder"]["flight"]["saved"] == [f"triggered/{saved.name}"]
    assert main["stop_ns"] is not None and main["recorder"]["stop_reason"] == "SIGINT"


@root_only
def test_sigusr1_without_keep_a_second_one_is_recorded_and_the_stop_cuts_the_save(tmp_path):
    trace = tmp_path / "t"
    target, rec = _start(trace, "--after", "600")
    try:
        _phase(target, trace, 2, 2 * PER_ROUND)
        rec.send_signal(signal.SIGUSR1)
        _until(lambda: list((trace / "triggered").glob(".*.partial")) if (trace / "triggered").is_dir() else [], "the pending save")
        rec.send_signal(signal.SIGUSR1)  # while pending: recorded in it, no second save
        _phase(target, trace, 1, 3 * PER_ROUND)
    finally:
        target.stdin.close()
        target.wait(timeout=60)
        rec.send_signal(signal.SIGINT)
        _, err = rec.communicate(timeout=120)
    assert rec.returncode == 0, err  # SIGUSR1 no longer kills record (exit 138)
    saved = _saved(trace)
    assert len(saved) == 1 and not list((trace / "triggered").glob(".*"))
    meta = T.read_meta(saved[0])
    main = _meta(trace)
    assert meta["flight"]["cut_by"] == "stop" and meta["flight"]["triggers_while_pending"] == 1
    assert meta["flight"]["more_triggers"][0]["signal"] == "SIGUSR1"
    assert meta["start_ns"] == main["start_ns"]  # nothing deleted: the window starts with the run
    assert meta["stop_ns"] == meta["flight"]["cut_ns"] < meta["flight"]["detected_ns"] + 600 * 10 ** 9
    assert _rows(saved[0]) == _rows(trace) and len(_rows(trace)) == 3 * PER_ROUND
    assert main["counters"]["events_deleted"] == 0 and main["recorder"]["flight"]["keep"] is None
