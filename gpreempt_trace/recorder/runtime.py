"""The recorder runtime: build ONE BPF program (common.h + ioctl.bpf.c + kfd.bpf.c), compile it once with
BCC against the stub include tree, attach, drain the ring buffer in batches straight into numpy, decode
whole batches with decode.EventDecoder and write Parquet segments with TraceWriter.

    res = Recorder(RecordOptions(output="t", kfd_path="/dev/null", cmd=("python", "w.py"))).run()
    print(res.summary_line())

Filters live in the kernel: the tgid set (-p, and the launched command with its descendants through
sched_process_fork), the KFD device of the ioctl's fd, or the known AMDKFD_IOC_* numbers when the
device walk cannot be resolved. Lost records are counted per CPU in the kernel (gpt_lost) and written
to meta.json counters.events_lost.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import record_layout, resources
from ..decode import EventDecoder
from ..errors import GptError, PermissionProblem
from ..trace import TraceWriter
from . import ioctls
from .ring import RingReader

TRACERS = resources.tracers()
STUB_DIR = TRACERS / "stub"
SYS_BTF = Path("/sys/kernel/btf")
PROBE_GROUPS = ("kfd", "ioctl")
IOCTL_PROBE = "sys_ioctl"
IOCTL_FUNC = "syscalls:sys_enter_ioctl"
IOCTL_FUNC_ID = 0
TRACEFS = Path("/sys/kernel/tracing")
# struct paths the ioctl path walks: current->files->fdt->fd[fd]->f_inode->i_rdev
FD_WALK = {
    "task_struct__files": "task_struct.files",
    "files_struct__fdt": "files_struct.fdt",
    "fdtable__max_fds": "fdtable.max_fds",
    "fdtable__fd": "fdtable.fd",
    "file__f_inode": "file.f_inode",
    "inode__i_rdev": "inode.i_rdev",
}
BATCH_RECORDS = 65536


@dataclass
class RecordOptions:
    output: str
    probes: tuple[str, ...] = PROBE_GROUPS
    probes_explicit: bool = False  # the user named --probes (a group that cannot attach is then an error)
    attach: str = "auto"
    tgids: tuple[int, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    duration_s: float | None = None
    btf_dir: str | None = None
    kallsyms: str | None = None
    kfd_path: str = "/dev/kfd"
    cmd: tuple[str, ...] = ()
    ringbuf_mb: int = 32
    wakeup: bool = True  # False: BPF_RB_NO_WAKEUP, the reader polls on a timer
    poll_ms: float = 2.0  # how long to let records accumulate after a wakeup
    snapshot_interval_s: float | None = None
    debugfs_dir: str | None = None
    status: bool | None = None  # live status line on stderr; None = when stderr is a terminal


@dataclass
class RecordResult:
    path: Path
    events: int
    segments: int
    lost: int
    exit_code: int | None  # the workload's, when one was launched
    duration_s: float
    attach_plan: list[dict]
    missed: int | None = None  # meta counters.events_missed

    def summary_line(self) -> str:
        line = f"recorded {self.events} events in {self.segments} segments, {self.lost} lost -> {self.path}"
        if self.lost:
            line += " (hint: raise --ringbuf-mb or narrow the filter with -p)"
        if self.missed:
            line += f"; {self.missed} program runs skipped by the kernel (another BPF program was active on that CPU)"
        return line


PROG_INFO_SIZE = 232  # sizeof(struct bpf_prog_info), uapi of this build; fields past what the kernel knows stay 0
RECURSION_MISSES_OFF = 208  # offsetof(struct bpf_prog_info, recursion_misses) (5.12+)


def prog_misses(bpf) -> int | None:
    """Program runs the kernel skipped (another BPF program was active on that CPU, e.g. a task
    preempted inside one): events that never reached the ring, counted exactly by the kernel
    (bpf_prog_info.recursion_misses). None when the kernel does not report it."""
    import ctypes

    from bcc import libbcc

    total, seen = 0, False
    for fn in getattr(bpf, "funcs", {}).values():
        buf = ctypes.create_string_buffer(PROG_INFO_SIZE)
        size = ctypes.c_uint32(PROG_INFO_SIZE)
        if libbcc.lib.bpf_obj_get_info(fn.fd, buf, ctypes.byref(size)) != 0 or size.value < RECURSION_MISSES_OFF + 8:
            continue
        total += int.from_bytes(buf.raw[RECURSION_MISSES_OFF:RECURSION_MISSES_OFF + 8], "little")
        seen = True
    return total if seen else None


def parse_probes(spec: str | tuple[str, ...] | None) -> tuple[tuple[str, ...], bool]:
    if not spec:
        return PROBE_GROUPS, False
    items = spec if isinstance(spec, tuple) else tuple(s.strip() for s in spec.split(",") if s.strip())
    for p in items:
        if p not in PROBE_GROUPS:
            raise GptError(f"unknown probe group {p!r}", f"choose from {','.join(PROBE_GROUPS)}")
    if not items:
        raise GptError("no probe group given", f"choose from {','.join(PROBE_GROUPS)}")
    return tuple(dict.fromkeys(items)), True


def kernel_rdev(path: str) -> int:
    """The kernel-internal dev_t (MAJOR << 20 | MINOR) of a character device, as inode->i_rdev holds it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        hint = "load amdgpu (KFD) or name another device with --kfd-path" if path == "/dev/kfd" else "give an existing device with --kfd-path"
        raise GptError(f"{path} does not exist", hint) from None
    except OSError as e:
        raise GptError(f"cannot stat {path} ({e.strerror})", "check the path given with --kfd-path") from None
    if not stat.S_ISCHR(st.st_mode):
        raise GptError(f"{path} is not a character device", "give the KFD device node (/dev/kfd) with --kfd-path")
    return (os.major(st.st_rdev) << 20) | os.minor(st.st_rdev)


def fd_walk_offsets(btf_dir: str | None) -> tuple[dict[str, int] | None, str | None]:
    """BTF offsets for the fd -> inode walk of the running kernel; (None, why) when unresolvable."""
    from .btf import Btf

    path = (Path(btf_dir) if btf_dir else SYS_BTF) / "vmlinux"
    try:
        btf = Btf.load(path)
    except (OSError, GptError) as e:
        return None, f"no usable BTF at {path} ({getattr(e, 'what', None) or e.__class__.__name__})"
    out = {}
    for macro, fpath in FD_WALK.items():
        f = btf.field(fpath)
        if f is None or f.bit_size:
            return None, f"{fpath} not found in {path}"
        out[macro] = f.offset
    return out, None


def _ensure_tracefs() -> None:
    if (TRACEFS / "events").is_dir() or Path("/sys/kernel/debug/tracing/events").is_dir():
        return
    try:
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        raise GptError("tracefs is not mounted and could not be mounted", f"mount -t tracefs nodev {TRACEFS}") from None


@dataclass
class Program:
    text: str
    cflags: list[str]
    kfd_plan: object | None
    ioctl_filter: str | None  # "device" | "known_numbers" | None (ioctl group off)
    ioctl_filter_note: str | None
    kfd_rdev: int | None
    func_names: list[str]
    rows: list  # ProbeAttach-like rows (ioctl rows are dicts)


class Recorder:
    def __init__(self, opts: RecordOptions):
        self.o = opts
        self._stop_reason: str | None = None

    # ---- building -------------------------------------------------------------------------------
    def build(self) -> Program:
        o = self.o
        ring_bytes = o.ringbuf_mb * 1024 * 1024
        if ring_bytes <= 0 or ring_bytes & (ring_bytes - 1):
            raise GptError(f"--ringbuf-mb {o.ringbuf_mb} is not a power of two", "use e.g. 8, 32 or 128")
        pages = ring_bytes // 4096
        text = [(TRACERS / "common.h").read_text()]
        cflags = [f"-I{TRACERS}", f"-DGPT_RINGBUF_PAGES={pages}", f"-DGPT_RB_FLAGS={0 if o.wakeup else 1}"]
        if o.tgids or o.cmd:
            cflags.append("-DGPT_FILTER_TGID")
        if o.cmd:
            cflags.append("-DGPT_FOLLOW_FORK")
        func_names: list[str] = []
        rows: list = []
        ioctl_filter = note = None
        rdev = None
        if "ioctl" in o.probes:
            rdev = kernel_rdev(o.kfd_path)
            offs, why = fd_walk_offsets(o.btf_dir)
            func_names.append(IOCTL_FUNC)
            cflags.append(f"-DGPT_IOCTL_FUNC_ID={IOCTL_FUNC_ID}")
            cflags += ioctls.bpf_cflags()
            if offs is not None:
                ioctl_filter = "device"
                cflags.append(f"-DGPT_KFD_RDEV={rdev}")
                cflags += [f"-DGPT_OFF_{m}={v}" for m, v in offs.items()]
            else:
                ioctl_filter, note = "known_numbers", why
            text.append((TRACERS / "ioctl.bpf.c").read_text())
            rows.append({"probe": IOCTL_PROBE, "event": "kfd_ioctl", "target": "syscalls:sys_enter_ioctl+sys_exit_ioctl",
                         "mechanism": "tracepoint", "status": "planned",
                         "reason": None if ioctl_filter == "device" else f"filtering on known AMDKFD_IOC_* numbers: {note}",
                         "func_id": IOCTL_FUNC_ID})
        plan = None
        if "kfd" in o.probes:
            plan = self._plan_kfd(base=len(func_names))
            if plan is not None:
                names = plan.func_names()  # {func_id: name}, ids from len(func_names) on
                func_names += [f"func_{i}" for i in range(len(func_names), max(names, default=-1) + 1)]
                for fid, name in names.items():
                    func_names[fid] = name
                cflags += plan.cflags
                text.append(plan.source())
                rows += plan.probes
        return Program("\n".join(text), cflags, plan, ioctl_filter, note, rdev, func_names, rows)

    def _plan_kfd(self, base: int):
        o = self.o
        try:
            from .plan import plan_kfd
        except ImportError:
            if o.probes_explicit and o.probes == ("kfd",):
                raise GptError("the KFD function probes are not built yet", "use --probes ioctl") from None
            return None
        return plan_kfd(kallsyms=o.kallsyms, btf_dir=o.btf_dir, attach=o.attach, func_id_base=base)

    def print_bpf(self, out=sys.stdout) -> None:
        prog = self.build()
        out.write(f"// cflags: {' '.join(prog.cflags)}\n")
        out.write(prog.text)

    # ---- checks -------------------------------------------------------------------------------------
    def _check(self) -> None:
        o = self.o
        if os.geteuid() != 0:
            raise PermissionProblem("recording needs root (CAP_BPF, CAP_PERFMON)", "run it with sudo")
        for t in o.tgids:
            if not Path(f"/proc/{t}").is_dir():
                raise GptError(f"no process with tgid {t}", "check the -p value (ps -e)")
        if o.cmd and shutil.which(o.cmd[0]) is None:
            raise GptError(f"cannot start {o.cmd[0]!r}: command not found", "check the command after --")
        if o.duration_s is not None and o.duration_s <= 0:
            raise GptError(f"--duration {o.duration_s} is not positive", "give seconds, e.g. --duration 10")
        if o.snapshot_interval_s is not None:
            try:
                from ..snapshot import Snapshotter  # noqa: F401
            except ImportError:
                raise GptError("--snapshot-interval needs the snapshot module, which is not built yet", "drop --snapshot-interval") from None
        p = Path(o.output)
        if p.exists() and (not p.is_dir() or (any(p.iterdir()) and not (p / "meta.json").exists())):
            raise GptError(f"output {p} exists and is neither an empty directory nor a trace", "choose a new path with -o")

    def _compile(self, prog: Program):
        os.environ["BCC_KERNEL_SOURCE"] = str(STUB_DIR)
        try:
            from bcc import BPF
        except ImportError:
            raise GptError("BCC (python3-bpfcc) is not importable", "run `make setup`") from None
        _ensure_tracefs()
        try:
            return BPF(text=prog.text.encode(), cflags=prog.cflags)
        except Exception as e:  # BCC raises bare Exception; the compiler's messages went to stderr
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise GptError(f"BPF program failed to load ({msg})", "see the compiler/verifier output above; `record --print-bpf` shows the program") from None

    # ---- running --------------------------------------------------------------------------------------
    def run(self) -> RecordResult:
        o = self.o
        self._check()
        prog = self.build()
        tw = TraceWriter.create(o.output, o.labels, append=True)
        t0 = time.monotonic()
        bpf = ring = proc = snap = None
        events = lost = 0
        exit_code = None
        handlers = {}
        try:
            snap = self._snapshotter(tw)  # fails early (one line) when debugfs/KFD is absent
            bpf = self._bpf = self._compile(prog)
            self._attach(bpf, prog)
            tw.meta["attach_plan"] = [r if isinstance(r, dict) else r.as_dict() for r in prog.rows]
            tw.meta["func_names"] = prog.func_names
            tw.meta["recorder"] = self._meta(prog)
            tw.save_meta()
            for t in o.tgids:
                bpf[b"gpt_tgids"][bpf[b"gpt_tgids"].Key(t)] = bpf[b"gpt_tgids"].Leaf(1)
            if prog.ioctl_filter == "known_numbers":
                known = bpf[b"gpt_ioctl_known"]
                for nr in ioctls.known_nrs():
                    known[known.Key(nr)] = known.Leaf(1)
            tw.meta["recorder"]["recording_since_ns"] = time.monotonic_ns()  # probes attached, filters set
            tw.save_meta()
            dtype = record_layout.numpy_dtype()
            ring = RingReader(bpf[b"gpt_events"].map_fd, o.ringbuf_mb * 1024 * 1024, dtype)
            decoder = EventDecoder(tw.run_id, prog.func_names, ioctls.ioctl_name)
            writer = tw.writer("events")
            if snap:
                snap.take("baseline")
            handlers = self._install_signals()
            if o.cmd:
                proc = self._launch(bpf, tw)
            events, exit_code = self._loop(ring, decoder, writer, tw, proc, snap, time.monotonic())
            if snap:
                snap.take("after")
        finally:
            self._restore_signals(handlers)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if bpf is not None:
                lost = self._lost_now()
            counters = tw.meta.setdefault("counters", {})
            counters["events_lost"] = lost
            if bpf is not None:
                counters["events_missed"] = prog_misses(bpf)
            counters["events_received"] = events
            if ring is not None:
                counters["ring_odd_records"] = ring.odd_records
                ring.close()
            tw.close()
            if bpf is not None:
                bpf.cleanup()
        seg = tw.writers["events"].segments_closed if "events" in tw.writers else 0
        rows = tw.meta.get("attach_plan", [])
        return RecordResult(tw.path, tw.meta["counters"].get("events_written", events), seg, lost, exit_code,
                            time.monotonic() - t0, rows, tw.meta["counters"].get("events_missed"))

    def _attach(self, bpf, prog: Program) -> None:
        for r in prog.rows:  # BCC attached the TRACEPOINT_PROBEs while loading
            if isinstance(r, dict):
                r["status"] = "attached"
        plan = prog.kfd_plan
        if plan is not None:
            with warnings.catch_warnings():  # BCC warns for every str (not bytes) symbol name
                warnings.filterwarnings("ignore", message="not a bytes object")
                plan.attach(bpf)
            attached = plan.attached()
            if not attached:
                why = "; ".join(sorted({p.reason for p in plan.probes if p.reason}))[:300]
                if self.o.probes_explicit and "ioctl" not in self.o.probes:
                    raise GptError("no KFD function probe could attach", why or "see `gpreempt-trace doctor`")
                print(f"record: no KFD function probe attached ({why or 'see gpreempt-trace doctor'}); recording the ioctl path",
                      file=sys.stderr)

    def _meta(self, prog: Program) -> dict:
        o = self.o
        return {
            "probes": list(o.probes),
            "ioctl_filter": prog.ioctl_filter,
            "ioctl_filter_note": prog.ioctl_filter_note,
            "kfd_path": o.kfd_path if "ioctl" in o.probes else None,
            "kfd_rdev": prog.kfd_rdev,
            "tgids": list(o.tgids),
            "follow_children": bool(o.cmd),
            "command": list(o.cmd) or None,
            "ringbuf_bytes": o.ringbuf_mb * 1024 * 1024,
            "cflags": prog.cflags,
        }

    def _snapshotter(self, tw):
        if self.o.snapshot_interval_s is None:
            return None
        from ..snapshot import Snapshotter

        return Snapshotter(tw, debugfs_dir=self.o.debugfs_dir)

    def _launch(self, bpf, tw) -> subprocess.Popen:
        """Start the command held at a gate until its pid is in the tgid filter (no early call is missed)."""
        r, w = os.pipe()
        gate = f'read -r _ <&{r}; exec "$@"'
        proc = subprocess.Popen(["/bin/bash", "-c", gate, "gate", *self.o.cmd], pass_fds=(r,))
        os.close(r)
        tg = bpf[b"gpt_tgids"]
        tg[tg.Key(proc.pid)] = tg.Leaf(1)
        self._launched_ns = time.monotonic_ns()
        os.write(w, b"go\n")
        os.close(w)
        tw.writer("markers").append_rows([{
            "ts_ns": self._launched_ns, "source": "recorder", "kind": "workload_start", "tgid": proc.pid,
            "label": " ".join(self.o.cmd)[:500]}])
        return proc

    def _loop(self, ring: RingReader, decoder, writer, tw, proc, snap, t0: float) -> tuple[int, int | None]:
        """Drain, decode and write until the workload exits, --duration (from t0) passes or a signal comes."""
        o = self.o
        buf = np.empty(BATCH_RECORDS, ring.slot["rec"])
        pending: list[np.ndarray] = []
        pending_n = total = 0
        last_flush = last_status = last_snap = time.monotonic()
        status = o.status if o.status is not None else sys.stderr.isatty()
        status_n, status_t = 0, last_status
        exit_code = None
        proc_done = False
        while True:
            n = ring.read_into(buf)
            if n:
                pending.append(buf[:n].copy())
                pending_n += n
                total += n
            now = time.monotonic()
            if pending and (pending_n >= BATCH_RECORDS or now - last_flush >= 0.1 or self._stop_reason or proc_done):
                batch = pending[0] if len(pending) == 1 else np.concatenate(pending)
                writer.append_table(decoder.decode(batch))
                pending, pending_n, last_flush = [], 0, now
            tw.tick()
            if status and now - last_status >= 0.5:
                rate = (total - status_n) / max(now - status_t, 1e-9)
                sys.stderr.write(f"\rrecord: {total} events  {rate:,.0f}/s  lost {self._lost_now()}   ")
                sys.stderr.flush()
                last_status, status_n, status_t = now, total, now
            if snap and now - last_snap >= o.snapshot_interval_s:
                snap.take("during")
                last_snap = now
            if proc_done and n == 0 and not pending:
                break
            if not proc_done:
                if proc is not None and proc.poll() is not None:
                    exit_code = self._workload_exit(proc, tw)
                    proc_done = True
                elif self._stop_reason or (o.duration_s is not None and now - t0 >= o.duration_s):
                    proc_done = True  # drain what is committed, then stop
                    if proc is not None:
                        proc.terminate()
                        try:
                            proc.wait(5)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait()
                        exit_code = self._workload_exit(proc, tw)
                    continue
            if n == 0 and not proc_done:
                ring.wait(0.05)
                if o.poll_ms:
                    time.sleep(o.poll_ms / 1000)
        if status:
            sys.stderr.write("\n")
        return total, exit_code

    def _lost_now(self) -> int:
        try:
            return int(sum(self._bpf[b"gpt_lost"][0]))
        except Exception:  # noqa: BLE001 - BCC raises bare exceptions; a counter never stops a run
            return 0

    def _workload_exit(self, proc, tw) -> int:
        rc = proc.returncode
        code = rc if rc >= 0 else 128 - rc
        now = time.monotonic_ns()
        tw.writer("markers").append_rows([{
            "ts_ns": now, "source": "recorder", "kind": "workload_exit", "tgid": proc.pid,
            "value_ns": now - getattr(self, "_launched_ns", now), "label": f"exit_code={code}"}])
        return code

    def _install_signals(self) -> dict:
        def stop(signum, _frame):
            self._stop_reason = signal.Signals(signum).name

        old = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, stop)
            except ValueError:  # not the main thread
                pass
        return old

    def _restore_signals(self, old: dict) -> None:
        for s, h in old.items():
            signal.signal(s, h)
