"""One cell of the A/B experiment: an offline job, a controller service (schemes A/B) and an online
job with its preemption policy, all writing markers into one trace; stopped in an order that leaves
nothing preempted (online -> controller -> offline), also on SIGINT/SIGTERM.

    python -m gpreempt_trace.experiment.cell SPEC.json     # what `experiment ab` runs (under `record`)

Exit status: 0 when every part did its job, 130 when interrupted, 1 otherwise (the reason on stderr).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

INTERRUPTED = 130
STOP_WAIT_S = 10.0


@dataclass
class CellSpec:
    trace: str
    scheme: str  # none | A | B
    online: str
    offline: str
    duration_s: float
    rate_hz: float = 20.0
    batch: int = 8
    policy: str = "per-request"  # used for A/B; scheme none runs policy none
    burst_gap_ms: float = 20.0
    device: str = "auto"
    threads: Optional[int] = None
    backend: str = "torch"
    queues: str = "all"
    unchecked_ids: Optional[str] = None  # lab: made-up queue ids sent as given (`preempt serve --unchecked-ids`)
    open_kfd: bool = False  # offline job opens /dev/kfd and RUNTIME_ENABLE first (lab)
    snapshots: bool = False  # debugfs readable: baseline / during / after snapshots into the trace
    warmup_timeout_s: float = 300.0
    result_file: Optional[str] = None

    @property
    def effective_policy(self) -> str:
        return "none" if self.scheme == "none" else self.policy


LAB_CONTROLLER_TIMEOUT_S = 60  # workload --controller-timeout in the lab guest (the default, 5 s, is for hardware)


@dataclass
class CellResult:
    trace: str
    scheme: str
    ok: bool
    interrupted: bool = False
    online_line: str = ""
    offline_line: str = ""
    offline_pid: Optional[int] = None
    errors: list[str] = field(default_factory=list)
    exit_codes: dict = field(default_factory=dict)


class _Interrupted(Exception):
    pass


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpreempt_trace.cli.main", *args]


def _workload_args(spec: CellSpec, role: str, model: str) -> list[str]:
    a = ["workload", role, "--model", model, "--batch", str(spec.batch), "--device", spec.device, "--trace", spec.trace]
    if spec.threads:
        a += ["--threads", str(spec.threads)]
    if spec.backend != "torch":
        a += ["--backend", spec.backend]
    return a


class Cell:
    def __init__(self, spec: CellSpec):
        self.spec = spec
        self.procs: dict[str, subprocess.Popen] = {}
        self.res = CellResult(spec.trace, spec.scheme, ok=False)
        self.work = Path(spec.trace).parent / f".cell-{os.getpid()}"
        self.snap = None
        self.reported: set[str] = set()  # processes whose failure is already in res.errors
        self.writing = False  # a snapshot is being written: a stop signal waits for it (never cuts the trace writer)
        self.pending: Optional[str] = None

    # -- processes
    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs[name] = p
        return p

    def _failed(self, name: str, p: subprocess.Popen) -> str:
        out, err = p.communicate()
        self.reported.add(name)
        tail = (err or out or "").strip().splitlines()
        return f"{name} exited with {p.returncode}: {tail[-1] if tail else 'no output'}"

    def _wait_for(self, what: str, ready, proc_name: str, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while not ready():
            p = self.procs[proc_name]
            if p.poll() is not None:
                raise RuntimeError(self._failed(proc_name, p))
            if time.monotonic() > end:
                raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s")
            time.sleep(0.05)

    def _stop(self, name: str) -> None:
        p = self.procs.get(name)
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            self.res.errors.append(f"{name} did not stop within {STOP_WAIT_S:.0f} s of SIGTERM: killed")
        self.res.exit_codes[name] = p.returncode
        line = (out or "").strip().splitlines()
        if name == "online" and line:
            self.res.online_line = line[-1]
        if name == "offline" and line:
            self.res.offline_line = line[-1]
        if p.returncode not in (0, -signal.SIGTERM) and not self.res.interrupted and name not in self.reported:
            tail = (err or "").strip().splitlines()
            self.res.errors.append(f"{name} exited with {p.returncode}: {tail[-1] if tail else 'no output'}")
        del self.procs[name]

    def _snapshot(self, phase: str) -> None:
        if self.snap is not None:
            self.writing = True
            try:
                self.snap.take(phase)
            except Exception as e:  # noqa: BLE001 - a snapshot never stops the experiment; say why
                self.res.errors.append(f"debugfs snapshot ({phase}) failed: {e}")
                self.snap = None
            finally:
                self.writing = False
            if self.pending:
                name, self.pending = self.pending, None
                raise _Interrupted(name)

    # -- the run
    def run(self) -> CellResult:
        s = self.spec
        self.work.mkdir(parents=True, exist_ok=True)
        ready = self.work / "offline.ready"
        # a Unix socket cannot live on every file system (9p, NFS): the controller's goes under /tmp
        sock_dir = Path(tempfile.mkdtemp(prefix="gpt-cell-"))
        sock = sock_dir / "controller.sock"
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        tw = None
        try:
            if s.snapshots:
                from ..debugfs.snapshot import Snapshotter
                from ..trace.directory import TraceWriter

                tw = TraceWriter.join(s.trace, prefix=f"exps{os.getpid()}")
                self.snap = Snapshotter(tw)
                self._snapshot("baseline")
            off = _workload_args(s, "offline", s.offline) + ["--duration", str(s.duration_s + s.warmup_timeout_s + 60),
                                                              "--ready-file", str(ready)]
            if s.open_kfd:
                off.append("--open-kfd")
            self.res.offline_pid = self._start("offline", _cli(*off)).pid
            self._wait_for("offline job", ready.exists, "offline", s.warmup_timeout_s)
            online = _workload_args(s, "online", s.online) + ["--duration", str(s.duration_s), "--rate", str(s.rate_hz),
                                                              "--preempt-policy", s.effective_policy,
                                                              "--ready-file", str(self.work / "online.ready")]
            if s.scheme != "none":
                ctl = ["preempt", "serve", "--scheme", s.scheme, "--pid", str(self.res.offline_pid), "--socket", str(sock),
                       "-o", s.trace]
                # made-up ids (the lab: no GPU queues) only for scheme A, where KFD answers INVALID per id; the
                # scheme-B ioctls refuse ids that do not exist (ENOENT), so B names its queues as configured
                ctl += ["--queues", s.unchecked_ids, "--unchecked-ids"] if s.unchecked_ids and s.scheme == "A" else ["--queues", s.queues]
                self._start("controller", _cli(*ctl))
                self._wait_for("controller service", sock.exists, "controller", s.warmup_timeout_s)
                online += ["--controller-socket", str(sock), "--burst-gap-ms", str(s.burst_gap_ms)]
                if s.open_kfd:  # the lab guest (QEMU TCG): a ptrace + DBG_TRAP call may take seconds there
                    online += ["--controller-timeout", str(LAB_CONTROLLER_TIMEOUT_S)]
            self._snapshot("during")
            p = self._start("online", _cli(*online))
            try:
                p.wait(timeout=s.duration_s + s.warmup_timeout_s + 60)
            except subprocess.TimeoutExpired:
                self.res.errors.append(f"online job still running {s.warmup_timeout_s + 60:.0f} s after its duration: stopped")
            self._stop("online")
            self.res.ok = True
        except _Interrupted:
            self.res.interrupted = True
        except RuntimeError as e:
            self.res.errors.append(str(e))
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stop sequence below must run to the end
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for name in ("online", "controller", "offline"):  # the controller resumes on its way out
                self._stop(name)
            self._snapshot("after")
            if tw is not None:
                tw.close()
            for f in (ready, sock, self.work / "online.ready"):
                f.unlink(missing_ok=True)
            for d in (self.work, sock_dir):
                try:
                    d.rmdir()
                except OSError:
                    pass
            for sig, h in old.items():
                signal.signal(sig, h)
        self.res.ok = self.res.ok and not self.res.errors and not self.res.interrupted
        return self.res

    def _on_signal(self, signum, _frame):
        name = signal.Signals(signum).name
        if self.writing:
            self.pending = self.pending or name
            return
        raise _Interrupted(name)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = CellSpec(**json.loads(Path(argv[0]).read_text()))
    res = Cell(spec).run()
    if spec.result_file:  # the driver prints the errors from here
        Path(spec.result_file).write_text(json.dumps(asdict(res), indent=1))
    else:
        for e in res.errors:
            print(f"cell {spec.scheme}: {e}", file=sys.stderr)
    return 0 if res.ok else INTERRUPTED if res.interrupted else 1


if __name__ == "__main__":
    sys.exit(main())
