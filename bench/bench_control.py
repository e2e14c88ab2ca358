"""Control-path overhead of the preemption controller, next to a socket floor (no timed assertions; numbers only).

What runs: a real `preempt serve` (service.serve, scheme A) in its own process, holding a stand-in target
(a sleeping Python process with /dev/null open) with REAL ptrace (PTRACE_SEIZE, the owner thread's
waitpid servicing, detach at the end: needs root). Only KFD is missing on this VM: each KFD ioctl is a
real ioctl(2) on /dev/null (ENOTTY, ignored) answered as an idle KFD would (io.default_answer), so the
ctypes call and the kernel entry are in the figures, KFD's own work is not. A Client in this process
calls preempt()/resume() alternately over the Unix socket. Two services: without a trace, and with
`-o TRACE` (markers written, the realistic configuration).

The floor: a bare socketpair ping-pong between this process and a second Python process, the same bytes
each way as a request and its answer, the echo side taking a CLOCK_MONOTONIC stamp after its recv and
before its send (as the service does around the ioctl). Floor and control calls run interleaved in blocks
of BLOCK, so both see the same load. Beside them, "minimal": the least a Python service can do per
request (poll, recv, one ctypes ioctl(2) between two clock reads, a %-formatted answer of the same
bytes; the client json.loads it), as a multiple of the floor: what is left to the design. Per call:
  call → issued : client call starts → the service is about to issue the ioctl (floor: echo has the bytes)
  return → seen : the ioctl returned → the client has the answer (floor: echo sends → client has it)
  round trip    : client call starts → the client has the answer
Placement: every figure is taken twice, with the client and its partner (the service's threads, the echo,
the minimal service) pinned to ONE CPU, and to TWO different CPUs. Left to the scheduler, a pair either
shares a CPU (each wake-up lands on the CPU its waker is about to leave) or runs on two (each wake-up is
an IPI to an idle vCPU: ~+15 us per direction on this VM), and which one a pair gets changes from block
to block (measured: 19.8 vs 49.6 us p50 for the same service in neighbouring blocks, the floor 11.0 vs
32.3), so unpinned ratios compare lotteries. Pinned, floor and controller see the same placement.
The client: gpreempt_trace.control.Client as an online server gets it (awake up to client.SPIN_US for
each answer before it sleeps, yielding its CPU between looks; asleep at once where it shares its only
CPU with the service), and once more with spin_us=0 (sleeping in
recv at once, as the floor's and the minimal service's clients do), without a trace.
`python -m bench control` (10000 calls per service and placement, half preempt, half resume), or
`python -m bench.bench_control N` (N calls); `python -m bench.bench_control N unpinned`: left to the
scheduler, each block's p50 (the lottery itself).
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK = 500

SERVICE = r'''
import ctypes, json, sys
from gpreempt_trace.control import io as P, service

QUEUE_OPS = {"AMDKFD_IOC_DBG_TRAP:SUSPEND_QUEUES", "AMDKFD_IOC_DBG_TRAP:RESUME_QUEUES"}

class BenchIo(P.SysIo):
    """Real ptrace/waitpid (SysIo); a KFD ioctl is a real ioctl(2) on kfd_path (/dev/null: ENOTTY, ignored)
    answered as an idle KFD would (SUSPEND/RESUME: 0, as cheaply as SysIo's return-value check)."""
    def ioctl(self, name, request, arg, refs=()):
        self.libc.ioctl(self.fd, request, ctypes.addressof(arg))
        return 0 if name in QUEUE_OPS else P.default_answer(name, arg, 17)

import os
os.sched_setaffinity(0, json.loads(sys.argv[2]))  # before any thread starts: all of them inherit it
opts = service.PreemptOptions(**json.loads(sys.argv[1]))
service.serve(opts, io=BenchIo(opts.kfd_path), watchdog=False, on_ready=lambda st: print("READY", flush=True))
'''

ECHO = r'''
import socket, struct, sys, time
s = socket.socket(fileno=int(sys.argv[1]))
pad = b"x" * (int(sys.argv[2]) - 17) + b"\n"
now = time.monotonic_ns
while True:
    if not s.recv(65536):
        break
    t = now()
    s.send(struct.pack("<Q", t) + struct.pack("<Q", now()) + pad)
'''

# The least a Python service can do per request (the reference between the floor and the controller):
# poll(), recv, one ctypes ioctl(2) on /dev/null between two clock reads, a %-formatted answer; the
# client decodes it with json.loads.
MINIMAL = r'''
import ctypes, os, select, socket, sys, time
s = socket.socket(fileno=int(sys.argv[1]))
libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
fd = os.open("/dev/null", os.O_RDWR)
arg = ctypes.create_string_buffer(32)
addr = ctypes.addressof(arg)
line = sys.argv[2]
now = time.monotonic_ns
p = select.poll()
p.register(s.fileno(), select.POLLIN)
seq = 0
while True:
    p.poll()
    if not s.recv(65536):
        break
    t0 = now()
    libc.ioctl(fd, 0xC0204B26, addr)
    t1 = now()
    seq += 1
    s.send((line % (t0, t1, seq)).encode())
'''

TARGET = "import time; f = open('/dev/null'); print('ok', flush=True); time.sleep(3600)"


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _stats(xs) -> dict:
    return {"p50_us": statistics.median(xs) / 1000, "p99_us": _pct(xs, 0.99) / 1000, "max_us": max(xs) / 1000}


class _Floor:
    """The echo process at the other end of a socketpair."""

    def __init__(self, answer_bytes: int, cpus: set):
        self.a, b = socket.socketpair()
        self.p = subprocess.Popen([sys.executable, "-c", ECHO, str(b.fileno()), str(answer_bytes)], pass_fds=[b.fileno()])
        os.sched_setaffinity(self.p.pid, cpus)  # one thread: its pid
        b.close()

    def calls(self, n: int, msg: bytes, out: list) -> None:
        a, now = self.a, time.monotonic_ns
        for _ in range(n):
            t0 = now()
            a.send(msg)
            r = a.recv(65536)
            t1 = now()
            out[0].append(int.from_bytes(r[:8], "little") - t0)
            out[1].append(t1 - int.from_bytes(r[8:16], "little"))
            out[2].append(t1 - t0)

    def close(self) -> None:
        self.a.close()
        self.p.wait(30)


class _Minimal(_Floor):
    """MINIMAL at the other end of a socketpair, answering with the controller's answer's shape."""

    def __init__(self, answer: bytes, cpus: set):
        ans = json.loads(answer)
        ans["ts_request_ns"], ans["ts_done_ns"], ans["seq"] = "%d", "%d", "%d"
        line = json.dumps(ans, separators=(",", ":")).replace('"%d"', "%d") + "\n"
        self.a, b = socket.socketpair()
        self.p = subprocess.Popen([sys.executable, "-c", MINIMAL, str(b.fileno()), line], pass_fds=[b.fileno()])
        os.sched_setaffinity(self.p.pid, cpus)
        b.close()

    def calls(self, n: int, msg: bytes, out: list) -> None:
        a, now, loads = self.a, time.monotonic_ns, json.loads
        for _ in range(n):
            t0 = now()
            a.send(msg)
            ans = loads(a.recv(65536).decode())
            t1 = now()
            out[0].append(ans["ts_request_ns"] - t0)
            out[1].append(t1 - ans["ts_done_ns"])
            out[2].append(t1 - t0)


def _wire_sizes(path: str) -> tuple[bytes, bytes]:
    """A preempt request and its answer as they are on the wire (then resumed): the floor moves the same bytes."""
    from gpreempt_trace.control import wire

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        out = []
        for op in ("preempt", "resume"):
            s.sendall(wire.request(op, {}))
            buf = b""
            while not buf.endswith(b"\n"):
                buf += s.recv(65536)
            out.append(buf)
    return wire.request("preempt", {}), out[0]


def placements() -> dict:
    """name -> (the client's CPU, its partners' CPUs): one CPU for both; two CPUs where there are two."""
    cpus = sorted(os.sched_getaffinity(0))
    out = {"one CPU": ({cpus[0]}, {cpus[0]})}
    if len(cpus) > 1:
        out["two CPUs"] = ({cpus[0]}, {cpus[1]})
    return out


def measure(n: int = 10_000, trace: bool = False, placement: tuple | None = None, spin_us: int | None = None) -> dict:
    """`placement`: (the client's CPUs, the partners' CPUs); None: the first of placements().
    `spin_us`: the Client's (None: its default, client.SPIN_US)."""
    from gpreempt_trace.control import Client

    mine, theirs = placement or next(iter(placements().values()))
    before = os.sched_getaffinity(0)

    tmp = Path(tempfile.mkdtemp(prefix="gpt-bench-ctl-"))
    target = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    target.stdout.readline()
    sock = str(tmp / "ctl.sock")
    opts = {"pid": target.pid, "socket": sock, "kfd_path": "/dev/null", "queues": [1, 7], "unchecked_ids": True,
            "max_hold": 3_600_000, "output": str(tmp / "trace") if trace else None}
    svc = subprocess.Popen([sys.executable, "-c", SERVICE, json.dumps(opts), json.dumps(sorted(theirs))],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    floor = minimal = None
    os.sched_setaffinity(0, mine)
    try:
        if svc.stdout.readline().strip() != "READY":
            raise SystemExit("the bench's preempt service did not start (scheme A with real ptrace needs root)")
        req, answer = _wire_sizes(sock)
        floor = _Floor(len(answer), theirs)
        minimal = _Minimal(answer, theirs)
        c = (Client(sock) if spin_us is None else Client(sock, spin_us=spin_us)).connect()
        ctl: tuple[list, list, list] = ([], [], [])
        flo: tuple[list, list, list] = ([], [], [])
        mini: tuple[list, list, list] = ([], [], [])
        now = time.monotonic_ns
        done = 0
        blocks = []
        while done < n:
            k = min(BLOCK, n - done)
            floor.calls(k, req, flo)
            minimal.calls(k, req, mini)
            for i in range(k):
                op = c.preempt if i % 2 == 0 else c.resume
                t0 = now()
                ans = op()
                t1 = now()
                ctl[0].append(ans["ts_request_ns"] - t0)
                ctl[1].append(t1 - ans["ts_done_ns"])
                ctl[2].append(t1 - t0)
            blocks.append(tuple(statistics.median(x[2][-k:]) / 1000 for x in (flo, mini, ctl)))
            done += k
        c.close()
    finally:
        os.sched_setaffinity(0, before)
        svc.terminate()
        svc.wait(30)
        target.kill()
        target.wait()
        for p in (floor, minimal):
            if p is not None:
                p.close()
    out = {"calls": n, "trace": trace, "spin_us": spin_us, "spun_us": c.awake_us, "cpus": (sorted(mine), sorted(theirs)), "blocks": blocks}
    for i, name in enumerate(("call_to_issued", "return_to_seen", "round_trip")):
        out[name] = _stats(ctl[i])
        out[name + "_floor"] = _stats(flo[i])
        out[name + "_minimal"] = _stats(mini[i])
    return out


def main(argv=None) -> int:
    argv = sys.argv[2:] if argv is None and len(sys.argv) > 2 else (argv or [])
    n = int(argv[0]) if argv else 10_000
    if os.geteuid() != 0:
        print("control: skipped (the service ptraces its stand-in target: needs root)")
        return 0
    if argv[1:] == ["unpinned"]:
        every = os.sched_getaffinity(0)
        r = measure(n, False, (every, every))
        print(f"control path left to the scheduler (CPUs {sorted(every)}), round trip p50 per block of {BLOCK}, us:")
        for i, (f, m, c) in enumerate(r["blocks"]):
            print(f"  block {i:3d}: floor {f:6.1f}   minimal {m:6.1f}   controller {c:6.1f}")
        print(f"  (load average {os.getloadavg()[0]:.1f})")
        return 0
    print(f"control path, {n} calls per service and placement (preempt/resume alternating; scheme A service in its own process, "
          f"real ptrace, each KFD ioctl a real ioctl(2) on /dev/null); floor: socketpair ping-pong between two Python processes, "
          f"same bytes, interleaved in blocks of {BLOCK}; client and partner pinned to one CPU / two CPUs:")
    from gpreempt_trace.control.client import SPIN_US

    cpu0 = time.process_time()
    for where, placement in placements().items():
        for trace, spin in ((False, None), (True, None), (False, 0)):
            r = measure(n, trace, placement, spin)
            print(f" {where} (client on CPU {r['cpus'][0]}, partners on {r['cpus'][1]}), "
                  f"service {'with -o TRACE (markers written)' if trace else 'without a trace'}, "
                  + ("client sleeping at once (spin_us=0: the floor's way of waiting):" if spin is not None else
                     f"client awake up to {SPIN_US} us for the answer (the default):" if r["spun_us"] else
                     "default client, which sleeps at once here (it shares its only CPU with the service):"))
            _show(r)
    print(f"  (target: round trip within 2x of the floor at p50 and p99, the default client. minimal: the least a Python "
          f"service can do per request, same bytes, as a multiple of the floor (its client and the floor's sleep at once); load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs; "
          f"this process's CPU time {time.process_time() - cpu0:.1f} s)")
    return 0


def _show(r: dict) -> None:
    for name in ("call_to_issued", "return_to_seen", "round_trip"):
        v, f, m = r[name], r[name + "_floor"], r[name + "_minimal"]
        print(f"  {name:15s} p50 {v['p50_us']:7.1f} us (floor {f['p50_us']:6.1f}, {v['p50_us'] / f['p50_us']:4.1f}x; "
              f"minimal {m['p50_us'] / f['p50_us']:4.1f}x)   "
              f"p99 {v['p99_us']:7.1f} us (floor {f['p99_us']:6.1f}, {v['p99_us'] / f['p99_us']:4.1f}x; "
              f"minimal {m['p99_us'] / f['p99_us']:4.1f}x)   max {v['max_us']:8.1f} us (floor {f['max_us']:8.1f})")

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
