"""Attach planner for the KFD function probes (tracers/kfd.bpf.c).

`plan_kfd()` decides, per logical probe, which kernel symbol to attach to and how, from the kernel's
kallsyms (inlining, GCC clones, name collisions) and BTF (struct offsets, parameter positions, enum
values). It never reads kernel headers. `KfdPlan.cflags` carries everything kfd.bpf.c needs as -D
macros; a struct field missing in this kernel gets no macro and is therefore never read (NULL).
`KfdPlan.attach(bpf)` then attaches each planned probe, trying the variants in order.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..contracts import resources
from ..errors import GptError
from .btf import Btf, BtfError
from .kallsyms import Kallsyms

KFD_SOURCE = resources.tracers() / "kfd.bpf.c"
SYS_BTF = Path("/sys/kernel/btf")
TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
MODULE = "amdgpu"

# Argument roles a probe may read, with their parameter names in the kernel sources (any version) and
# the position used when the function has no BTF FUNC to ask.
ROLE_PARAM_NAMES = {
    "Q": ("q",), "QPD": ("qpd",), "DQM": ("dqm",), "PM": ("pm",), "PROC": ("p", "process", "target"),
    "FILTER": ("filter",), "FPARAM": ("filter_param",), "GRACE": ("grace_period",),
    "NQ": ("num_queues",), "QIDS": ("usr_queue_id_array", "queue_ids"), "CMD": ("cmd",),
    "PASID": ("pasid",), "DEV": ("dev", "node"),
}


@dataclass(frozen=True)
class ProbeSpec:
    name: str  # logical probe name (also the C handler suffix)
    event: str  # schema.EVENTS name
    entry: str  # function whose entry is probed
    ret: str | None = None  # function whose return ends the record (default: `entry`)
    roles: tuple[tuple[str, int], ...] = ()  # (role, default arg position)
    since: str | None = None  # kernel version note when the function is version dependent
    mes: bool = False  # MES (gfx11+) path only


PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec("create_queue_cpsch", "queue_create", "create_queue_cpsch", roles=(("DQM", 0), ("Q", 1), ("QPD", 2))),
    ProbeSpec("create_queue_nocpsch", "queue_create", "create_queue_nocpsch", roles=(("DQM", 0), ("Q", 1), ("QPD", 2))),
    ProbeSpec("destroy_queue_cpsch", "queue_destroy", "destroy_queue_cpsch", roles=(("DQM", 0), ("QPD", 1), ("Q", 2))),
    ProbeSpec("destroy_queue_nocpsch", "queue_destroy", "destroy_queue_nocpsch", roles=(("DQM", 0), ("QPD", 1), ("Q", 2))),
    ProbeSpec("update_queue", "queue_update", "update_queue", roles=(("DQM", 0), ("Q", 1))),
    ProbeSpec("execute_queues_cpsch", "queues_execute", "execute_queues_cpsch", roles=(("DQM", 0), ("FILTER", 1), ("FPARAM", 2), ("GRACE", -1))),
    ProbeSpec("map_queues_cpsch", "queues_map", "map_queues_cpsch", roles=(("DQM", 0),)),
    ProbeSpec("unmap_queues_cpsch", "queues_unmap", "unmap_queues_cpsch", roles=(("DQM", 0), ("FILTER", 1), ("FPARAM", 2), ("GRACE", -1))),
    ProbeSpec("evict_process_queues_cpsch", "process_evict", "evict_process_queues_cpsch", roles=(("DQM", 0), ("QPD", 1))),
    ProbeSpec("evict_process_queues_nocpsch", "process_evict", "evict_process_queues_nocpsch", roles=(("DQM", 0), ("QPD", 1))),
    ProbeSpec("restore_process_queues_cpsch", "process_restore", "restore_process_queues_cpsch", roles=(("DQM", 0), ("QPD", 1))),
    ProbeSpec("restore_process_queues_nocpsch", "process_restore", "restore_process_queues_nocpsch", roles=(("DQM", 0), ("QPD", 1))),
    ProbeSpec("kfd_process_evict_queues", "process_evict", "kfd_process_evict_queues", roles=(("PROC", 0),)),
    ProbeSpec("kfd_process_restore_queues", "process_restore", "kfd_process_restore_queues", roles=(("PROC", 0),)),
    ProbeSpec("suspend_queues", "queues_suspend", "suspend_queues", roles=(("PROC", 0), ("NQ", 1), ("GRACE", 2), ("QIDS", 4)), since=">=6.5"),
    ProbeSpec("resume_queues", "queues_resume", "resume_queues", roles=(("PROC", 0), ("NQ", 1), ("QIDS", 2)), since=">=6.5"),
    ProbeSpec("pm_send_runlist", "runlist_submit", "pm_send_runlist", roles=(("PM", 0),)),
    ProbeSpec("pm_send_set_resources", "set_resources", "pm_send_set_resources", roles=(("PM", 0),)),
    ProbeSpec("hw_unmap_wait", "hw_unmap_wait", "pm_send_unmap_queue", ret="amdkfd_fence_wait_timeout", roles=(("PM", 0), ("FILTER", 1), ("FPARAM", 2))),
    ProbeSpec("kfd_ioctl", "kfd_ioctl", "kfd_ioctl", roles=(("CMD", 1),)),
    ProbeSpec("add_queue_mes", "mes_add_queue", "add_queue_mes", roles=(("DQM", 0), ("Q", 1), ("QPD", 2)), mes=True),
    ProbeSpec("remove_queue_mes", "mes_remove_queue", "remove_queue_mes", roles=(("DQM", 0), ("Q", 1), ("QPD", 2)), mes=True),
    # the debugger ABI (KFD ioctl >= 1.13; 6.12): (filep, p, data), (target, fd, runtime_info, runtime_size), (target)
    ProbeSpec("kfd_ioctl_runtime_enable", "runtime_enable", "kfd_ioctl_runtime_enable", roles=(("PROC", 1),), since=">=6.5"),
    ProbeSpec("kfd_dbg_trap_enable", "dbg_trap_enable", "kfd_dbg_trap_enable", roles=(("PROC", 0),), since=">=6.5"),
    ProbeSpec("kfd_dbg_trap_disable", "dbg_trap_disable", "kfd_dbg_trap_disable", roles=(("PROC", 0),), since=">=6.5"),
    # the reset path (6.12): a queue that would not unmap is reset; an HWS hang ends in a GPU reset
    ProbeSpec("reset_queues_cpsch", "queue_reset", "reset_queues_cpsch", roles=(("DQM", 0), ("PASID", 1))),
    # the per-generation HQD reset (adev, pipe_id, queue_id, inst, utimeout): returns the reset queue's address, 0 = failed
    ProbeSpec("kgd_gfx_v9_hqd_reset", "queue_reset", "kgd_gfx_v9_hqd_reset", since=">=6.10"),
    ProbeSpec("kgd_gfx_v10_hqd_reset", "queue_reset", "kgd_gfx_v10_hqd_reset", since=">=6.10"),
    ProbeSpec("kgd_gfx_v11_hqd_reset", "queue_reset", "kgd_gfx_v11_hqd_reset", since=">=6.10"),
    ProbeSpec("kfd_hws_hang", "hws_hang", "kfd_hws_hang", roles=(("DQM", 0),)),
    ProbeSpec("kfd_signal_reset_event", "gpu_reset", "kfd_signal_reset_event", roles=(("DEV", 0),)),
)
PROBE_NAMES = tuple(p.name for p in PROBES)


# the kfd:* tracepoint series: one table (name, event, TP fields -> columns); handlers generated from it
from .tracepoints import TRACEPOINTS, TracepointSpec, format_check, inline_header  # noqa: E402,F401
from . import tpformat  # noqa: E402  (the amdkfd:* formats)


@dataclass(frozen=True)
class FieldSpec:
    macro: str  # GPT_OFF_<macro>
    paths: tuple[str, ...]  # alternatives, first found wins ("{dev}" = struct queue.device points to)
    sizes: tuple[int, ...]  # byte sizes the C reader supports


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("Q_TYPE", ("queue.properties.type",), (4,)),
    FieldSpec("Q_FORMAT", ("queue.properties.format",), (4,)),
    FieldSpec("Q_QUEUE_ID", ("queue.properties.queue_id",), (4,)),
    FieldSpec("Q_QUEUE_ADDRESS", ("queue.properties.queue_address",), (8,)),
    FieldSpec("Q_QUEUE_SIZE", ("queue.properties.queue_size",), (8,)),
    FieldSpec("Q_PRIORITY", ("queue.properties.priority",), (4,)),
    FieldSpec("Q_QUEUE_PERCENT", ("queue.properties.queue_percent",), (4,)),
    FieldSpec("Q_DOORBELL_OFF", ("queue.properties.doorbell_off",), (4,)),
    FieldSpec("Q_IS_ACTIVE", ("queue.properties.is_active",), (1,)),
    FieldSpec("Q_IS_EVICTED", ("queue.properties.is_evicted",), (1,)),
    FieldSpec("Q_IS_SUSPENDED", ("queue.properties.is_suspended",), (1,)),
    FieldSpec("Q_PROCESS", ("queue.process",), (8,)),
    FieldSpec("Q_DEVICE", ("queue.device",), (8,)),
    FieldSpec("DEV_ID", ("{dev}.id", "kfd_node.id", "kfd_dev.id"), (4,)),
    FieldSpec("PROC_PASID", ("kfd_process.pasid",), (4,)),
    FieldSpec("PROC_LEAD_THREAD", ("kfd_process.lead_thread",), (8,)),
    FieldSpec("TASK_TGID", ("task_struct.tgid",), (4,)),
    FieldSpec("QPD_DQM", ("qcm_process_device.dqm",), (8,)),
    FieldSpec("QPD_PQM", ("qcm_process_device.pqm",), (8,)),
    FieldSpec("PQM_PROCESS", ("process_queue_manager.process",), (8,)),
    FieldSpec("PDD_QPD", ("kfd_process_device.qpd",), ()),  # embedded struct: any size
    FieldSpec("PDD_PASID", ("kfd_process_device.pasid",), (4,)),  # per-device PASID (>=6.14)
    FieldSpec("DQM_DEV", ("device_queue_manager.dev",), (8,)),
    FieldSpec("PM_DQM", ("packet_manager.dqm",), (8,)),
)

# kernel enum constants kfd.bpf.c translates (names -> -D macro); missing ones are left undefined
ENUM_MACROS = {
    "kfd_queue_type": {
        "KFD_QUEUE_TYPE_COMPUTE": "GPT_KQT_COMPUTE", "KFD_QUEUE_TYPE_SDMA": "GPT_KQT_SDMA", "KFD_QUEUE_TYPE_HIQ": "GPT_KQT_HIQ",
        "KFD_QUEUE_TYPE_DIQ": "GPT_KQT_DIQ", "KFD_QUEUE_TYPE_SDMA_XGMI": "GPT_KQT_SDMA_XGMI",
        "KFD_QUEUE_TYPE_SDMA_BY_ENG_ID": "GPT_KQT_SDMA_BY_ENG_ID",
    },
    "kfd_queue_format": {"KFD_QUEUE_FORMAT_AQL": "GPT_KQF_AQL"},
    "kfd_unmap_queues_filter": {
        "KFD_UNMAP_QUEUES_FILTER_ALL_QUEUES": "GPT_KUF_ALL", "KFD_UNMAP_QUEUES_FILTER_DYNAMIC_QUEUES": "GPT_KUF_DYNAMIC",
        "KFD_UNMAP_QUEUES_FILTER_BY_PASID": "GPT_KUF_BY_PASID",
    },
}


@dataclass
class ProbeAttach:
    """One row of meta.json["attach_plan"]."""

    probe: str
    event: str
    target: str | None
    mechanism: str | None
    status: str  # planned | attached | failed | unavailable
    reason: str | None
    func_id: int
    # planner internals (not part of the attach_plan row)
    entry_target: str | None = field(default=None, repr=False)
    ret_target: str | None = field(default=None, repr=False)
    fallbacks: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (entry, ret) to try after

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("entry_target", "ret_target", "fallbacks"):
            d.pop(k)
        return d


@dataclass
class KfdPlan:
    probes: list[ProbeAttach]
    offsets: dict[str, int | None]  # "struct.field" -> byte offset (None = missing in this kernel)
    cflags: list[str]
    source_path: Path = KFD_SOURCE
    fields: dict[str, str | None] = field(default_factory=dict)  # macro -> resolved path (None = missing)
    notes: list[str] = field(default_factory=list)
    kernel: str = ""
    btf_source: dict = field(default_factory=dict)  # where the struct offsets come from (btf_cache.Located)

    def func_names(self) -> dict[int, str]:
        return {p.func_id: (p.target or p.probe) for p in self.probes}

    def source(self) -> str:
        return inline_header(self.source_path.read_text())  # the generated kfd:* handlers, in the main file

    def attach(self, bpf) -> None:
        """Attach every planned probe (kprobe+kretprobe); a failure marks that probe, it never raises."""
        for tp in [p for p in self.probes if p.status == "planned" and p.mechanism == "raw_tracepoint"]:
            try:
                bpf.attach_raw_tracepoint(tp=tp.entry_target, fn_name=f"kfd_rtp__{tp.entry_target}")
                tp.status = "attached"
                continue
            except Exception as e:  # BCC raises bare Exception
                tp.status, tp.reason = "failed", (str(e).strip().splitlines() or [type(e).__name__])[0] + "; kprobe fallback"
            for p in self.probes:
                if p.entry_target and p.reason == f"superseded by tracepoint {tp.target}":
                    p.status, p.reason = "planned", f"fallback for {tp.target}"
        # the DKMS amdkfd:* tracepoints: classic tracepoints (BCC loads the handler as a TRACEPOINT program)
        for tp in [p for p in self.probes if p.status == "planned" and p.mechanism == "tracepoint"]:
            try:
                bpf.attach_tracepoint(tp=tp.target, fn_name=f"amdkfd_tp__{tp.entry_target}")
                tp.status = "attached"
            except Exception as e:  # BCC raises bare Exception
                tp.status, tp.reason = "failed", (str(e).strip().splitlines() or [type(e).__name__])[0]
        by = {p.probe: p for p in self.probes}
        for t in TRACEPOINTS:  # half a span attached writes nothing: say so on the half that did
            if t.span == "end" and t.probe in by and f"{t.system}:{t.begin}" in by:
                end, begin = by[t.probe], by[f"{t.system}:{t.begin}"]
                for a, b in ((begin, end), (end, begin)):
                    if a.status == "attached" and b.status == "failed":
                        a.reason = ((a.reason + "; ") if a.reason else "") + f"{b.probe} failed to attach: its span writes no row"
        for p in self.probes:
            if p.status != "planned" or p.mechanism in ("raw_tracepoint", "tracepoint"):
                continue
            tries = [(p.entry_target, p.ret_target), *p.fallbacks]
            errors = []
            for entry, ret in tries:
                try:
                    _attach_pair(bpf, p.probe, entry, ret)
                except Exception as e:  # BCC raises bare Exception
                    errors.append(f"{entry}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
                    continue
                p.status, p.target = "attached", entry if ret == entry else f"{entry}->{ret}"
                if entry != tries[0][0]:
                    p.reason = ((p.reason + "; ") if p.reason else "") + f"attached to {entry} after {tries[0][0]} failed"
                break
            else:
                p.status, p.reason = "failed", "; ".join(errors)

    def attached(self) -> list[ProbeAttach]:
        return [p for p in self.probes if p.status == "attached"]


def _attach_pair(bpf, probe: str, entry: str, ret: str) -> None:
    bpf.attach_kprobe(event=entry, fn_name=f"kfd_entry__{probe}")
    try:
        bpf.attach_kretprobe(event=ret, fn_name=f"kfd_return__{probe}")
    except Exception:
        try:
            bpf.detach_kprobe(event=entry, fn_name=f"kfd_entry__{probe}")
        except Exception:
            pass
        raise


# ---------------------------------------------------------------------------------------------
def load_btf(btf_dir: str | Path | None = None, module: str = MODULE) -> tuple[Btf, Btf | None]:
    """vmlinux BTF and the module's split BTF (None when none is found)."""
    vmlinux, mod, _ = locate_btf(btf_dir, module)
    return vmlinux, mod


def locate_btf(btf_dir: str | Path | None = None, module: str = MODULE, live: bool | None = None) -> tuple[Btf, Btf | None, "Located"]:
    """vmlinux BTF, the module's split BTF and where it came from, in this order: the module's own BTF
    (/sys/kernel/btf/amdgpu); --btf DIR; a BTF built by `btf build` in the cache, for this kernel release
    and module version; else none (every struct field NULL), with the exact build command in the detail.
    A built BTF for another kernel release or module build is refused (one-line error)."""
    from . import btf_cache, dkms

    live = btf_dir is None if live is None else live
    d = Path(btf_dir) if btf_dir else SYS_BTF
    if not d.is_dir():
        if btf_dir is not None and Path(btf_dir).is_file():
            raise BtfError(f"--btf {btf_dir} is a file, not a directory",
                           "pass the directory holding it (files vmlinux and amdgpu, like /sys/kernel/btf); `btf build -o DIR/` writes one")
        raise BtfError(f"BTF directory {d} does not exist", "pass --btf DIR laid out like /sys/kernel/btf (files vmlinux, amdgpu)")
    vmlinux = Btf.load(d / "vmlinux")
    mod_path = d / module
    info = dkms.module_info(module) if live else None
    if mod_path.exists():
        built = btf_cache.read_sidecar(mod_path)
        if built and live:
            _refuse_foreign(built, mod_path, info)
        kind = "dir" if btf_dir else "module"
        detail = (f"{mod_path}" + (f" (built by btf build for {built['kernel_release']})" if built else "")
                  if btf_dir else f"{mod_path} (the module's own BTF)")
        located = btf_cache.Located(kind, str(mod_path), detail, built)
    elif live and btf_dir is None:
        cached, why = btf_cache.find_cached(os.uname().release, info)
        if cached is not None:
            mod_path = cached
            built = btf_cache.read_sidecar(cached)
            located = btf_cache.Located("cache", str(cached), f"{cached} (built by btf build; the module has no BTF)", built)
        else:
            if not info.loaded:
                return vmlinux, None, btf_cache.Located("none", None, f"{module} is not loaded")
            return vmlinux, None, btf_cache.Located(
                "none", None, why or (f"{module} has no BTF ({'out-of-tree module, e.g. ROCm DKMS: kbuild made none' if info.out_of_tree else 'in-tree module without BTF: CONFIG_DEBUG_INFO_BTF_MODULES off, or stripped'})"
                                      f" and none was built for {os.uname().release}"),
                fix=f"run `{btf_cache.build_command(info)}`")
    else:
        return vmlinux, None, btf_cache.Located("none", None, f"no {module} in {d}")
    mod = Btf.load(mod_path, base=vmlinux)
    try:
        mod.check_split()
    except BtfError as e:
        if located.kind == "cache":
            raise BtfError(f"the built BTF {mod_path} does not match this kernel's vmlinux BTF ({e.what})",
                           f"rebuild it: {btf_cache.build_command(info)}") from None
        raise
    return vmlinux, mod, located


def _refuse_foreign(built: dict, path: Path, info) -> None:
    release = os.uname().release
    if built.get("kernel_release") != release:
        raise BtfError(f"{path} was built for kernel {built.get('kernel_release')}, this one is {release}",
                       "build one for this kernel: gpreempt-trace btf build (see doctor)")
    want = (built.get("module") or {})
    for k in ("version", "srcversion", "build_id"):
        have = getattr(info, k, None) if info else None
        if want.get(k) and have and want[k] != have:
            raise BtfError(f"{path} was built for {MODULE} {k} {want[k]}, the loaded module has {have}",
                           "rebuild it for the loaded module: gpreempt-trace btf build (see doctor)")


def find_kfd_tracepoints(tracefs_dirs=TRACEFS_DIRS, btfs: tuple[Btf | None, ...] = ()) -> set[str]:
    """Names of the kfd:* tracepoints (TRACEPOINTS) this kernel has: from tracefs, else BTF btf_trace_*."""
    known = {t.name for t in TRACEPOINTS if t.system == "kfd"}
    for base in map(Path, tracefs_dirs):
        kfd = base / "events" / "kfd"
        try:
            names = {p.name for p in kfd.iterdir() if p.is_dir()} if kfd.is_dir() else set()
        except OSError:  # tracefs is root-only
            names = set()
        if names & known:
            return names & known
    return {n for n in known for b in btfs if b is not None and b.find(f"btf_trace_{n}", ("TYPEDEF",)) is not None}


def find_dkms_tracepoints(tracefs_dirs=TRACEFS_DIRS) -> dict:
    """{name: tracefs format (tpformat.EventFormat), or why it is unreadable} of the DKMS amdkfd:* tracepoints
    of TRACEPOINTS this kernel has. tracefs only: DKMS modules carry no BTF to find btf_trace_* in."""
    return tpformat.find(tracefs_dirs, "amdkfd", [t.name for t in TRACEPOINTS if t.system == "amdkfd"])


def _plan_dkms(t: TracepointSpec, row: "ProbeAttach", formats: dict, ks: Kallsyms, cflags: list[str]) -> None:
    """Plan one amdkfd:* tracepoint: its fields' offsets from its tracefs format, as -D flags."""
    if MODULE not in ks.modules:
        row.reason = f"module {MODULE} is not loaded"
        return
    fmt = formats.get(t.name)
    if fmt is None:
        return  # t.absent: not in tracefs
    if isinstance(fmt, str):
        row.reason = f"format unreadable: {fmt}"
        return
    flags, problems, notes = format_check(t, fmt)
    if problems:
        row.reason = "tracefs format differs from the table: " + "; ".join(problems)
        return
    cflags += flags
    if t.span == "begin":
        end = next(e for e in TRACEPOINTS if e.begin == t.name)
        notes.insert(0, f"starts the span: {end.probe} writes the row")
    row.target, row.mechanism, row.status, row.reason = t.probe, t.mechanism, "planned", "; ".join(notes) or None
    row.entry_target = t.name


def _pair_dkms_spans(rows: list["ProbeAttach"]) -> None:
    """A span's start without its end (or the reverse) would write nothing: neither is planned then."""
    by = {r.probe: r for r in rows}
    for t in TRACEPOINTS:
        if t.span != "end":
            continue
        end, begin = by[t.probe], by[f"{t.system}:{t.begin}"]
        for a, b in ((begin, end), (end, begin)):
            if a.status == "planned" and b.status != "planned":
                a.status, a.target, a.mechanism = "unavailable", None, None
                a.reason = f"{b.probe} is not planned ({b.reason}): its span writes no row"


def resolve_fields(mod: Btf | None, vmlinux: Btf) -> tuple[dict[str, str | None], dict[str, int | None], list[str]]:
    """(macro -> path, path -> offset, notes). Module types first, vmlinux for task_struct."""
    btf = mod or vmlinux
    dev = btf.pointee_struct("queue.device") or btf.pointee_struct("device_queue_manager.dev")
    chosen: dict[str, str | None] = {}
    offsets: dict[str, int | None] = {}
    notes = []
    for spec in FIELDS:
        chosen[spec.macro] = None
        tried = []
        for path in spec.paths:
            if "{dev}" in path:
                if not dev:
                    continue
                path = path.replace("{dev}", dev)
            if path in tried:
                continue
            tried.append(path)
            f = btf.field(path) if mod is not None or path.startswith("task_struct.") else None
            if f is None:
                offsets.setdefault(path, None)
                continue
            if f.bit_size or (spec.sizes and f.size not in spec.sizes):
                notes.append(f"{path}: unexpected {'bitfield' if f.bit_size else f'size {f.size}'} ({f.type_name}); not read")
                offsets[path] = None
                continue
            offsets[path] = f.offset
            chosen[spec.macro] = path
            break
    return chosen, offsets, notes


def _param_positions(spec: ProbeSpec, mod: Btf | None, reliable: bool) -> dict[str, int]:
    """role -> argument position (-1 = none) for every role kfd.bpf.c knows; BTF names first."""
    out = {role: -1 for role in ROLE_PARAM_NAMES}
    if not reliable:
        return out
    params = mod.func_params(spec.entry) if mod else None
    for role, default in spec.roles:
        if params is not None:
            names = ROLE_PARAM_NAMES[role]
            pos = next((i for i, n in enumerate(params) if n in names), -1)
        else:
            pos = default
        if 0 <= pos < 6:
            out[role] = pos
    return out


def plan_kfd(
    kallsyms: str | Path | Kallsyms | None = None,
    btf_dir: str | Path | None = None,
    attach: str = "auto",
    func_id_base: int = 0,
    tracefs: str | Path | None = None,
    probes: list[str] | None = None,
) -> KfdPlan:
    if attach not in ("auto", "kprobe"):
        raise GptError(f"attach mode {attach!r} is not supported", "use auto or kprobe: KFD functions are probed with kprobes (BCC resolves fentry targets in vmlinux only, KFD is in amdgpu)")
    valid = PROBE_NAMES + tuple(t.probe for t in TRACEPOINTS)
    unknown = [p for p in (probes or []) if p not in valid]
    if unknown:
        raise GptError(f"unknown KFD probe {unknown[0]!r}", f"choose from {', '.join(valid)}")
    ks = kallsyms if isinstance(kallsyms, Kallsyms) else Kallsyms.load(kallsyms)
    vmlinux, mod, located = locate_btf(btf_dir, live=kallsyms is None and btf_dir is None)
    chosen, offsets, notes = resolve_fields(mod, vmlinux)
    if mod is None:
        notes.append(f"no KFD struct field can be read: {located.detail}")
    offline = kallsyms is not None or btf_dir is not None
    tps = find_kfd_tracepoints([tracefs] if tracefs else ([] if offline else TRACEFS_DIRS), (vmlinux, mod))

    cflags: list[str] = []
    for spec in FIELDS:
        path = chosen[spec.macro]
        if path is not None:
            cflags.append(f"-DGPT_OFF_{spec.macro}={offsets[path]}")
    for enum, names in ENUM_MACROS.items():
        vals = (mod.enum_values(enum) if mod else {})
        for const, macro in names.items():
            if const in vals:
                cflags.append(f"-D{macro}={vals[const]}")

    rows: list[ProbeAttach] = []
    for i, spec in enumerate(PROBES):
        fid = func_id_base + i
        cflags.append(f"-DGPT_FID_{spec.name}={fid}")
        res = ks.resolve(spec.entry)
        # positions for absent functions too, so every handler is built (and verified) in full
        for role, pos in _param_positions(spec, mod, res.symbol is None or res.args_reliable).items():
            cflags.append(f"-DGPT_ARG_{spec.name}_{role}={pos}")
        row = ProbeAttach(spec.name, spec.event, None, None, "unavailable", None, fid)
        rows.append(row)
        if probes and spec.name not in probes:
            row.reason = "not selected"
            continue
        if res.symbol is None:
            reason = res.reason
            if spec.name == "execute_queues_cpsch" and "module" not in (reason or ""):
                reason = "inlined in this build; map_queues_cpsch and unmap_queues_cpsch are probed"
            elif spec.since and "module" not in (reason or ""):
                reason = f"not a symbol in this kernel (the function exists in kernels {spec.since})"
            row.reason = reason
            continue
        ret_res = res if spec.ret is None else ks.resolve(spec.ret)
        if ret_res.symbol is None:
            row.reason = f"{spec.ret}: {ret_res.reason}"
            continue
        notes_row = [n for n in (res.reason, ret_res.reason if spec.ret else None) if n]
        if mod is not None and res.args_reliable and not mod.has_func(spec.entry):
            notes_row.append("no BTF FUNC: argument positions assumed from the 6.1 source")
        row.entry_target, row.ret_target = res.kprobe_target, ret_res.kprobe_target
        row.target = res.kprobe_target if spec.ret is None else f"{res.kprobe_target}->{ret_res.kprobe_target}"
        row.mechanism = "kprobe+kretprobe"
        row.status = "planned"
        if spec.mes:
            notes_row.append("fires on MES GPUs (gfx11+) only")
        row.reason = "; ".join(notes_row) or None
        fb = []
        if ":" not in (res.kprobe_target or "") and res.symbol:
            fb.append((f"{MODULE}:{res.symbol}", f"{MODULE}:{ret_res.symbol}"))
        row.fallbacks = tuple(fb)
        sup = next((t for t in TRACEPOINTS if t.name in tps and spec.name in t.supersedes), None)
        if sup:  # kept resolved: attach() falls back to it if the tracepoint cannot attach
            row.status, row.reason = "unavailable", f"superseded by tracepoint kfd:{sup.name}"

    dkms = find_dkms_tracepoints([tracefs] if tracefs else ([] if offline else TRACEFS_DIRS))
    for t in TRACEPOINTS:
        fid = func_id_base + len(rows)
        cflags.append(f"-DGPT_FID_tp_{t.name}={fid}")
        row = ProbeAttach(t.probe, t.event, None, None, "unavailable", t.absent, fid)
        if probes and row.probe not in probes:
            row.reason = "not selected"
        elif t.system == "amdkfd":
            _plan_dkms(t, row, dkms, ks, cflags)
        elif t.name in tps:
            row.target, row.mechanism, row.status, row.reason = f"kfd:{t.name}", "raw_tracepoint", "planned", None
            row.entry_target = t.name
        rows.append(row)
    _pair_dkms_spans(rows)
    eligible = [r.probe for r in rows if r.mechanism == "kprobe+kretprobe" and ks.resolve(PROBES[r.func_id - func_id_base].entry).fentry_safe
                and mod is not None and mod.has_func(PROBES[r.func_id - func_id_base].entry)]
    if eligible:
        notes.append(f"fentry/fexit not used: BCC finds fentry targets only in vmlinux BTF and these functions are in {MODULE}; "
                     f"{len(eligible)} probes would qualify (BTF FUNC + unique name)")
    return KfdPlan(rows, offsets, cflags, KFD_SOURCE, chosen, notes, kernel=_kernel_name(btf_dir, kallsyms), btf_source=located.as_dict())


def _kernel_name(btf_dir, kallsyms) -> str:
    if btf_dir is None and kallsyms is None:
        return os.uname().release
    return f"offline ({btf_dir or SYS_BTF}, {getattr(kallsyms, 'source', kallsyms) or '/proc/kallsyms'})"


# ---- the KFD ioctl path (tracers/ioctl.bpf.c) ---------------------------------------------------
IOCTL_SOURCE = resources.tracers() / "ioctl.bpf.c"
IOCTL_PROBE = "sys_ioctl"  # its row in the attach plan, whichever variant attached
IOCTL_TP_FUNC = "syscalls:sys_enter_ioctl"  # func of the tracepoint variant's rows (the kprobe variant's: KFD_IOCTL)
IOCTL_TP_TARGET = "syscalls:sys_enter_ioctl+sys_exit_ioctl"
KFD_IOCTL = "kfd_ioctl"  # KFD's unlocked_ioctl(filep, cmd, arg): the kprobe variant's target, a PROBES entry
IOCTL_KRETPROBE_MAXACTIVE = 1024  # threads inside kfd_ioctl at once (WAIT_EVENTS blocks there) before returns are missed
KFD_IOCTL_DECODED = "its rows decoded by the ioctl path's kprobe variant (tracers/ioctl.bpf.c)"
IOCTL_COST = {
    "kprobe": "only calls on the KFD device run the probe; other processes and syscalls pay nothing",
    "tracepoint": "every ioctl of every process runs the program and every syscall takes the syscall-tracing slow path",
}


def ioctl_kprobe_target(kfd: KfdPlan | None) -> tuple[ProbeAttach | None, str | None]:
    """The kfd plan's kfd_ioctl row when the kprobe variant can use it, else (None, why not)."""
    if kfd is None:
        return None, "the kfd probe group is off (--probes ioctl): the syscall tracepoints are used"
    row = next((p for p in kfd.probes if p.probe == KFD_IOCTL), None)
    if row is None or row.entry_target is None:
        return None, f"{KFD_IOCTL}: {row.reason if row is not None and row.reason else 'not resolved'}"
    if f"-DGPT_ARG_{KFD_IOCTL}_CMD=1" not in kfd.cflags:  # a GCC clone, or BTF gives another signature
        return None, f"{KFD_IOCTL}: its arguments are not (filep, cmd, arg) in this build ({row.reason or 'BTF'})"
    return row, None


@dataclass
class IoctlPlan:
    """The ioctl path: the variants of tracers/ioctl.bpf.c to try, in order (kprobe on kfd_ioctl, then the
    syscall tracepoints), and its attach-plan row (a dict, updated in place by attach())."""

    row: dict
    cflags: list[str]
    filter: str | None  # the tracepoint variant's filter: "device" (fd walk to GPT_KFD_RDEV) | "known_numbers"
    filter_note: str | None
    tracepoint: bool = True  # False (--probes kfd): the kprobe variant only, for the kfd_ioctl probe's rows
    kprobe: tuple[tuple[str, str], ...] = ()  # (entry, return) targets for the kprobe variant; () = none
    kprobe_row: ProbeAttach | None = None  # the kfd plan's kfd_ioctl row it supersedes
    why_not_kprobe: str | None = None

    def source(self) -> str:
        return IOCTL_SOURCE.read_text()

    def use_kprobe(self, kfd: KfdPlan | None) -> list[str]:
        """Plan the kprobe variant on the kfd plan's kfd_ioctl (it then writes that probe's rows, decoded, and
        the bare kfd_ioctl probe is not attached); returns the extra -D flags."""
        row, why = ioctl_kprobe_target(kfd)
        if row is None:
            self.why_not_kprobe = why
            self.row["reason"] = self._tp_reason() if self.tracepoint else why
            return []
        self.kprobe = ((row.entry_target, row.ret_target or row.entry_target), *row.fallbacks)
        self.kprobe_row = row
        row.status, row.reason = "unavailable", KFD_IOCTL_DECODED
        self.row.update(target=f"{row.entry_target} | {IOCTL_TP_TARGET}", mechanism="kprobe+kretprobe | tracepoint",
                        reason=f"tried in this order: kprobe on {KFD_IOCTL}, then the syscall tracepoints")
        return [f"-DGPT_IOCTL_KPROBE_FUNC_ID={row.func_id}"]

    def _tp_reason(self) -> str:
        parts = [f"{self.why_not_kprobe}; " if self.why_not_kprobe else "", IOCTL_COST["tracepoint"]]
        if self.filter != "device":
            parts.append(f"; filtering on known AMDKFD_IOC_* numbers: {self.filter_note}")
        return "".join(parts)

    def attach(self, bpf) -> None:
        """Attach the first variant that works; the row says which (status, target, mechanism, func_id, reason)."""
        errors = []
        for entry, ret in self.kprobe:
            try:
                bpf.attach_kprobe(event=entry, fn_name="gpt_ioctl_kp_enter")
            except Exception as e:  # BCC raises bare Exception
                errors.append(f"{entry}: {_first_line(e)}")
                continue
            try:
                bpf.attach_kretprobe(event=ret, fn_name="gpt_ioctl_kp_exit", maxactive=IOCTL_KRETPROBE_MAXACTIVE)
            except Exception as e:  # BCC raises bare Exception
                errors.append(f"{ret} (return): {_first_line(e)}")
                try:
                    bpf.detach_kprobe(event=entry, fn_name="gpt_ioctl_kp_enter")
                except Exception:  # noqa: BLE001 - nothing left to undo
                    pass
                continue
            self.row.update(status="attached", target=entry, mechanism="kprobe+kretprobe", func_id=self.kprobe_row.func_id,
                            reason=IOCTL_COST["kprobe"])
            self.kprobe_row.status, self.kprobe_row.target = "attached", entry
            self.kprobe_row.reason = KFD_IOCTL_DECODED
            return
        if errors:
            self.why_not_kprobe = f"kprobe on {KFD_IOCTL} failed ({'; '.join(errors)})"
            self.kprobe_row.status, self.kprobe_row.reason = "failed", self.why_not_kprobe + (
                "; the ioctl path uses the syscall tracepoints" if self.tracepoint else "")
        if not self.tracepoint:
            self.row.update(status="failed" if errors else "unavailable", reason=self.why_not_kprobe)
            return
        try:
            bpf.attach_tracepoint(tp="syscalls:sys_enter_ioctl", fn_name="gpt_ioctl_tp_enter")
            try:
                bpf.attach_tracepoint(tp="syscalls:sys_exit_ioctl", fn_name="gpt_ioctl_tp_exit")
            except Exception:
                bpf.detach_tracepoint(tp="syscalls:sys_enter_ioctl")
                raise
        except Exception as e:  # BCC raises bare Exception
            self.row.update(status="failed", target=IOCTL_TP_TARGET, mechanism="tracepoint",
                            reason="; ".join(filter(None, (self.why_not_kprobe, f"syscall tracepoints: {_first_line(e)}"))))
            return
        self.row.update(status="attached", target=IOCTL_TP_TARGET, mechanism="tracepoint", reason=self._tp_reason())


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def plan_ioctl(kfd_rdev: int | None, fd_offsets: dict[str, int] | None, why_no_offsets: str | None, func_id: int,
               tracepoint: bool = True) -> IoctlPlan:
    """The ioctl path's tracepoint variant: filter on the KFD device (fd walk with BTF offsets) or, without
    the offsets, on the known AMDKFD_IOC_* numbers. IoctlPlan.use_kprobe adds the kprobe variant.
    tracepoint=False (--probes kfd): no tracepoint variant, only the kprobe one for kfd_ioctl's rows."""
    from . import ioctls

    cflags = [f"-DGPT_IOCTL_FUNC_ID={func_id}", *ioctls.bpf_cflags()]
    if not tracepoint:
        row = {"probe": IOCTL_PROBE, "event": "kfd_ioctl", "target": None, "mechanism": None, "status": "planned",
               "reason": None, "func_id": func_id}
        return IoctlPlan(row, [*cflags, "-DGPT_IOCTL_NO_TRACEPOINT"], None, None, tracepoint=False)
    if fd_offsets is not None:
        filt, note = "device", None
        cflags.append(f"-DGPT_KFD_RDEV={kfd_rdev}")
        cflags += [f"-DGPT_OFF_{m}={v}" for m, v in fd_offsets.items()]
    else:
        filt, note = "known_numbers", why_no_offsets
    row = {"probe": IOCTL_PROBE, "event": "kfd_ioctl", "target": IOCTL_TP_TARGET, "mechanism": "tracepoint",
           "status": "planned", "reason": None, "func_id": func_id}
    p = IoctlPlan(row, cflags, filt, note)
    row["reason"] = p._tp_reason()
    return p
