"""Preemption policies: preempt/resume at the right request boundaries (a fake clock for the exact
schedule; a real online workload whose markers decide what each call should have been)."""
import time

import pytest

from gpreempt_trace import api
from gpreempt_trace.trace import directory as trace
from gpreempt_trace.errors import GptError
from gpreempt_trace.workloads.policy import Policy

MS = 1_000_000


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += int(round(s * 1e9))


class FakeClient:
    """Records each call with the time it was made (an injected clock, or CLOCK_MONOTONIC)."""

    def __init__(self, clock=time.monotonic_ns, fail_resume=False):
        self.clock, self.calls, self.closed, self.fail_resume = clock, [], False, fail_resume

    def preempt(self):
        self.calls.append(("preempt", self.clock()))

    def resume(self):
        self.calls.append(("resume", self.clock()))
        if self.fail_resume:
            raise OSError("controller gone")

    def close(self):
        self.closed = True


def _drive(mode, requests, gap_ms=20):
    """requests: (due_ms, service_ms); served one at a time like the online workload does."""
    clk = Clock()
    cl = FakeClient(clk)
    pol = Policy(mode, cl, gap_ms, clock=clk, sleep=clk.sleep)
    for i, (due, service) in enumerate(requests):
        pol.wait_until(due * MS)
        pol.request_start(due * MS)
        clk.t += service * MS
        nxt = requests[i + 1][0] * MS if i + 1 < len(requests) else None
        pol.request_end(clk.t, next_due=nxt)
    pol.close()
    return [(op, t // MS) for op, t in cl.calls], cl


REQS = [(0, 5), (10, 5), (12, 5), (100, 5)]  # request 2 is due while request 1 runs (until 15)


def test_per_request_preempts_when_none_in_flight_and_resumes_when_none_is():
    calls, cl = _drive("per-request", REQS)
    assert calls == [("preempt", 0), ("resume", 5), ("preempt", 10), ("resume", 20), ("preempt", 100), ("resume", 105)]
    assert cl.closed


def test_burst_resumes_only_after_the_idle_gap():
    calls, _ = _drive("burst", REQS, gap_ms=20)
    # 0..5 busy, idle 5 ms < 20: held; 10..20 busy; idle from 20, gap expires at 40 before 100 is due
    assert calls == [("preempt", 0), ("resume", 40), ("preempt", 100), ("resume", 105)]  # last: close()
    calls, _ = _drive("burst", REQS, gap_ms=200)
    assert calls == [("preempt", 0), ("resume", 105)]


def test_none_never_calls_and_close_resumes_after_a_failure():
    calls, _ = _drive("none", REQS)
    assert calls == []
    clk = Clock()
    cl = FakeClient(clk, fail_resume=True)
    pol = Policy("per-request", cl, clock=clk, sleep=clk.sleep)
    pol.request_start(0)
    with pytest.warns(UserWarning, match="resume at workload exit failed: controller gone"):
        pol.close()
    assert cl.calls == [("preempt", 0), ("resume", 0)] and cl.closed
    with pytest.raises(GptError, match="needs a controller client"):
        Policy("burst", None)


def _expected(rows, mode):
    """What per-request should have called, from the workload's own markers: per request, preempt
    unless the previous one was still in flight at its due time, resume unless the next one was due
    before it ended."""
    req = sorted((r[1], r[0], r[2]) for r in rows)  # (seq, due, end)
    want = []
    for i, (seq, due, end) in enumerate(req):
        if i == 0 or req[i - 1][2] < due:
            want.append(("preempt", seq))
        if i + 1 == len(req) or req[i + 1][1] > end:
            want.append(("resume", seq))
    return want


@pytest.mark.parametrize("rate", [20, 400])
def test_online_workload_calls_at_its_marker_boundaries(tmp_path, rate):
    pytest.importorskip("torch")
    owner = trace.TraceWriter.create(tmp_path / "t")
    cl = FakeClient()
    res = api.workload("online", model="gemm", batch=1, rate_hz=rate, duration_s=0.5, device="cpu", threads=1,
                       trace=str(tmp_path / "t"), preempt_policy="per-request", controller_socket="unused", client=cl)
    owner.close()
    con = api.connect([str(tmp_path / "t")])
    rows = con.sql("SELECT s.ts_ns, s.seq, e.ts_ns, s.ts_ns + s.value_ns FROM markers s JOIN markers e USING (seq) "
                   "WHERE s.kind = 'request_start' AND e.kind = 'request_end' ORDER BY s.seq").fetchall()
    assert len(rows) == res.iterations > 1
    # a preempt belongs to the last request that had started (due + queueing delay) before the call,
    # a resume to the last request that had ended before it
    got = []
    for op, t in cl.calls:
        if op == "preempt":
            got.append(("preempt", max(seq for _, seq, _, started in rows if started <= t)))
        else:
            got.append(("resume", max(seq for _, seq, end, _ in rows if end <= t)))
    assert got == _expected(rows, "per-request")
    assert (res.preempts, res.resumes) == (sum(1 for c in cl.calls if c[0] == "preempt"), sum(1 for c in cl.calls if c[0] == "resume"))
    assert res.preempts == res.resumes and cl.closed


SERVE = """
import sys
from gpreempt_trace.control import serve, PreemptOptions
from gpreempt_trace.control.io import ScriptedIo
serve(PreemptOptions(pid=int(sys.argv[1]), scheme="A", socket=sys.argv[2], output=sys.argv[3], kfd_path="/dev/null",
                     queues=[1, 7], unchecked_ids=True), io=ScriptedIo())
"""


def test_policy_through_the_real_client_and_service(tmp_path):
    """The online workload's policy -> control.Client -> `preempt serve` (scheme A over the scripted
    ioctl layer; the target is a process holding the stand-in device /dev/null): the controller's
    markers land in the same trace and workload.requests joins them to the requests."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    t, sock = tmp_path / "t", tmp_path / "c.sock"
    trace.TraceWriter.create(t).close()
    target = subprocess.Popen(["sleep", "120"], stdin=open("/dev/null"))
    svc = subprocess.Popen([sys.executable, "-c", SERVE, str(target.pid), str(sock), str(t)], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if sock.exists() or svc.poll() is not None:
                break
            time.sleep(0.05)
        assert sock.exists(), svc.stderr.read() if svc.poll() is not None else "no socket"
        res = api.workload("online", model="gemm", batch=1, rate_hz=20, duration_s=0.5, device="cpu", threads=1,
                           trace=str(t), preempt_policy="per-request", controller_socket=str(sock))
    finally:
        svc.terminate()
        svc.wait(10)
        target.kill()
        target.wait()
    assert res.preempts == res.resumes >= 1
    con = api.connect([str(t)])
    kinds = dict(con.sql("SELECT kind, count(*) FROM markers WHERE source = 'controller' GROUP BY 1").fetchall())
    assert kinds["preempt_request"] == kinds["preempt_done"] == res.preempts
    assert kinds["resume_request"] == kinds["resume_done"] == res.resumes
    rows = api.query("workload.requests", [str(t)]).to_pylist()
    assert len(rows) == res.iterations and sum(r["preemptions"] > 0 for r in rows) >= res.preempts
    # every preemption starts inside a request that was due and had not ended yet
    pre = [r[0] for r in con.sql("SELECT ts_ns FROM markers WHERE kind = 'preempt_request' ORDER BY 1").fetchall()]
    assert all(any(r["due_ns"] <= ts <= r["end_ns"] for r in rows) for ts in pre)
