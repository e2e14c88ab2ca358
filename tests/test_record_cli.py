"""`gpreempt-trace record`: bad input (one line, non-zero exit, nothing half-written lost), the workload's
exit code, -p filtering, clean stop on SIGTERM/SIGINT, exact lost accounting, --print-bpf."""
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
from click.testing import CliRunner

from gpreempt_trace.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ioctl_calls as W  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GPT = [sys.executable, "-m", "gpreempt_trace.cli"]
CALLS = str(REPO / "tests" / "ioctl_calls.py")
# a python that waits for a line on stdin, then runs ioctl_calls.py with the remaining arguments
GATE = "import sys, runpy; sys.stdin.readline(); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="recording needs root")


def _invoke(*args: str):
    return CliRunner().invoke(main, ["record", *args])


def _one_line_error(res) -> str:
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.output
    return errors[0]


def _read(trace: Path, table: str) -> list[dict]:
    files = sorted((trace / table).glob("seg-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("ts_ns").to_pylist() if files else []


def _wait_recording(trace: Path, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if "recording_since_ns" in json.loads((trace / "meta.json").read_text()).get("recorder", {}):
                return
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise AssertionError(f"recorder exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("recorder did not start")


def test_print_bpf_needs_no_privileges_and_writes_nothing(tmp_path):
    res = _invoke("-o", str(tmp_path / "t"), "--probes", "ioctl", "--kfd-path", "/dev/null", "--print-bpf")
    assert res.exit_code == 0, res.output
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)" in res.output
    assert "-DGPT_KFD_RDEV=1048579" in res.output  # /dev/null is 1:3 -> MAJOR << 20 | MINOR
    assert "BPF_RINGBUF_OUTPUT(gpt_events" in res.output
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("args, needle", [
    (["--probes", "kfd,nope"], "unknown probe group 'nope'"),
    (["-p", "999999999"], "no process with tgid 999999999"),
    (["--kfd-path", "/nonexistent/kfd"], "/nonexistent/kfd does not exist"),
    (["--kfd-path", "/etc/hostname"], "is not a character device"),
    (["--ringbuf-mb", "3"], "not a power of two"),
    (["--", "/nonexistent/cmd"], "cannot start '/nonexistent/cmd'"),
])
@root_only
def test_bad_input_is_one_line(tmp_path, args, needle):
    res = _invoke("-o", str(tmp_path / "t"), "--kfd-path", "/dev/null", "--duration", "1", *args)
    assert needle in _one_line_error(res)


@root_only
def test_output_that_is_not_empty_and_not_a_trace(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = _one_line_error(_invoke("-o", str(out), "--kfd-path", "/dev/null", "--duration", "1"))
    assert "neither an empty directory nor a trace" in line
    assert (out / "keep.txt").read_text() == "mine"


@root_only
def test_unreadable_btf_is_one_line(tmp_path):
    btf = tmp_path / "btf"
    btf.mkdir()
    (btf / "vmlinux").write_bytes(b"not btf at all")
    line = _one_line_error(_invoke("-o", str(tmp_path / "t"), "--kfd-path", "/dev/null", "--btf", str(btf), "--duration", "1"))
    assert "BTF" in line or "btf" in line


@root_only
def test_no_privileges(tmp_path):
    out = tmp_path / "t"
    os.chmod(tmp_path, 0o777)
    res = subprocess.run([*GPT, "record", "-o", str(out), "--kfd-path", "/dev/null", "--duration", "1"], cwd=REPO,
                         capture_output=True, text=True, user=65534, timeout=120)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].startswith("Error: recording needs root")
    assert "Traceback" not in res.stderr


@root_only
def test_workload_exit_code_is_returned_and_marked(tmp_path):
    trace = tmp_path / "t"
    res = _invoke("-o", str(trace), "--probes", "ioctl", "--kfd-path", "/dev/null", "--", "sh", "-c", "exit 3")
    assert res.exit_code == 3, res.output
    assert "recorded 0 events in 0 segments, 0 lost" in res.output
    kinds = [(m["kind"], m["source"], m["label"]) for m in _read(trace, "markers")]
    assert kinds[0][:2] == ("workload_start", "recorder")
    assert kinds[1] == ("workload_exit", "recorder", "exit_code=3")
    meta = json.loads((trace / "meta.json").read_text())
    assert meta["stop_ns"] is not None and meta["counters"]["events_lost"] == 0


@root_only
def test_pid_filter_records_only_that_process(tmp_path):
    trace = tmp_path / "t"
    target = subprocess.Popen([sys.executable, "-c", GATE, CALLS, "/dev/null", "30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen([sys.executable, "-c", GATE, CALLS, "/dev/null", "30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rec = subprocess.Popen([*GPT, "record", "-o", str(trace), "--probes", "ioctl", "--kfd-path", "/dev/null", "-p", str(target.pid)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_recording(trace, rec)
        for p in (target, other):
            p.communicate("go\n", timeout=60)
    finally:
        rec.send_signal(signal.SIGINT)
        out, err = rec.communicate(timeout=60)
    assert rec.returncode == 0, err
    rows = _read(trace, "events")
    assert len(rows) == 30 * len(W.SEQUENCE)
    assert {r["tgid"] for r in rows} == {target.pid}
    assert json.loads((trace / "meta.json").read_text())["recorder"]["tgids"] == [target.pid]


@root_only
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_flushes_and_closes(tmp_path, sig):
    trace = tmp_path / "t"
    target = subprocess.Popen([sys.executable, "-c", GATE, CALLS, "/dev/null", "10"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rec = subprocess.Popen([*GPT, "record", "-o", str(trace), "--probes", "ioctl", "--kfd-path", "/dev/null", "-p", str(target.pid)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_recording(trace, rec)
    target.communicate("go\n", timeout=60)
    rec.send_signal(sig)
    _, err = rec.communicate(timeout=60)
    assert rec.returncode == 0, err
    assert err.strip().splitlines()[-1].startswith(f"recorded {10 * len(W.SEQUENCE)} events in 1 segments, 0 lost")
    meta = json.loads((trace / "meta.json").read_text())
    assert meta["stop_ns"] is not None
    assert meta["counters"]["events_written"] == 10 * len(W.SEQUENCE) == len(_read(trace, "events"))
    assert not list((trace / "events").glob(".*.tmp"))


@root_only
def test_lost_events_are_counted_exactly(tmp_path):
    """A 1 MiB ring (4854 records) under a burst: whatever is dropped is counted, to the record."""
    trace = tmp_path / "t"
    n = 20000
    res = _invoke("-o", str(trace), "--probes", "ioctl", "--kfd-path", "/dev/null", "--ringbuf-mb", "1", "--",
                  sys.executable, CALLS, "/dev/null", str(n))
    assert res.exit_code == 0, res.output
    meta = json.loads((trace / "meta.json").read_text())
    c = meta["counters"]
    assert c["events_written"] == len(_read(trace, "events")) == c["events_received"]
    assert c["events_written"] + c["events_lost"] == n * len(W.SEQUENCE)
    if c["events_lost"]:
        assert f"{c['events_lost']} lost" in res.output and "(hint: raise --ringbuf-mb" in res.output
