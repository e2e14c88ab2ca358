"""`gpreempt-trace experiment ab`: the online model's request response time with no preemption, scheme A
and scheme B, and what each preemption costs the offline job, from the same runs.

1. doctor: what this machine can do, and a one-line reason for each part it cannot (no /dev/kfd,
   KFD ioctl < 1.13 for scheme A, no scheme B ioctls, no BPF, debugfs not readable);
2. per scheme and repeat, one trace OUT/<scheme>-<k> labelled scheme, repeat, online_model,
   offline_model (each process's role and model are in its workload_start marker): the recorder
   (when BPF and something KFD to record exist) around one cell (cell.py: offline job, controller
   service for A/B, online job with its policy, debugfs snapshots where readable);
3. the per-scheme table of query module workload.requests, `compare --by scheme` (when there are
   preemptions) and the HTML report in OUT/report/.

Ctrl-C at any point stops the cell in order (online, controller — which resumes —, offline), lets the
recorder finish its segments and keeps every trace written so far.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..errors import GptError
from .cell import INTERRUPTED, CellSpec

SCHEMES = ("none", "A", "B")
MARK = ".gpreempt-experiment"


class Interrupted(GptError):
    exit_code = INTERRUPTED


@dataclass
class ABOptions:
    """Options of `gpreempt-trace experiment ab` (fields named like the flags)."""

    output: str
    online: str = "mlp"
    offline: str = "resnet"
    schemes: tuple[str, ...] = SCHEMES
    repeat: int = 1
    duration_s: float = 10.0
    rate_hz: float = 20.0
    batch: int = 8
    policy: str = "per-request"
    burst_gap_ms: float = 20.0
    device: str = "auto"
    threads: Optional[int] = None
    backend: str = "torch"
    queues: str = "all"
    record: str = "auto"  # auto | yes | no
    unchecked_ids: Optional[str] = None
    open_kfd: bool = False
    environment: Optional[str] = None  # label, e.g. qemu-tcg (the lab)
    warmup_timeout_s: float = 300.0  # how long a job may take to import torch and warm up
    report: bool = True


@dataclass
class Capability:
    part: str
    ok: bool
    why: str  # what was found; for ok=False, why it cannot run here

    def line(self) -> str:
        return f"{self.part}: {'yes' if self.ok else 'not possible here'} ({self.why})"


@dataclass
class Plan:
    checks: list[Capability]
    schemes: list[str]  # what will run
    skipped: dict[str, str]  # scheme -> one-line reason
    record: bool
    record_why: str
    snapshots: bool
    kfd: bool


@dataclass
class ABResult:
    out: Path
    plan: Plan
    traces: list[Path] = field(default_factory=list)
    cells: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    verdict: Optional[str] = None
    report: Optional[Path] = None
    interrupted: bool = False
    runs: list[dict] = field(default_factory=list)  # every planned run: scheme, repeat, status, cause, trace

    def accounting(self) -> dict:
        """Every planned run is completed, failed (with its cause) or not run (interrupted): none missing."""
        by = {s: sum(r["status"] == s for r in self.runs) for s in ("completed", "failed", "not run")}
        return {"planned": len(self.runs), **by}


def plan(o: ABOptions, doctor=None) -> Plan:
    """What can run here, each part with the reason: read from doctor's report (its /dev/kfd, scheme A,
    scheme B ioctls, privileges, tracefs, kprobes and debugfs checks and its probe plan)."""
    from .. import api

    doc = doctor or api.doctor()
    by = {c.name: c for c in doc.checks}

    def failed(name: str) -> str | None:  # None: the check passed; else why not
        c = by.get(name)
        return None if c is not None and c.ok else (c.detail if c is not None else f"doctor did not check {name}")

    checks: list[Capability] = []
    why_kfd = failed("/dev/kfd")
    kfd = why_kfd is None
    ver = by["/dev/kfd"].value if kfd else None
    checks.append(Capability("/dev/kfd", kfd, f"KFD ioctl {ver[0]}.{ver[1]}" if kfd else why_kfd))

    skipped: dict[str, str] = {}
    for scheme, check in (("A", "scheme A"), ("B", "scheme B ioctls")):
        why = failed(check)
        if why is not None:
            skipped[scheme] = why

    priv = by.get("privileges")
    tracefs = by.get("tracefs")
    bpf = bool(priv and priv.ok) and bool(tracefs and tracefs.ok)
    kfd_probes = sum(1 for p in doc.plan.probes if p.status in ("planned", "attached"))
    kp = by.get("kprobes")
    if o.record == "no":
        record, why_rec = False, "--record no"
    elif not bpf:
        record, why_rec = False, "no BPF here: " + "; ".join(c.detail for c in (priv, tracefs) if c is not None and not c.ok)
    elif not kfd and not (kfd_probes and kp and kp.ok):
        record, why_rec = False, ("nothing KFD to record: no /dev/kfd for the ioctl path and no KFD function probe "
                                  "(amdgpu not loaded" + ("" if kp and kp.ok else "; no kprobes in this kernel") + ")")
    else:
        record, why_rec = True, f"ioctl path on /dev/kfd{' + ' + str(kfd_probes) + ' KFD function probes' if kfd_probes and kp and kp.ok else ''}"
    if o.record == "yes" and not record:
        raise GptError(f"--record yes: the recorder cannot run here ({why_rec})", "use --record auto")
    checks.append(Capability("recorder", record, why_rec))

    why_dbg = failed("debugfs")
    snaps, why_snap = (True, "KFD debugfs readable") if why_dbg is None else (False, f"KFD debugfs not readable: {why_dbg}")
    checks.append(Capability("debugfs snapshots", snaps, why_snap))
    schemes = [s for s in o.schemes if s not in skipped]
    return Plan(checks, schemes, {s: skipped[s] for s in o.schemes if s in skipped}, record, why_rec, snaps, kfd)


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARK).exists():
        raise GptError(f"{out} exists and was not made by `experiment ab`", "give a new folder with -o, or remove it")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARK).write_text("made by gpreempt-trace experiment ab; replaced on the next run into this folder\n")


def _labels(o: ABOptions, scheme: str, k: int) -> dict[str, str]:
    lab = {"scheme": scheme, "repeat": str(k), "online_model": o.online, "offline_model": o.offline,
           "model": f"{o.online}+{o.offline}", "role": "online+offline", "experiment": "ab",
           "policy": "none" if scheme == "none" else o.policy}
    if o.environment:
        lab["environment"] = o.environment
    return lab


def _run_cell(o: ABOptions, p: Plan, scheme: str, k: int, trace: Path, say) -> dict:
    spec = CellSpec(trace=str(trace), scheme=scheme, online=o.online, offline=o.offline, duration_s=o.duration_s,
                    rate_hz=o.rate_hz, batch=o.batch, policy=o.policy, burst_gap_ms=o.burst_gap_ms, device=o.device,
                    threads=o.threads, backend=o.backend, queues=o.queues, unchecked_ids=o.unchecked_ids, open_kfd=o.open_kfd,
                    snapshots=p.snapshots, warmup_timeout_s=o.warmup_timeout_s, result_file=str(trace.parent / f".{trace.name}.cell.json"))
    spec_file = trace.parent / f".{trace.name}.spec.json"
    spec_file.write_text(json.dumps(asdict(spec)))
    cmd = (sys.executable, "-m", "gpreempt_trace.experiment.cell", str(spec_file))
    labels = _labels(o, scheme, k)
    rc, rec_line = None, None
    if p.record:
        from .. import api

        r = api.record(str(trace), probes=("ioctl", "kfd") if p.kfd else ("ioctl",), kfd_path="/dev/kfd", labels=labels, cmd=cmd)
        rc, rec_line = r.exit_code, r.summary_line()
    else:
        from ..trace.directory import TraceWriter

        tw = TraceWriter.create(trace, labels)
        try:
            proc = subprocess.Popen(cmd)
            try:
                rc = proc.wait()
            except KeyboardInterrupt:  # the cell got the same SIGINT (one process group): let it stop in order
                rc = _wait_quietly(proc)
        finally:
            tw.close()
    res = json.loads(Path(spec.result_file).read_text()) if Path(spec.result_file).exists() else {}
    for f in (spec_file, Path(spec.result_file)):
        f.unlink(missing_ok=True)
    res.update(rc=rc, record=rec_line, repeat=k)
    return res


def _wait_quietly(proc: subprocess.Popen) -> int:
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)


def requests_summary(traces: list[str]) -> list[dict]:
    """The per-scheme rows of workload.requests (workload_requests_summary)."""
    from ..sql import query

    con = query.connect(traces)
    query.load_module(con, query.list_modules()["workload.requests"])
    cur = con.execute("SELECT * FROM workload_requests_summary")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def summary_lines(rows: list[dict], environment: Optional[str] = None) -> list[str]:
    ms = lambda v: "-" if v is None else f"{v / 1e6:.2f}"  # noqa: E731
    out = [f"{'scheme':<7} {'runs':>4} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
           f"{'overlapped':>10} {'preempts':>8} {'offline steps/s':>15}"]
    for r in rows:
        sps = "-" if r["offline_steps_per_s"] is None else f"{r['offline_steps_per_s']:.2f}"
        out.append(f"{r['scheme']:<7} {r['runs']:>4} {r['requests']:>8} {ms(r['p50_ns']):>8} {ms(r['p99_ns']):>8} "
                   f"{ms(r['max_ns']):>8} {r['overlapped_requests']:>10} {r['preemptions']:>8} {sps:>15}")
    envs = {r["environment"] for r in rows if r.get("environment")}
    if envs:
        out.append(f"environment {', '.join(sorted(envs))}: software-path times under emulation, not hardware numbers")
    return out


def run(o: ABOptions, say: Callable[[str], None] = print, doctor=None) -> ABResult:
    bad = [s for s in o.schemes if s not in SCHEMES]
    if bad or not o.schemes:
        raise GptError(f"unknown scheme {','.join(bad) or '(none given)'}", "give --schemes as a list of none, A, B")
    out = Path(o.output)
    p = plan(o, doctor)
    say("doctor: what this machine lets the experiment do")
    for c in p.checks:
        say("  " + c.line())
    for s in o.schemes:
        say(f"scheme {s} skipped: {p.skipped[s]}" if s in p.skipped else f"scheme {s}: runs")
    if not p.schemes:
        raise GptError(f"none of the schemes {','.join(o.schemes)} can run here", "; ".join(f"{s}: {w}" for s, w in p.skipped.items()))
    if not p.record:
        say(f"recorder: not run ({p.record_why}); each trace holds the workloads' and the controller's markers")
    _prepare(out)
    res = ABResult(out, p)
    (out / "plan.json").write_text(json.dumps({"checks": [asdict(c) for c in p.checks], "skipped": p.skipped,
                                               "schemes": p.schemes, "options": asdict(o)}, indent=1, default=str))
    res.runs = [{"scheme": s, "repeat": k, "status": "not run", "cause": None, "trace": None}
                for k in range(1, o.repeat + 1) for s in p.schemes]
    try:
        for run in res.runs:
            scheme, k = run["scheme"], run["repeat"]
            trace = out / f"{scheme}-{k}"
            t0 = time.monotonic()
            say(f"[{scheme} #{k}] offline {o.offline} + online {o.online} at {o.rate_hz:g}/s for {o.duration_s:g} s, "
                f"policy {'none' if scheme == 'none' else o.policy}" + (", recording" if p.record else ""))
            try:
                cell = _run_cell(o, p, scheme, k, trace, say)
            except GptError as e:  # the cell could not be run at all: this run failed, the next ones run
                cell = {"ok": False, "errors": [e.line()]}
            res.cells.append(cell)
            for line in (cell.get("online_line"), cell.get("offline_line"), cell.get("record")):
                if line:
                    say("    " + line)
            for e in cell.get("errors") or []:
                say("    error: " + e)
            say(f"    -> {trace} ({time.monotonic() - t0:.1f} s)")
            if cell.get("interrupted") or cell.get("rc") == INTERRUPTED:
                run.update(status="failed", cause="interrupted", trace=str(trace) if trace.exists() else None)
                raise KeyboardInterrupt
            run["trace"] = str(trace) if (trace / "meta.json").exists() else None
            if cell.get("ok"):
                run["status"] = "completed"
                res.traces.append(trace)
            else:
                run.update(status="failed", cause="; ".join(cell.get("errors") or ["rc " + str(cell.get("rc"))]))
    except KeyboardInterrupt:
        res.interrupted = True
        say(f"interrupted: every process stopped (the controller resumed its target); {len(res.traces)} trace(s) kept in {out}")
    _account(res, say)
    if res.traces:
        _analyse(o, res, say)
    if res.interrupted:
        raise Interrupted("interrupted", f"traces written so far are in {out}")
    failed = [r for r in res.runs if r["status"] == "failed"]
    if failed:
        first = failed[0]
        raise GptError(f"{len(failed)} of {len(res.runs)} runs failed (first: [{first['scheme']} #{first['repeat']}] {first['cause']})",
                       f"each run's status and cause: {out / 'runs.json'}; the completed runs' traces are analysed above")
    return res


def _account(res: ABResult, say) -> None:
    """Print and write (OUT/runs.json) what became of every planned run."""
    a = res.accounting()
    say(f"runs: {a['planned']} planned, {a['completed']} completed, {a['failed']} failed, {a['not run']} not run (interrupted)")
    for r in res.runs:
        if r["status"] == "failed":
            say(f"  [{r['scheme']} #{r['repeat']}] failed: {r['cause']}")
    (res.out / "runs.json").write_text(json.dumps({"accounting": a, "runs": res.runs}, indent=1))


def _analyse(o: ABOptions, res: ABResult, say) -> None:
    from .. import api

    traces = [str(t) for t in res.traces]
    res.summary = requests_summary(traces)
    say("online request response time (end - scheduled time) and offline throughput per scheme (workload.requests):")
    table = summary_lines(res.summary, o.environment)
    for line in table:
        say("  " + line)
    (res.out / "requests.txt").write_text("\n".join(table) + "\n")
    (res.out / "requests.json").write_text(json.dumps(res.summary, indent=1, default=str))
    try:
        cmp = api.compare(traces, by="scheme")
        res.verdict = cmp.verdict
        say("compare --by scheme (preemption latency): " + cmp.verdict)
    except GptError as e:
        say(f"compare --by scheme: {e.line()}")
    if o.report:
        res.report = Path(api.report(traces, str(res.out / "report")))
        say(f"report: {res.report}")
