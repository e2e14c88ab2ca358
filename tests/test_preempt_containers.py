"""The controller by container (issue 21): `preempt --container ID [--ns-pid N]` resolves the host pid
(fake containers: unshare'd processes in cgroupfs-layout v1 cgroups, /dev/null standing in for
/dev/kfd), its markers carry the host pid and the container id, the ptrace-rights refusals, and the
one-line errors. The scheme-A ioctls are scripted (no GPU here)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from testing.fake_container import FakeContainer

from gpreempt_trace import api
from gpreempt_trace.cli.main import main
from gpreempt_trace.trace.containers import resolve_target
from gpreempt_trace.control import checks
from gpreempt_trace.control import io as P
from gpreempt_trace.control.service import RunOptions
from gpreempt_trace.errors import GptError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_control import FakeKfd  # noqa: E402

A = "c5" * 32
needs_cgroups = pytest.mark.skipif(os.geteuid() != 0 or not Path("/sys/fs/cgroup/pids/cgroup.procs").exists()
                                   or shutil.which("unshare") is None, reason="needs root, cgroup v1 pids, unshare")


@pytest.fixture
def container():
    c = FakeContainer(A, "cgroupfs", 1, 1)
    yield c
    c.close()


def one_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return lines[0]


@needs_cgroups
def test_resolve_by_kfd_open_and_by_ns_pid(container):
    with pytest.raises(GptError) as e:  # nothing in it has the device open yet
        resolve_target(A[:12], kfd_path="/dev/null")
    assert e.value.line() == (f"no process of container {A[:12]} has /dev/null open (1 processes in it): "
                              "start the model first, or name the process with --ns-pid N")
    container.go()  # its pid 1 and a child (pid 2 inside) both opened /dev/null
    init, child = container.init_pid, (container.host_pids() - {container.init_pid}).pop()
    with pytest.raises(GptError) as e:
        resolve_target(A[:12], kfd_path="/dev/null")
    comm = os.path.basename(sys.executable)[:15]  # what the fake container runs
    assert e.value.line() == (f"2 processes of container {A[:12]} have /dev/null open: host pid {init} (pid 1 in the container, {comm}); "
                              f"host pid {child} (pid 2 in the container, {comm}): pick one with --ns-pid N (its pid in the container) "
                              "or --pid HOSTPID")
    assert resolve_target(A, ns_pid=2, kfd_path="/dev/null")[0] == child
    assert resolve_target(A[:16], ns_pid=1, kfd_path="/dev/null")[0] == init
    with pytest.raises(GptError) as e:
        resolve_target(A, ns_pid=7, kfd_path="/dev/null")
    assert e.value.line() == (f"container {A[:12]} has no process with pid 7 (its pids: 1, 2): "
                              "give --ns-pid as `docker top` or `ps` inside the container shows it")


@needs_cgroups
def test_run_by_container_marks_host_pid_and_container(tmp_path, container):
    container.go()
    child = (container.host_pids() - {container.init_pid}).pop()
    trace = tmp_path / "t"
    sio = P.ScriptedIo(FakeKfd(queues=(3,)))
    res = api.preempt_run(RunOptions(pid=None, container=A[:12], ns_pid=2, hold=1, repeat=2, kfd_path="/dev/null",
                                     output=str(trace)), io=sio)
    assert res.ok and res.cycles_done == 2
    assert {c[2] for c in sio.calls if c[0] == "ptrace"} == {child}  # the host pid, never the in-container 2
    con = api.connect([str(trace)])
    rows = con.sql("SELECT kind, target_tgid, container_id FROM markers WHERE source = 'controller' ORDER BY ts_ns, kind").fetchall()
    assert {(t, c) for _k, t, c in rows} == {(child, A)}
    assert [k for k, _t, _c in rows].count("preempt_request") == 2
    assert con.execute("SELECT ns_tgid, container, container_runtime FROM processes WHERE tgid = ?", [child]).fetchall() == [(2, A[:12], "docker")]


@pytest.mark.parametrize("args, line", [
    (["--pid", "1", "--container", "a" * 12], "Error: give --pid or --container, not both: --pid is the host pid; "
                                              "--container ID [--ns-pid N] finds it"),
    ([], "Error: no target given: give --pid HOSTPID or --container ID"),
    (["--pid", "1", "--ns-pid", "3"], "Error: --ns-pid needs --container: give the container too: --container ID --ns-pid N"),
    (["--container", "f" * 64], f"Error: no running process is in container {'f' * 64}: check the id with `docker ps --no-trunc` "
                                "(a full id, or a prefix of at least 12 hex digits)"),
])
def test_target_options_are_one_line(args, line):
    res = CliRunner().invoke(main, ["preempt", "run", "--hold", "1", "--kfd-path", "/dev/null", *args])
    assert res.exit_code == 1 and one_line(res.output) == line


def test_pid_help_says_host_pid():
    res = CliRunner().invoke(main, ["preempt", "run", "--help"])
    assert "Host pid" in res.output and "--container ID" in res.output and "--ns-pid N" in res.output


def _proc(tmp_path, me_caps: int, me_uid: int, them_uid: int, same_userns: bool = True) -> str:
    root = tmp_path / "proc"
    for name, uid, caps in (("self", me_uid, me_caps), ("42", them_uid, 0)):
        d = root / name / "ns"
        d.mkdir(parents=True)
        (root / name / "status").write_text(f"Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nCapEff:\t{caps:016x}\n")
        os.symlink("user:[4026531837]" if same_userns or name == "self" else "user:[4026532555]", d / "user")
    return str(root)


@pytest.mark.parametrize("caps, uid, them, same, scope, line", [
    (0, 1000, 0, True, 0, "ptrace of pid 42 needs CAP_SYS_PTRACE (it runs as uid 0), which this controller lacks: run it as root on the host, "
                          "or start its container with --cap-add SYS_PTRACE (or --privileged)"),
    (0, 0, 0, False, 0, "ptrace of pid 42 needs CAP_SYS_PTRACE (it is in another user namespace), which this controller lacks: run it as "
                        "root on the host, or start its container with --cap-add SYS_PTRACE (or --privileged)"),
    (0, 0, 0, True, 1, "Yama ptrace_scope is 1 and this controller lacks CAP_SYS_PTRACE (pid 42 is no child of it): run it as root with "
                       "CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE), or set /proc/sys/kernel/yama/ptrace_scope to 0"),
    (0, 0, 0, True, 0, None),  # same user, same user namespace, Yama 0: allowed without the capability
    (1 << 19, 1000, 0, False, 2, None),  # CAP_SYS_PTRACE: allowed
])
def test_ptrace_rights(tmp_path, caps, uid, them, same, scope, line):
    proc = _proc(tmp_path, caps, uid, them, same)
    yama = tmp_path / "ptrace_scope"
    yama.write_text(f"{scope}\n")
    if line is None:
        checks.check_ptrace(42, proc=proc, yama=yama)
        return
    with pytest.raises(GptError) as e:
        checks.check_ptrace(42, proc=proc, yama=yama)
    assert e.value.line() == line
