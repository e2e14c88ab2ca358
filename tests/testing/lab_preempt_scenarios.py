"""Run inside the lab guest (real KFD, no GPU): the controller's scenarios against the real debugger ABI.

    python tests/testing/lab_preempt_scenarios.py OUTDIR [--no-record] [--only NAME,...]

A target opens /dev/kfd and does RUNTIME_ENABLE; `preempt serve --unchecked-ids` suspends/resumes the
made-up ids 1 and 7 (the KFD writes them back with the INVALID bit); the target toggles its runtime
(RUNTIME_ENABLE disable+enable: blocks until the controller answers) and gets a SIGUSR1 while held;
the controller is SIGKILLed while holding and a new one ENABLEs; the target exits while held. With
record (default) a `record` runs on the same trace. Prints one line `RESULT {json}` at the end.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
GPT = [str(REPO / ".venv" / "bin" / "python"), "-m", "gpreempt_trace.cli.main"]

TARGET = r'''
import ctypes, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from gpreempt_trace.contracts import uapi as U
quit_file = sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dev/kfd", os.O_RDWR)
rdebug = ctypes.c_uint64(0)
def runtime(enable):
    a = U.RuntimeEnableArgs(r_debug=ctypes.addressof(rdebug), mode_mask=1 if enable else 0, capabilities_mask=0)
    t = time.monotonic()
    r = libc.ioctl(fd, ctypes.c_ulong(U.RUNTIME_ENABLE), ctypes.byref(a))
    e = ctypes.get_errno() if r < 0 else 0
    print(f"runtime {'enable' if enable else 'disable'} rc={r} errno={e} ms={(time.monotonic() - t) * 1e3:.1f}", flush=True)
toggle = []
signal.signal(signal.SIGUSR1, lambda *a: print("usr1", flush=True))
signal.signal(signal.SIGUSR2, lambda *a: toggle.append(1))
runtime(True)
print("ready", flush=True)
n = 0
while not os.path.exists(quit_file):
    if toggle:
        toggle.clear()
        runtime(False)
        runtime(True)
    n += 1
    if n % 20 == 0:
        print(f"tick {n}", flush=True)
    time.sleep(0.05)
runtime(False)
print("bye", flush=True)
'''


class Target:
    def __init__(self, out: Path, name: str):
        self.quit = out / f"{name}.quit"
        self.log = out / f"{name}.log"
        script = out / "target.py"
        script.write_text(TARGET)
        self.p = subprocess.Popen([sys.executable, str(script), str(REPO), str(self.quit)],
                                  stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        wait_for(lambda: "ready" in self.text(), 30, f"{name} ready")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def count(self, word: str) -> int:
        return sum(1 for ln in self.text().splitlines() if ln.startswith(word))


def wait_for(cond, timeout_s: float, what: str) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    print(f"timeout waiting for {what}", flush=True)
    return False


def serve(pid: int, sock: str, out: Path, name: str, *extra: str) -> subprocess.Popen:
    log = open(out / f"{name}.log", "w")
    p = subprocess.Popen([*GPT, "preempt", "serve", "--pid", str(pid), "--queues", "1,7", "--unchecked-ids",
                          "--socket", sock, *extra], stdout=log, stderr=subprocess.STDOUT)
    # the socket is bound before the attach: wait for the line saying it serves
    wait_for(lambda: "serving scheme" in (out / f"{name}.log").read_text(errors="replace") or p.poll() is not None, 300, f"{name} ready")
    return p


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with_record = "--no-record" not in sys.argv
    import tempfile

    from gpreempt_trace.control import Client

    socks = Path(tempfile.mkdtemp(prefix="gpt-ctl-"))  # Unix sockets cannot live on the 9p-shared $OUT
    res: dict = {"kernel": os.uname().release}
    trace = socks / "trace"  # guest-local: a file replaced over 9p can read stale in the guest
    rec = None
    if with_record:
        reclog = open(out / "record.log", "w")
        rec = subprocess.Popen([*GPT, "record", "-o", str(trace), "--probes", "kfd,ioctl"], stdout=reclog, stderr=subprocess.STDOUT)
        def recording() -> bool:  # probes attached and filters set (meta.json says so)
            try:
                return bool(json.loads((trace / "meta.json").read_text()).get("recorder", {}).get("recording_since_ns"))
            except (OSError, ValueError):
                return False

        res["record_started"] = wait_for(lambda: recording() or rec.poll() is not None, 600, "record")
        res["record_rc_early"] = rec.poll()
    t = Target(out, "target1")
    res["target_runtime_enable"] = [ln for ln in t.text().splitlines() if ln.startswith("runtime")]

    # 1. serve + client suspend/resume with made-up ids; markers into the trace
    sock = str(socks / "s1.sock")
    s1 = serve(t.p.pid, sock, out, "serve1", *(["-o", str(trace)] if with_record else ["-o", str(out / "ctl-trace")]))
    c = Client(sock, timeout_s=120)
    res["status_attached"] = c.status()
    res["preempt"] = c.preempt()
    # 2. handshake while held: the target's RUNTIME_ENABLE(disable) then (enable) must return
    t.p.send_signal(signal.SIGUSR2)
    res["toggle_returned"] = wait_for(lambda: t.count("runtime") >= 3, 20, "runtime toggle")
    # 3. a signal sent to the held target reaches it
    t.p.send_signal(signal.SIGUSR1)
    res["usr1_reached"] = wait_for(lambda: t.count("usr1") >= 1, 10, "usr1")
    res["status_held"] = c.status()
    res["resume"] = c.resume()
    c.close()
    s1.send_signal(signal.SIGTERM)
    try:
        res["serve1_rc"] = s1.wait(30)
    except subprocess.TimeoutExpired:
        s1.kill()
        res["serve1_rc"] = "hung"
    res["serve1_log"] = (out / "serve1.log").read_text(errors="replace")[-800:]
    res["target_runtime_lines"] = [ln for ln in t.text().splitlines() if ln.startswith("runtime")]

    # 4. controller SIGKILL while holding → the target runs on, a new controller can ENABLE
    sock2 = str(socks / "s2.sock")
    s2 = serve(t.p.pid, sock2, out, "serve2")
    c2 = Client(sock2, timeout_s=120)
    res["kill_preempt"] = c2.preempt(keep=True)
    c2.close()
    s2.send_signal(signal.SIGKILL)
    s2.wait(10)
    ticks = t.count("tick")
    res["runs_on_after_kill"] = wait_for(lambda: t.count("tick") > ticks, 10, "ticks after SIGKILL")
    t.p.send_signal(signal.SIGUSR1)
    res["usr1_after_kill"] = wait_for(lambda: t.count("usr1") >= 2, 10, "usr1 after kill")
    sock3 = str(socks / "s3.sock")
    s3 = serve(t.p.pid, sock3, out, "serve3")
    c3 = Client(sock3, timeout_s=120)
    res["new_controller_status"] = c3.status()
    res["held_exit_preempt"] = c3.preempt()
    # 5. the target exits while held (RUNTIME_ENABLE(disable) at exit needs the handshake)
    t.quit.write_text("")
    try:
        res["target_exit_rc"] = t.p.wait(30)
    except subprocess.TimeoutExpired:
        res["target_exit_rc"] = "hung"
        t.p.kill()
    c3.close()
    try:
        res["serve3_rc"] = s3.wait(30)
    except subprocess.TimeoutExpired:
        s3.kill()
        res["serve3_rc"] = "hung"
    res["serve3_log"] = (out / "serve3.log").read_text(errors="replace")[-800:]
    res["target_log_tail"] = t.text().splitlines()[-4:]

    if rec is not None:
        time.sleep(1.0)
        rec.send_signal(signal.SIGINT)
        try:
            res["record_rc"] = rec.wait(120)
        except subprocess.TimeoutExpired:
            rec.kill()
            res["record_rc"] = "hung"
        res["record_log"] = (out / "record.log").read_text(errors="replace")[-1200:]
        try:
            import duckdb  # noqa: F401

            from gpreempt_trace import api

            con = api.connect([str(trace)])
            res["markers"] = con.execute(
                "SELECT kind, seq, queue_ids, label, ts_ns FROM markers WHERE source = 'controller' ORDER BY ts_ns").fetchall()
            res["dbg_rows"] = con.execute(
                "SELECT ts_ns, event, ioctl_nr, dbg_op, ret, queue_ids FROM events WHERE ioctl_nr = 3223341862 "
                "ORDER BY ts_ns").fetchall()
            res["queue_rows"] = con.execute(
                "SELECT ts_ns, event, num_queues, queue_ids FROM events WHERE event IN ('queues_suspend', 'queues_resume') ORDER BY ts_ns").fetchall()
        except Exception as e:  # noqa: BLE001 - reported
            res["query_error"] = f"{e.__class__.__name__}: {e}"
    print("RESULT " + json.dumps(res, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
