"""`experiment ab` on this VM: scheme none runs for real (offline + online torch jobs, markers, the
per-scheme table); A and B are skipped with one line each saying why; Ctrl-C stops everything and
keeps the trace."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpreempt_trace import api
from gpreempt_trace.trace import directory as trace
from gpreempt_trace.cli.main import main

pytest.importorskip("torch")
no_kfd = pytest.mark.skipif(os.path.exists("/dev/kfd"), reason="this test states what a machine without /dev/kfd does")
ARGS = ["--online", "gemm", "--offline", "gemm", "--batch", "1", "--threads", "1", "--rate", "20"]


@no_kfd
def test_ab_runs_none_here_and_says_in_one_line_why_a_and_b_are_skipped(tmp_path):
    out = tmp_path / "ab"
    res = CliRunner().invoke(main, ["experiment", "ab", *ARGS, "--schemes", "none,A,B", "--duration", "1", "--no-report", "-o", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    why = "no /dev/kfd: no AMD GPU with the amdgpu/KFD driver on this machine"
    assert f"scheme A skipped: {why}" in lines and f"scheme B skipped: {why}" in lines
    assert "scheme none: runs" in lines
    assert any(line.startswith("recorder: not run (") for line in lines)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["none-1", "plan.json", "requests.json", "requests.txt", "runs.json"]
    meta = trace.read_meta(out / "none-1")
    assert {k: meta["labels"][k] for k in ("scheme", "repeat", "online_model", "offline_model", "policy")} == \
        {"scheme": "none", "repeat": "1", "online_model": "gemm", "offline_model": "gemm", "policy": "none"}
    con = api.connect([str(out / "none-1")])
    starts = sorted(r[0] for r in con.sql("SELECT label FROM markers WHERE kind = 'workload_start'").fetchall())
    assert starts == ["role=offline model=gemm device=cpu policy=none", "role=online model=gemm device=cpu policy=none rate_hz=20"]
    n_req = con.execute("SELECT count(*) FROM markers WHERE kind = 'request_end'").fetchone()[0]
    assert n_req >= 1
    table = [line.split() for line in lines if line.startswith("  none ")]
    assert len(table) == 1 and table[0][1:3] == ["1", str(n_req)] and table[0][6:8] == ["0", "0"]  # no preemption
    assert not list(out.glob(".cell-*"))  # the cell's scratch folder is gone
    assert (out / "requests.txt").read_text().splitlines()[1].split() == table[0]


def test_schemes_and_numbers_are_checked_at_the_cli(tmp_path):
    for args, msg in ((["--schemes", "none,C"], "give a comma-separated list of none, A, B"),
                      (["--repeat", "0"], "'--repeat': 0 is not in the range"),
                      (["--duration", "-1"], "'--duration': -1.0 is not in the range"),
                      (["--rate", "0"], "'--rate': 0.0 is not in the range 0<x<=1000000.0")):
        res = CliRunner().invoke(main, ["experiment", "ab", *args, "-o", str(tmp_path / "x")])
        assert res.exit_code == 2 and msg in res.output


@no_kfd
def test_only_unavailable_schemes_is_an_error(tmp_path):
    res = CliRunner().invoke(main, ["experiment", "ab", "--schemes", "A", "-o", str(tmp_path / "x")])
    assert res.exit_code == 1 and "none of the schemes A can run here" in res.output
    assert not (tmp_path / "x").exists()


def test_ctrl_c_stops_every_process_and_keeps_the_trace(tmp_path):
    out = tmp_path / "ab"
    p = subprocess.Popen([sys.executable, "-m", "gpreempt_trace.cli.main", "experiment", "ab", *ARGS, "--schemes", "none",
                          "--duration", "60", "--no-report", "--record", "no", "-o", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob(".cell-*/online.ready")):
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.1)
        time.sleep(1)  # the online job serves some requests
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130 and stderr.strip().splitlines()[-1].startswith("Error: interrupted"), stderr
    assert "interrupted: every process stopped" in stdout
    left = subprocess.run(["pgrep", "-s", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert left == []  # nothing of the session is still running
    con = api.connect([str(out / "none-1")])
    exits = sorted(r[0].split()[0] for r in con.sql("SELECT label FROM markers WHERE kind = 'workload_exit'").fetchall())
    assert exits == ["role=offline", "role=online"], (stdout, con.sql("SELECT kind, tgid, label FROM markers WHERE kind LIKE 'workload%'").fetchall())
    assert trace.read_meta(out / "none-1")["stop_ns"] is not None
    assert Path(out / "plan.json").exists()


def test_a_stop_signal_during_a_snapshot_waits_for_it_then_interrupts(tmp_path):
    """A signal that lands while a debugfs snapshot is written is raised after the write, so the trace
    writer is never cut half-way (the lab once saw 'Operation on closed file' from that pattern)."""
    import os
    import signal

    from gpreempt_trace.experiment.cell import Cell, CellSpec, _Interrupted

    class Snap:
        done = False

        def take(self, phase):
            if phase == "baseline":
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, mid-write
            self.done = True

    cell = Cell(CellSpec(str(tmp_path / "t"), "none", "gemm", "gemm", 1.0))
    cell.snap = Snap()
    old = signal.signal(signal.SIGTERM, cell._on_signal)
    try:
        with pytest.raises(_Interrupted, match="SIGTERM"):
            cell._snapshot("baseline")
        assert cell.snap.done and cell.pending is None
        cell._snapshot("after")  # nothing pending: no second interrupt
    finally:
        signal.signal(signal.SIGTERM, old)
