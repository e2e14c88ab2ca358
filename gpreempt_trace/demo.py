"""`gpreempt-trace demo`: the main job on embedded defaults, on any Debian 12 machine.

1. doctor: what this kernel lets the recorder attach;
2. experiment 1 on the embedded MI308X-like debugfs capture (baseline, 2 x during, after);
3. record: the eBPF ioctl-tracepoint path traces a replay of an online + offline model pair and a
   scheme-A controller issuing real KFD ioctls (on /dev/kfd when it exists, else on /dev/null);
4. report: Markdown + plot over both traces.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import api
from .debugfs import MI308X_SAMPLE
from .errors import GptError

MARK = ".gpreempt-demo"  # the output folder is ours to replace only when it carries this file


@dataclass
class DemoResult:
    out: Path
    traces: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _prepare(out: Path) -> None:
    if out.exists():
        if not (out / MARK).exists() and any(out.iterdir()):
            raise GptError(f"{out} exists and was not made by the demo", "give another folder with -o, or remove it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARK).write_text("made by gpreempt-trace demo; replaced on the next run\n")


def run(out_dir: str = "out/demo", record: bool = True, say=print) -> DemoResult:
    out = Path(out_dir)
    _prepare(out)
    res = DemoResult(out)

    say("[1/4] doctor: what this kernel lets the recorder attach")
    doc = api.doctor()
    by_name = {c.name: c for c in doc.checks}
    planned = sum(1 for p in doc.plan.probes if p.status in ("planned", "attached"))
    for name in ("kprobes", "/dev/kfd", "amdgpu module"):
        if name in by_name:
            c = by_name[name]
            say(f"      {name}: {'ok' if c.ok else 'no'} ({c.detail})")
    say(f"      KFD function probes plannable here: {planned} of {len(doc.plan.probes)}; "
        "the ioctl tracepoint path works wherever BPF does")

    say("[2/4] experiment 1 on the embedded MI308X capture (8 GPUs x 4 XCCs; baseline, 2 x during, after)")
    exp_trace = out / "exp01"
    api.snapshot_import(str(exp_trace), [str(p) for p in sorted(Path(MI308X_SAMPLE).iterdir())], {"model": "mi308x-sample"})
    res.traces.append(exp_trace)
    for line in api.exp01([str(exp_trace)]).lines():
        say("      " + line)

    if record:
        kfd = "/dev/kfd" if os.path.exists("/dev/kfd") else "/dev/null"
        say(f"[3/4] record: eBPF on syscalls:sys_{{enter,exit}}_ioctl, replaying an online+offline pair and a "
            f"scheme-A controller on {kfd}")
        rec_trace = out / "record"
        try:
            r = api.record(str(rec_trace), probes=("ioctl",), probes_explicit=True, kfd_path=kfd,
                           labels={"model": "kfd-replay", "device": kfd},
                           cmd=(sys.executable, "-m", "gpreempt_trace.workloads.kfd_calls", "--kfd-path", kfd, "--rounds", "20"))
            say("      " + r.summary_line())
            res.traces.append(rec_trace)
        except GptError as e:
            say(f"      skipped: {e.line()}")
    else:
        say("[3/4] record: skipped (--no-record)")

    say("[4/4] report")
    md = out / "report.md"
    md.write_text(api.report([str(t) for t in res.traces]))
    png = api.plot([str(t) for t in res.traces], str(out / "report.png"))
    say(f"      {md}\n      {png}")
    return res
