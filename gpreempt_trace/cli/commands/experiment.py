import click

from ...experiment.ab import SCHEMES, ABOptions
from ...workloads.policy import POLICIES
from .. import options as opt
from ...workloads.torch_models import ALIASES, MAX_BATCH, MAX_THREADS, MODELS

_models = click.Choice(MODELS + tuple(ALIASES))


def _schemes(ctx, param, value):
    got = tuple(s.strip() for s in value.split(",") if s.strip())
    bad = [s for s in got if s not in SCHEMES]
    if bad or not got:
        raise click.BadParameter(f"{value!r}: give a comma-separated list of none, A, B")
    return got


def _queues(ctx, param, value):
    """Checked as `preempt serve` will check it, so a typo fails before any run starts (kept as text)."""
    from ...control.service import parse_queues
    from ...errors import GptError

    try:
        parse_queues(value)
    except GptError as e:
        raise click.BadParameter(e.line()) from None
    return value


@click.group("experiment")
def command():
    """Scripted experiments over the built-in workloads and the preemption controller."""


@command.command("ab")
@click.option("--online", type=_models, default="mlp", show_default=True, help="Online (latency-critical) model.")
@click.option("--offline", type=_models, default="resnet", show_default=True, help="Offline (batch) model.")
@click.option("--schemes", default="none,A,B", show_default=True, callback=_schemes, help="Schemes to run, comma-separated.")
@click.option("--repeat", type=click.IntRange(min=1, max=1000), default=1, show_default=True, help="Runs per scheme.")
@click.option("--duration", "duration_s", type=opt.Number(min=0, min_open=True, max=86400), default=10.0, show_default=True,
              help="Seconds of online requests per run.")
@click.option("--rate", "rate_hz", type=opt.Number(min=0, min_open=True, max=opt.MAX_RATE_HZ), default=20.0, show_default=True,
              help="Online requests per second (open loop).")
@click.option("--batch", type=click.IntRange(min=1, max=MAX_BATCH), default=8, show_default=True, help="Samples per request or step.")
@click.option("--policy", type=click.Choice([p for p in POLICIES if p != "none"]), default="per-request", show_default=True,
              help="Preempt policy of the online job under schemes A and B.")
@click.option("--burst-gap-ms", type=opt.Number(min=0, max=opt.HOUR_MS), default=20.0, show_default=True, help="burst policy: idle gap before resuming.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="Device of both workloads.")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), help="torch CPU threads per workload.")
@click.option("--backend", type=click.Choice(["torch", "numpy"]), default="torch", show_default=True,
              help="Workload backend (numpy: mlp/gemm on the CPU, for the TCG lab where torch imports take minutes).")
@click.option("--queues", default="all", show_default=True, callback=_queues, help="Offline queue ids the controller preempts (ids or all).")
@click.option("--record", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Run the eBPF recorder around each run (auto: when BPF and a KFD to record exist).")
@click.option("--lab", is_flag=True, help="Run inside the Debian 6.12 QEMU lab guest (real KFD, scheme A; TCG times, not hardware).")
@click.option("--warmup-timeout", "warmup_timeout_s", type=opt.Number(min=1, max=86400), default=300, show_default=True,
              help="Seconds a job may take to start (import torch, warm up) before the run fails.")
@click.option("--no-report", is_flag=True, help="Skip the HTML report.")
@click.option("--in-lab-guest", is_flag=True, hidden=True, help="Set by --lab inside the guest: qemu-tcg labels, KFD runtime, made-up queue ids.")
@click.option("-o", "--output", required=True, type=opt.Path(file_okay=False), help="Folder for the traces and the report.")
def ab(lab, no_report, in_lab_guest, **kw):
    """Online request response time with no preemption, scheme A and scheme B, and the offline job's cost:
    doctor first (what cannot run here and why), one trace per scheme and repeat, then the per-scheme
    table (workload.requests), `compare --by scheme` and the HTML report."""
    o = ABOptions(report=not no_report, **kw)
    if in_lab_guest:
        from ...experiment.lab import ENVIRONMENT, LAB_QUEUE_IDS

        o.environment, o.open_kfd, o.unchecked_ids = ENVIRONMENT, True, LAB_QUEUE_IDS
    if lab:
        from ...experiment import lab as lab_driver

        lab_driver.run(o, click.echo)
    else:
        from ...experiment import ab as ab_driver

        ab_driver.run(o, click.echo)
