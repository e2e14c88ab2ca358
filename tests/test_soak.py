"""The soak's behaviour on a few cycles (bench/soak.py prints the figures of the long runs; `make soak`).
On this VM the controller is `serve` with real ptrace, socket, owner thread and watchdog over a scripted
KFD that logs each ioctl as it is issued; the recorder is real (ioctl tracepoint path on /dev/null)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench import soak
from gpreempt_trace.errors import GptError
from gpreempt_trace.experiment import ab

root = pytest.mark.skipif(os.geteuid() != 0, reason="ptrace of a sibling process and BPF need root")


def _in_fresh_interpreter(request) -> bool:
    """Run this test again alone in a new pytest process and say so (True: its outcome is that run's).
    fork_call forks only while its process has one thread; threads earlier tests of this session left
    (daemon threads, executor workers) would make it refuse here."""
    if os.environ.get("GPT_SOAK_TEST_ALONE") or threading.active_count() == 1:
        return False
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{request.node.name}"],
                       env={**os.environ, "GPT_SOAK_TEST_ALONE": "1"}, cwd=Path(__file__).resolve().parent.parent,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:]
    return True


@root
@pytest.mark.parametrize("scheme", ["A", "B"])
def test_controller_cycles_leave_fds_threads_and_queues_as_they_were(tmp_path, scheme):
    r = soak.controller_soak(tmp_path, kfd=False, scheme=scheme, cycles=50)
    assert (r.answered, r.ok) == (100, 100)
    assert len(r.first) == len(r.last) == 5
    assert {u.fds for u in r.first + r.last} == {r.first[0].fds}  # not one fd more after 50 cycles
    assert {u.threads for u in r.first + r.last} == {r.first[0].threads}
    assert r.held_at_end is None and r.left_suspended is False and r.stop_rc == 0
    assert r.watchdogs == 1  # its one watchdog, no more


@root
@pytest.mark.parametrize("scheme", ["A", "B"])
def test_controller_sigkill_at_seeded_moments_leaves_the_target_running_and_attachable(tmp_path, scheme):
    runs = soak.controller_sigkill_runs(tmp_path, kfd=False, scheme=scheme, runs=3, seed0=7)
    assert [r.seed for r in runs] == [7, 8, 9]
    for r in runs:
        assert r.service_exit == -9, r
        assert r.target_runs is True and r.new_attach is True and r.left_suspended is not True, r
        assert r.queues_seen == 0


@root
@pytest.mark.parametrize("scheme", ["A", "B"])
def test_target_sigkill_while_held_ends_the_service_and_the_next_target_is_served(tmp_path, scheme):
    [r] = soak.target_sigkill_runs(tmp_path, kfd=False, scheme=scheme, runs=1, seed0=3)
    assert r.service_exit == 0 and r.resumed_by == "nothing to resume (target gone)", r
    assert r.new_attach is True


@root
@pytest.mark.parametrize("scheme", ["A", "B"])
def test_sigstop_past_max_hold_the_watchdog_kills_the_controller_and_the_hold_ends(tmp_path, scheme):
    [r] = soak.controller_sigstop_runs(tmp_path, kfd=False, scheme=scheme, runs=1, seed0=5, max_hold_ms=200)
    assert r.resumed_by.startswith("watchdog SIGKILLed it"), r
    if scheme == "B":  # the watchdog's RESUME_QUEUES(all) (on /dev/null here: ENOTTY, but issued)
        assert "watchdog RESUME_QUEUES(all): Inappropriate ioctl for device" in r.resumed_by
        assert r.left_suspended is False
    else:  # KFD's debugger exit path resumes; the ptrace went with the controller
        assert r.resumed_by.endswith("KFD's debugger exit path")
    assert r.target_runs is True and r.new_attach is True


def test_fork_call_child_has_only_its_log_and_returns_its_exit_status(tmp_path, request):
    if _in_fresh_interpreter(request):
        return
    log = tmp_path / "child.log"

    def child():
        print("fds", sorted(int(f) for f in os.listdir("/proc/self/fd")))
        raise SystemExit(5)

    p = soak.fork_call(child, log, "child")
    assert p.wait(30) == 5 and p.poll() == 5
    assert log.read_text() == "fds [0, 1, 2, 3]\n"  # 3: listdir's own
    assert soak.fork_call(lambda: 3, log, "three").wait(30) == 3
    q = soak.fork_call(lambda: __import__("time").sleep(60), log, "sleeper")
    with pytest.raises(soak.subprocess.TimeoutExpired):
        q.wait(0.05)
    q.kill()
    assert q.wait(30) == -9


@root
@pytest.mark.parametrize("scheme", ["A", "B"])
def test_forked_controller_and_target_behave_as_exec_ones(tmp_path, scheme, monkeypatch, request):
    if _in_fresh_interpreter(request):
        return
    monkeypatch.setattr(soak, "FORK", True)
    soak.preload()
    runs = soak.controller_sigkill_runs(tmp_path / "k", kfd=False, scheme=scheme, runs=2, seed0=7)
    assert [(r.service_exit, r.target_runs, r.new_attach, r.queues_seen) for r in runs] == [(-9, True, True, 0)] * 2
    assert all(r.left_suspended is not True for r in runs)
    [r] = soak.target_sigkill_runs(tmp_path / "t", kfd=False, scheme=scheme, runs=1, seed0=3)
    assert (r.service_exit, r.resumed_by, r.new_attach) == (0, "nothing to resume (target gone)", True)


@root
def test_kill_runs_stop_starting_new_runs_once_their_time_share_is_spent(tmp_path, monkeypatch):
    monkeypatch.setattr(soak, "STOP_AT", 0.0)  # the first run always runs
    assert [r.seed for r in soak.target_sigkill_runs(tmp_path, kfd=False, scheme="A", runs=3, seed0=3)] == [3]


@root
def test_record_start_stop_leaves_nothing_behind_and_every_trace_reads(tmp_path):
    base, runs = soak.record_runs(tmp_path, n=3, seed0=1)
    assert [r.killed for r in runs].count(True) == 1  # a seeded third
    for r in runs:
        assert r.leaks == {}, r
        assert r.events is not None, r  # readable, killed or not
        if not r.killed:
            assert r.rc == 0
        else:
            assert r.rc == -9 and r.lost_s is not None


def _fake_cells(monkeypatch, outcome):
    def run_cell(o, p, scheme, k, trace, say):
        trace.mkdir()
        (trace / "meta.json").write_text("{}")
        return outcome(scheme, k)

    monkeypatch.setattr(ab, "_run_cell", run_cell)
    monkeypatch.setattr(ab, "_analyse", lambda o, res, say: None)
    plan = ab.Plan([], ["none", "A"], {}, False, "test", False, False)
    monkeypatch.setattr(ab, "plan", lambda o, doctor=None: plan)


def test_experiment_repeat_accounts_for_every_run(tmp_path, monkeypatch):
    def outcome(scheme, k):
        if (scheme, k) == ("A", 2):
            return {"ok": False, "errors": ["controller exited with 1: boom"], "rc": 1}
        if (scheme, k) == ("none", 3):
            raise GptError("offline job did not start")
        return {"ok": True, "rc": 0}

    _fake_cells(monkeypatch, outcome)
    lines = []
    with pytest.raises(GptError) as e:
        ab.run(ab.ABOptions(str(tmp_path / "out"), repeat=4, schemes=("none", "A")), say=lines.append)
    assert e.value.line().startswith("2 of 8 runs failed (first: [A #2] controller exited with 1: boom)")
    assert "runs: 8 planned, 6 completed, 2 failed, 0 not run (interrupted)" in lines
    assert "  [A #2] failed: controller exited with 1: boom" in lines
    assert "  [none #3] failed: offline job did not start" in lines
    runs = json.loads((tmp_path / "out" / "runs.json").read_text())
    assert runs["accounting"] == {"planned": 8, "completed": 6, "failed": 2, "not run": 0}
    assert [(r["scheme"], r["repeat"], r["status"]) for r in runs["runs"]] == [
        (s, k, "failed" if (s, k) in (("A", 2), ("none", 3)) else "completed") for k in range(1, 5) for s in ("none", "A")]


def test_experiment_interrupted_lists_what_did_not_run(tmp_path, monkeypatch):
    _fake_cells(monkeypatch, lambda s, k: {"ok": False, "interrupted": True} if (s, k) == ("A", 1) else {"ok": True})
    lines = []
    with pytest.raises(ab.Interrupted):
        ab.run(ab.ABOptions(str(tmp_path / "out"), repeat=2, schemes=("none", "A")), say=lines.append)
    assert "runs: 4 planned, 1 completed, 1 failed, 2 not run (interrupted)" in lines
    runs = json.loads((tmp_path / "out" / "runs.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["completed", "failed", "not run", "not run"]
    assert runs[1]["cause"] == "interrupted"


def test_scenarios_select_kill_runs_per_scheme_with_their_own_counts():
    sel = soak.parse_scenarios("A:target=32,A:sigstop=48,B:controller-sigstop=49")
    assert soak.kill_plan(["A", "B"], 100, sel) == [
        ("A", "target-sigkill", 32), ("A", "controller-sigstop", 48), ("B", "controller-sigstop", 49)]
    assert soak.kill_plan(["A", "B"], 5, soak.parse_scenarios("sigstop,controller")) == [
        ("A", "controller-sigkill", 5), ("A", "controller-sigstop", 5), ("B", "controller-sigkill", 5), ("B", "controller-sigstop", 5)]
    assert soak.kill_plan(["A"], 3, None) == [("A", sc, 3) for sc in soak.SCENARIOS]
    for bad in ("foo", "C:target", "target=x", ","):
        with pytest.raises(ValueError, match="--scenarios"):
            soak.parse_scenarios(bad)


def test_scenarios_and_schemes_flags_reject_bad_values_in_one_line():
    for argv in (["--scenarios", "nope", "kill"], ["--schemes", "C", "kill"]):
        r = subprocess.run([sys.executable, "-m", "bench.soak", *argv], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parent.parent)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("python -m bench.soak: error: --"), r.stderr
