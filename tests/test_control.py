"""The controller's state machines against an injected ioctl/ptrace layer (control.io.ScriptedIo): the
exact request numbers and argument bytes of every call, in order, for scheme A and scheme B, the
per-queue INVALID/ERROR bits, the runtime handshake, queue-id checks, max-hold and markers.

Expected values are the kernel's numbers written out here (uapi kfd_ioctl.h, ptrace.h, the scheme B
series' header), never read back from gpreempt_trace.contracts.uapi or control.io, the code under test."""
from __future__ import annotations

import errno
import os
import struct
import time
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpreempt_trace.control import io as P
from gpreempt_trace.control import schemes
from gpreempt_trace.control.owner import Controller
from gpreempt_trace.control.schemes import EVENTS, SchemeA, SchemeB
from gpreempt_trace.errors import GptError

PID = 4321
DBG = 0xC0204B26  # AMDKFD_IOC_DBG_TRAP: _IOWR('K', 0x26, 32 bytes)
GPU = 0xF7BC
QUEUE_INVALID = 1 << 31  # KFD_DBG_QUEUE_INVALID_MASK: the kernel's mark on an id it does not have
EC_QUEUE_NEW = 1 << 30  # KFD_EC_MASK(EC_QUEUE_NEW = 31)
EC_PROCESS_RUNTIME = 1 << 47  # KFD_EC_MASK(EC_PROCESS_RUNTIME = 48)
PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
GRACE_DEFAULT, FLAG_ALL = 0xFFFFFFFF, 1  # scheme B: KFD_PREEMPT_GRACE_PERIOD_DEFAULT, KFD_PREEMPT_QUEUES_FLAG_ALL


class FakeKfd:
    """A KFD with the given queues; SUSPEND/RESUME write ids back like the kernel (bit 31 for ids it
    does not have). `events` are debugger events QUERY_DEBUG_EVENT hands out, one per call."""

    def __init__(self, queues=(3, 5), minor=17, events=(), fail=None):
        self.queues, self.minor, self.events, self.fail = list(queues), minor, list(events), fail or {}

    def __call__(self, name, arg, refs):
        if name in self.fail:
            raise P.oserror(self.fail[name])
        op = name.partition(":")[2]
        if name == "AMDKFD_IOC_GET_VERSION":
            arg.major_version, arg.minor_version = 1, self.minor
        elif op == "ENABLE":
            refs[0].runtime_state = 1
            arg.enable.rinfo_size = 16
        elif op == "QUERY_DEBUG_EVENT":
            if not self.events:
                raise P.oserror(errno.EAGAIN)
            arg.query_debug_event.exception_mask = self.events.pop(0)
        elif op == "GET_QUEUE_SNAPSHOT":
            n = arg.queue_snapshot.num_queues
            if n:
                for i, q in enumerate(self.queues[:n]):
                    refs[0][i].queue_id, refs[0][i].gpu_id = q, GPU
            arg.queue_snapshot.num_queues = len(self.queues)
        elif op in ("SUSPEND_QUEUES", "RESUME_QUEUES"):
            arr = refs[0]
            n = arg.suspend_queues.num_queues if op == "SUSPEND_QUEUES" else arg.resume_queues.num_queues
            done = 0
            for i in range(n):
                if arr[i] in self.queues:
                    done += 1
                else:
                    arr[i] |= QUEUE_INVALID
            return done
        return 0


def dbg(op: int, union: bytes = b"") -> bytes:
    return struct.pack("<II", PID, op) + union.ljust(24, b"\0")


def test_scheme_a_full_cycle_exact_bytes():
    sio = P.ScriptedIo(FakeKfd(queues=(3, 5)))
    a = SchemeA(sio, PID)
    a.attach()
    assert a.queues == {3: GPU, 5: GPU} and a.runtime_state == 1
    wr = a.wr  # the event pipe's write end KFD is handed (closed by detach)
    assert wr >= 0 and os.get_blocking(wr) is False
    res = a.suspend(a.resolve([3, 5]), grace=100)
    assert res.ok and res.ret == 2 and [(q.queue_id, q.result) for q in res.queues] == [(3, "ok"), (5, "ok")]
    res = a.resume()
    assert res.ok and res.ret == 2
    assert a.detach() == []
    c = sio.calls
    assert c[0][:3] == ("AMDKFD_IOC_GET_VERSION", 0x80084B01, bytes(8))
    assert c[1] == ("ptrace", PTRACE_SEIZE, PID, 0x5E)  # options TRACEFORK|VFORK|CLONE|EXEC|EXIT
    name, req, arg, refs, addrs = c[2]
    assert (name, req) == ("AMDKFD_IOC_DBG_TRAP:ENABLE", DBG)
    assert arg == dbg(0, struct.pack("<QQII", EC_PROCESS_RUNTIME | EC_QUEUE_NEW, addrs[0], 16, wr))
    assert EVENTS == EC_PROCESS_RUNTIME | EC_QUEUE_NEW
    assert c[3][:3] == ("AMDKFD_IOC_DBG_TRAP:QUERY_DEBUG_EVENT", DBG, dbg(11, struct.pack("<QII", EVENTS, 0, 0)))
    assert c[4][:3] == ("AMDKFD_IOC_DBG_TRAP:GET_QUEUE_SNAPSHOT", DBG, dbg(13, struct.pack("<QQII", 1 << 30, 0, 0, 64)))
    name, req, arg, refs, addrs = c[5]
    assert arg == dbg(13, struct.pack("<QQII", 1 << 30, addrs[0], 2, 64)) and len(refs[0]) == 128
    name, req, arg, refs, addrs = c[6]
    assert (name, req) == ("AMDKFD_IOC_DBG_TRAP:SUSPEND_QUEUES", DBG)
    assert arg == dbg(6, struct.pack("<QQII", 0, addrs[0], 2, 100)) and refs[0] == struct.pack("<II", 3, 5)
    name, req, arg, refs, addrs = c[7]
    assert arg == dbg(7, struct.pack("<QII", addrs[0], 2, 0)) and refs[0] == struct.pack("<II", 3, 5)
    assert c[8][:3] == ("AMDKFD_IOC_DBG_TRAP:DISABLE", DBG, dbg(1))
    assert c[9:] == [("ptrace", PTRACE_INTERRUPT, PID, 0), ("ptrace", PTRACE_DETACH, PID, 0)]


def test_scheme_a_reports_invalid_bits_with_unchecked_ids():
    sio = P.ScriptedIo(FakeKfd(queues=()))
    a = SchemeA(sio, PID, unchecked_ids=True)
    a.attach()
    res = a.suspend(a.resolve([1, 7]), grace=0)
    assert res.ok and res.ret == 0
    assert [(q.queue_id, q.result, q.raw) for q in res.queues] == [(1, "invalid", 0x80000001), (7, "invalid", 0x80000007)]


def test_scheme_a_refuses_unowned_queue_before_suspending():
    sio = P.ScriptedIo(FakeKfd(queues=(3, 5)))
    a = SchemeA(sio, PID)
    a.attach()
    with pytest.raises(GptError, match="owns no queue 9"):
        a.resolve([3, 9])
    assert not [c for c in sio.ioctls() if c[0].endswith("SUSPEND_QUEUES")]


def test_scheme_a_refuses_kfd_1_11_in_one_line():
    sio = P.ScriptedIo(FakeKfd(minor=11))
    with pytest.raises(GptError) as e:
        SchemeA(sio, PID).attach()
    assert "1.11" in e.value.line() and "1.13" in e.value.line() and "\n" not in e.value.line()
    assert [c[0] for c in sio.calls] == ["AMDKFD_IOC_GET_VERSION"]  # no ptrace, no DBG_TRAP


@pytest.mark.parametrize("err, words", [(errno.EALREADY, "already has a KFD debugger"), (errno.EINVAL, "sched_policy=2"),
                                        (errno.EBUSY, "EBUSY: PC sampling is active on the target"),
                                        (errno.EPERM, "ptrace parent"), (errno.ESRCH, "no KFD process")])
def test_scheme_a_enable_errors_are_named(err, words):
    sio = P.ScriptedIo(FakeKfd(fail={"AMDKFD_IOC_DBG_TRAP:ENABLE": err}))
    a = SchemeA(sio, PID)
    with pytest.raises(GptError, match=words):
        a.attach()
    a.detach()  # what Controller does after a failed attach: no DISABLE (never enabled), ptrace let go
    assert [c[0] for c in sio.ioctls()] == ["AMDKFD_IOC_GET_VERSION", "AMDKFD_IOC_DBG_TRAP:ENABLE"]
    assert sio.calls[-2:] == [("ptrace", PTRACE_INTERRUPT, PID, 0), ("ptrace", PTRACE_DETACH, PID, 0)]


def test_runtime_handshake_answered_and_new_queues_snapshotted():
    kfd = FakeKfd(queues=(3,), events=[EC_PROCESS_RUNTIME, EC_QUEUE_NEW])
    sio = P.ScriptedIo(kfd)
    a = SchemeA(sio, PID)
    a.attach()
    names = [c[0].partition(":")[2] for c in sio.ioctls()][2:]
    assert names == ["QUERY_DEBUG_EVENT", "SEND_RUNTIME_EVENT", "QUERY_DEBUG_EVENT", "QUERY_DEBUG_EVENT",
                     "GET_QUEUE_SNAPSHOT", "GET_QUEUE_SNAPSHOT", "GET_QUEUE_SNAPSHOT", "GET_QUEUE_SNAPSHOT"]
    send = [c for c in sio.ioctls() if c[0].endswith("SEND_RUNTIME_EVENT")][0]
    assert send[2] == dbg(2, struct.pack("<QII", EC_PROCESS_RUNTIME, 0, 0))
    assert a.handshakes == 1
    # the pipe byte of a later event is serviced by service()
    kfd.events.append(EC_PROCESS_RUNTIME)
    os.write(a.wr, b".")
    a.service()
    assert a.handshakes == 2


def test_scheme_b_exact_bytes_and_enotty():
    calls = []

    def kfd(name, arg, refs):
        calls.append(name)
        if name == "AMDKFD_IOC_RESUME_QUEUES" and arg.pid == 0:
            raise P.oserror(errno.EINVAL)  # the series: an all-zero struct is EINVAL
        if refs:
            refs[0][1].result = -errno.ENOENT
        return 1

    sio = P.ScriptedIo(kfd)
    b = SchemeB(sio, PID)
    b.attach()
    res = b.suspend([3, 9], grace=0)
    assert res.ok and [(q.queue_id, q.result) for q in res.queues] == [(3, "ok"), (9, "enoent")]
    name, req, arg, refs, addrs = sio.ioctls()[2]
    assert (name, req) == ("AMDKFD_IOC_PREEMPT_QUEUES", 0xC0184B89)
    assert arg == struct.pack("<QIIII", addrs[0], PID, 2, GRACE_DEFAULT, 0)
    assert refs[0] == struct.pack("<IiIi", 3, 0, 9, 0)
    b.resume()
    assert sio.ioctls()[3][:2] == ("AMDKFD_IOC_RESUME_QUEUES", 0xC0184B8A)
    assert sio.ioctls()[1][2] == bytes(24)  # the probe
    res = b.suspend("all", 0)
    assert sio.ioctls()[4][2] == struct.pack("<QIIII", 0, PID, 0, GRACE_DEFAULT, FLAG_ALL)
    assert not [c for c in sio.calls if c[0] == "ptrace"]

    old = P.ScriptedIo(lambda name, arg, refs: (_ for _ in ()).throw(P.oserror(errno.ENOTTY)) if "QUEUES" in name else 0)
    with pytest.raises(GptError, match="ENOTTY") as e:
        SchemeB(old, PID).attach()
    assert "\n" not in e.value.line()


def _markers(trace):
    files = sorted((trace / "markers").glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files if pq.read_metadata(f).num_rows])
    return t.sort_by("ts_ns").to_pylist()


def scripted_clock(monkeypatch, *ns):
    """The schemes' clock returns these CLOCK_MONOTONIC readings in turn (the rest of `time` is real)."""
    readings = iter(ns)
    monkeypatch.setattr(schemes, "time", SimpleNamespace(monotonic_ns=lambda: next(readings), monotonic=time.monotonic,
                                                         sleep=time.sleep))


def test_controller_markers_pair_request_and_done(tmp_path, monkeypatch):
    from gpreempt_trace.trace.directory import TraceWriter

    owner = TraceWriter.create(tmp_path / "t")
    ctl = Controller(SchemeA(P.ScriptedIo(FakeKfd(queues=(3, 5))), PID), str(tmp_path / "t"), max_hold_ms=None, queues=[3, 5])
    ctl.start()
    t0 = time.monotonic_ns()  # after the attach marker; the detach marker comes microseconds after t0 + 2075
    scripted_clock(monkeypatch, t0 + 1_000, t0 + 1_050, t0 + 2_000, t0 + 2_075)  # preempt's call and return, resume's
    p = ctl.call("preempt")
    r = ctl.call("resume")
    ctl.stop("test")
    owner.close()
    assert p["ok"] and r["ok"] and p["seq"] == 1 and r["seq"] == 2
    assert [x - t0 for x in (p["ts_request_ns"], p["ts_done_ns"], r["ts_request_ns"], r["ts_done_ns"])] == [1_000, 1_050, 2_000, 2_075]
    rows = [(m["kind"], m["seq"], m["queue_ids"], m["label"]) for m in _markers(tmp_path / "t")]
    assert rows == [
        ("controller_attach", None, [3, 5], "scheme A"),
        ("preempt_request", 1, [3, 5], None), ("preempt_done", 1, [3, 5], "ok"),
        ("queue_result", 1, [3], "ok"), ("queue_result", 1, [5], "ok"),
        ("resume_request", 2, [3, 5], None), ("resume_done", 2, [3, 5], "ok"),
        ("queue_result", 2, [3], "ok"), ("queue_result", 2, [5], "ok"),
        ("controller_detach", None, None, "test"),
    ]
    ms = _markers(tmp_path / "t")
    assert all(m["scheme"] == "A" and m["target_tgid"] == PID for m in ms)
    assert [(m["kind"], m["ts_ns"] - t0, m["value_ns"]) for m in ms[1:9]] == [
        ("preempt_request", 1_000, None), ("preempt_done", 1_050, 50),
        ("queue_result", 1_050, 3), ("queue_result", 1_050, 5),  # value_ns: the id word the kernel wrote back
        ("resume_request", 2_000, None), ("resume_done", 2_075, 75),
        ("queue_result", 2_075, 3), ("queue_result", 2_075, 5)]
    assert {m["gpu_id"] for m in ms[1:9]} == {GPU}


def test_max_hold_resumes_on_its_own(tmp_path):
    """Nobody asks for the resume: the controller issues it itself once max-hold has passed."""
    from gpreempt_trace.trace.directory import TraceWriter

    owner = TraceWriter.create(tmp_path / "t")
    sio = P.ScriptedIo(FakeKfd(queues=(3,)))
    ctl = Controller(SchemeA(sio, PID), str(tmp_path / "t"), max_hold_ms=50, queues=[3])
    ctl.start()
    assert ctl.call("preempt")["ok"]

    def names():
        return [c[0].partition(":")[2] for c in list(sio.calls) if c[0] != "ptrace"]

    deadline = time.monotonic() + 30  # a bound for a stalled machine, not a timing claim
    while "RESUME_QUEUES" not in names() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the scripted KFD's call log
    st = ctl.call("status")
    ctl.stop()
    owner.close()
    assert st["held"] is None
    assert names().count("SUSPEND_QUEUES") == 1 and names().count("RESUME_QUEUES") == 1
    assert names().index("RESUME_QUEUES") < names().index("DISABLE")
    rows = [(m["kind"], m["seq"], m["label"]) for m in _markers(tmp_path / "t") if m["kind"].startswith("resume")]
    assert rows == [("resume_request", 2, "max-hold"), ("resume_done", 2, "ok")]


def test_dry_run_prints_one_line_per_ioctl(capsys):
    lines: list[str] = []
    a = SchemeA(P.DryRunIo(lines.append), PID, unchecked_ids=True)
    a.attach()
    a.suspend([1, 7], 5)
    a.resume()
    a.detach()
    assert [ln.split()[0] for ln in lines] == [
        "AMDKFD_IOC_GET_VERSION", "AMDKFD_IOC_DBG_TRAP:ENABLE", "AMDKFD_IOC_DBG_TRAP:QUERY_DEBUG_EVENT",
        "AMDKFD_IOC_DBG_TRAP:GET_QUEUE_SNAPSHOT", "AMDKFD_IOC_DBG_TRAP:SUSPEND_QUEUES",
        "AMDKFD_IOC_DBG_TRAP:RESUME_QUEUES", "AMDKFD_IOC_DBG_TRAP:DISABLE"]
    assert lines[0] == "AMDKFD_IOC_GET_VERSION 0x80084b01 0000000000000000"
    assert lines[-1] == f"AMDKFD_IOC_DBG_TRAP:DISABLE 0xc0204b26 {dbg(1).hex()}"
    for ln in lines:
        name, req, hexbytes = ln.split()
        assert req.startswith("0x") and hexbytes == hexbytes.lower() and len(bytes.fromhex(hexbytes)) in (8, 32)
