"""`experiment ab --lab`: the same driver inside the Debian 6.12 lab guest (QEMU TCG, real amdgpu/KFD
1.17, zero GPUs). The offline job opens /dev/kfd and does RUNTIME_ENABLE, the controller is the real
scheme A service (the lab has no GPU queues: it sends made-up ids with --unchecked-ids and the KFD
answers INVALID per queue), the recorder records the real kfd_ioctl and queues_suspend/queues_resume
rows; scheme B runs on the patched amdgpu.ko where `make lab-scheme-b` built it (lab/scheme_b.py), else its
cells are refused. Every trace is labelled environment=qemu-tcg: its latencies are software-path times under
emulation, never hardware numbers. The traces land in OUT on the host; the table, compare and the
report are made on the host.

Cost (this 2-core VM): first use builds the 6.12 lab (Debian kernel + headers download, minutes);
then boot, amdgpu and doctor take ~5 minutes on a loaded host and the recorder's BPF compile 6-7
minutes per cell under TCG: ~25 minutes for the none and A cells (docs/experiment.md). torch would
add ~75 s per process import, hence `--backend numpy` for `make demo-lab`.
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..errors import GptError
from .ab import ABOptions, ABResult, _analyse, _prepare

ENVIRONMENT = "qemu-tcg"
LAB_QUEUE_IDS = "1,7"  # scheme A's made-up ids: the lab has no GPU queues; the KFD answers INVALID for each (B: --queues all)
GUEST_CPUS = 2
GUEST_WARMUP_S = 1200.0  # importing torch under TCG takes minutes on a loaded host


def guest_argv(o: ABOptions, out: str) -> list[str]:
    a = [".venv/bin/python", "-m", "gpreempt_trace.cli.main", "experiment", "ab", "--in-lab-guest", "--no-report",
         "--online", o.online, "--offline", o.offline, "--schemes", ",".join(o.schemes), "--repeat", str(o.repeat),
         "--duration", str(o.duration_s), "--rate", str(o.rate_hz), "--batch", str(o.batch), "--policy", o.policy,
         "--burst-gap-ms", str(o.burst_gap_ms), "--device", "cpu", "--threads", str(o.threads or 1), "--backend", o.backend,
         "--record", o.record, "--warmup-timeout", str(max(o.warmup_timeout_s, GUEST_WARMUP_S)), "-o", out]
    return a


def run(o: ABOptions, say: Callable[[str], None] = print, timeout_s: float = 2400) -> ABResult:
    from ..lab import Lab, LabBroken, LabUnavailable, scheme_b
    from ..lab.bytecode import precompile

    out = Path(o.output)
    _prepare(out)
    say("lab: Debian 6.12 guest under QEMU TCG (real amdgpu/KFD 1.17, no GPU); "
        "first use builds the lab (downloads), each run takes minutes")
    try:
        lab = Lab.ensure(kernel="6.12", log=lambda m: say("lab: " + m))
    except (LabUnavailable, LabBroken) as e:
        raise GptError(f"the 6.12 lab cannot run here: {getattr(e, 'what', e)}", "see docs/lab.md") from None
    say(f"lab: package bytecode written first ({precompile()})")
    t0 = time.monotonic()
    cmd = " ".join(shlex.quote(x) for x in guest_argv(o, "$OUT/ab")).replace("'$OUT/ab'", '"$OUT/ab"')
    if "B" in o.schemes:
        say("lab: scheme B " + (f"runs on the patched amdgpu.ko ({scheme_b.PATCHED_KO})" if scheme_b.built() else
                                "cells will be refused: the patched amdgpu.ko is not built here (make lab-scheme-b, ~10 min)"))
    r = lab.run(scheme_b.load_amdgpu() + cmd, timeout_s=timeout_s, out_dir=str(out), cpus=GUEST_CPUS, modules=())
    for line in r.output.splitlines():
        say("guest| " + line)
    say(f"lab: guest {lab.kernel} ran {r.wall_s:.0f} s (boot included), exit {r.rc}")
    ab_dir = out / "ab"
    runs_file = ab_dir / "runs.json"
    runs = json.loads(runs_file.read_text())["runs"] if runs_file.exists() else []
    if runs:  # the guest accounted for every run: analyse the completed ones
        traces = [ab_dir / Path(r["trace"]).name for r in runs if r["status"] == "completed"]
    else:
        traces = sorted(p for p in ab_dir.iterdir() if (p / "meta.json").exists()) if ab_dir.is_dir() else []
        say(f"lab: the guest wrote no run accounting ({runs_file}): {len(traces)} trace(s) found")
    res = ABResult(out, plan=None, traces=traces, runs=runs)  # the plan was made (and printed) in the guest
    if traces:
        _analyse(replace(o, environment=ENVIRONMENT), res, say)
    if r.timed_out:
        raise GptError(f"the lab run passed {timeout_s:.0f} s", f"traces written so far are in {ab_dir}")
    if r.rc != 0:
        raise GptError(f"experiment ab in the lab guest failed (exit {r.rc})", "its output is above, prefixed guest|")
    say(f"lab: {time.monotonic() - t0:.0f} s in all; latencies are TCG software-path times (environment={ENVIRONMENT}), not hardware numbers")
    return res
