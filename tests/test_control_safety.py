"""Safety paths in real processes: a real controller (tests/testing/control_child.py: REAL ptrace, scripted KFD
ioctls — this VM has no /dev/kfd) holding a real target process. Every exit path resumes what it holds
and leaves the target running and untraced; signals sent to the held target reach it; its forks are not
kept traced. (The KFD side of the controller's SIGKILL — KFD disables the target itself — runs in the
6.12 lab: tests/test_preempt_lab.py.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpreempt_trace.control import Client

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ptrace of a sibling process needs root (Yama)")

TARGET = r'''
import os, signal, subprocess, sys, time
f = open("/dev/null")
def usr2(*a):
    pid = os.fork()
    if pid == 0:
        os.execvp("sleep", ["sleep", "30"])
    print(f"forked {pid}", flush=True)
signal.signal(signal.SIGUSR1, lambda *a: print("usr1", flush=True))
signal.signal(signal.SIGUSR2, usr2)
print("ready", flush=True)
n = 0
while True:
    time.sleep(0.02)
    n += 1
    if n % 10 == 0:
        print(f"tick {n}", flush=True)
'''


def wait_for(cond, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def status(sock):
    c = Client(sock)
    try:
        return c.status()
    finally:
        c.close()


def proc_status(pid):
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}


class Target:
    def __init__(self, tmp: Path):
        self.log = tmp / "target.log"
        self.p = subprocess.Popen([sys.executable, "-c", TARGET], stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        assert wait_for(lambda: "ready" in self.text())

    def text(self):
        return self.log.read_text()

    def count(self, word):
        return sum(ln.startswith(word) for ln in self.text().splitlines())

    def tracer(self):
        """The tracing process (TracerPid names the tracer thread: its Tgid), 0 when none."""
        tid = int(proc_status(self.p.pid)["TracerPid"])
        return int(proc_status(tid)["Tgid"]) if tid else 0

    def state(self):
        return proc_status(self.p.pid)["State"][0]

    def runs_untraced(self):
        """Not traced, not stopped, and still ticking."""
        n = self.count("tick")
        return wait_for(lambda: self.tracer() == 0) and self.state() not in "Tt" and wait_for(lambda: self.count("tick") > n)


@pytest.fixture
def target(tmp_path):
    t = Target(tmp_path)
    yield t
    t.p.kill()
    t.p.wait()


class Ctl:
    def __init__(self, tmp: Path, target: Target, fail: str = "", **opts):
        self.log = tmp / "ioctls.log"
        self.sock = str(tmp / "ctl.sock")
        o = {"pid": target.p.pid, "socket": self.sock, "kfd_path": "/dev/null", "queues": [1, 7], "unchecked_ids": True,
             "max_hold": 60_000, **opts}
        self.p = subprocess.Popen([sys.executable, str(HERE / "testing" / "control_child.py"), str(self.log), json.dumps(o), fail],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.strip() == "READY", line + self.p.stderr.read()

    def names(self):
        return [ln.split()[0].partition(":")[2] or ln.split()[0] for ln in self.log.read_text().splitlines()]

    def after(self, name):
        n = self.names()
        return n[len(n) - n[::-1].index(name):]

    def wait(self, timeout=20):
        out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_while_holding_resumes_disables_and_detaches(tmp_path, target, sig):
    ctl = Ctl(tmp_path, target)
    assert target.tracer() == ctl.p.pid
    c = Client(ctl.sock)
    assert c.preempt()["ok"]
    ctl.p.send_signal(sig)
    rc, out, err = ctl.wait()
    assert rc == 0 and f"STOPPED {sig.name}" in out, err
    assert ctl.after("SUSPEND_QUEUES") == ["RESUME_QUEUES", "DISABLE"]
    assert target.runs_untraced()
    assert not os.path.exists(ctl.sock)


def test_client_disconnect_while_holding_resumes(tmp_path, target):
    ctl = Ctl(tmp_path, target)
    c = Client(ctl.sock)
    c.preempt()
    c.close()
    assert wait_for(lambda: ctl.names()[-1] == "RESUME_QUEUES", 30)
    assert Client(ctl.sock).status()["held"] is None
    ctl.p.send_signal(signal.SIGTERM)
    ctl.wait()
    assert ctl.after("RESUME_QUEUES") == ["DISABLE"]


def test_keep_survives_disconnect(tmp_path, target):
    ctl = Ctl(tmp_path, target)  # max-hold 60 s
    c = Client(ctl.sock)
    assert c.preempt(keep=True)["ok"]
    c.close()
    # the service handles the closed connection before a request of a connection opened after it
    # (one loop, connections in the order they came), so this status is answered after the disconnect
    st = Client(ctl.sock).status()
    assert st["held"] == [1, 7] and ctl.names()[-1] == "SUSPEND_QUEUES"
    ctl.p.send_signal(signal.SIGTERM)
    ctl.wait()
    assert ctl.after("SUSPEND_QUEUES") == ["RESUME_QUEUES", "DISABLE"]  # resumed on the way out, not before


def test_max_hold_resumes_a_kept_hold(tmp_path, target):
    ctl = Ctl(tmp_path, target, max_hold=400)
    c = Client(ctl.sock)
    assert c.preempt(keep=True)["ok"]
    c.close()  # nobody will ask for the resume
    assert wait_for(lambda: ctl.names()[-1] == "RESUME_QUEUES", 30)
    assert Client(ctl.sock).status()["held"] is None
    ctl.p.send_signal(signal.SIGTERM)
    ctl.wait()
    assert ctl.after("SUSPEND_QUEUES") == ["RESUME_QUEUES", "DISABLE"]


def test_exception_in_service_loop_resumes_and_detaches(tmp_path, target):
    ctl = Ctl(tmp_path, target, fail="raise-after-suspend")
    c = Client(ctl.sock)
    c.preempt()
    rc, out, err = ctl.wait()
    assert "STOPPED error: RuntimeError: injected failure" in out, err
    assert ctl.after("SUSPEND_QUEUES") == ["QUERY_DEBUG_EVENT", "RESUME_QUEUES", "DISABLE"]
    assert target.runs_untraced()


def test_signals_reach_the_held_target_and_group_stop_is_kept(tmp_path, target):
    ctl = Ctl(tmp_path, target)
    Client(ctl.sock).preempt(keep=True)
    target.p.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: target.count("usr1") == 1, 30)
    target.p.send_signal(signal.SIGSTOP)
    assert wait_for(lambda: status(ctl.sock)["signals_passed"] == 2, 30)  # SIGSTOP passed on
    assert wait_for(lambda: target.state() in "Tt", 30)  # ... and the target in its group-stop
    n = target.count("tick")
    # two requests: the second is answered after a service pass that saw the group-stop (the loop answers
    # requests, then restarts stops), so by then the stop was LISTENed, or wrongly continued
    c = Client(ctl.sock)
    c.status()
    c.status()
    c.close()
    assert target.state() in "Tt" and target.count("tick") == n  # stopped as the user asked
    target.p.send_signal(signal.SIGCONT)
    assert wait_for(lambda: target.count("tick") > n, 30)
    target.p.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: target.count("usr1") == 2, 30)
    st = Client(ctl.sock).status()
    assert st["signals_passed"] >= 3 and st["alive"] and st["held"] == [1, 7]
    ctl.p.send_signal(signal.SIGTERM)
    ctl.wait()
    assert target.runs_untraced()


def test_forked_children_of_the_target_are_not_kept_traced(tmp_path, target):
    ctl = Ctl(tmp_path, target)
    target.p.send_signal(signal.SIGUSR2)
    assert wait_for(lambda: "forked" in target.text(), 30)
    child = int(next(ln.split()[1] for ln in target.text().splitlines() if ln.startswith("forked")))
    try:
        assert wait_for(lambda: proc_status(child)["TracerPid"] == "0" and proc_status(child)["Name"] == "sleep", 30)
        assert target.tracer() == ctl.p.pid
    finally:
        os.kill(child, signal.SIGKILL)
    ctl.p.send_signal(signal.SIGTERM)
    ctl.wait()


def test_target_exit_while_held_ends_the_service(tmp_path, target):
    ctl = Ctl(tmp_path, target)
    Client(ctl.sock).preempt(keep=True)
    target.p.kill()
    target.p.wait()
    rc, out, err = ctl.wait()
    assert rc == 0 and "STOPPED target exited" in out, err
    assert ctl.names()[-1] == "SUSPEND_QUEUES"  # nothing to resume on a gone process


@pytest.mark.parametrize("step", ["startup", "attach", "holding"])
def test_controller_sigkill_at_any_step_leaves_target_running(tmp_path, target, step):
    """kill -9 at startup (before it has done anything), in the middle of attach (seized, inside DBG_TRAP
    ENABLE), while holding: the kernel lets the ptrace go, the target runs."""
    sock, log = str(tmp_path / "k.sock"), tmp_path / "k.log"
    o = {"pid": target.p.pid, "socket": sock, "kfd_path": "/dev/null", "queues": [1], "unchecked_ids": True}
    p = subprocess.Popen([sys.executable, str(HERE / "testing" / "control_child.py"), str(log), json.dumps(o),
                          "block-in-enable" if step == "attach" else ""], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if step == "attach":
        assert wait_for(lambda: log.exists() and "AMDKFD_IOC_DBG_TRAP:ENABLE" in log.read_text(), 30)
        assert target.tracer() == p.pid
    elif step == "holding":
        assert p.stdout.readline().strip() == b"READY"
        assert Client(sock).preempt(keep=True)["ok"]
        assert target.tracer() == p.pid
    p.kill()
    p.wait()
    assert target.runs_untraced()


def test_scheme_b_watchdog_resumes_when_the_controller_is_killed(tmp_path, target):
    ctl = Ctl(tmp_path, target, scheme="B")
    Client(ctl.sock).preempt(keep=True)
    ctl.p.kill()
    ctl.p.wait()
    err = ctl.p.stderr.read()  # the watchdog inherited stderr; it writes when it has acted
    assert f"gpreempt-trace watchdog: controller {ctl.p.pid} died; RESUME_QUEUES(all) of pid {target.p.pid}" in err
    assert target.tracer() == 0  # scheme B never ptraces


def test_scheme_b_clean_exit_dismisses_the_watchdog(tmp_path, target):
    ctl = Ctl(tmp_path, target, scheme="B")
    Client(ctl.sock).preempt(keep=True)
    ctl.p.send_signal(signal.SIGTERM)
    rc, out, err = ctl.wait()
    assert rc == 0 and "watchdog" not in err
    assert ctl.after("AMDKFD_IOC_PREEMPT_QUEUES") == ["AMDKFD_IOC_RESUME_QUEUES"]
