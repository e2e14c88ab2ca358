"""The one workload launcher (record -- CMD, snapshot -- CMD): its markers, exit codes, the gate, stop."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from gpreempt_trace.trace import launcher
from gpreempt_trace.sql import query
from gpreempt_trace.errors import GptError
from gpreempt_trace.trace.launcher import Launcher
from gpreempt_trace.trace.directory import TraceWriter


def _markers(t):
    return query.connect([str(t)]).execute(
        "SELECT kind, source, tgid, target_tgid, label, value_ns FROM markers ORDER BY ts_ns").fetchall()


def test_markers_and_exit_code_of_a_failing_command(tmp_path):
    tw = TraceWriter.create(tmp_path / "t")
    with Launcher([sys.executable, "-c", "import sys; sys.exit(7)"], trace=tmp_path / "t") as w:
        pid = w.start()
        assert w.wait(timeout=60) == 7
    assert w.markers_written == 2
    tw.close()
    (k0, s0, tg0, tt0, l0, v0), (k1, s1, tg1, tt1, l1, v1) = _markers(tmp_path / "t")
    assert (k0, s0, tg0, tt0, v0) == ("workload_start", "launcher", pid, pid, None)
    assert l0 == f"{sys.executable} -c 'import sys; sys.exit(7)'"
    assert (k1, s1, tg1, tt1, l1) == ("workload_exit", "launcher", pid, pid, "exit_code=7")
    assert v1 > 0  # run time


@pytest.mark.parametrize("rc, code", [(0, 0), (3, 3), (-signal.SIGKILL, 137), (-signal.SIGTERM, 143)])
def test_exit_code_is_what_a_shell_reports(rc, code):
    assert launcher.exit_code(rc) == code


def test_a_held_command_runs_only_after_release(tmp_path):
    flag = tmp_path / "ran"
    w = Launcher([sys.executable, "-c", f"open({str(flag)!r}, 'w').write('x')"])
    w.start(hold=True)
    with pytest.raises(subprocess.TimeoutExpired):  # still at the gate
        w.wait(timeout=0.5)
    assert not flag.exists()
    w.release()
    assert w.wait(timeout=60) == 0 and flag.read_text() == "x"


def test_stop_before_release_never_runs_the_command(tmp_path):
    flag = tmp_path / "ran"
    w = Launcher([sys.executable, "-c", f"open({str(flag)!r}, 'w').write('x')"])
    w.start(hold=True)
    assert w.stop(grace_s=30) == 1  # the gate read EOF and exited without running the command
    assert not flag.exists()


def test_stop_terminates_a_running_command_with_143(tmp_path):
    tw = TraceWriter.create(tmp_path / "t")
    w = Launcher([sys.executable, "-c", "import time; time.sleep(60)"], trace=tmp_path / "t")
    w.start()
    assert w.stop(grace_s=30) == 143
    w.close()
    tw.close()
    assert [(m[0], m[4]) for m in _markers(tmp_path / "t")][-1] == ("workload_exit", "exit_code=143")


def test_a_command_that_cannot_start_is_one_error():
    with pytest.raises(GptError, match=r"cannot start '/nonexistent/prog' \(No such file or directory\)"):
        Launcher(["/nonexistent/prog"]).start()
