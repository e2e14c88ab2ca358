"""The controller's fast path (issue 23.5) keeps its meaning: the wire shortcuts say exactly what the
JSON says, reused ioctl arguments are the bytes of fresh ones, batched markers all reach the trace, the
StopWatch replaces waitpid polling and is gone after the controller stops. (Speed is the benchmark's:
python -m bench control.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

from gpreempt_trace.control import io as P
from gpreempt_trace.control import wire
from gpreempt_trace.control.owner import Controller
from gpreempt_trace.control.schemes import SchemeA, SchemeB

PID = 4321


# ---- wire ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["preempt", "resume", "status"])
def test_plain_requests_are_their_json(op):
    line = wire.request(op, {"queues": None, "grace": None, "keep": None})
    assert line == json.dumps({"op": op}).encode() + b"\n"
    assert wire.parse_request(line[:-1]) == (op, {})


@pytest.mark.parametrize("line, parsed", [
    (b'{"op":"preempt"}', ("preempt", {})),
    (b' { "op" : "resume" } ', ("resume", {})),
    (b'{"op": "preempt", "queues": [3, 5], "grace": 100, "keep": true}', ("preempt", {"queues": [3, 5], "grace": 100, "keep": True})),
])
def test_other_spellings_parse_as_json(line, parsed):
    assert wire.parse_request(line) == parsed


def test_a_request_with_arguments_is_compact_json():
    line = wire.request("preempt", {"queues": [3, 5], "grace": 7, "keep": None})
    assert line == b'{"op":"preempt","queues":[3,5],"grace":7}\n'


@pytest.mark.parametrize("line", [b"", b"preempt", b"[1]", b'{"queues": "all"}', b"\xff\xfe", b'{"op": "preempt"'])
def test_bad_request_lines(line):
    with pytest.raises(ValueError, match='bad request: one JSON object with "op" per line'):
        wire.parse_request(line)


def _call(**kw):
    ans = {"op": "preempt", "ok": True, "label": "ok", "errno": 0, "ret": 2, "queue_ids": [3, 5],
           "queues": [[3, "ok", 3], [5, "ok", 5]], "ts_request_ns": 1_000_000_123, "ts_done_ns": 1_000_050_456,
           "issued": True, "seq": 7}
    ans.update(kw)
    return ans


@pytest.mark.parametrize("ans", [
    _call(),
    _call(op="resume", ret=None, ok=False, label="EPERM", errno=1, queues=[]),
    _call(queues=[[1, "invalid", 0x80000001], [7, "error", 0x40000007]]),
    _call(queues=[[9, "enoent", -2]], queue_ids=[9]),  # scheme B: the entry's errno, negative
    _call(queue_ids=[], queues=[], issued=False, ret=0),
    _call(label='od"d\nlabel'),  # not an identifier: quoted by json
    {"ok": True, "scheme": "A", "pid": 1, "held": None, "queues": [], "held_ms": 1.5, "notes": ["x"]},
    {"ok": False, "error": "unknown op 'x': preempt, resume, status"},
    _call(extra=1),  # another shape: the general encoder
])
def test_answers_decode_to_what_was_encoded(ans):
    line = wire.answer(ans)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == ans


# ---- reused ioctl arguments ---------------------------------------------------------------------------
class MarkingKfd:
    """Writes INVALID (bit 31) into every id of SUSPEND/RESUME, as the kernel does for ids it lacks."""

    def __call__(self, name, arg, refs):
        if name in ("AMDKFD_IOC_PREEMPT_QUEUES", "AMDKFD_IOC_RESUME_QUEUES"):  # scheme B: -ENOENT per entry
            if refs:
                for e in refs[0]:
                    e.result = -2
            elif arg.pid == 0:
                raise P.oserror(22)  # the probe: the ioctls exist
            return 0
        if name.endswith(("SUSPEND_QUEUES", "RESUME_QUEUES")):
            for i in range(len(refs[0])):
                refs[0][i] |= 1 << 31
            return 0
        return P.default_answer(name, arg, 17)


def test_scheme_a_sends_the_same_bytes_every_time_though_the_kernel_wrote_into_them():
    sio = P.ScriptedIo(MarkingKfd())
    a = SchemeA(sio, PID, unchecked_ids=True)
    a.attach()
    for _ in range(3):
        res = a.suspend([1, 7], grace=5)
        assert [(q.queue_id, q.result, q.raw) for q in res.queues] == [(1, "invalid", 0x80000001), (7, "invalid", 0x80000007)]
        a.held = None  # INVALID ids: nothing held; suspend again
    calls = [c for c in sio.ioctls() if c[0].endswith("SUSPEND_QUEUES")]
    assert len(calls) == 3
    assert calls[0][2] == calls[1][2] == calls[2][2]  # the argument
    assert calls[0][3] == calls[1][3] == calls[2][3] == [(1).to_bytes(4, "little") + (7).to_bytes(4, "little")]
    other = a.suspend([7], grace=5)  # other ids: their own argument
    assert [c for c in sio.ioctls() if c[0].endswith("SUSPEND_QUEUES")][-1][3] == [(7).to_bytes(4, "little")]
    assert other.queue_ids == [7]


def test_scheme_b_sends_the_same_bytes_every_time_though_the_kernel_wrote_into_them():
    sio = P.ScriptedIo(MarkingKfd())
    b = SchemeB(sio, PID)
    b.attach()
    for _ in range(2):
        res = b.suspend([3], grace=0)
        assert not res.ok or [(q.queue_id, q.result, q.raw) for q in res.queues] == [(3, "enoent", -2)]
        b.held = None
    calls = [c for c in sio.ioctls() if c[0] == "AMDKFD_IOC_PREEMPT_QUEUES"]
    assert len(calls) == 2 and calls[0][2:4] == calls[1][2:4]
    assert calls[0][3] == [(3).to_bytes(4, "little") + bytes(4)]  # queue_id 3, result 0 as sent


# ---- markers written off the request path -------------------------------------------------------------
def _markers(path):
    import glob

    rows = [r for f in sorted(glob.glob(f"{path}/markers/*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: r["ts_ns"])  # a segment groups its rows by kind


def test_marker_writer_batches_until_tick(tmp_path):
    from gpreempt_trace.trace.directory import TraceWriter
    from gpreempt_trace.trace.markers import MarkerWriter

    owner = TraceWriter.create(tmp_path / "t")
    mw = MarkerWriter(tmp_path / "t", "controller", batch_ms=60_000)
    for i in range(5):
        mw.add("preempt_request", 1_000 + i, seq=i)
    assert len(mw.waiting) == 5  # nothing converted yet
    mw.tick()
    assert mw.waiting == []
    mw.add("preempt_done", 2_000, seq=9)
    mw.close()
    owner.close()
    assert [(m["kind"], m["ts_ns"], m["seq"]) for m in _markers(tmp_path / "t")] == (
        [("preempt_request", 1_000 + i, i) for i in range(5)] + [("preempt_done", 2_000, 9)])


def test_marker_writer_default_hands_each_row_over(tmp_path):
    from gpreempt_trace.trace.directory import TraceWriter
    from gpreempt_trace.trace.markers import MarkerWriter

    owner = TraceWriter.create(tmp_path / "t")
    with MarkerWriter(tmp_path / "t", "workload") as mw:
        mw.add("step_start", 5, seq=1)
        assert mw.waiting == []
    owner.close()


def test_controller_writes_its_markers_when_idle(tmp_path):
    """The calls' markers are queued, and written once the owner thread has nothing to do (no stop needed)."""
    from gpreempt_trace.trace.directory import TraceWriter

    owner = TraceWriter.create(tmp_path / "t")
    ctl = Controller(SchemeA(P.ScriptedIo(MarkingKfd()), PID, unchecked_ids=True), str(tmp_path / "t"),
                     max_hold_ms=None, queues=[1])
    ctl.start()
    ctl.call("preempt")
    ctl.call("resume")
    deadline = time.monotonic() + 10
    while (ctl._unmarked or ctl.markers.waiting) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ctl._unmarked and not ctl.markers.waiting
    ctl.stop("test")
    owner.close()
    rows = sorted((m["kind"], m["seq"]) for m in _markers(tmp_path / "t"))
    assert rows == sorted([("controller_attach", None), ("preempt_request", 1), ("preempt_done", 1), ("queue_result", 1),
                           ("resume_request", 2), ("resume_done", 2), ("queue_result", 2), ("controller_detach", None)],
                          key=lambda r: (r[0], r[1] or 0))


# ---- StopWatch: real ptrace ---------------------------------------------------------------------------
TARGET = "import time; print('ok', flush=True); time.sleep(60)"


@pytest.mark.skipif(os.geteuid() != 0, reason="ptrace of a sibling process needs root (Yama)")
def test_stopwatch_replaces_polling_and_ends_with_the_controller():
    target = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE)
    try:
        assert target.stdout.readline() == b"ok\n"
        io = P.ScriptedIo(ptrace_io=P.SysIo("/dev/null"))
        a = SchemeA(io, target.pid, unchecked_ids=True)
        ctl = Controller(a, None, max_hold_ms=None, queues=[1])
        before = {t.ident for t in threading.enumerate()}
        ctl.start()
        watch = a.watch
        assert watch is not None and watch.is_alive() and a.busy_poll is False
        assert watch.rd in a.fds()
        assert ctl.call("preempt")["ok"] and ctl.call("resume")["ok"]
        ctl.stop("test")
        assert not watch.is_alive() and a.watch is None
        for fd in (watch.rd, watch.wr):
            with pytest.raises(OSError):
                os.fstat(fd)
        assert {t.ident for t in threading.enumerate()} <= before
        status = open(f"/proc/{target.pid}/status").read()
        assert "\nTracerPid:\t0\n" in status  # detached
    finally:
        target.kill()
        target.wait()


def test_without_real_ptrace_the_owner_polls():
    a = SchemeA(P.ScriptedIo(), PID, unchecked_ids=True)
    a.attach()
    assert a.watch is None and a.busy_poll is True
    a.detach()


# ---- the quick path (Controller.quick) says and records what the general path does -------------------
@pytest.mark.parametrize("ans", [
    _call(),
    _call(op="resume", ret=None, ok=False, label="EPERM", errno=1, queues=[]),
    _call(queues=[[1, "invalid", 0x80000001], [7, "error", 0x40000007]]),
    _call(queues=[[9, "enoent", -2]], queue_ids=[9]),
    _call(label='100% "odd"'),  # a % in the text stays itself
])
def test_call_template_formats_the_answer(ans):
    tmpl = wire.call_template(ans)
    assert tmpl % (5, 6_000_000_000_000, 42) == wire.answer({**ans, "ts_request_ns": 5, "ts_done_ns": 6_000_000_000_000, "seq": 42})


def test_call_template_needs_its_fields_in_order():
    assert wire.call_template({"seq": 1, "ts_done_ns": 2, "ts_request_ns": 3, "ok": True}) is None


@pytest.mark.parametrize("line", [
    wire.answer(_call())[:-1], b'{"ok": false, "error": "x"}', b' {"ok": true} ', b'{"ok": true} x', b"[1, 2]", b"nan",
    b"\xff\xfe", b"", b'{"ok": tru', b'"text"',
])
def test_parse_answer_is_json_loads(line):
    try:
        expected = json.loads(line.decode())
    except ValueError:
        expected = None
    got = wire.parse_answer(line)
    assert got == expected or (got != got and expected != expected)  # nan


class Clock:
    """schemes.time: a monotonic_ns that counts (both runs see the same stamps)."""

    def __init__(self):
        self.ns = 1_000_000_000

    def monotonic_ns(self):
        self.ns += 1_000
        return self.ns


def _failing(name, arg, refs):
    if name.endswith("SUSPEND_QUEUES") or name == "AMDKFD_IOC_PREEMPT_QUEUES":
        raise P.oserror(1)  # EPERM
    return MarkingKfd()(name, arg, refs) if name.startswith("AMDKFD_IOC_PR") or name == "AMDKFD_IOC_RESUME_QUEUES" else P.default_answer(name, arg, 17)


OPS = ["preempt", "preempt", "resume", "resume", "preempt", "resume", "preempt", "resume"]


def _serve_ops(tmp_path, monkeypatch, quick: bool, scheme: str, answer, queues) -> tuple:
    """OPS through the service's read path (quick when it applies, else inline) or inline only:
    (calls quick answered, answer lines, holds reported to the watchdog slot, lines said, marker rows, ioctls)."""
    from gpreempt_trace.control import schemes
    from gpreempt_trace.trace.directory import TraceWriter
    from gpreempt_trace.trace.markers import MarkerWriter

    monkeypatch.setattr(schemes, "time", Clock())
    trace = tmp_path / ("quick" if quick else "inline")
    owner = TraceWriter.create(trace)
    io = P.ScriptedIo(answer)
    s = SchemeA(io, PID, unchecked_ids=True) if scheme == "A" else SchemeB(io, PID)
    s.attach()
    ctl = Controller(s, str(trace), max_hold_ms=None, queues=queues)
    ctl.markers = MarkerWriter(trace, "controller", batch_ms=60_000)
    holds, said = [], []
    ctl.on_hold, ctl.say = holds.append, said.append
    lines, taken = [], 0
    for op in OPS:
        q = ctl.quick(op) if quick else None
        if q is None:
            lines.append(wire.answer(ctl.inline(op)))
            failed = ctl.settle()
        else:
            lines.append(q[0])
            taken += 1
            assert q[1] == json.loads(q[0])["ok"]
            failed = q[2]
        if failed is not None:
            ctl.say_failures(failed)
    assert ctl.waiting() == sum(json.loads(x).get("issued", False) for x in lines)
    ctl._write_markers()
    ctl.markers.close()
    owner.close()
    rows = [{k: v for k, v in r.items() if k != "run_id"} for r in _markers(trace)]  # run_id: per trace
    return taken, lines, holds, said, rows, [(c[0], c[1], c[3]) for c in io.ioctls()]  # (arg bytes hold addresses)


@pytest.mark.parametrize("scheme, answer, queues", [
    ("A", None, [1, 7]),  # every queue suspended
    ("A", MarkingKfd(), [1, 7]),  # INVALID per queue: answered ok, said per queue
    ("A", _failing, [3]),  # SUSPEND fails: EPERM
    ("A", None, []),  # nothing to do: no ioctl
    ("B", MarkingKfd(), [3, 9]),  # ENOENT per entry
    ("B", None, "all"),
    ("B", _failing, "all"),
])
def test_quick_path_answers_and_records_what_the_general_path_does(tmp_path, monkeypatch, scheme, answer, queues):
    quick = _serve_ops(tmp_path, monkeypatch, True, scheme, answer, queues)
    general = _serve_ops(tmp_path, monkeypatch, False, scheme, answer, queues)
    assert quick[1] == general[1]  # the answer lines, byte for byte
    assert quick[2:] == general[2:]  # holds, lines said, marker rows, ioctls issued
    # general: a preempt while held, a resume of nothing, and everything when there are no queues
    assert quick[0] == (0 if queues == [] else 4 if answer is _failing else 6)
    assert general[0] == 0 and (quick[4] or queues == [])


# ---- the client waits awake for up to spin_us, then sleeps: the same answers and errors either way ----
def _one_shot_service(path, delay_s: float | None, answer: bytes | None):
    """A Unix socket at `path` answering one request line after delay_s with `answer` (None: closes
    without answering; delay None: never answers, holds the connection for 2 s)."""
    import socket as S

    srv = S.socket(S.AF_UNIX, S.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        conn.recv(65536)
        if delay_s is None:
            time.sleep(2)
        else:
            time.sleep(delay_s)
            if answer is not None:
                conn.sendall(answer)
        conn.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


ANSWER = wire.answer({"op": "resume", "ok": True, "label": "ok", "errno": 0, "ret": 0, "queue_ids": [1], "queues": [[1, "ok", 1]],
                      "ts_request_ns": 10, "ts_done_ns": 20, "issued": True, "seq": 3})


@pytest.mark.parametrize("spin_us, delay_s, awake", [
    (0, 0.0, None),  # sleeps at once: no look without blocking
    (1_000_000, 0.0, True), (1_000_000, 0.02, True),  # the answer comes within the spin
    (100, 0.02, False),  # the spin ends first: the answer comes to the sleeping recv
])
def test_client_gets_the_answer_awake_or_asleep(tmp_path, monkeypatch, spin_us, delay_s, awake):
    from gpreempt_trace.control import Client
    from gpreempt_trace.control import client as C

    got = []
    spin = C._spin
    monkeypatch.setattr(C, "_spin", lambda sock, ns: got.append(spin(sock, ns)) or got[-1])
    t = _one_shot_service(tmp_path / "s", delay_s, ANSWER)
    with Client(str(tmp_path / "s"), spin_us=spin_us) as c:
        assert c.resume() == json.loads(ANSWER)
    t.join(5)
    assert got == ({True: [ANSWER], False: [b""], None: []}[awake])


@pytest.mark.parametrize("spin_us", [0, 100, 1_000_000])
def test_client_sees_a_service_that_closes_while_it_waits(tmp_path, spin_us):
    from gpreempt_trace.control import Client, ControlError

    t = _one_shot_service(tmp_path / "s", 0.01, None)
    with pytest.raises(ControlError, match="closed the connection"):
        Client(str(tmp_path / "s"), spin_us=spin_us).resume()
    t.join(5)


def test_client_timeout_holds_with_the_spin(tmp_path):
    from gpreempt_trace.control import Client, ControlError

    t = _one_shot_service(tmp_path / "s", None, None)
    # the service holds the connection for 2 s, then closes: "closed the connection" would mean no timeout
    with pytest.raises(ControlError, match="did not answer resume within 0.2 s"):
        Client(str(tmp_path / "s"), timeout_s=0.2, spin_us=50_000).resume()
    t.join(5)


def test_client_refuses_a_negative_spin():
    from gpreempt_trace.control import Client
    from gpreempt_trace.errors import GptError

    with pytest.raises(GptError, match="spin_us -1 is negative"):
        Client("/nonexistent", spin_us=-1)


_PEER = r'''
import os, socket, sys, time
os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(",")})
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(4)
print("READY", flush=True)
time.sleep(30)
'''


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to place client and service apart")
@pytest.mark.parametrize("client_cpus, peer_cpus, alone", [
    ([0], [0], True),  # both pinned to one CPU, the same: the client sleeps at once
    ([0], [1], False), ([0, 1], [0], False), ([0], [0, 1], False), ([0, 1], [0, 1], False),
])
def test_client_sleeps_at_once_only_where_it_shares_its_only_cpu(tmp_path, client_cpus, peer_cpus, alone):
    from gpreempt_trace.control import Client

    cpus = sorted(os.sched_getaffinity(0))
    mine, theirs = {cpus[i] for i in client_cpus}, {cpus[i] for i in peer_cpus}
    path = str(tmp_path / "s")
    p = subprocess.Popen([sys.executable, "-c", _PEER, path, ",".join(map(str, theirs))], stdout=subprocess.PIPE, text=True)
    before = os.sched_getaffinity(0)
    try:
        assert p.stdout.readline().strip() == "READY"
        os.sched_setaffinity(0, mine)
        spinning, sleeping = Client(path, spin_us=100).connect(), Client(path, spin_us=0).connect()
        assert (spinning.awake_us, sleeping.awake_us) == (0 if alone else 100, 0)
        spinning.close(), sleeping.close()
    finally:
        os.sched_setaffinity(0, before)
        p.kill()
        p.wait()
