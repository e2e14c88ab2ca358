"""Soak (issue 24): the controller and the recorder run for long, are killed at random moments, and every
resource they hold comes back. Prints figures; tests/test_soak.py asserts the behaviour on a few cycles.

    python -m bench.soak [--long] [--seed S] [PART ...]      # on this machine (make soak: the short version)
    python -m bench.soak --lab [--long] [PART ...]           # inside the Debian 6.12 lab guest (real KFD)

PARTs (default: all):
- controller: `preempt serve` + the client API, N suspend/resume cycles per scheme; the service's open fds,
  RSS and threads over the first and last tenth of the cycles; nothing held at the end; new dmesg errors.
- kill: N runs each of (a) SIGKILL of the controller at a seeded random moment (starting, attaching,
  holding or idle), (b) SIGKILL of the target while held, (c) SIGSTOP of the controller past --max-hold;
  after each: the target runs untraced and a new controller attaches at once. --schemes A|B|A,B and
  --scenarios [A:|B:]NAME[=N],... run only some of them (e.g. a top-up with new seeds).
- record: N `record` start/stop cycles (kill -9 in a seeded third): BPF programs/maps/links (system-wide,
  by id), perf-event and BPF fds (/proc/*/fdinfo) and tracefs probe events back to the baseline after
  each; every trace readable; the events a killed run lost (kill time - its last recorded event).
- experiment: `experiment ab --repeat N`: every planned run completed or failed with its cause, none missing.

Where /dev/kfd exists (the lab) the controller is the real `preempt serve` on the real KFD (scheme A:
made-up ids 1,7 --unchecked-ids, the KFD answers INVALID; scheme B with --queues all where the patched
module is loaded). Without it (this VM) the controller is `serve` with REAL ptrace, socket, owner thread
and watchdog and a scripted KFD (scripted_serve: each ioctl appended to a file as it is issued, so what
was left suspended is read from the ioctls issued, not inferred from answers; nothing kept in memory,
so the RSS is the service's own).

The kill runs fork each controller and target from the soak process (fork_call: its imports are done
once; the child runs the same cli main / service.serve / TARGET code, with only its log as fds) instead of
starting a new interpreter, which takes 10-30 s under TCG; the controller's watchdog is still exec'd as in
production. --exec starts them the old way; --exec-baseline N measures both on the same seeds.
"""
from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PY = sys.executable
PARTS = ("controller", "kill", "record", "experiment")
SHORT = {"cycles": 100, "kill": 10, "record": 10, "experiment": 10}
LONG = {"cycles": 1000, "kill": 100, "record": 100, "experiment": 100}
DMESG_BAD = re.compile(r"error|fail|bug|warn|oops|call trace|hang|timeout|refused", re.I)

TARGET = r'''
import ctypes, os, sys, time
kfd, runtime = sys.argv[1], sys.argv[2] == "1"
fd = os.open(kfd, os.O_RDWR)
if runtime:  # the debugger ABI's SUSPEND/RESUME need the target's runtime enabled
    sys.path.insert(0, sys.argv[3])
    from gpreempt_trace.contracts import uapi as U
    libc = ctypes.CDLL(None, use_errno=True)
    rdebug = ctypes.c_uint64(0)
    a = U.RuntimeEnableArgs(r_debug=ctypes.addressof(rdebug), mode_mask=1, capabilities_mask=0)
    print(f"runtime rc={libc.ioctl(fd, ctypes.c_ulong(U.RUNTIME_ENABLE), ctypes.byref(a))}", flush=True)
print("ready", flush=True)
n = 0
while True:
    time.sleep(0.02)
    n += 1
    if n % 5 == 0:
        print(f"tick {n}", flush=True)
'''

# a steady ioctl load on /dev/null for the recorder (--kfd-path /dev/null records it): GET_VERSION every ms
LOAD = r'''
import fcntl, os, sys, time
fd = os.open("/dev/null", os.O_RDWR)
req = 0x80084B01
buf = bytearray(8)
while True:
    try:
        fcntl.ioctl(fd, req, buf)
    except OSError:
        pass
    time.sleep(0.001)
'''


def wait_for(cond, timeout_s: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


# ---- fork instead of exec (the lab: a Python start under TCG takes 10-30 s) ---------------------------
FORK = False  # kill runs: fork the controller and the target from this process (imports done once) instead
# of exec'ing a new interpreter each time; the child runs the same code (cli main / service.serve / TARGET)
STOP_AT = float("inf")  # kill runs: no new run after this time.monotonic() (--kill-budget's share of a scenario)
_PRELOAD = ("gpreempt_trace.cli.main", "gpreempt_trace.cli.commands.preempt", "gpreempt_trace.control.service",
            "gpreempt_trace.control.schemes", "gpreempt_trace.control.watchdog", "gpreempt_trace.contracts.uapi")


def preload() -> None:
    import importlib

    for m in _PRELOAD:
        importlib.import_module(m)


class Forked:
    """What the soak uses of subprocess.Popen, for a child made by fork_call (this process is its parent)."""

    def __init__(self, pid: int, what: str):
        self.pid, self.args, self.returncode = pid, what, None

    def poll(self):
        if self.returncode is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(st)
        return self.returncode

    def wait(self, timeout=None):
        if not wait_for(lambda: self.poll() is not None, 1e9 if timeout is None else timeout, 0.005):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_call(fn, log: Path, what: str) -> Forked:
    """fn() in a forked child with stdin /dev/null, stdout+stderr appended to `log`, no other fd, cwd REPO;
    its return value (or SystemExit code) is the exit status. Fork only while this process has one thread."""
    assert threading.active_count() == 1, "fork with other threads running"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return Forked(pid, what)
    rc = 1
    try:
        import gc

        gc.collect()  # finalizers of the parent's garbage close the parent's fds now, not reused numbers later
        gc.freeze()
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        nul = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nul, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(REPO)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        r = fn()
        rc = r if isinstance(r, int) else 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports and exits, never returns into the soak
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)


def _cli(argv: list[str]):
    from gpreempt_trace.cli.main import main as cli_main

    return lambda: cli_main(args=argv, prog_name="gpreempt-trace")


def _target_code(argv: list[str]):
    def run():
        sys.argv = argv
        exec(compile(TARGET, "target.py", "exec"), {"__name__": "__main__"})
    return run


# ---- what a process holds --------------------------------------------------------------------------
@dataclass
class Usage:
    fds: int
    rss_kb: int
    threads: int


def usage(pid: int) -> Usage:
    st = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
    return Usage(len(os.listdir(f"/proc/{pid}/fd")), int(st["VmRSS"].split()[0]), int(st["Threads"]))


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "X"


def tracer_of(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("TracerPid:"):
            return int(ln.split()[1])
    return 0


_BPF_GET_NEXT_ID = {"progs": 11, "maps": 12, "links": 31}
_FDINFO_ID = {"progs": "prog_id:", "maps": "map_id:", "links": "link_id:"}


def bpf_ids() -> dict:
    """System-wide ids of the loaded BPF programs, maps and links (bpf(BPF_*_GET_NEXT_ID): what bpftool lists)."""
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    for name, cmd in _BPF_GET_NEXT_ID.items():
        attr = (ctypes.c_uint32 * 32)()
        ids = set()
        while libc.syscall(321, cmd, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
            ids.add(attr[1])
            attr[0] = attr[1]  # start_id = next_id
        out[name] = ids
    return out


def held_ids() -> dict:
    """BPF object ids some live process holds an fd of (/proc/*/fdinfo prog_id:/map_id:/link_id:), and the
    number of perf-event fds open system-wide."""
    out = {k: set() for k in _FDINFO_ID}
    perf = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            for fd in os.scandir(p / "fd"):
                t = os.readlink(fd.path)
                if t == "anon_inode:[perf_event]":
                    perf += 1
                elif t.startswith("anon_inode:bpf"):
                    for ln in (p / "fdinfo" / fd.name).read_text().splitlines():
                        for k, key in _FDINFO_ID.items():
                            if ln.startswith(key):
                                out[k].add(int(ln.split()[1]))
        except (OSError, ValueError):
            continue
    out["perf_event_fds"] = perf
    return out


def probe_events(dead_only: bool = False) -> int:
    """Lines in tracefs kprobe_events + uprobe_events; dead_only: only BCC's (named ..._bcc_PID) whose
    process is gone (what a killed BCC leaves behind)."""
    n = 0
    for f in ("kprobe_events", "uprobe_events"):
        for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
            try:
                lines = [ln for ln in Path(root, f).read_text().splitlines() if ln.strip()]
            except OSError:
                continue
            for ln in lines:
                m = re.search(r"bcc_(\d+)", ln)
                n += not dead_only or (m is not None and not Path(f"/proc/{m.group(1)}").exists())
            break
    return n


def leftovers(before: dict) -> dict:
    """What a recorder that has exited left in the kernel: BPF programs/maps/links that were not loaded
    before and that no live process holds (an fd in /proc/*/fdinfo), tracefs probe events of dead BCC
    processes, and the driver's own open fds beyond its baseline. Empty: nothing."""
    now, held = bpf_ids(), held_ids()
    out = {k: sorted(now[k] - before["ids"][k] - held[k]) for k in _BPF_GET_NEXT_ID}
    out["probe_events"] = probe_events(dead_only=True)
    out["driver_fds"] = len(os.listdir("/proc/self/fd")) - before["driver_fds"]
    return {k: v for k, v in out.items() if v}


def kernel_baseline() -> dict:
    ids, held = bpf_ids(), held_ids()
    return {"ids": ids, "driver_fds": len(os.listdir("/proc/self/fd")), "perf_event_fds": held["perf_event_fds"],
            "probe_events": probe_events(), "dead_bcc_probe_events": probe_events(dead_only=True),
            **{k: len(v) for k, v in ids.items()}}


def dmesg_lines() -> list[str]:
    try:
        return subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []


def new_dmesg(before: list[str]) -> list[str]:
    """The kernel lines logged since `before`."""
    seen = set(before)
    return [ln for ln in dmesg_lines() if ln not in seen]


# ---- a target and a controller ---------------------------------------------------------------------
class Target:
    def __init__(self, work: Path, kfd: str, runtime: bool, name: str = "target", fork: bool | None = None):
        self.log = work / f"{name}.log"
        script = work / "target.py"
        script.write_text(TARGET)
        argv = [str(script), kfd, "1" if runtime else "0", str(REPO)]
        if FORK if fork is None else fork:
            self.log.write_text("")
            self.p = fork_call(_target_code(argv), self.log, "target")
        else:
            with open(self.log, "w") as log:
                self.p = subprocess.Popen([PY, *argv], stdout=log, stderr=subprocess.STDOUT)
        if not wait_for(lambda: "ready" in self.text() or self.p.poll() is not None, 120):
            raise RuntimeError(f"target did not start: {self.text()[-300:]}")
        if self.p.poll() is not None:
            raise RuntimeError(f"target exited: {self.text()[-300:]}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ticks(self) -> int:
        return self.text().count("tick ")

    def runs_untraced(self, timeout_s: float = 20) -> bool:
        """Not traced, not stopped, ticking: read from /proc and its own output, not inferred."""
        n = self.ticks()
        return (wait_for(lambda: tracer_of(self.p.pid) == 0, timeout_s) and proc_state(self.p.pid) not in "TtZX"
                and wait_for(lambda: self.ticks() > n, timeout_s))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


_SERVICES = itertools.count()


class Service:
    """`preempt serve` on a target: the real CLI on /dev/kfd, else control_child.py (real ptrace, scripted KFD)."""

    def __init__(self, work: Path, target: Target, kfd: bool, scheme: str, max_hold_ms: int = 60_000, name: str = "svc",
                 fork: bool | None = None):
        self.sock = tempfile.mktemp(prefix="gpt-soak-", suffix=".sock", dir="/tmp")  # not on 9p: sockets need a local fs
        n = next(_SERVICES)
        self.log = work / f"{name}-{n}.log"
        self.ioctls = work / f"{name}-{n}.ioctls"
        self.kfd, self.scheme = kfd, scheme
        if kfd:
            queues = ["--queues", "all"] if scheme == "B" else ["--queues", "1,7", "--unchecked-ids"]
            argv = [PY, "-m", "gpreempt_trace.cli.main", "preempt", "serve", "--pid", str(target.p.pid), "--scheme", scheme,
                    *queues, "--socket", self.sock, "--max-hold", str(max_hold_ms)]
        else:
            o = {"pid": target.p.pid, "socket": self.sock, "kfd_path": "/dev/null", "queues": [1, 7], "unchecked_ids": True,
                 "scheme": scheme, "max_hold": max_hold_ms}
            argv = [PY, "-m", "bench.soak", "--scripted-serve", str(self.ioctls), json.dumps(o)]
        self.t0 = time.monotonic()
        if FORK if fork is None else fork:
            fn = _cli(argv[3:]) if kfd else (lambda: scripted_serve(*argv[4:6]))
            self.p = fork_call(fn, self.log, " ".join(argv[3:]))
        else:
            with open(self.log, "a") as log:
                self.p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ready(self) -> bool:
        t = self.text()
        return "READY" in t or "serving scheme" in t

    def wait_ready(self, timeout_s: float = 300) -> bool:
        ok = wait_for(lambda: self.ready() or self.p.poll() is not None, timeout_s) and self.p.poll() is None
        self.start_s = time.monotonic() - self.t0
        return ok

    def issued(self) -> list[str]:
        """The scripted KFD's ioctls, in order (control_child.py logs each as it is issued)."""
        if not self.ioctls.exists():
            return []
        return [ln.split()[0].partition(":")[2] or ln.split()[0] for ln in self.ioctls.read_text().splitlines() if ln.strip()]

    def left_suspended(self) -> bool | None:
        """From the ioctls issued: a suspend after the last resume. None: the real KFD (not logged here)."""
        if self.kfd:
            return None
        ops = [n for n in self.issued() if n in ("SUSPEND_QUEUES", "RESUME_QUEUES", "AMDKFD_IOC_PREEMPT_QUEUES", "AMDKFD_IOC_RESUME_QUEUES")]
        return bool(ops) and ops[-1] in ("SUSPEND_QUEUES", "AMDKFD_IOC_PREEMPT_QUEUES")

    def stop(self, sig=signal.SIGTERM, timeout_s: float = 60) -> int | None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None
        finally:
            if os.path.exists(self.sock):
                os.unlink(self.sock)


def _client(sock: str, timeout_s: float = 120):
    from gpreempt_trace.control import Client

    return Client(sock, timeout_s=timeout_s)


def scripted_serve(log_path: str, opts_json: str) -> int:
    """`serve` with real ptrace and a scripted KFD that logs `name hex-bytes` per ioctl (like
    tests/testing/control_child.py, but keeping no call in memory). Prints READY once it listens."""
    from gpreempt_trace.control import io as P
    from gpreempt_trace.control import service

    log = open(log_path, "a", buffering=1)
    opts = json.loads(opts_json)

    class Io(P.ScriptedIo):
        def ioctl(self, name, request, arg, refs=()):
            log.write(f"{name} {bytes(arg).hex()}\n")
            op = name.partition(":")[2]
            if op in ("SUSPEND_QUEUES", "RESUME_QUEUES") or name.endswith("PREEMPT_QUEUES"):
                return len(refs[0]) if refs else 0
            if name == "AMDKFD_IOC_RESUME_QUEUES" and arg.pid == 0:
                raise P.oserror(22)  # scheme B's probe: the ioctls exist
            return P.default_answer(name, arg, 17)

    why = service.serve(service.PreemptOptions(**opts), io=Io(ptrace_io=P.SysIo("/dev/null")),
                        watchdog=True, on_ready=lambda st: print("READY", flush=True))
    print(f"STOPPED {why}", flush=True)
    return 0


# ---- 1. controller soak --------------------------------------------------------------------------
@dataclass
class ControllerSoak:
    scheme: str
    cycles: int
    answered: int = 0
    ok: int = 0
    first: list = field(default_factory=list)  # Usage samples, first tenth
    last: list = field(default_factory=list)
    held_at_end: object = None
    left_suspended: bool | None = None
    stop_rc: int | None = None
    dmesg_new: int = 0
    dmesg_errors: list = field(default_factory=list)
    dmesg_lines: list = field(default_factory=list)
    watchdogs: int = 0  # watchdog processes of the service still alive at the end (scheme B: its one)
    wall_s: float = 0.0
    marks: dict = field(default_factory=dict)  # cycle -> Usage after it (cycle 100 and every 1000th)


def _window(xs: list, attr: str) -> str:
    v = [getattr(u, attr) for u in xs]
    return f"{statistics.mean(v):.0f} (min {min(v)}, max {max(v)})" if v else "-"


def controller_soak(work: Path, kfd: bool, scheme: str, cycles: int) -> ControllerSoak:
    work.mkdir(parents=True, exist_ok=True)
    r = ControllerSoak(scheme, cycles)
    before = dmesg_lines()
    # exec'd, as in production: the service's fds/RSS/threads are its own, not a fork of the soak's
    target = Target(work, "/dev/kfd" if kfd else "/dev/null", runtime=kfd and scheme == "A", fork=False)
    svc = Service(work, target, kfd, scheme, fork=False)
    try:
        if not svc.wait_ready():
            raise RuntimeError(f"service did not start: {svc.text()[-500:]}")
        c = _client(svc.sock)
        win = max(1, cycles // 10)
        t0 = time.monotonic()
        for i in range(cycles):
            for op in ("preempt", "resume"):
                ans = c.request(op)
                r.answered += 1
                r.ok += bool(ans.get("ok"))
            u = usage(svc.p.pid)
            if i + 1 == 100 or (i + 1) % 1000 == 0:
                r.marks[i + 1] = u
            if i < win:
                r.first.append(u)
            elif i >= cycles - win:
                r.last.append(u)
        r.wall_s = time.monotonic() - t0
        r.held_at_end = c.status()["held"]
        r.watchdogs = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p.name) == svc.p.pid)
        c.close()
    finally:
        r.stop_rc = svc.stop()
        r.left_suspended = svc.left_suspended()
        target.stop()
    r.dmesg_lines = new_dmesg(before)
    r.dmesg_new, r.dmesg_errors = len(r.dmesg_lines), [ln for ln in r.dmesg_lines if DMESG_BAD.search(ln)]
    return r


def _ppid(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def print_controller(r: ControllerSoak) -> None:
    n = len(r.first)
    print(f"controller scheme {r.scheme}: {r.cycles} cycles ({2 * r.cycles} requests) in {r.wall_s:.1f} s: "
          f"{r.answered} answered, {r.ok} ok; held at the end: {r.held_at_end}; "
          f"left suspended (ioctls issued): {'n/a (real KFD)' if r.left_suspended is None else r.left_suspended}; "
          f"service exit {r.stop_rc}")
    for attr, unit in (("fds", "open fds"), ("rss_kb", "RSS KiB"), ("threads", "threads")):
        print(f"  {unit:>9}: first {n} cycles {_window(r.first, attr)}, last {len(r.last)} cycles {_window(r.last, attr)}"
              + (f"; after cycle {', '.join(f'{k}: {getattr(u, attr)}' for k, u in r.marks.items())}" if r.marks else ""))
    print(f"  dmesg: {r.dmesg_new} new lines, {len(r.dmesg_errors)} error-like" + (f": {r.dmesg_errors[:3]}" if r.dmesg_errors else "")
          + (f" (new: {r.dmesg_lines[:3]})" if r.dmesg_lines and not r.dmesg_errors else ""))


# ---- 2. kill at random moments -------------------------------------------------------------------
@dataclass
class KillRun:
    scenario: str  # controller-sigkill | target-sigkill | controller-sigstop
    seed: int
    delay_s: float
    phase: str  # what the controller was doing when the signal came
    target_runs: bool | None = None
    left_suspended: bool | None = None
    new_attach: bool | None = None
    new_attach_s: float | None = None
    queues_seen: int | None = None  # the new controller's GET_QUEUE_SNAPSHOT count
    service_exit: object = None
    resumed_by: str | None = None
    notes: str = ""

    @property
    def ok(self) -> bool:
        return all(v is not False for v in (self.target_runs, self.new_attach)) and self.left_suspended is not True


def _seeds(runs: int, seed0: int):
    """(run index, its seed, its random.Random) for each run; none new after STOP_AT (the first always runs)."""
    for i in range(runs):
        if i and time.monotonic() > STOP_AT:
            return
        yield i, seed0 + i, random.Random(seed0 + i)


def _new_controller(work: Path, target: Target, kfd: bool, scheme: str, run: KillRun) -> None:
    """A new controller attaches at once (real ENABLE on the KFD: the old debug session is gone)."""
    chk = Service(work, target, kfd, scheme, name="check")
    try:
        run.new_attach = chk.wait_ready()
        run.new_attach_s = chk.start_s
        if run.new_attach:
            st = _client(chk.sock).status()
            run.new_attach = bool(st.get("ok")) and st.get("alive") and st.get("held") is None
            run.queues_seen = len(st.get("queues") or [])
        else:
            run.notes += f" new controller: {chk.text()[-200:]!r}"
    finally:
        chk.stop()


def controller_sigkill_runs(work: Path, kfd: bool, scheme: str, runs: int, seed0: int) -> list[KillRun]:
    work.mkdir(parents=True, exist_ok=True)
    target = Target(work, "/dev/kfd" if kfd else "/dev/null", runtime=kfd and scheme == "A", name=f"target-{scheme}")
    out = []
    start_est = None
    try:
        for i, seed, rng in _seeds(runs, seed0):
            svc = Service(work, target, kfd, scheme, name=f"k{scheme}{i}")
            if start_est is None:  # the first run measures how long a start takes; the kill window covers it + cycles
                svc.wait_ready()
                start_est = svc.start_s
            delay = rng.uniform(0, start_est * 1.2 + 0.5)
            run = KillRun("controller-sigkill", seed, delay, "starting")
            timer = threading.Timer(max(0.0, delay - (time.monotonic() - svc.t0)), lambda p=svc.p: _kill(p, signal.SIGKILL))
            timer.start()
            c = None
            held = False
            while svc.p.poll() is None:
                try:
                    if c is None:
                        if svc.ready():
                            c = _client(svc.sock, timeout_s=30)
                            run.phase = "idle"
                        else:
                            time.sleep(0.002)
                            continue
                    run.phase = "resuming" if held else "preempting"
                    ans = c.request("resume" if held else "preempt", **({} if held else {"keep": True}))
                    held = not held if ans.get("ok") else held
                    run.phase = "holding" if held else "idle"
                except Exception:  # noqa: BLE001 - the kill broke the connection
                    break
            timer.join()
            svc.p.wait()
            if c is not None:
                c.close()
            run.service_exit = svc.p.returncode
            run.left_suspended = svc.left_suspended()
            if scheme == "B" and run.phase in ("holding", "resuming", "preempting"):
                wait_for(lambda: "watchdog: controller" in svc.text(), 10)  # it acts after the death
                m = re.search(r"gpreempt-trace watchdog: controller \d+ died; RESUME_QUEUES\(all\) of pid \d+: (.*)", svc.text())
                run.resumed_by = f"watchdog ({m.group(1)})" if m else None
                if run.left_suspended and m:  # scripted KFD: the watchdog's own RESUME_QUEUES is not in the child's log
                    run.left_suspended = False
            elif run.phase == "idle":
                run.resumed_by = "nothing held"
            elif scheme == "A" and run.phase != "starting":
                run.resumed_by = "KFD (debugger exit path)"
                if not kfd:
                    run.left_suspended = None  # the scripted KFD died with the controller: nothing to query here
            if os.path.exists(svc.sock):
                os.unlink(svc.sock)
            run.target_runs = target.runs_untraced()
            _new_controller(work, target, kfd, scheme, run)
            out.append(run)
    finally:
        target.stop()
    return out


def _kill(p: subprocess.Popen, sig) -> None:
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass


def _hold(svc: Service, run: KillRun) -> bool:
    """The service takes a kept hold, then run.delay_s passes; False (noted in run) when it did not start."""
    if not svc.wait_ready():
        run.notes = svc.text()[-200:]
        return False
    c = _client(svc.sock)
    c.request("preempt", keep=True)
    c.close()
    time.sleep(run.delay_s)
    return True


def target_sigkill_runs(work: Path, kfd: bool, scheme: str, runs: int, seed0: int) -> list[KillRun]:
    """SIGKILL of the held target: the service notices, stops on its own (no queue to resume on a gone
    process) and the next target can be served at once."""
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for i, seed, rng in _seeds(runs, seed0):
        target = Target(work, "/dev/kfd" if kfd else "/dev/null", runtime=kfd and scheme == "A", name=f"t{scheme}{i}")
        svc = Service(work, target, kfd, scheme, name=f"tk{scheme}{i}")
        run = KillRun("target-sigkill", seed, rng.uniform(0, 0.2), "holding")
        try:
            if not _hold(svc, run):
                out.append(run)
                continue
            target.p.kill()
            target.p.wait()
            try:
                run.service_exit = svc.p.wait(60)
            except subprocess.TimeoutExpired:
                run.service_exit = "still running 60 s after the target died"
            t = svc.text()
            run.target_runs = None  # it is dead on purpose
            run.resumed_by = "nothing to resume (target gone)" if ("STOPPED target exited" in t or svc.p.returncode == 0) else None
            nxt = Target(work, "/dev/kfd" if kfd else "/dev/null", runtime=kfd and scheme == "A", name=f"n{scheme}{i}")
            try:
                _new_controller(work, nxt, kfd, scheme, run)
            finally:
                nxt.stop()
        finally:
            svc.stop()
            target.stop()
        out.append(run)
    return out


def controller_sigstop_runs(work: Path, kfd: bool, scheme: str, runs: int, seed0: int, max_hold_ms: int) -> list[KillRun]:
    """SIGSTOP of the holding controller past what the watchdog allows (watchdog.overdue_ms): is the hold ended while it is stopped?"""
    work.mkdir(parents=True, exist_ok=True)
    target = Target(work, "/dev/kfd" if kfd else "/dev/null", runtime=kfd and scheme == "A", name=f"st-{scheme}")
    out = []
    try:
        for i, seed, rng in _seeds(runs, seed0):
            svc = Service(work, target, kfd, scheme, max_hold_ms=max_hold_ms, name=f"s{scheme}{i}")
            run = KillRun("controller-sigstop", seed, rng.uniform(0, max_hold_ms / 1000), "holding")
            try:
                if not _hold(svc, run):
                    out.append(run)
                    continue
                _kill(svc.p, signal.SIGSTOP)
                from gpreempt_trace.control.watchdog import overdue_ms

                time.sleep(overdue_ms(max_hold_ms) / 1000 + 2)  # past what the watchdog allows
                t = svc.text()
                stopped_still = proc_state(svc.p.pid) in "Tt"
                if svc.p.poll() is not None:
                    m = re.search(r"RESUME_QUEUES\(all\) of pid \d+: (.*)", t)
                    run.resumed_by = (("watchdog SIGKILLed it" if "without resuming (stopped or hung)" in t else f"controller ended (exit {svc.p.returncode})")
                                      + (f"; watchdog RESUME_QUEUES(all): {m.group(1)}" if m else "; KFD's debugger exit path" if scheme == "A" else ""))
                    run.left_suspended = svc.left_suspended() if scheme == "A" else ("watchdog: controller" not in t)
                    if not kfd and scheme == "A":
                        run.left_suspended = None
                elif stopped_still:
                    run.left_suspended = svc.left_suspended()
                    if run.left_suspended is False:  # a loaded host: its own max-hold came before the SIGSTOP
                        run.resumed_by = "its own --max-hold, before the SIGSTOP"
                    else:
                        run.notes = "controller still stopped and holding past --max-hold"
                _kill(svc.p, signal.SIGCONT)
                run.target_runs = target.runs_untraced() if svc.p.poll() is not None else None
            finally:
                run.service_exit = svc.stop()
            if run.target_runs is None:
                run.target_runs = target.runs_untraced()
            _new_controller(work, target, kfd, scheme, run)
            out.append(run)
    finally:
        target.stop()
    return out


def print_kill(runs: list[KillRun]) -> None:
    if not runs:
        return
    sc = runs[0].scenario
    ok = sum(r.ok for r in runs)
    phases = {}
    for r in runs:
        phases[r.phase] = phases.get(r.phase, 0) + 1
    attach = [r.new_attach_s for r in runs if r.new_attach_s is not None]
    print(f"{sc}: {len(runs)} runs (seeds {runs[0].seed}..{runs[-1].seed}), {ok} ok; phases {phases}; "
          f"target ran untraced after: {sum(r.target_runs is True for r in runs)}/{sum(r.target_runs is not None for r in runs)}; "
          f"left suspended: {sum(r.left_suspended is True for r in runs)} (queried: {sum(r.left_suspended is not None for r in runs)}); "
          f"new controller attached: {sum(bool(r.new_attach) for r in runs)}/{len(runs)}"
          + (f" (start p50 {statistics.median(attach):.2f} s)" if attach else "")
          + f"; queues in its snapshot: {sorted({r.queues_seen for r in runs if r.queues_seen is not None})}")
    how = {}
    for r in runs:
        how[r.resumed_by or "-"] = how.get(r.resumed_by or "-", 0) + 1
    print(f"  resumed by: {how}")
    for r in runs:
        if not r.ok or r.notes:
            print(f"  seed {r.seed} ({r.phase}, {r.delay_s:.3f} s): target_runs={r.target_runs} left_suspended={r.left_suspended} "
                  f"new_attach={r.new_attach} exit={r.service_exit} {r.notes}")


# ---- 3. recorder start/stop ----------------------------------------------------------------------
@dataclass
class RecordRun:
    seed: int
    killed: bool
    rc: int | None
    events: int | None  # rows readable in the trace (None: unreadable)
    lost_s: float | None  # killed runs: kill time - last recorded event
    leaks: dict  # what it left behind (leftovers()) and was still there at the end: empty when nothing
    transient: dict = field(default_factory=dict)  # unheld BPF ids seen after it that were freed later


def record_runs(work: Path, n: int, seed0: int, kfd_path: str = "/dev/null") -> tuple[dict, list[RecordRun]]:
    """n record start/stop cycles under a steady ioctl load; a seeded third (random.Random(seed0).sample)
    end with SIGKILL, the others with SIGINT."""
    work.mkdir(parents=True, exist_ok=True)
    killed_set = set(random.Random(seed0).sample(range(n), round(n / 3)))
    load = subprocess.Popen([PY, "-c", LOAD])
    base = kernel_baseline()
    out = []
    try:
        for i in range(n):
            seed = seed0 + i
            rng = random.Random(seed)
            killed = i in killed_set
            trace = work / f"r{i}"
            with open(work / f"r{i}.log", "w") as log:
                p = subprocess.Popen([PY, "-m", "gpreempt_trace.cli.main", "record", "-o", str(trace), "--probes", "ioctl",
                                      "--kfd-path", kfd_path], stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
            wait_for(lambda: _recording(trace) or p.poll() is not None, 600, 0.05)
            time.sleep(rng.uniform(0.5, 2.0))
            t_stop = time.monotonic_ns()
            p.send_signal(signal.SIGKILL if killed else signal.SIGINT)
            try:
                rc = p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            # the kernel frees a dead process's BPF objects after an RCU grace period: allow 5 s
            wait_for(lambda: not leftovers(base), 5, 0.1)
            leaks = leftovers(base)
            events, last = _read_events(trace)
            since = _recording(trace) or None
            # the load issues an ioctl every ~1 ms: what a killed run lost is the time from its newest
            # recorded event (or, with none, from the start of recording) to the kill
            newest = last if last is not None else since
            lost = None if newest is None or not killed else max(0.0, (t_stop - newest) / 1e9)
            out.append(RecordRun(seed, killed, rc, events, lost, leaks))
    finally:
        load.kill()
        load.wait()
    # on a shared machine other processes load and free BPF objects too: a leak is what is still there,
    # unheld, at the end (an object freed later was another process's, or freed late)
    end = leftovers(base)
    for r in out:
        for k in ("progs", "maps", "links"):
            if k in r.leaks:
                gone = [i for i in r.leaks[k] if i not in end.get(k, ())]
                r.leaks[k] = [i for i in r.leaks[k] if i in end.get(k, ())]
                if gone:
                    r.transient[k] = gone
                if not r.leaks[k]:
                    del r.leaks[k]
    base = {k: v for k, v in base.items() if k != "ids"}
    return base, out


def _recording(trace: Path) -> int:
    """The recorder's recording_since_ns (meta.json: probes attached, filters set); 0 before."""
    try:
        return int(json.loads((trace / "meta.json").read_text()).get("recorder", {}).get("recording_since_ns") or 0)
    except (OSError, ValueError):
        return 0


def _read_events(trace: Path) -> tuple[int | None, int | None]:
    """(events readable through the trace's readers, the newest event's ts_ns); (None, None): unreadable."""
    try:
        from gpreempt_trace import api

        con = api.connect([str(trace)])
        n, last = con.execute("SELECT count(*), max(ts_ns) FROM events").fetchone()
        return int(n), last
    except Exception:  # noqa: BLE001 - unreadable is the finding
        return None, None


def print_record(base: dict, runs: list[RecordRun]) -> None:
    killed = [r for r in runs if r.killed]
    lost = [r.lost_s for r in killed if r.lost_s is not None]
    print(f"record: {len(runs)} start/stop cycles (seeds {runs[0].seed}..{runs[-1].seed}), {len(killed)} killed with -9 "
          f"(seeds {[r.seed for r in killed]}); system before: {base}")
    print(f"  cycles that left nothing behind (BPF progs/maps/links by id vs /proc/*/fdinfo, tracefs probe events, "
          f"the driver's fds): {sum(not r.leaks for r in runs)}/{len(runs)}; "
          f"traces readable: {sum(r.events is not None for r in runs)}/{len(runs)}; "
          f"clean stops exit 0: {sum(r.rc == 0 for r in runs if not r.killed)}/{len(runs) - len(killed)}")
    if lost:
        print(f"  killed runs: events lost (kill - last event) p50 {statistics.median(lost):.2f} s, max {max(lost):.2f} s "
              f"(limit 1 s: {sum(x <= 1.0 for x in lost)}/{len(lost)} within)")
    print(f"  events per trace: min {min((r.events or 0) for r in runs)}, max {max((r.events or 0) for r in runs)}")
    for r in runs:
        if r.leaks or r.events is None or r.transient or (r.lost_s or 0) > 1.0:
            print(f"  seed {r.seed} (killed={r.killed}, rc {r.rc}): left {r.leaks}, freed later {r.transient}, events {r.events}")


# ---- 4. experiment ab --repeat N -----------------------------------------------------------------
def experiment_runs(work: Path, repeat: int, schemes: str = "none", extra: tuple = (), budget_s: float = 0) -> dict:
    """budget_s: Ctrl-C (SIGINT to its process group, as a terminal sends it) after that many seconds: the run
    in progress stops in order and every planned run is still accounted for (the rest "not run")."""
    out = work / "ab"
    argv = [PY, "-m", "gpreempt_trace.cli.main", "experiment", "ab", "--online", "gemm", "--offline", "gemm",
            "--schemes", schemes, "--repeat", str(repeat), "--duration", "1", "--rate", "5", "--batch", "1",
            "--threads", "1", "--backend", "numpy", "--no-report", "--record", "no", *extra, "-o", str(out)]
    t0 = time.monotonic()
    # its lines as they come (prefixed "ab| "): a long run shows each cell's time, and a run cut short by a
    # timeout still shows what it did
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, start_new_session=True)
    timer = None
    if budget_s:
        def ctrl_c():
            print(f"  ab| (soak: --experiment-budget {budget_s:.0f} s spent: Ctrl-C)", flush=True)
            try:
                os.killpg(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        timer = threading.Timer(budget_s, ctrl_c)
        timer.daemon = True
        timer.start()
    tail: list[str] = []
    for ln in p.stdout:
        print(f"  ab| {ln.rstrip()}", flush=True)
        tail = (tail + [ln])[-40:]
    p.wait()
    if timer is not None:
        timer.cancel()
    wall = time.monotonic() - t0
    runs_file = out / "runs.json"
    acc = json.loads(runs_file.read_text()) if runs_file.exists() else None
    return {"rc": p.returncode, "wall_s": wall, "accounting": acc and acc["accounting"], "runs": acc and acc["runs"],
            "output_tail": "".join(tail)[-1500:]}


def print_experiment(r: dict, repeat: int, schemes: str) -> None:
    a = r["accounting"]
    if a is None:
        print(f"experiment ab --repeat {repeat} --schemes {schemes}: no runs.json (exit {r['rc']}): {r['output_tail'][-400:]}")
        return
    missing = a["planned"] - a["completed"] - a["failed"] - a["not run"]
    print(f"experiment ab --repeat {repeat} --schemes {schemes}: {a['planned']} planned, {a['completed']} completed, "
          f"{a['failed']} failed (cause in runs.json), {a['not run']} not run, {missing} missing; exit {r['rc']}; {r['wall_s']:.0f} s")
    for run in r["runs"]:
        if run["status"] == "failed":
            print(f"  [{run['scheme']} #{run['repeat']}] {run['cause']}")


# ---- driver --------------------------------------------------------------------------------------
def scheme_b_loaded() -> bool:
    """The kernel/ series' ioctls answer (EINVAL on an empty request) on /dev/kfd: the patched module is in."""
    import errno

    from gpreempt_trace.contracts import uapi as U

    try:
        fd = os.open("/dev/kfd", os.O_RDWR)
    except OSError:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        a = U.PreemptQueuesArgs()
        r = libc.ioctl(fd, ctypes.c_ulong(U.RESUME_QUEUES), ctypes.byref(a))
        return r >= 0 or ctypes.get_errno() == errno.EINVAL
    finally:
        os.close(fd)


def run_parts(parts: list[str], sizes: dict, seed: int, work: Path, only: list[str] | None = None) -> int:
    """only: the schemes asked for (--schemes; default both); B runs only where it is loaded (real KFD)."""
    kfd = os.path.exists("/dev/kfd")
    schemes = ["A", "B"] if not kfd or scheme_b_loaded() else ["A"]
    if only:
        missing = [x for x in only if x not in schemes]
        schemes = [x for x in schemes if x in only]
        if missing:
            print(f"scheme {','.join(missing)}: asked for (--schemes) but not in this kernel's amdgpu: not run")
    print(f"soak on {os.uname().release} ({'real KFD /dev/kfd' if kfd else 'no /dev/kfd: real ptrace + scripted KFD'}), "
          f"schemes {','.join(schemes)}, seed {seed}, sizes {sizes}", flush=True)
    if kfd and "B" not in schemes and (not only or "B" in only):
        print("scheme B: not run (the kernel/ series' ioctls are not in this kernel's amdgpu)")
    bad = 0
    for part in parts:
        bad += _PARTS[part](sizes, seed, work, kfd, schemes)
        sys.stdout.flush()
    print(f"soak: {'no' if not bad else bad} problem{'s' if bad != 1 else ''} found")
    return 1 if bad else 0


def _part_controller(sizes, seed, work, kfd, schemes) -> int:
    bad = 0
    for s in schemes:
        r = controller_soak(work / f"ctl-{s}", kfd, s, sizes["cycles"])
        print_controller(r)
        bad += (r.answered != 2 * r.cycles or r.held_at_end is not None or r.left_suspended is True
                or (r.first and r.last and (r.first[0].fds != r.last[-1].fds or r.first[0].threads != r.last[-1].threads)))
        sys.stdout.flush()
    return bad


SCENARIOS = {"controller-sigkill": "controller", "target-sigkill": "target", "controller-sigstop": "sigstop"}


def parse_scenarios(text: str) -> list[tuple[str | None, str, int | None]]:
    """--scenarios: comma-separated [SCHEME:]NAME[=N] (NAME: controller-sigkill|controller, target-sigkill|target,
    controller-sigstop|sigstop; SCHEME: A or B, default every scheme run; N: runs, default --kill)."""
    alias = {**{v: k for k, v in SCENARIOS.items()}, **{k: k for k in SCENARIOS}}
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        m = re.fullmatch(r"(?:([AB]):)?([a-z-]+)(?:=(\d+))?", item)
        if not m or m.group(2) not in alias:
            raise ValueError(f"--scenarios: {item!r} is not [A:|B:]NAME[=N] with NAME one of "
                             f"{', '.join(f'{k} ({v})' for k, v in SCENARIOS.items())}")
        out.append((m.group(1), alias[m.group(2)], int(m.group(3)) if m.group(3) else None))
    if not out:
        raise ValueError("--scenarios: empty; name at least one, e.g. --scenarios target,sigstop")
    return out


def kill_plan(schemes: list[str], n: int, selected: list | None = None) -> list[tuple[str, str, int]]:
    """(scheme, scenario, runs) in run order: per scheme, the scenarios in SCENARIOS' order."""
    out = []
    for s in schemes:
        for sc in SCENARIOS:
            if selected is None:
                out.append((s, sc, n))
                continue
            hits = [k for sch, name, k in selected if name == sc and sch in (None, s)]
            if hits:
                out.append((s, sc, next((k for k in reversed(hits) if k is not None), n)))
    return out


def _part_kill(sizes, seed, work, kfd, schemes) -> int:
    global FORK, STOP_AT
    bad = 0
    end = time.monotonic() + (sizes.get("kill_budget") or float("inf"))
    plan = [(s, sc, n) for s, sc, n in kill_plan(schemes, sizes["kill"], sizes.get("scenarios")) if n]
    left = len(plan)  # (scheme, scenario) pairs still to run: each gets an even share of the time left
    print(f"kill: {', '.join(f'{s} {sc} x{n}' for s, sc, n in plan) or 'nothing selected'}")
    if FORK:
        t = time.monotonic()
        preload()
        print(f"kill runs fork the controller and the target from this process (imports done once: {time.monotonic() - t:.1f} s)")
    fns = {"controller-sigkill": (controller_sigkill_runs, ()), "target-sigkill": (target_sigkill_runs, ()),
           "controller-sigstop": (controller_sigstop_runs, (1000 if kfd else 300,))}
    for s, sc, n_runs in plan:
        fn, args = fns[sc]
        # --exec-baseline N: the first N seeds once more with a new interpreter per process (the cost before the fork)
        for fork, n in ((False, sizes.get("exec_baseline") or 0), (FORK, n_runs)) if FORK else ((False, n_runs),):
            if not n:
                continue
            FORK, keep = fork, FORK
            t, cpu = time.monotonic(), _cpu_s()
            STOP_AT = t + (end - t) / left if fork == keep else float("inf")
            try:
                runs = fn(work / f"kill-{s}{'' if fork else '-exec'}", kfd, s, n, seed, *args)
            finally:
                FORK = keep
            wall, cpu = time.monotonic() - t, _cpu_s() - cpu
            print(f"[scheme {s}, {'fork' if fork else 'exec'}] ", end="")
            print_kill(runs)
            print(f"  {wall:.0f} s wall, {cpu:.0f} s CPU (this process + children): {wall / len(runs):.1f} s wall, "
                  f"{cpu / len(runs):.1f} s CPU a run; load {os.getloadavg()[0]:.2f}")
            if len(runs) < n:
                print(f"  {len(runs)} of {n} runs: its share of --kill-budget was spent")
            bad += sum(not r.ok for r in runs)
            sys.stdout.flush()
        left -= 1
    STOP_AT = float("inf")
    return bad


def _part_record(sizes, seed, work, kfd, schemes) -> int:
    bad = 0
    if os.geteuid() != 0:
        print("record: not run (needs root)")
    else:
        base, runs = record_runs(work / "record", sizes["record"], seed)
        print_record(base, runs)
        bad += sum(bool(r.leaks) or r.events is None or (r.lost_s or 0) > 1.0 or (not r.killed and r.rc != 0) for r in runs)
    sys.stdout.flush()
    return bad


def _part_experiment(sizes, seed, work, kfd, schemes) -> int:
    bad = 0
    sch = ",".join(["none", *schemes]) if kfd else "none"
    extra = ("--in-lab-guest",) if kfd else ()
    r = experiment_runs(work / "experiment", sizes["experiment"], sch, extra, sizes.get("experiment_budget") or 0)
    print_experiment(r, sizes["experiment"], sch)
    a = r["accounting"]
    bad += a is None or a["planned"] != a["completed"] + a["failed"] + a["not run"]
    return bad


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _part_cellcost(sizes, seed, work, kfd, schemes) -> int:
    """Not a soak part (never in the default): bench/cell_cost.py, where an experiment cell's time goes."""
    sch = ",".join(["none", *schemes]) if kfd else "none"
    return subprocess.run([PY, "-m", "bench.cell_cost", "--schemes", sch, "--starts", str(sizes.get("cellcost_starts", 1))],
                          cwd=REPO).returncode != 0


_PARTS = {"controller": _part_controller, "kill": _part_kill, "record": _part_record, "experiment": _part_experiment,
          "cellcost": _part_cellcost}


def precompile() -> str:
    """The package's and the bench's bytecode, written before a guest boots (lab/bytecode.py says why)."""
    from gpreempt_trace.lab.bytecode import precompile as write_bytecode

    return write_bytecode(REPO / "gpreempt_trace", REPO / "bench")


def run_lab(argv_rest: list[str], timeout_s: float, compile_first: bool = True) -> int:
    from gpreempt_trace.lab import Lab

    from gpreempt_trace.lab.scheme_b import load_amdgpu

    lab = Lab.ensure(kernel="6.12")
    cmd = load_amdgpu() + " ".join([".venv/bin/python", "-m", "bench.soak", "--work", "/tmp/soak", *argv_rest])
    print(f"lab: Debian {lab.kernel} guest under QEMU TCG (real amdgpu/KFD, no GPU); timeout {timeout_s:.0f} s; "
          + (f"package bytecode written first ({precompile()})" if compile_first else "package bytecode not written (--no-precompile)"),
          flush=True)
    res = lab.run(cmd, timeout_s=timeout_s, modules=(), cpus=2, env={"PYTHONUNBUFFERED": "1"})
    for ln in res.output.splitlines():
        print("guest| " + ln)
    print(f"lab: exit {res.rc}, {res.wall_s:.0f} s (boot included)")
    return res.rc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--scripted-serve"]:
        return scripted_serve(*argv[1:3])
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("parts", nargs="*", metavar="PART", help="controller, kill, record, experiment (default: all four); "
                    "cellcost: where an experiment cell's time goes (bench/cell_cost.py)")
    ap.add_argument("--long", action="store_true", help="the long version (1000 cycles, 100 runs each)")
    ap.add_argument("--seed", type=int, default=24, help="first seed; run k uses seed+k")
    ap.add_argument("--lab", action="store_true", help="run inside the Debian 6.12 lab guest")
    ap.add_argument("--lab-timeout", type=float, default=3600)
    ap.add_argument("--no-precompile", action="store_true", help="--lab: do not write the package's .pyc files "
                    "before the guest boots (the state before; for bench/cell_cost.py's baseline)")
    ap.add_argument("--work", help="scratch folder (default: a new temporary one)")
    ap.add_argument("--exec", action="store_true", help="kill runs: start each controller and target as a new "
                    "interpreter (default: fork them from the soak, whose imports are done once)")
    for k in SHORT:
        ap.add_argument(f"--{k}", type=int, help=f"override the {k} count")
    ap.add_argument("--kill-budget", type=float, default=0, metavar="S",
                    help="kill: at most about S seconds in all, shared evenly by the scenarios (runs left out are counted)")
    ap.add_argument("--experiment-budget", type=float, default=0, metavar="S",
                    help="experiment: Ctrl-C it after S seconds (the run in progress stops in order; the runs left "
                    "are accounted for as not run)")
    ap.add_argument("--exec-baseline", type=int, default=0, metavar="N",
                    help="kill: first run N runs per scenario with --exec, for the per-run cost before/after")
    ap.add_argument("--cellcost-starts", type=int, default=1, metavar="N",
                    help="cellcost: interpreter starts per process kind and bytecode state (0: only the timed cells)")
    ap.add_argument("--schemes", metavar="LIST", help="controller, kill, experiment: only these schemes, e.g. A or A,B "
                    "(default: A and B where B's ioctls are loaded; the experiment adds none)")
    ap.add_argument("--scenarios", metavar="LIST", help="kill: only these scenarios, comma-separated "
                    "[A:|B:]NAME[=N], NAME controller-sigkill (controller), target-sigkill (target) or "
                    "controller-sigstop (sigstop); A:/B: limits an item to that scheme, =N gives its run count "
                    "(default --kill); e.g. --scenarios A:target=32,sigstop=48 (default: all three)")
    a = ap.parse_args(argv)
    parts = a.parts or list(PARTS)
    only = None
    if a.schemes is not None:
        only = [x.strip() for x in a.schemes.split(",") if x.strip()]
        if not only or set(only) - {"A", "B"}:
            ap.error(f"--schemes {a.schemes!r}: give A, B or A,B")
    try:
        selected = parse_scenarios(a.scenarios) if a.scenarios is not None else None
    except ValueError as e:
        ap.error(str(e))
    if set(parts) - set(_PARTS):
        ap.error(f"unknown part {sorted(set(parts) - set(_PARTS))[0]!r}: choose from {', '.join(_PARTS)}")
    sizes = dict(LONG if a.long else SHORT)
    for k in SHORT:
        if getattr(a, k) is not None:
            sizes[k] = getattr(a, k)
    sizes["exec_baseline"], sizes["kill_budget"], sizes["scenarios"] = a.exec_baseline, a.kill_budget, selected
    sizes["cellcost_starts"], sizes["experiment_budget"] = a.cellcost_starts, a.experiment_budget
    global FORK
    FORK = not a.exec
    if a.lab:
        rest = [*parts, "--seed", str(a.seed), *(["--long"] if a.long else []), *(["--exec"] if a.exec else []),
                *([f"--exec-baseline={a.exec_baseline}"] if a.exec_baseline else []),
                *([f"--kill-budget={a.kill_budget}"] if a.kill_budget else []),
                *([f"--experiment-budget={a.experiment_budget}"] if a.experiment_budget else []),
                *([f"--schemes={a.schemes}"] if a.schemes is not None else []),
                *([f"--scenarios={a.scenarios}"] if a.scenarios is not None else []),
                *([f"--cellcost-starts={a.cellcost_starts}"] if "cellcost" in parts else []),
                *[f"--{k}={sizes[k]}" for k in SHORT if getattr(a, k) is not None]]
        return run_lab(rest, a.lab_timeout, compile_first=not a.no_precompile)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="gpt-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rc = run_parts(parts, sizes, a.seed, work, only)
    print(f"soak done in {time.monotonic() - t0:.0f} s (scratch {work})")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
