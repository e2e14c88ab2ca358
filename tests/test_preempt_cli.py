"""`gpreempt-trace preempt`: the bad-input table (one line, non-zero exit, nothing left suspended), the
dry run, and the refusals that read the system (Yama, sched_policy, root)."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpreempt_trace import api
from gpreempt_trace.cli.main import main
from gpreempt_trace.control import checks
from gpreempt_trace.control import io as P
from gpreempt_trace.control.service import RunOptions
from gpreempt_trace.errors import GptError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_control import FakeKfd

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def holder():
    """A process holding /dev/null open (the stand-in KFD device) and not /dev/zero."""
    p = subprocess.Popen([sys.executable, "-c", "import time; f = open('/dev/null'); print('ok', flush=True); time.sleep(60)"],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    p.stdout.readline()
    yield p
    p.kill()
    p.wait()


def cli(*args):
    res = CliRunner().invoke(main, ["preempt", *args])
    return res.exit_code, res.output


def one_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["run", "--pid", "1", "--hold", "-1"], "--hold"),
    (["run", "--pid", "1", "--hold", "3600001"], "--hold"),
    (["run", "--pid", "1", "--hold", "5", "--repeat", "0"], "--repeat"),
    (["run", "--pid", "1", "--hold", "5", "--interval", "-3"], "--interval"),
    (["run", "--pid", "1", "--hold", "5", "--grace", "4294967296"], "--grace"),
    (["run", "--pid", "1", "--hold", "5", "--grace", "-1"], "--grace"),
    (["serve", "--pid", "1", "--max-hold", "0"], "--max-hold"),
    (["serve", "--pid", "1", "--max-hold", "99999999999999999999"], "--max-hold"),
    (["serve", "--pid", "0"], "--pid"),
    (["serve", "--pid", "1", "--queues", "1,x"], "--queues"),
    (["serve", "--pid", "1", "--queues", "1,1"], "--queues"),
    (["serve", "--pid", "1", "--scheme", "C"], "--scheme"),
])
def test_numeric_and_id_options_are_usage_errors(args, words):
    code, out = cli(*args)
    assert code == 2 and words in out and "Traceback" not in out


@root_only
def test_missing_pid_is_one_line():
    code, out = cli("run", "--pid", "4194303", "--hold", "1")
    assert code == 1 and one_line(out) == "Error: no process 4194303: give the TGID of the running offline process (--pid)"


@root_only
def test_zombie_is_refused():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        time.sleep(0.2)
        code, out = cli("run", "--pid", str(pid), "--hold", "1")
        assert code == 1 and "is a zombie" in one_line(out)
    finally:
        os.waitpid(pid, 0)


@root_only
def test_no_kfd_device(holder):
    code, out = cli("run", "--pid", str(holder.pid), "--hold", "1", "--kfd-path", "/dev/nonexistent-kfd")
    assert code == 1 and one_line(out) == "Error: no /dev/nonexistent-kfd: the amdgpu driver (KFD) is not loaded on this machine"


@root_only
def test_process_not_using_kfd(holder):
    code, out = cli("run", "--pid", str(holder.pid), "--hold", "1", "--kfd-path", "/dev/zero")
    assert code == 1 and f"pid {holder.pid} does not use KFD" in one_line(out)


@root_only
def test_queue_id_not_owned_is_refused_before_anything_is_suspended(holder):
    sio = P.ScriptedIo(FakeKfd(queues=(3, 5)))
    with pytest.raises(GptError, match=r"owns no queue 9 \(its queues: \[3, 5\]\)"):
        api.preempt_run(RunOptions(pid=holder.pid, queues=[3, 9], hold=1, kfd_path="/dev/null"), io=sio)
    names = [c[0].partition(":")[2] for c in sio.ioctls()]
    assert "SUSPEND_QUEUES" not in names and names[-1] == "DISABLE"


@root_only
def test_socket_path_taken(tmp_path, holder):
    f = tmp_path / "taken"
    f.write_text("x")
    code, out = cli("serve", "--pid", str(holder.pid), "--socket", str(f), "--kfd-path", "/dev/null")
    assert code == 1 and one_line(out) == f"Error: socket path {f} is taken (not a socket): choose another --socket"


@root_only
def test_second_controller_on_the_same_target(tmp_path, holder):
    import json

    sock = str(tmp_path / "first.sock")
    opts = {"pid": holder.pid, "socket": sock, "kfd_path": "/dev/null", "queues": [1], "unchecked_ids": True}
    first = subprocess.Popen([sys.executable, str(Path(__file__).parent / "testing" / "control_child.py"), str(tmp_path / "log"), json.dumps(opts)],
                             stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "READY"
    try:
        code, out = cli("serve", "--pid", str(holder.pid), "--socket", str(tmp_path / "second.sock"), "--kfd-path", "/dev/null")
        assert code == 1 and f"pid {holder.pid} is already traced by pid" in one_line(out)
        code, out = cli("serve", "--pid", str(holder.pid), "--scheme", "B", "--socket", str(tmp_path / "third.sock"), "--kfd-path", "/dev/null")
        assert code == 1 and one_line(out) == (f"Error: pid {holder.pid} is already controlled (controller pid {first.pid}): one controller "
                                               "per target: talk to it with `preempt suspend/resume --socket`, or stop it")
        code, out = cli("serve", "--pid", str(holder.pid), "--socket", sock, "--kfd-path", "/dev/null")
        assert code == 1 and one_line(out) == f"Error: socket path {sock} is taken (a service answers on it): choose another --socket, or stop that service"
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(20)


def test_client_without_service_is_one_line(tmp_path):
    code, out = cli("status", "--socket", str(tmp_path / "none.sock"))
    assert code == 1 and "no preempt service at" in one_line(out)


def test_yama_scope_3_and_sched_policy_2_are_refused(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    yama, policy = tmp_path / "ptrace_scope", tmp_path / "sched_policy"
    monkeypatch.setattr(checks, "YAMA", yama)
    monkeypatch.setattr(checks, "SCHED_POLICY", policy)
    yama.write_text("3\n")
    with pytest.raises(GptError, match="Yama ptrace_scope is 3"):
        checks.check_system("A")
    checks.check_system("B")  # scheme B needs no ptrace
    yama.write_text("1\n")
    policy.write_text("2\n")
    with pytest.raises(GptError, match="sched_policy=2"):
        checks.check_system("A")
    policy.write_text("0\n")
    checks.check_system("A")


@root_only
def test_not_root_is_refused(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "gpreempt_trace.cli.main", "preempt", "run", "--pid", "1", "--hold", "1"],
                         capture_output=True, text=True, preexec_fn=lambda: os.setuid(65534), env=env, cwd="/")
    if "Permission denied" in res.stderr and "gpreempt_trace" in res.stderr:
        pytest.skip("the repo is not readable by nobody here")
    assert res.returncode == 1 and one_line(res.stderr) == (
        "Error: the preemption controller needs root: run it with sudo (ptrace of another user's process, KFD debugger)")


@root_only
def test_dry_run_issues_nothing_and_prints_each_ioctl(holder):
    code, out = cli("run", "--pid", str(holder.pid), "--hold", "0", "--repeat", "2", "--interval", "0", "--queues", "1,7",
                    "--dry-run")
    assert code == 0, out
    lines = [ln for ln in out.splitlines() if ln.startswith("AMDKFD_IOC")]
    assert [ln.split()[0].partition(":")[2] or ln.split()[0] for ln in lines] == [
        "AMDKFD_IOC_GET_VERSION", "ENABLE", "QUERY_DEBUG_EVENT", "GET_QUEUE_SNAPSHOT",
        "SUSPEND_QUEUES", "RESUME_QUEUES", "SUSPEND_QUEUES", "RESUME_QUEUES", "DISABLE"]
    susp = next(ln for ln in lines if "SUSPEND" in ln).split()
    arg = bytes.fromhex(susp[2])
    assert susp[1] == "0xc0204b26" and arg[:8] == holder.pid.to_bytes(4, "little") + (6).to_bytes(4, "little")
    assert arg[24:32] == (2).to_bytes(4, "little") + (0).to_bytes(4, "little")
    status = Path(f"/proc/{holder.pid}/status").read_text()
    assert "TracerPid:\t0" in status  # no ptrace either
    assert "2/2 cycles" in out


def test_scheme_b_enotty_is_one_line(holder):
    def kfd(name, arg, refs):
        if "QUEUES" in name:
            raise P.oserror(errno.ENOTTY)
        return P.default_answer(name, arg, 17)

    with pytest.raises(GptError) as e:
        api.preempt_run(RunOptions(pid=holder.pid, scheme="B", hold=1, kfd_path="/dev/null"), io=P.ScriptedIo(kfd))
    assert e.value.line() == ("scheme B refused: this kernel has no AMDKFD_IOC_PREEMPT_QUEUES/RESUME_QUEUES (ENOTTY): "
                              "boot a kernel with kernel/'s patch series (see kernel/README.md), or use --scheme A")
