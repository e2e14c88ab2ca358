"""The controller against the REAL KFD debugger ABI: Debian's 6.12.117 kernel (KFD ioctl 1.17) in the
lab, no GPU (tests/lab_preempt_scenarios.py runs in the guest), and Debian's 6.1 (KFD 1.11), where
scheme A refuses in one line. Scheme B against the patched 6.12 module: see the skipped test."""
from __future__ import annotations

import json

import pytest

INVALID = 0x80000000


def _result(res) -> dict:
    line = next((ln for ln in res.output.splitlines() if ln.startswith("RESULT ")), None)
    assert line, res.output[-4000:]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("with_record", [True])
def test_scheme_a_on_the_real_6_12_kfd(lab612, with_record):
    res = lab612.run(".venv/bin/python tests/lab_preempt_scenarios.py $OUT/s" + ("" if with_record else " --no-record"),
                     timeout_s=900)
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


def test_scheme_a_refuses_on_6_1_in_one_line(lab):
    res = lab.run(
        "python3 -c \"import os,time; f=os.open('/dev/kfd', os.O_RDWR); time.sleep(120)\" & T=$!; sleep 1; "
        ".venv/bin/gpreempt-trace preempt run --pid $T --hold 1 --queues 1 --unchecked-ids; echo \"rc=$?\"; kill $T",
        timeout_s=300)
    out = [ln for ln in res.output.splitlines() if ln.startswith(("Error:", "rc="))]
    assert out == ["Error: scheme A refused: this kernel's KFD ioctl is 1.11, the debugger ABI (DBG_TRAP SUSPEND/RESUME_QUEUES) "
                   "needs 1.13: use Linux >= 6.5 or ROCm's amdgpu DKMS (KFD 1.17 on 6.12), or scheme B on a kernel with "
                   "kernel/'s series", "rc=1"], res.output[-2000:]


@pytest.mark.skip(reason="needs helper A2's patched 6.12 amdgpu module (kernel/ series built for 6.12.117) in the lab; "
                         "not available when this test was written")
def test_scheme_b_error_paths_on_the_patched_6_12_module(lab612):
    pass
