"""The KFD replay (workloads/kfd_calls.py) exits non-zero when one of its model children fails."""
from __future__ import annotations

import subprocess
import sys


def test_replay_on_dev_null_exits_0_and_names_every_process():
    p = subprocess.run([sys.executable, "-m", "gpreempt_trace.workloads.kfd_calls", "--kfd-path", "/dev/null", "--rounds", "2"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = sorted(line.split()[0] for line in p.stdout.splitlines() if line)
    assert lines == ["controller", "offline", "online"]
    assert "online pid" in p.stdout and "7 KFD calls, 7 failed (last errno 25)" in p.stdout  # ENOTTY on /dev/null


def test_a_failing_child_makes_the_replay_fail(tmp_path):
    # a directory exists but cannot be opened read-write: each model child fails in its first step
    p = subprocess.run([sys.executable, "-m", "gpreempt_trace.workloads.kfd_calls", "--kfd-path", str(tmp_path), "--rounds", "1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    err = p.stderr.splitlines()
    assert sorted(line.split()[0] for line in err) == ["play_controller", "play_model", "play_model", "replay"]
    assert all("IsADirectoryError" in line for line in err[:-1]) and "Traceback" not in p.stderr
