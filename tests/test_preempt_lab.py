"""The controller against the REAL KFD debugger ABI: Debian's 6.12.117 kernel (KFD ioctl 1.17) in the
lab, no GPU (tests/testing/lab_preempt_scenarios.py runs in the guest), and Debian's 6.1 (KFD 1.11), where
scheme A refuses in one line. Scheme B against the patched 6.12 module: see the skipped test."""
from __future__ import annotations

import json

import pytest

from gpreempt_trace.lab.scheme_b import PATCHED_KO, SHIM_KO, built

INVALID = 0x80000000


def _result(res) -> dict:
    line = next((ln for ln in res.output.splitlines() if ln.startswith("RESULT ")), None)
    assert line, res.output[-4000:]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("with_record", [False, True], ids=["controller", "with-record"])
def test_scheme_a_on_the_real_6_12_kfd(lab612, with_record):
    res = lab612.run(".venv/bin/python tests/testing/lab_preempt_scenarios.py $OUT/s" + ("" if with_record else " --no-record"),
                     timeout_s=1500)
    assert res.rc == 0, res.output[-4000:]
    r = _result(res)
    assert r["kernel"].startswith("6.12.")
    assert r["target_runtime_enable"][0].startswith("runtime enable rc=0")
    st = r["status_attached"]
    assert st["kfd_minor"] == 17 and st["alive"] and st["queues"] == []  # no GPU: the target has no queues
    # made-up ids come back with bit 31 (INVALID) set, the call itself succeeds (0 acted on)
    for call in ("preempt", "resume"):
        assert r[call]["ok"] and r[call]["ret"] == 0, r[call]
        assert r[call]["queues"] == [[1, "invalid", INVALID | 1], [7, "invalid", INVALID | 7]]
    # the runtime handshake is serviced while held: the target's RUNTIME_ENABLE(disable/enable) returned
    assert r["toggle_returned"] and r["status_held"]["handshakes"] >= 2
    assert [ln.split()[2] for ln in r["target_runtime_lines"]] == ["rc=0", "rc=0", "rc=0"]
    # a signal sent to the held target reaches it
    assert r["usr1_reached"] and r["status_held"]["signals_passed"] >= 1
    assert r["serve1_rc"] == 0
    # controller SIGKILL while holding: the target runs on, takes signals, and a new controller can ENABLE
    assert r["kill_preempt"]["ok"] and r["runs_on_after_kill"] and r["usr1_after_kill"]
    assert r["new_controller_status"]["ok"] and r["new_controller_status"]["alive"]
    # the target exits while held: its RUNTIME_ENABLE(disable) at exit is answered, it exits 0
    assert r["held_exit_preempt"]["ok"] and r["target_exit_rc"] == 0
    assert r["target_log_tail"][-1] == "bye" and r["serve3_rc"] == 0
    if not with_record:
        return
    assert r.get("record_rc") == 0, r.get("record_log")
    assert "query_error" not in r, r.get("query_error")
    marks = r["markers"]
    kinds = [m[0] for m in marks]
    assert kinds[:1] == ["controller_attach"] and "controller_detach" in kinds
    req = next(m for m in marks if m[0] == "preempt_request")
    done = next(m for m in marks if m[0] == "preempt_done" and m[1] == req[1])
    assert req[2] == [1, 7] and done[3] == "ok"
    # record on the same trace: the DBG_TRAP SUSPEND row and the kernel's suspend_queues row lie
    # between the matching markers
    susp = [row for row in r["dbg_rows"] if row[3] == 6 and req[4] <= row[0] <= done[4]]
    assert susp and susp[0][5] == [1, 7], r["dbg_rows"]
    qs = [row for row in r["queue_rows"] if row[1] == "queues_suspend" and req[4] <= row[0] <= done[4]]
    assert qs, r["queue_rows"]
    rreq = next(m for m in marks if m[0] == "resume_request" and m[1] == req[1] + 1)
    rdone = next(m for m in marks if m[0] == "resume_done" and m[1] == rreq[1])
    assert [row for row in r["dbg_rows"] if row[3] == 7 and rreq[4] <= row[0] <= rdone[4]]
    assert [row for row in r["queue_rows"] if row[1] == "queues_resume" and rreq[4] <= row[0] <= rdone[4]]
    # the controller's SIGKILL while holding: KFD's own exit-path cleanup resumes the target's queues
    # (resume_queues with no list), before the next controller attaches
    assert [row for row in r["queue_rows"] if row[1] == "queues_resume" and row[2] == 0
            and r["kill_preempt"]["ts_done_ns"] < row[0] < r["held_exit_preempt"]["ts_request_ns"]], r["queue_rows"]


def test_scheme_a_refuses_on_6_1_and_scheme_b_says_enotty(lab):
    res = lab.run(
        "python3 -c \"import os,time; f=os.open('/dev/kfd', os.O_RDWR); time.sleep(120)\" & T=$!; sleep 1; "
        ".venv/bin/gpreempt-trace preempt run --pid $T --hold 1 --queues 1 --unchecked-ids; echo \"rc=$?\"; "
        ".venv/bin/gpreempt-trace preempt run --scheme B --pid $T --hold 1 --queues 1; echo \"rc=$?\"; kill $T",
        timeout_s=300)
    out = [ln for ln in res.output.splitlines() if ln.startswith(("Error:", "rc="))]
    assert out == ["Error: scheme A refused: this kernel's KFD ioctl is 1.11, the debugger ABI (DBG_TRAP SUSPEND/RESUME_QUEUES) "
                   "needs 1.13: use Linux >= 6.5 or ROCm's amdgpu DKMS (KFD 1.17 on 6.12), or scheme B on a kernel with "
                   "kernel/'s series", "rc=1",
                   "Error: scheme B refused: this kernel has no AMDKFD_IOC_PREEMPT_QUEUES/RESUME_QUEUES (ENOTTY): "
                   "boot a kernel with kernel/'s patch series (see kernel/README.md), or use --scheme A", "rc=1"], res.output[-2000:]


@pytest.mark.skipif(not built(),
                    reason=f"the patched 6.12 amdgpu.ko (kernel/ series: `make lab-scheme-b`) "
                           f"and its ptrace_may_access shim are not built here ({PATCHED_KO}, {SHIM_KO})")
def test_scheme_b_error_paths_on_the_patched_6_12_module(lab612):
    """Without a GPU no queue exists: a made-up id fails the call with ENOENT (and ENOENT in its entry),
    `all` acts on nothing, and the watchdog resumes after the controller's SIGKILL."""
    res = lab612.run(
        "set -e\n"
        "modprobe -a $(modinfo -F depends amdgpu | tr , ' ')\n"
        f"insmod {SHIM_KO}\ninsmod {PATCHED_KO}\n"
        "python3 -c \"import os,time; f=os.open('/dev/kfd', os.O_RDWR); time.sleep(300)\" & T=$!; sleep 1\n"
        "set +e\n"
        ".venv/bin/gpreempt-trace preempt run --scheme B --pid $T --hold 1 --repeat 2 --queues 5 --unchecked-ids; echo \"rc=$?\"\n"
        ".venv/bin/gpreempt-trace preempt run --scheme B --pid $T --hold 1 --queues all; echo \"rc=$?\"\n"
        ".venv/bin/gpreempt-trace preempt serve --scheme B --pid $T --socket /tmp/b.sock 2>/tmp/b.log & S=$!\n"
        "for i in $(seq 300); do grep -q serving /tmp/b.log && break; sleep 1; done\n"
        ".venv/bin/gpreempt-trace preempt suspend --socket /tmp/b.sock; kill -9 $S; sleep 5; cat /tmp/b.log; echo killed\n"
        "kill $T\n",
        timeout_s=900, modules=())
    assert res.rc == 0, res.output[-3000:]
    lines = res.output.splitlines()
    rcs = [ln for ln in lines if ln.startswith("rc=")]
    # a made-up id: the call itself fails ENOENT (entry result ENOENT too): one line per queue, exit 1,
    # nothing left preempted; `all` acts on nothing and succeeds
    assert rcs == ["rc=1", "rc=0"], res.output[-3000:]
    assert "cycle 0 preempt: queue 5 enoent (kernel wrote 0xfffffffe)" in lines
    assert "cycle 0 preempt failed: ENOENT" in lines
    assert not [ln for ln in lines if ln.startswith("warning:")], res.output[-3000:]
    assert any("gpreempt-trace watchdog: controller" in ln and ": ok" in ln for ln in lines), res.output[-3000:]
