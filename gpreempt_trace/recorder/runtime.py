"""The recorder runtime: build ONE BPF program (common.h + ioctl.bpf.c + kfd.bpf.c), compile it once with
BCC against the stub include tree, attach, drain the ring buffer in batches straight into numpy, decode
whole batches with decode.EventDecoder and write Parquet segments with TraceWriter.

    res = Recorder(RecordOptions(output="t", kfd_path="/dev/null", cmd=("python", "w.py"))).run()
    res.summary_line()

Filters live in the kernel: the tgid set (-p, and the launched command with its descendants through
sched_process_fork), the KFD device of the ioctl's fd, or the known AMDKFD_IOC_* numbers when the
device walk cannot be resolved. Lost records are counted per CPU in the kernel (gpt_lost) and written
to meta.json counters.events_lost (null when the counter cannot be read: unknown, never 0).

Stopping is bounded: when the command exits, --duration passes or SIGINT/SIGTERM arrives, the reader
drains only what the ring held at that moment, for at most RecordOptions.stop_drain_s (a second signal
ends the drain at once); what it could not drain is counted as lost (counters.events_unread_at_stop).
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import record_layout
from ..contracts import resources
from .decode import EventDecoder
from ..errors import GptError, PermissionProblem
from ..trace.containers import ContainerFilter, exec_target, pidns_offsets
from ..trace.launcher import Launcher
from ..trace.processes import ProcessLog
from ..trace.directory import META, TraceWriter, already_a_trace
from ..trace.writer import DEFAULT_SEGMENT_S
from . import flight, ioctls
from .plan import IOCTL_TP_FUNC, IoctlPlan, plan_ioctl
from .ring import RingReader

TRACERS = resources.tracers()
STUB_DIR = TRACERS / "stub"
SYS_BTF = Path("/sys/kernel/btf")
PROBE_GROUPS = ("kfd", "ioctl")
IOCTL_FUNC = IOCTL_TP_FUNC  # func_names[IOCTL_FUNC_ID]: the tracepoint variant's rows
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
DECODE_EVERY_S = 0.1  # the reader's period: a record waits at most this long (ring + batch) before going to the writer
# the events writer cuts a row group when the segment closes (or at rows_per_group): a row group is not
# readable before its segment is closed anyway, and 5 row groups per segment cost ~40 % more writer CPU
EVENTS_GROUP_MS = DEFAULT_SEGMENT_S * 1000
WAKEUPS_PER_RING = 8  # with wakeups on: the kernel wakes the reader about this often per ring's worth of records
WAKE_EVERY_MAX = 8192  # records per CPU between two wakeups, at most
STOP_DRAIN_S = 2.0  # after a stop: drain what the ring holds for at most this long
RINGBUF_MB_MAX = 1024  # --ringbuf-mb: a power of two from 1 to this


@dataclass
class RecordOptions:
    """The options of `record`; fields are named like its flags (tgids = -p, cmd = the command after --)."""

    output: str
    probes: tuple[str, ...] | str | None = None  # "kfd,ioctl" or a tuple; None = both, recording what attaches
    probes_explicit: bool = False  # the user named --probes (a group that cannot attach is then an error)
    attach: str = "auto"
    tgids: tuple[int, ...] = ()
    containers: tuple[str, ...] = ()  # --container: ids, >= 12-hex prefixes or names (gpreempt_trace.trace.containers)
    labels: dict[str, str] = field(default_factory=dict)
    duration_s: float | None = None
    btf_dir: str | None = None
    kallsyms: str | None = None
    kfd_path: str = "/dev/kfd"
    cmd: tuple[str, ...] = ()
    ringbuf_mb: int = 32
    wakeup: bool = True  # the kernel wakes the reader once per batch of records (wake_every); False: timer only
    poll_ms: float = 2.0  # how long to let records accumulate after a wakeup
    snapshot_interval_s: float | None = None
    debugfs_dir: str | None = None
    stop_drain_s: float = STOP_DRAIN_S
    keep: str | None = None  # --keep 10m | 2GiB: flight recorder, only the newest segments stay (recorder/flight.py)
    triggers: str | None = None  # --trigger queue_reset,hws_hang,preempt_over=5ms: save the kept window
    after_s: float = 5.0  # --after: seconds a saved window runs past its trigger

    def __post_init__(self):
        if self.probes is None or isinstance(self.probes, str):
            self.probes, explicit = parse_probes(self.probes)
            self.probes_explicit = self.probes_explicit or explicit
        else:
            self.probes = parse_probes(tuple(self.probes))[0]
        self.tgids, self.cmd = tuple(self.tgids), tuple(self.cmd)
        self.containers = tuple(self.containers)


@dataclass
class Progress:
    """The recorder's state, reported about twice a second while it runs."""

    events: int
    rate_per_s: float
    lost: int | None  # None: the kernel's counter could not be read


@dataclass
class RecordResult:
    path: Path
    events: int
    segments: int
    lost: int | None  # None: unknown (the kernel's loss counter could not be read)
    exit_code: int | None  # the workload's, when one was launched
    duration_s: float
    attach_plan: list[dict]
    missed: int | None = None  # meta counters.events_missed
    unread_at_stop: int = 0  # of `lost`: left in the ring when the stop deadline passed
    saved: list = field(default_factory=list)  # flight recorder: the trace directories saved under OUT/triggered

    def summary_line(self) -> str:
        lost = "lost: unknown (the kernel's loss counter could not be read)" if self.lost is None else f"{self.lost} lost"
        line = f"recorded {self.events} events in {self.segments} segments, {lost} -> {self.path}"
        if self.unread_at_stop:
            line += f" ({self.unread_at_stop} of them still in the ring at the stop deadline)"
        elif self.lost:
            line += " (hint: raise --ringbuf-mb or narrow the filter with -p)"
        if self.missed:
            line += f"; {self.missed} program runs skipped by the kernel (another BPF program was active on that CPU)"
        if self.saved:
            line += f"; {len(self.saved)} window{'s' if len(self.saved) > 1 else ''} saved under {self.path / 'triggered'}"
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


def wake_every(ring_bytes: int, ncpu: int | None = None) -> int:
    """Records per CPU between two reader wakeups: a power of two, about WAKEUPS_PER_RING times per
    ring's worth of records over all CPUs (no wakeup per record: that costs the traced program a
    cross-CPU interrupt per call and the reader a loop per record); the reader's DECODE_EVERY_S timer does the rest."""
    ncpu = ncpu or os.cpu_count() or 1
    stride = (record_layout.layout().size + 8 + 7) // 8 * 8
    n = max(1, ring_bytes // stride // (WAKEUPS_PER_RING * ncpu))
    return min(1 << (n.bit_length() - 1), WAKE_EVERY_MAX)


RELEASE_EVERY_S = 1.0  # how often the loop hands freed Arrow/heap memory back to the OS


def release_freed_memory() -> None:
    """Return freed memory to the OS: Arrow's pool (mimalloc/jemalloc keep freed pages for reuse) and
    glibc's heap (numpy batches). Cheap; keeps the recorder's RSS at what it holds, not what it once held."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


COMPILER_LIBS = ("libLLVM", "libclang")  # BCC's compiler: not run again once the program is loaded
MADV_DONTNEED = 4


def release_compiler_memory(maps: str = "/proc/self/maps") -> int:
    """Give back what compiling the program took and no longer needs: the heap clang/LLVM freed (glibc
    keeps it otherwise) and the compiler's code pages (clean, file-backed: dropped from this process's
    RSS, faulted in again from the page cache if ever run). ~90 MB of the recorder's RSS. Returns the
    number of code mappings released."""
    import ctypes
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return 0
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    try:
        lines = Path(maps).read_text().splitlines()
    except OSError:
        return 0
    for ln in lines:
        parts = ln.split()
        # only never-written code (r-xp): madvise on a written private page would lose its contents
        if len(parts) >= 6 and parts[1] == "r-xp" and any(lib in Path(parts[5]).name for lib in COMPILER_LIBS):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if libc.madvise(lo, hi - lo, MADV_DONTNEED) == 0:
                released += 1
    return released


def parse_probes(spec: str | tuple[str, ...] | None) -> tuple[tuple[str, ...], bool]:
    if spec is None:  # not given: both ("" is bad input, not the default)
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
    if not path:
        raise GptError("--kfd-path is empty", "give the KFD device node (/dev/kfd) with --kfd-path")
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
    from .btf import field_offsets

    return field_offsets((Path(btf_dir) if btf_dir else SYS_BTF) / "vmlinux", FD_WALK)


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
    ioctl_plan: IoctlPlan | None = None  # the ioctl path's variants (None: ioctl group off)


@dataclass
class _Run:
    """What one Recorder.run has started so far: set-up fills it in step by step, so the close (which runs
    after an error too) sees exactly what has to be stopped and counted."""
    tw: TraceWriter
    prog: Program
    t0: float
    bpf: object | None = None
    ring: RingReader | None = None
    snap: object | None = None
    launcher: Launcher | None = None
    events: int = 0
    lost: int | None = None
    exit_code: int | None = None


def _offset_guard(prog: "Program"):
    from .plausibility import OffsetGuard

    plan = prog.kfd_plan
    if plan is None:
        return None
    kfd_ids = {p.func_id for p in plan.probes if p.status == "attached"}
    if prog.ioctl_plan is not None and prog.ioctl_plan.kprobe_row is not None:
        kfd_ids.discard(prog.ioctl_plan.kprobe_row.func_id)  # kfd_ioctl's decoded rows: user memory, no struct offsets
    return OffsetGuard(kfd_ids, (plan.btf_source or {}).get("kind"))


def attach_probes(bpf, prog: Program) -> None:
    """Attach the program's probes with BCC, by trying (KfdPlan.attach): the only BCC calls after the load.
    The outcome is in prog.rows / prog.kfd_plan (status, reason, target)."""
    with warnings.catch_warnings():  # BCC warns for every str (not bytes) symbol name
        warnings.filterwarnings("ignore", message="not a bytes object")
        if prog.ioctl_plan is not None:  # its row (a dict in prog.rows) and the kfd_ioctl row say which variant
            prog.ioctl_plan.attach(bpf)
        if prog.kfd_plan is not None:
            prog.kfd_plan.attach(bpf)


class Recorder:
    def __init__(self, opts: RecordOptions):
        self.o = opts
        self._stop_reason: str | None = None  # the signal that asked for the stop
        self._stop_why: str | None = None  # what ended the recording (meta recorder.stop_reason)
        self._signals = 0
        self._unread = 0
        self._lost_warned = False
        self._bpf = None
        self._containers = None  # ContainerFilter of --container (set by _check)
        self._guard = None  # OffsetGuard once recording
        self._flight = None  # FlightRecorder (recorder/flight.py) once recording
        self._save_requests = 0  # SIGUSR1s received: each saves the kept window (cause "signal")

    # ---- building -------------------------------------------------------------------------------
    def build(self) -> Program:
        o = self.o
        ring_bytes = o.ringbuf_mb * 1024 * 1024
        if not 1 <= o.ringbuf_mb <= RINGBUF_MB_MAX or o.ringbuf_mb & (o.ringbuf_mb - 1):
            raise GptError(f"--ringbuf-mb {o.ringbuf_mb} is not a power of two from 1 to {RINGBUF_MB_MAX}", "use e.g. 8, 32 or 128")
        pages = ring_bytes // 4096
        text = [(TRACERS / "common.h").read_text()]
        cflags = [f"-I{TRACERS}", f"-DGPT_RINGBUF_PAGES={pages}", "-DGPT_RB_FLAGS=1",
                  f"-DGPT_WAKE_EVERY={wake_every(ring_bytes) if o.wakeup else 0}"]
        if o.tgids or o.cmd or o.containers:
            cflags.append("-DGPT_FILTER_TGID")
        if o.cmd or o.containers:
            cflags.append("-DGPT_FOLLOW_FORK")
        if o.containers or exec_target(o.cmd):  # processes entering the container's pid namespace (docker exec)
            pns, _why = pidns_offsets((Path(o.btf_dir) if o.btf_dir else SYS_BTF) / "vmlinux")
            if pns is not None:
                cflags.append("-DGPT_FOLLOW_PIDNS")
                cflags += [f"-DGPT_OFF_{m}={v}" for m, v in pns.items()]
        func_names: list[str] = []
        rows: list = []
        ioctl_filter = note = None
        rdev = None
        ioctl = None
        if "ioctl" in o.probes:
            rdev = kernel_rdev(o.kfd_path)
            ioctl = plan_ioctl(rdev, *fd_walk_offsets(o.btf_dir), func_id=IOCTL_FUNC_ID)
            ioctl_filter, note = ioctl.filter, ioctl.filter_note
            func_names.append(IOCTL_FUNC)
            cflags += ioctl.cflags
            text.append(ioctl.source())
            rows.append(ioctl.row)
        plan = None
        if "kfd" in o.probes:
            plan = self._plan_kfd(base=len(func_names))
            names = plan.func_names()  # {func_id: name}, ids from len(func_names) on
            func_names += [f"func_{i}" for i in range(len(func_names), max(names, default=-1) + 1)]
            for fid, name in names.items():
                func_names[fid] = name
            cflags += plan.cflags
            text.append(plan.source())
            rows += plan.probes
        if ioctl is not None:  # the kprobe on kfd_ioctl first (its rows: that probe's func), then the tracepoints
            cflags += ioctl.use_kprobe(plan)
        elif plan is not None:  # --probes kfd: kfd_ioctl's rows decoded all the same (the kprobe variant only)
            kp = plan_ioctl(None, None, None, func_id=IOCTL_FUNC_ID, tracepoint=False)
            extra = kp.use_kprobe(plan)
            if extra:
                ioctl = kp
                cflags += kp.cflags + extra
                text.append(kp.source())
        return Program("\n".join(text), cflags, plan, ioctl_filter, note, rdev, func_names, rows, ioctl)

    def _plan_kfd(self, base: int):
        from .plan import plan_kfd

        o = self.o
        return plan_kfd(kallsyms=o.kallsyms, btf_dir=o.btf_dir, attach=o.attach, func_id_base=base)

    def bpf_text(self) -> str:
        """The BPF program and its cflags (a comment line first), as `record --print-bpf` shows them."""
        prog = self.build()
        return f"// cflags: {' '.join(prog.cflags)}\n{prog.text}"

    # ---- checks -------------------------------------------------------------------------------------
    def _check(self) -> None:
        o = self.o
        if os.geteuid() != 0:
            raise PermissionProblem("recording needs root (CAP_BPF, CAP_PERFMON)", "run it with sudo")
        for t in o.tgids:
            if not Path(f"/proc/{t}").is_dir():
                raise GptError(f"no process with tgid {t}", "check the -p value (ps -e)")
        # --container ID (and `-- docker exec C ...`): resolved now, so an unknown one leaves no trace behind
        self._containers = ContainerFilter(o.containers, o.cmd) if (o.containers or exec_target(o.cmd)) else None
        if o.cmd and shutil.which(o.cmd[0]) is None:
            raise GptError(f"cannot start {o.cmd[0]!r}: command not found", "check the command after --")
        if o.duration_s is not None and not o.duration_s > 0:
            raise GptError(f"--duration {o.duration_s} is not positive", "give seconds, e.g. --duration 10")
        if o.snapshot_interval_s is not None and not o.snapshot_interval_s > 0:
            raise GptError(f"--snapshot-interval {o.snapshot_interval_s} is not positive", "give seconds, e.g. --snapshot-interval 1")
        if o.btf_dir is not None and not Path(o.btf_dir).is_dir():
            raise GptError(f"--btf {o.btf_dir} is not a directory", "give a directory laid out like /sys/kernel/btf")
        if o.keep is not None:
            flight.parse_keep(o.keep)
        if o.triggers is not None:
            flight.parse_triggers(o.triggers)
        if not o.after_s >= 0:
            raise GptError(f"--after {o.after_s} is not a number of seconds >= 0", "give e.g. --after 5")
        p = Path(o.output)
        if (p / META).exists():  # one run per trace: a second record never touches the first one's meta
            raise already_a_trace(p)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise GptError(f"output {p} exists and is not an empty directory", "choose a new path with -o")

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
    def run(self, progress: Callable[[Progress], None] | None = None) -> RecordResult:
        """Record until the command exits, --duration passes or SIGINT/SIGTERM arrives; then drain the
        ring for at most stop_drain_s, close the segments and write meta.json. `progress` is called about
        twice a second (the CLI's live status line)."""
        # SIGINT/SIGTERM only set a flag from here on: during start-up it is read at each step (_starting),
        # which ends the run in one line with the trace closed (or none written yet)
        handlers = self._install_signals()
        try:
            prog, tw = self._prepare()
        except BaseException:
            self._restore_signals(handlers)
            raise
        r = _Run(tw, prog, time.monotonic())
        self._plog = ProcessLog(tw, "recorder")  # /proc facts of every process its events name (issue 21)
        try:
            decoder, writer = self._start(r)
            self._launch(r)
            r.events, r.exit_code = self._loop(r.ring, decoder, writer, tw, r.launcher, r.snap, time.monotonic(), progress)
            if r.snap:
                r.snap.take("after")
        finally:
            self._close(r, handlers)
        return self._result(r)

    def _prepare(self) -> tuple[Program, TraceWriter]:
        """Check the options, build the program and create the trace directory."""
        self._check()
        prog = self.build()
        self._starting("planning the probes", None)
        return prog, TraceWriter.create(self.o.output, self.o.labels)

    def _start(self, r: _Run):
        """Open debugfs, compile, attach, set the kernel filters and open the ring, decoder, writer and
        flight recorder: everything up to the first read. Returns (decoder, events writer)."""
        o, tw, prog = self.o, r.tw, r.prog
        r.snap = self._snapshotter(tw)  # fails early (one line) when debugfs/KFD is absent
        self._starting("opening debugfs", tw)
        r.bpf = self._bpf = self._compile(prog)
        self._starting("compiling the BPF program", tw)
        self._attach(r.bpf, prog)
        self._starting("attaching the probes", tw)
        tw.meta["attach_plan"] = [x if isinstance(x, dict) else x.as_dict() for x in prog.rows]
        tw.meta["func_names"] = prog.func_names
        tw.meta["recorder"] = self._meta(prog)
        tw.save_meta()
        self._set_filters(r.bpf, prog, tw)
        tw.meta["recorder"]["recording_since_ns"] = time.monotonic_ns()  # probes attached, filters set
        tw.save_meta()
        dtype = record_layout.numpy_dtype()
        r.ring = RingReader(r.bpf[b"gpt_events"].map_fd, o.ringbuf_mb * 1024 * 1024, dtype)
        decoder = EventDecoder(tw.run_id, prog.func_names, ioctls.ioctl_name)
        self._guard = _offset_guard(prog)
        # Parquet encoding overlaps the ring reads and decoding
        writer = tw.writer("events", background=True, group_ms=EVENTS_GROUP_MS)
        self._flight = flight.FlightRecorder(
            tw, flight.parse_keep(o.keep) if o.keep else None, flight.parse_triggers(o.triggers) if o.triggers else None,
            o.after_s, lost=self._lost_now)
        tw.meta["recorder"]["flight"] = self._flight.meta()
        tw.save_meta()
        if r.snap:
            r.snap.take("baseline")
        self._lost_now()  # opens gpt_lost: every map is open now (BCC builds their key/leaf readers lazily)
        # after the maps were opened, and before the command runs: its first calls do not compete with
        # this one-off work (gc, heap trim) for the CPU
        release_compiler_memory()
        return decoder, writer

    def _set_filters(self, bpf, prog: Program, tw: TraceWriter) -> None:
        """The kernel-side filters: -p tgids, the --container processes and pid namespaces, the known
        AMDKFD_IOC_* numbers when the ioctl path cannot filter on the device."""
        o = self.o
        tgids = bpf[b"gpt_tgids"]
        for t in o.tgids:
            tgids[tgids.Key(t)] = tgids.Leaf(1)
        if self._containers is not None:
            for t in self._containers.tgids:
                tgids[tgids.Key(t)] = tgids.Leaf(1)
            if "-DGPT_FOLLOW_PIDNS" in prog.cflags:
                pidns = bpf[b"gpt_pidns"]
                for ns in self._containers.pidns:
                    pidns[pidns.Key(ns)] = pidns.Leaf(1)
            self._containers.rescan()  # a process that joined while the probes attached
            for t in self._containers.tgids:
                tgids[tgids.Key(t)] = tgids.Leaf(1)
            tw.meta["recorder"]["containers"] = dict(self._containers.meta(), follow_pidns="-DGPT_FOLLOW_PIDNS" in prog.cflags)
        if prog.ioctl_filter == "known_numbers":
            known = bpf[b"gpt_ioctl_known"]
            for nr in ioctls.known_nrs():
                known[known.Key(nr)] = known.Leaf(1)

    def _launch(self, r: _Run) -> None:
        """Start the command after --, if any: held at the launcher's gate until its pid is in the tgid
        filter, so no early call is missed."""
        if not self.o.cmd:
            return
        r.launcher = Launcher(self.o.cmd, trace=r.tw.path)
        pid = r.launcher.start(hold=True)
        tgids = r.bpf[b"gpt_tgids"]
        tgids[tgids.Key(pid)] = tgids.Leaf(1)
        r.launcher.release()

    def _close(self, r: _Run, handlers: dict) -> None:
        """After the loop or an error: stop the command, count, close the trace and the BPF program, put the
        signal handlers back (SIGUSR1's once the trace is closed)."""
        usr1 = {s: handlers.pop(s) for s in (signal.SIGUSR1,) if s in handlers}  # restored once the trace is closed
        self._restore_signals(handlers)
        tw = r.tw
        if r.launcher is not None:
            r.launcher.close()  # stops a command still running (an error above), closes its markers
            r.exit_code = r.launcher.exit_code if r.exit_code is None else r.exit_code
            tw.add_rows_written("markers", r.launcher.markers_written)
        self._count(r)
        if r.ring is not None:
            r.ring.close()
        tw.meta.setdefault("recorder", {})["stop_reason"] = self._stop_why
        if self._guard is not None:
            tw.meta["recorder"]["btf_plausibility"] = self._guard.as_dict()
        self._plog.finish()  # those still alive read again; gone ones: NULL facts
        if r.snap is not None:
            r.snap.plog.finish()
        if self._flight is not None:
            for w in tw.writers.values():
                w.close()  # a save still pending ends with every row written (tw.close closes them again: no-op)
            self._flight.close(time.monotonic_ns())
        tw.close()
        if r.bpf is not None:
            r.bpf.cleanup()
        self._restore_signals(usr1)

    def _count(self, r: _Run) -> None:
        """meta.json counters: events lost (kernel drops + unread at stop), missed, received, odd ring records."""
        counters = r.tw.meta.setdefault("counters", {})
        if r.bpf is not None:
            lost = self._lost_now()
            if lost is not None:
                lost += self._unread
            r.lost = lost
            counters["events_lost"] = lost  # None: the kernel's counter could not be read (unknown, not 0)
            counters["events_unread_at_stop"] = self._unread
            counters["events_missed"] = prog_misses(r.bpf)
            counters["events_received"] = r.events
        if r.ring is not None:
            counters["ring_odd_records"] = r.ring.odd_records

    def _result(self, r: _Run) -> RecordResult:
        tw = r.tw
        seg = tw.writers["events"].segments_closed if "events" in tw.writers else 0
        rows = tw.meta.get("attach_plan", [])
        return RecordResult(tw.path, tw.meta["counters"]["events_written"], seg, r.lost, r.exit_code,
                            time.monotonic() - r.t0, rows, tw.meta["counters"].get("events_missed"), self._unread,
                            list(self._flight.saved) if self._flight is not None else [])

    def _attach(self, bpf, prog: Program) -> None:
        attach_probes(bpf, prog)
        self._attach_outcome(prog)

    def _attach_outcome(self, prog: Program) -> None:
        """What attach_probes left in the plan: a warning, or an error when --probes kfd got nothing."""
        plan = prog.kfd_plan
        if plan is not None:
            attached = plan.attached()
            src = plan.btf_source or {}
            if attached and src.get("kind") == "none":
                warnings.warn(f"KFD struct fields (queue id, type, doorbell, gpu, pasid, owner) will be NULL: {src.get('detail')}"
                              + (f": {src['fix']}" if src.get("fix") else ""), stacklevel=2)
            if not attached:
                why = "; ".join(sorted({p.reason for p in plan.probes if p.reason}))[:300]
                if self.o.probes_explicit and "ioctl" not in self.o.probes:
                    raise GptError("no KFD function probe could attach", why or "see `gpreempt-trace doctor`")
                warnings.warn(f"no KFD function probe attached ({why or 'see gpreempt-trace doctor'}); recording the ioctl path",
                              stacklevel=2)

    def _check_offsets(self, rec) -> None:
        """The offsets' plausibility on the first self-owned events (recorder/plausibility.py)."""
        g = self._guard
        if g is None or g.state in ("off", "trusted"):
            return
        before = g.state
        g.apply(rec)
        if g.state == "disabled" and before != "disabled":
            warnings.warn(g.warning(), stacklevel=2)

    def _meta(self, prog: Program) -> dict:
        o = self.o
        return {
            "btf_source": prog.kfd_plan.btf_source if prog.kfd_plan is not None else None,
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
        from ..debugfs.snapshot import Snapshotter

        return Snapshotter(tw, debugfs_dir=self.o.debugfs_dir)

    def _loop(self, ring: RingReader, decoder, writer, tw, launcher, snap, t0: float, progress) -> tuple[int, int | None]:
        """Drain, decode and write until the command exits, --duration (from t0) passes or a signal
        comes; then drain only what the ring held at that moment, for at most stop_drain_s."""
        o = self.o
        dtype = ring.slot["rec"]
        # the ring is copied straight into the batch to decode; one buffer for the whole run (warm pages:
        # a fresh one per batch costs a page fault per 20 records); decoded tables never alias it
        batch = np.empty(BATCH_RECORDS, dtype)
        pending_n = total = 0
        last_decode = last_status = last_snap = last_release = last_rescan = time.monotonic()
        status_n = 0
        exit_code = None
        stop_pos = None  # ring producer position when the stop began: later records are after the run
        stop_by = 0.0  # monotonic deadline of the final drain
        fl_signals = 0  # SIGUSR1s served
        last_flight = 0.0  # the flight recorder's last tick (one per DECODE_EVERY_S, or when a save is due)
        while True:
            n = ring.read_into(batch[pending_n:], until=stop_pos)
            pending_n += n
            total += n
            now = time.monotonic()
            fl, now_ns = self._flight, time.monotonic_ns()
            if pending_n and (pending_n >= BATCH_RECORDS or now - last_decode >= DECODE_EVERY_S or stop_pos is not None
                              or (fl is not None and fl.due(now_ns))):  # a saved window is cut after what was read
                self._check_offsets(batch[:pending_n])
                tbl = decoder.decode(batch[:pending_n])
                self._plog.see_table(tbl)  # a process's first event: its /proc facts are read now
                writer.append_table(tbl)
                if fl is not None:
                    fl.check(tbl, now_ns)  # --trigger: a decoded row starts a save
                pending_n, last_decode = 0, now
            elif not pending_n and now - last_decode >= DECODE_EVERY_S:
                last_decode = now  # nothing to decode: the next read is one period from now
            tw.tick()
            if fl is not None and (now - last_flight >= DECODE_EVERY_S or fl.due(now_ns) or self._save_requests > fl_signals):
                while self._save_requests > fl_signals:  # SIGUSR1: save the kept window
                    fl_signals += 1
                    fl.trigger("signal", {"signal": "SIGUSR1"}, now_ns)
                fl.tick(now_ns)  # retention; link, cut and finish a pending save
                last_flight = now
            if now - last_release >= RELEASE_EVERY_S:
                release_freed_memory()
                last_release = now
            if launcher is not None:
                launcher.tick()
            if self._containers is not None and now - last_rescan >= self._containers.RESCAN_S:
                self._add_container_tgids()  # processes that entered a container another way than a fork or setns
                last_rescan = now
            if progress is not None and now - last_status >= 0.5:
                progress(Progress(total, (total - status_n) / max(now - last_status, 1e-9), self._lost_now()))
                last_status, status_n = now, total
            if snap and stop_pos is None and now - last_snap >= o.snapshot_interval_s:
                snap.take("during")
                last_snap = now
            if stop_pos is None:
                why = None
                if launcher is not None and launcher.poll() is not None:
                    why = "command exited"
                elif self._stop_reason:
                    why = self._stop_reason
                elif o.duration_s is not None and now - t0 >= o.duration_s:
                    why = "duration"
                if why:
                    if launcher is not None:
                        exit_code = launcher.stop()  # its exit code (SIGTERM first when it still runs)
                    self._stop_why = why
                    stop_pos = ring.producer_pos()
                    stop_by = time.monotonic() + o.stop_drain_s
                    continue
            else:
                left = ring.records_before(stop_pos)
                if left == 0:
                    break
                if time.monotonic() >= stop_by or self._signals >= 2:  # deadline, or a second Ctrl-C
                    self._unread = left  # committed before the stop, never written: counted as lost
                    break
                if n == 0:
                    time.sleep(0.001)  # a record reserved but not yet committed
            if n == 0 and stop_pos is None:
                # sleep until the next decode (a forced wakeup comes earlier at high rates): what is in the
                # ring then is read and decoded at once, so no record waits more than DECODE_EVERY_S
                ring.wait(max(0.001, last_decode + DECODE_EVERY_S - time.monotonic()))
                if o.poll_ms:
                    time.sleep(o.poll_ms / 1000)
        return total, exit_code

    def _add_container_tgids(self) -> None:
        new = self._containers.rescan()
        if new:
            tgids = self._bpf[b"gpt_tgids"]
            for t in new:
                tgids[tgids.Key(t)] = tgids.Leaf(1)

    def _lost_now(self) -> int | None:
        """Records the kernel dropped (ring full), or None when the counter cannot be read."""
        try:
            return int(sum(self._bpf[b"gpt_lost"][0]))
        except Exception as e:  # noqa: BLE001 - BCC raises bare exceptions; a counter never stops a run
            if not self._lost_warned:
                self._lost_warned = True
                warnings.warn(f"cannot read the kernel's loss counter gpt_lost ({e.__class__.__name__}: {e}); "
                              "events lost are reported as unknown", stacklevel=2)
            return None

    def _starting(self, step: str, tw: TraceWriter | None) -> None:
        """A start-up step is done: a SIGINT/SIGTERM that came during it ends the run here (exit 128+N),
        before anything is started that would have to be stopped again."""
        if not self._stop_reason:
            return
        sig = self._stop_reason
        self._stop_why = f"{sig} during start-up ({step})"
        where = "no trace was written" if tw is None else f"{tw.path} is closed and holds no events"
        e = GptError(f"record stopped by {sig} during start-up ({step}): {where}",
                     "run it again and stop it once it records (its status line, or recorder.recording_since_ns in meta.json)")
        e.exit_code = 128 + signal.Signals[sig].value
        raise e

    def _install_signals(self) -> dict:
        def stop(signum, _frame):
            self._signals += 1
            self._stop_reason = self._stop_reason or signal.Signals(signum).name

        def save(_signum, _frame):
            self._save_requests += 1  # served by the record loop (one during start-up: once recording)

        old = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, stop)
            except ValueError:  # not the main thread
                pass
        try:
            old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, save)  # its default action killed record (exit 138)
        except ValueError:
            pass
        return old

    def _restore_signals(self, old: dict) -> None:
        for s, h in old.items():
            signal.signal(s, h)
