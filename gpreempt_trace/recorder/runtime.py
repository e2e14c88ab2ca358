"""The recorder runtime: build ONE BPF program (common.h + ioctl.bpf.c + kfd.bpf.c), compile it once with
BCC against the stub include tree and attach it (both in the loader child, recorder/loader.py: BCC and
LLVM never enter this process), drain the ring buffer in batches straight into numpy, decode whole
batches with decode.EventDecoder and write Parquet segments with TraceWriter.

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
from ..trace.writer import DEFAULT_COMPACT_S
from . import flight, ioctls
from .plan import IOCTL_TP_FUNC, IoctlPlan, plan_ioctl
from .loader import Loaded, Loader
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
# the events segment age: a kill -9 loses the open segment, rows at most this old (counted from their
# ts_ns) plus one loop period; compaction (--compact) keeps the file count of 4 segments a second bounded
EVENTS_SEGMENT_S = 0.25
# the events writer cuts a row group when the segment closes (or at rows_per_group): a row group is not
# readable before its segment is closed anyway, and 5 row groups per segment cost ~40 % more writer CPU
EVENTS_GROUP_MS = EVENTS_SEGMENT_S * 1000
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
    compact: str = f"{DEFAULT_COMPACT_S:g}s"  # --compact 60s | off: merge closed segments per this much time

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
    derived: str | None = None  # api.record: what computing the trace's derived rows at close gave (large traces)

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
        if self.derived:
            line += f"; {self.derived}"
        return line


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


def parse_compact(text: str | None) -> float | None:
    """--compact: seconds of closed segments merged into one file ('60s', '5m'); 'off' (or 0): none."""
    t = (text or "").strip().lower()
    if t in ("off", "no", "0", "0s"):
        return None
    try:
        ns = flight.parse_duration_ns(t if t[-1:].isalpha() else t + "s")
    except GptError:
        ns = -1
    if not 1e9 <= ns <= 86400e9:
        raise GptError(f"--compact {text!r} is not a time from 1s to 1d, or off",
                       "give e.g. --compact 60s (one merged segment per minute), or --compact off")
    return ns / 1e9


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
    bpf: Loaded | None = None  # the loaded program's fds (maps, programs, attachments)
    ring: RingReader | None = None
    snap: object | None = None
    launcher: Launcher | None = None
    events: int = 0
    lost: int | None = None
    exit_code: int | None = None


@dataclass
class _LoopState:
    """The record loop's state between its steps (Recorder._loop)."""
    batch: np.ndarray  # records read from the ring, not yet decoded: batch[:pending]
    start: float  # monotonic time the loop began: every periodic step counts from it
    pending: int = 0
    total: int = 0  # records read
    exit_code: int | None = None  # the command's, once stopped
    stop_pos: int | None = None  # ring producer position when the stop began: later records are after the run
    stop_by: float = 0.0  # monotonic deadline of the final drain
    fl_signals: int = 0  # SIGUSR1s served
    last_flight: float = 0.0  # the flight recorder's last tick (one per DECODE_EVERY_S, or when a save is due)
    status_n: int = 0  # total at the last progress report
    last_decode: float = field(init=False)
    last_status: float = field(init=False)
    last_snap: float = field(init=False)
    last_release: float = field(init=False)
    last_rescan: float = field(init=False)

    def __post_init__(self):
        self.last_decode = self.last_status = self.last_snap = self.last_release = self.last_rescan = self.start


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
        self._bpf: Loaded | None = None
        self._loader: Loader | None = None  # the child that plans, compiles and attaches (recorder/loader.py)
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
        parse_compact(o.compact)
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
        try:
            prog = self._plan()
            self._starting("planning the probes", None)
            tw = TraceWriter.create(self.o.output, self.o.labels)
            tw.compact_s = parse_compact(self.o.compact)  # every writer of this process merges its segments
            return prog, tw
        except BaseException:
            self._end_loader()
            raise

    def _plan(self) -> Program:
        """Build the program in the loader child (the BTF parse stays out of this process)."""
        self._loader = Loader(self.o)
        return self._loader.plan()

    def _load(self, prog: Program) -> Loaded:
        """Compile, load and attach by trying in the loader child; it hands the fds over and exits."""
        loader, self._loader = self._loader, None
        try:
            return loader.load(prog)
        finally:
            loader.close()

    def _end_loader(self) -> None:
        if self._loader is not None:
            self._loader.close()
            self._loader = None

    def _start(self, r: _Run):
        """Open debugfs, compile, attach, set the kernel filters and open the ring, decoder, writer and
        flight recorder: everything up to the first read. Returns (decoder, events writer)."""
        o, tw, prog = self.o, r.tw, r.prog
        r.snap = self._snapshotter(tw)  # fails early (one line) when debugfs/KFD is absent
        self._starting("opening debugfs", tw)
        r.bpf = self._bpf = self._load(prog)
        self._starting("compiling the BPF program", tw)
        self._attach_outcome(prog)
        self._starting("attaching the probes", tw)
        tw.meta["attach_plan"] = [x if isinstance(x, dict) else x.as_dict() for x in prog.rows]
        tw.meta["func_names"] = prog.func_names
        tw.meta["recorder"] = dict(self._meta(prog), loader=r.bpf.loader)
        tw.save_meta()
        # the reader's side is set up before the filters open: from recording_since_ns on, records wait in
        # the ring only until the loop's first pass (the kill -9 bound counts from the event)
        dtype = record_layout.numpy_dtype()
        r.ring = RingReader(r.bpf.map("gpt_events").fd, o.ringbuf_mb * 1024 * 1024, dtype)
        decoder = EventDecoder(tw.run_id, prog.func_names, ioctls.ioctl_name)
        self._guard = _offset_guard(prog)
        # Parquet encoding overlaps the ring reads and decoding
        writer = tw.writer("events", background=True, group_ms=EVENTS_GROUP_MS, segment_s=EVENTS_SEGMENT_S, age_from_ts=True)
        tw.meta["recorder"]["segments"] = {"events_segment_s": EVENTS_SEGMENT_S, "compact_s": tw.compact_s}
        self._flight = flight.FlightRecorder(
            tw, flight.parse_keep(o.keep) if o.keep else None, flight.parse_triggers(o.triggers) if o.triggers else None,
            o.after_s, lost=self._lost_now)
        tw.meta["recorder"]["flight"] = self._flight.meta()
        self._set_filters(r.bpf, prog, tw)
        tw.meta["recorder"]["recording_since_ns"] = time.monotonic_ns()  # probes attached, filters set
        tw.save_meta()
        if r.snap:
            r.snap.take("baseline")
        return decoder, writer

    def _set_filters(self, bpf, prog: Program, tw: TraceWriter) -> None:
        """The kernel-side filters: -p tgids, the --container processes and pid namespaces, the known
        AMDKFD_IOC_* numbers when the ioctl path cannot filter on the device."""
        o = self.o
        tgids = bpf.map("gpt_tgids")
        for t in o.tgids:
            tgids.set(t, 1)
        if self._containers is not None:
            for t in self._containers.tgids:
                tgids.set(t, 1)
            if "-DGPT_FOLLOW_PIDNS" in prog.cflags:
                pidns = bpf.map("gpt_pidns")
                for ns in self._containers.pidns:
                    pidns.set(ns, 1)
            self._containers.rescan()  # a process that joined while the probes attached
            for t in self._containers.tgids:
                tgids.set(t, 1)
            tw.meta["recorder"]["containers"] = dict(self._containers.meta(), follow_pidns="-DGPT_FOLLOW_PIDNS" in prog.cflags)
        if prog.ioctl_filter == "known_numbers":
            known = bpf.map("gpt_ioctl_known")
            for nr in ioctls.known_nrs():
                known.set(nr, 1)

    def _launch(self, r: _Run) -> None:
        """Start the command after --, if any: held at the launcher's gate until its pid is in the tgid
        filter, so no early call is missed."""
        if not self.o.cmd:
            return
        r.launcher = Launcher(self.o.cmd, trace=r.tw.path)
        pid = r.launcher.start(hold=True)
        r.bpf.map("gpt_tgids").set(pid, 1)
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
            r.bpf.close()  # detaches the probes
        self._end_loader()
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
            counters["events_missed"] = r.bpf.misses()
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
        # the ring is copied straight into the batch to decode; one buffer for the whole run (warm pages:
        # a fresh one per batch costs a page fault per 20 records); decoded tables never alias it
        st = _LoopState(np.empty(BATCH_RECORDS, ring.slot["rec"]), time.monotonic())
        st.last_decode -= DECODE_EVERY_S  # the first pass decodes what the ring gathered during the start-up
        startup = tw.meta.setdefault("recorder", {}).setdefault("startup", {"loop_started_ns": time.monotonic_ns()})
        while True:
            n = ring.read_into(st.batch[st.pending:], until=st.stop_pos)
            st.pending += n
            st.total += n
            now, now_ns = time.monotonic(), time.monotonic_ns()
            self._decode_due(st, decoder, writer, now, now_ns)
            tw.tick()
            if "first_segment_ns" not in startup and writer.segments_closed:
                startup["first_segment_ns"] = time.monotonic_ns()  # the start-up's share of a kill's loss (once)
                tw.save_meta()
            self._flight_tick(st, now, now_ns)
            self._housekeeping(st, launcher, snap, progress, now)
            if st.stop_pos is None:
                if self._stop_due(st, ring, launcher, t0, now):
                    continue
            elif self._final_drain_done(st, ring, n):
                break
            if n == 0 and st.stop_pos is None:
                self._sleep(st, ring)
        return st.total, st.exit_code

    def _decode_due(self, st: "_LoopState", decoder, writer, now: float, now_ns: int) -> None:
        """Decode and write the batch when it is full, one period old, the stop drain runs, or a flight
        save is due (a saved window is cut after what was read)."""
        fl = self._flight
        if st.pending and (st.pending >= BATCH_RECORDS or now - st.last_decode >= DECODE_EVERY_S or st.stop_pos is not None
                           or (fl is not None and fl.due(now_ns))):
            self._check_offsets(st.batch[:st.pending])
            tbl = decoder.decode(st.batch[:st.pending])
            writer.append_table(tbl)  # first: a segment due closes before the /proc reads below
            self._plog.see_table(tbl)  # a process's first event: its /proc facts are read now
            if fl is not None:
                fl.check(tbl, now_ns)  # --trigger: a decoded row starts a save
            st.pending, st.last_decode = 0, now
        elif not st.pending and now - st.last_decode >= DECODE_EVERY_S:
            st.last_decode = now  # nothing to decode: the next read is one period from now

    def _flight_tick(self, st: "_LoopState", now: float, now_ns: int) -> None:
        """The flight recorder: SIGUSR1 saves, retention, pending saves (once per DECODE_EVERY_S or when due)."""
        fl = self._flight
        if fl is None or not (now - st.last_flight >= DECODE_EVERY_S or fl.due(now_ns) or self._save_requests > st.fl_signals):
            return
        while self._save_requests > st.fl_signals:  # SIGUSR1: save the kept window
            st.fl_signals += 1
            fl.trigger("signal", {"signal": "SIGUSR1"}, now_ns)
        fl.tick(now_ns)  # retention; link, cut and finish a pending save
        st.last_flight = now

    def _housekeeping(self, st: "_LoopState", launcher, snap, progress, now: float) -> None:
        """The periodic chores: freed memory back to the OS, the launcher's markers, the container rescan,
        the progress report and the debugfs snapshots."""
        if now - st.last_release >= RELEASE_EVERY_S:
            release_freed_memory()
            st.last_release = now
        if launcher is not None:
            launcher.tick()
        if self._containers is not None and now - st.last_rescan >= self._containers.RESCAN_S:
            self._add_container_tgids()  # processes that entered a container another way than a fork or setns
            st.last_rescan = now
        if progress is not None and now - st.last_status >= 0.5:
            progress(Progress(st.total, (st.total - st.status_n) / max(now - st.last_status, 1e-9), self._lost_now()))
            st.last_status, st.status_n = now, st.total
        if snap and st.stop_pos is None and now - st.last_snap >= self.o.snapshot_interval_s:
            snap.take("during")
            st.last_snap = now

    def _stop_due(self, st: "_LoopState", ring: RingReader, launcher, t0: float, now: float) -> bool:
        """Start the stop when the command exited, a signal came or --duration passed: stop the command
        and note the ring's producer position (later records are after the run). True when it started."""
        why = None
        if launcher is not None and launcher.poll() is not None:
            why = "command exited"
        elif self._stop_reason:
            why = self._stop_reason
        elif self.o.duration_s is not None and now - t0 >= self.o.duration_s:
            why = "duration"
        if not why:
            return False
        if launcher is not None:
            st.exit_code = launcher.stop()  # its exit code (SIGTERM first when it still runs)
        self._stop_why = why
        st.stop_pos = ring.producer_pos()
        st.stop_by = time.monotonic() + self.o.stop_drain_s
        return True

    def _final_drain_done(self, st: "_LoopState", ring: RingReader, n: int) -> bool:
        """During the stop: True once every record before the stop position is read, or at the deadline
        (or a second Ctrl-C), what is left then counted as lost."""
        left = ring.records_before(st.stop_pos)
        if left == 0:
            return True
        if time.monotonic() >= st.stop_by or self._signals >= 2:  # deadline, or a second Ctrl-C
            self._unread = left  # committed before the stop, never written: counted as lost
            return True
        if n == 0:
            time.sleep(0.001)  # a record reserved but not yet committed
        return False

    def _sleep(self, st: "_LoopState", ring: RingReader) -> None:
        """Sleep until the next decode (a forced wakeup comes earlier at high rates): what is in the
        ring then is read and decoded at once, so no record waits more than DECODE_EVERY_S."""
        ring.wait(max(0.001, st.last_decode + DECODE_EVERY_S - time.monotonic()))
        if self.o.poll_ms:
            time.sleep(self.o.poll_ms / 1000)

    def _add_container_tgids(self) -> None:
        new = self._containers.rescan()
        if new:
            tgids = self._bpf.map("gpt_tgids")
            for t in new:
                tgids.set(t, 1)

    def _lost_now(self) -> int | None:
        """Records the kernel dropped (ring full), or None when the counter cannot be read."""
        try:
            return self._bpf.lost()
        except (OSError, KeyError) as e:  # a counter never stops a run
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
