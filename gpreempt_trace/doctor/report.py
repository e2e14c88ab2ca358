"""The doctor's report: run every check and plan the attach (live, or offline against a saved kallsyms
and BTF), and render it as text. The checks themselves are in checks.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..recorder.plan import FIELDS, MODULE, SYS_BTF, KfdPlan, plan_kfd
from .checks import Check, ioctl_path_check, live_checks


@dataclass
class DoctorReport:
    kernel: str
    offline: bool
    checks: list[Check]
    plan: KfdPlan
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def as_dict(self) -> dict:
        return {
            "kernel": self.kernel,
            "offline": self.offline,
            "checks": [c.as_dict() for c in self.checks],
            "probes": [
                {"probe": p.probe, "event": p.event, "symbol": p.target, "mechanism": p.mechanism, "status": p.status,
                 "reason": p.reason, "func_id": p.func_id}
                for p in self.plan.probes
            ],
            "fields": [
                {"macro": f"GPT_OFF_{s.macro}", "path": self.plan.fields.get(s.macro) or s.paths[-1],
                 "offset": self.plan.offsets.get(self.plan.fields.get(s.macro) or "")}
                for s in FIELDS
            ],
            "offsets": self.plan.offsets,
            "notes": self.plan.notes,
            "btf_source": self.plan.btf_source,
        }


def run_doctor(kallsyms: str | Path | None = None, btf_dir: str | Path | None = None, probes: list[str] | None = None,
               tracefs: str | Path | None = None) -> DoctorReport:
    offline = kallsyms is not None or btf_dir is not None
    plan = plan_kfd(kallsyms, btf_dir, probes=probes, tracefs=tracefs)
    checks = _offline_checks(plan, kallsyms, btf_dir) if offline else live_checks(plan, tracefs)
    return DoctorReport(plan.kernel, offline, checks, plan)


def _offline_checks(plan: KfdPlan, kallsyms, btf_dir) -> list[Check]:
    d = Path(btf_dir) if btf_dir else SYS_BTF
    has_mod = (d / MODULE).exists()
    out = [Check("btf", True if has_mod else False, f"{d}: vmlinux" + (f" + {MODULE} (split BTF matches its base)" if has_mod else f", no {MODULE}"),
                 "" if has_mod else f"copy /sys/kernel/btf/{MODULE} from a machine with amdgpu loaded, "
                 f"or build one for that kernel: gpreempt-trace btf build ... -o {d}/")]
    loaded = any(p.reason != f"module {MODULE} is not loaded" for p in plan.probes)
    out.append(Check("kallsyms", loaded, f"{kallsyms or '/proc/kallsyms'}: " + (f"{MODULE} symbols present" if loaded else f"no {MODULE} symbols"),
                     "" if loaded else f"save /proc/kallsyms as root while {MODULE} is loaded"))
    out.append(ioctl_path_check(plan, None))
    return out


def render_text(r: DoctorReport) -> str:
    lines = [f"kernel: {r.kernel}" + ("" if r.offline else " (running)"), "", "checks:"]
    for c in r.checks:
        mark = "info" if c.ok is None else ("ok" if c.ok else "FAIL")
        lines.append(f"  [{mark:4}] {c.name:16} {c.detail}")
        if c.hint and c.ok is False:
            lines.append(f"  {'':6} {'':16} fix: {c.hint}")
    planned = sum(p.status == "planned" for p in r.plan.probes)
    lines += ["", f"attach plan ({planned} of {len(r.plan.probes)} probes planned):"]
    rows = [("probe", "event", "target", "mechanism", "status", "reason")]
    rows += [(p.probe, p.event, p.target or "-", p.mechanism or "-", p.status, p.reason or "") for p in r.plan.probes]
    lines += _table(rows)
    src = r.plan.btf_source or {}
    lines += ["", f"offsets from: {src.get('kind', 'none')}: {src.get('detail') or '-'}"]
    lines += ["struct fields (from BTF; missing = not read, NULL):"]
    frows = [("macro", "field", "offset")]
    for s in FIELDS:
        path = r.plan.fields.get(s.macro)
        shown = path or " | ".join(p for p in s.paths if "{" not in p)
        frows.append((f"GPT_OFF_{s.macro}", shown, str(r.plan.offsets[path]) if path else "missing"))
    lines += _table(frows)
    if r.plan.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in r.plan.notes]
    return "\n".join(lines) + "\n"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
