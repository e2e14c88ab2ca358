"""`gpreempt-trace demo` (`make demo`): the whole answer on embedded defaults, on any Debian 12 machine,
in about a minute after set-up. One progress line per step:

1. doctor: what this kernel lets the recorder and the controller do;
2. experiment 1 on the embedded MI308X-like debugfs capture (baseline, 2 x during, after);
3. a synthetic scheme A / scheme B pair from the KFD/HWS model (gpreempt_trace.synthetic), labelled
   synthetic everywhere (meta.json, compare, report);
4. compare --by scheme: preemption latency A vs B with bootstrap CIs and a verdict;
5. a few seconds of the real eBPF recorder on the ioctl tracepoint path around a CPU torch workload
   (online requests as markers) and a replay of the KFD calls of an online/offline pair and a
   scheme-A controller, on /dev/kfd when it exists, else on /dev/null;
6. the HTML report (index.html with plots) over experiment 1, the pair and the recording;
7. Perfetto export of the scheme A trace.

Every step must succeed, or the demo fails naming the step (non-zero exit). Only step 5 may be
"not possible here", and only for a reason of this machine by design: no permission for BPF (not root
and no CAP_BPF + CAP_PERFMON), no tracefs, or torch not installed; the demo then says so explicitly.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .. import api
from ..debugfs import MI308X_SAMPLE
from ..errors import GptError

MARK = ".gpreempt-demo"  # the output folder is ours to replace only when it carries this file
STEPS = 7
SYNTH_EVENTS = 4000
RECORD_SECONDS = 3.0


class StepFailed(GptError):
    pass


@dataclass
class DemoResult:
    out: Path
    traces: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    verdict: Optional[str] = None
    report: Optional[Path] = None
    perfetto: Optional[Path] = None
    record: Optional[Path] = None
    not_possible: dict[str, str] = field(default_factory=dict)  # step -> why (by design of this machine)
    step_s: dict[str, float] = field(default_factory=dict)


def _prepare(out: Path) -> None:
    if out.exists():
        if not (out / MARK).exists() and any(out.iterdir()):
            raise GptError(f"{out} exists and was not made by the demo", "give another folder with -o, or remove it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARK).write_text("made by gpreempt-trace demo; replaced on the next run\n")


def record_blocker(doc) -> Optional[str]:
    """Why the recorder cannot run on this machine by design (None: it can)."""
    by = {c.name: c for c in doc.checks}
    for name in ("privileges", "tracefs"):
        c = by.get(name)
        if c is not None and c.ok is False:
            return f"{name}: {c.detail} ({c.hint})" if c.hint else f"{name}: {c.detail}"
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed (make setup installs the CPU wheel)"
    return None


def run(out_dir: str = "out/demo", record: bool = True, say: Callable[[str], None] = print) -> DemoResult:
    out = Path(out_dir)
    _prepare(out)
    res = DemoResult(out)
    t_all = time.monotonic()
    n = 0

    def step(name: str, title: str):
        nonlocal n
        n += 1
        say(f"[{n}/{STEPS}] {title}")
        return _Step(res, name, say)

    with step("doctor", "doctor: what this kernel lets the recorder and the controller do"):
        doc = api.doctor()
        by = {c.name: c for c in doc.checks}
        for name in ("privileges", "kprobes", "tracefs", "/dev/kfd", "amdgpu module"):
            if name in by:
                c = by[name]
                say(f"      {name}: {'ok' if c.ok else 'no'} ({c.detail})")
        planned = sum(1 for p in doc.plan.probes if p.status in ("planned", "attached"))
        say(f"      KFD function probes plannable here: {planned} of {len(doc.plan.probes)}; "
            "the ioctl tracepoint path works wherever BPF does")

    with step("exp01", "experiment 1 on the embedded MI308X capture (8 GPUs x 4 XCCs; baseline, 2 x during, after)"):
        exp_trace = out / "exp01"
        api.snapshot_import(str(exp_trace), [str(p) for p in sorted(Path(MI308X_SAMPLE).iterdir())], {"model": "mi308x-sample"})
        res.traces.append(exp_trace)
        for line in api.exp01([str(exp_trace)]).lines():
            say("      " + line)

    with step("synth", f"SYNTHETIC scheme A / scheme B pair from the KFD/HWS model ({SYNTH_EVENTS} events each; not measured)"):
        pair = []
        for scheme, seed in (("A", 1), ("B", 2)):
            p = api.synth(str(out / f"synthetic-{scheme}"), scheme, SYNTH_EVENTS, seed)
            pair.append(p)
            say(f"      synthetic scheme {scheme} -> {p} (meta.json synthetic: true; ground truth beside it)")
        res.traces += pair

    with step("compare", "compare --by scheme (preemption latency, bootstrap CIs, rank test) on the SYNTHETIC pair"):
        cmp = api.compare([str(p) for p in pair], by="scheme")
        res.verdict = cmp.verdict
        for r in cmp.groups.to_pylist():
            say(f"      scheme {r.get('scheme')}: {r.get('samples')} preemptions, p50 {_us(r.get('p50_ns'))}, "
                f"p99 {_us(r.get('p99_ns'))}, max {_us(r.get('max_ns'))}" + (" [synthetic]" if r.get("synthetic") else ""))
        say("      " + cmp.verdict)

    kfd = "/dev/kfd" if os.path.exists("/dev/kfd") else "/dev/null"
    with step("record", f"record: {RECORD_SECONDS:g} s of the eBPF recorder on the ioctl path (on {kfd}) around a CPU torch "
                        "workload and a KFD-call replay"):
        why = "--no-record" if not record else record_blocker(doc)
        if why:
            res.not_possible["record"] = why
            say(f"      not possible here: {why}")
        else:
            rec = out / "record"
            workload = [sys.executable, "-m", "gpreempt_trace.cli.main", "workload", "online", "--model", "mlp", "--device", "cpu",
                        "--batch", "1", "--threads", "1", "--rate", "50", "--duration", str(RECORD_SECONDS), "--trace", str(rec)]
            replay = [sys.executable, "-m", "gpreempt_trace.workloads.kfd_calls", "--kfd-path", kfd, "--rounds", "20"]
            # the jobs' own summary lines, indented under this step; pipefail keeps their exit status
            script = "set -o pipefail; { " + " && ".join(" ".join(_q(a) for a in c) for c in (replay, workload)) + \
                     "; } 2>&1 | sed -u 's/^/      | /'"
            r = api.record(str(rec), probes=("ioctl",), probes_explicit=True, kfd_path=kfd,
                           labels={"model": "kfd-replay+mlp", "device": kfd}, cmd=("/bin/bash", "-c", script))
            if r.exit_code:
                raise StepFailed(f"the recorded workload exited with {r.exit_code}", f"see {rec}")
            res.record = rec
            con = api.connect([str(rec)])
            reqs = con.execute("SELECT count(*) FROM markers WHERE kind = 'request_end'").fetchone()[0]
            say(f"      {r.summary_line()}")
            say(f"      {reqs} online torch requests as markers in the same trace, next to the ioctl events")

    with step("report", "report: index.html with plots over experiment 1, the synthetic pair" + (" and the recording" if res.record else "")):
        res.report = Path(api.report([str(t) for t in res.traces + ([res.record] if res.record else [])], str(out / "report")))
        say(f"      {res.report}")

    with step("perfetto", "Perfetto export of the synthetic scheme A trace (open it in ui.perfetto.dev)"):
        res.perfetto = Path(api.export_perfetto(str(pair[0]), str(out / "synthetic-A.perfetto-trace")))
        say(f"      {res.perfetto} ({res.perfetto.stat().st_size} bytes)")

    res.step_s["total"] = time.monotonic() - t_all
    if res.not_possible:
        say("not possible on this machine: " + "; ".join(f"step {k}: {v}" for k, v in res.not_possible.items()))
    say(f"demo: {STEPS} steps in {res.step_s['total']:.0f} s")
    say(f"verdict: {res.verdict}")
    say(f"report: {res.report.resolve()}")
    return res


class _Step:
    """A demo step: its failure becomes one line naming the step (non-zero exit)."""

    def __init__(self, res: DemoResult, name: str, say):
        self.res, self.name, self.say = res, name, say

    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, typ, exc, tb):
        self.res.step_s[self.name] = time.monotonic() - self.t0
        if exc is None or isinstance(exc, (KeyboardInterrupt, StepFailed)):
            if isinstance(exc, StepFailed):
                raise StepFailed(f"demo step {self.name} failed: {exc.what}", exc.hint) from None
            return False
        if isinstance(exc, GptError):
            raise StepFailed(f"demo step {self.name} failed: {exc.what}", exc.hint or "the steps before it are in the output folder") from None
        raise StepFailed(f"demo step {self.name} failed: {exc.__class__.__name__}: {exc}", "the steps before it are in the output folder") from None


def _us(ns) -> str:
    return "-" if ns is None else f"{ns / 1e3:.1f} us"


def _q(a: str) -> str:
    import shlex

    return shlex.quote(a)
