"""Scheme A by `--container` against the REAL KFD debugger ABI (Debian 6.12.117 in the lab, no GPU, cgroup v2,
issue 21): the target is pid 1 of its own pid namespace in a systemd-layout docker cgroup
(tests/testing/lab_container_scenario.py runs in the guest)."""
from __future__ import annotations

import json

INVALID = 0x80000000
CID = "e7" * 32


def _result(res) -> dict:
    line = next((ln for ln in res.output.splitlines() if ln.startswith("RESULT ")), None)
    assert line, res.output[-4000:]
    return json.loads(line[len("RESULT "):])


def test_scheme_a_by_container_on_the_real_6_12_kfd(lab612):
    res = lab612.run(".venv/bin/python tests/testing/lab_container_scenario.py $OUT/c", timeout_s=1500)
    assert res.rc == 0, res.output[-4000:]
    r = _result(res)
    print(json.dumps(r, indent=1))
    assert r["kernel"].startswith("6.12.") and r["cgroup2"] and r["target_ready"] and r["cgroup_procs"] == 1
    host = r["host_pid"]
    assert r["nspid"].split()[-1] == "1" and int(r["nspid"].split()[0]) == host != 1  # pid 1 inside, another on the host
    assert r["proc_cgroup"] == f"0::/system.slice/docker-{CID}.scope"
    # a wrong id: one line, exit 1, nothing attached (so nothing suspended)
    assert r["wrong"]["rc"] == 1 and r["wrong"]["stderr"] == [
        f"Error: no running process is in container {'f' * 64}: check the id with `docker ps --no-trunc` "
        "(a full id, or a prefix of at least 12 hex digits)"]
    assert r["tracer_after_wrong"] == "0"
    # by container (the one process with /dev/kfd open) and by --ns-pid 1: the host pid is attached,
    # SUSPEND/RESUME reach the real KFD and come back with the made-up ids marked INVALID (no GPU queues)
    for run, cycles in (("by_container", 2), ("by_ns_pid", 1)):
        assert r[run]["rc"] == 0, r[run]
        assert r[run]["stderr"][-1].startswith(f"{cycles}/{cycles} cycles"), r[run]
    for t, cycles in (("t1", 2), ("t2", 1)):
        marks = r[f"{t}_markers"]
        assert {(m[1], m[2]) for m in marks} == {(host, CID)}  # every controller marker: the host pid and the container
        kinds = [m[0] for m in marks]
        assert kinds[0] == "controller_attach" and kinds[-1] == "controller_detach"
        assert kinds.count("preempt_request") == cycles and kinds.count("resume_request") == cycles
        assert [m[3] for m in marks if m[0] in ("preempt_done", "resume_done")] == ["ok"] * (2 * cycles)
        assert sorted({(m[4][0], m[3]) for m in marks if m[0] == "queue_result"}) == [(1, "invalid"), (7, "invalid")]
        assert [p for p in r[f"{t}_processes"] if p[0] == host] == [
            [host, 1, CID, "docker", f"/system.slice/docker-{CID}.scope"]]
    assert r["tracer_after"] == "0"  # detached: nothing left suspended or traced
    assert r["target_rc"] == 0 and r["target_log_tail"][-1] == "bye" and r["cgroup_removed"]


def test_record_by_container_on_cgroup_v2(lab612):
    """`record --container` in the 6.12 guest (cgroup v2): the target's own KFD calls and the KFD's
    suspend/resume of its queues (owner = the target) are recorded and attributed to the container; the
    controller (a host process) is not recorded."""
    res = lab612.run(".venv/bin/python tests/testing/lab_container_scenario.py $OUT/c --record", timeout_s=1500)
    assert res.rc == 0, res.output[-4000:]
    r = _result(res)
    print(json.dumps({k: v for k, v in r.items() if k.startswith("rec")}, indent=1))
    host = r["host_pid"]
    assert r["rec_started"] and r["rec_run"]["rc"] == 0 and r["rec_toggled"] and r["rec_rc"] == 0, r
    # only the container's process (the controller, a host process, is not in it): the debugger's enable/
    # disable and KFD's suspend/resume of its queues (owner = the target; the resume of DISABLE too), its
    # two RUNTIME_ENABLE calls (one decoded kfd_ioctl row each: the default kprobe path, no syscall
    # tracepoint beside it) and the runtime_enable probe
    assert sorted(map(tuple, r["rec_events"])) == [
        ("dbg_trap_disable", host, 1), ("dbg_trap_enable", host, 1), ("kfd_ioctl", host, 2), ("queues_resume", host, 2),
        ("queues_suspend", host, 1), ("runtime_enable", host, 2)]
    assert r["rec_processes"] == [[host, 1, CID, "docker", f"/system.slice/docker-{CID}.scope"]]
    assert r["rec_containers_meta"]["containers"][0]["id"] == CID and r["rec_containers_meta"]["follow_pidns"] is True
