import click

from ... import api
from .. import options as opt
from ...workloads.policy import POLICIES
from ...workloads.torch_models import ALIASES, MAX_BATCH, MAX_THREADS, MODELS, WorkloadOptions


@click.command("workload")
@click.argument("role", type=click.Choice(["online", "offline"]))
@click.option("--model", type=click.Choice(MODELS + tuple(ALIASES)), default="mlp", show_default=True,
              help="Model to run (random weights); cnn = resnet, transformer = transformer-prefill.")
@click.option("--duration", "duration_s", type=opt.Number(min=0, min_open=True, max=opt.MAX_SECONDS), default=10.0, show_default=True,
              help="Seconds to run.")
@click.option("--rate", "rate_hz", type=opt.Number(min=0, max=opt.MAX_RATE_HZ), default=20.0, show_default=True,
              help="Online: requests per second, open loop (0 = back to back).")
@click.option("--batch", type=click.IntRange(min=1, max=MAX_BATCH), default=8, show_default=True, help="Samples per request or step.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto picks the GPU when torch sees one (ROCm torch calls it cuda).")
@click.option("--stream-priority", type=click.Choice(["high", "normal", "low"]), default="normal", show_default=True,
              help="Run on a stream of this priority (ROCm maps it to the KFD queue priority).")
@click.option("--trace", type=opt.Path(file_okay=False), help="Add request/step markers to this trace (e.g. the one `record` writes).")
@click.option("--iterations", "max_iterations", type=click.IntRange(min=1, max=2 ** 63 - 1), help="Stop after this many requests/steps.")
@click.option("--preempt-policy", type=click.Choice(POLICIES), default="none", show_default=True,
              help="Online: preempt the offline job per request, or per burst of requests (needs --controller-socket).")
@click.option("--controller-socket", type=opt.SocketPath(), help="Socket of `gpreempt-trace preempt serve`.")
@click.option("--controller-timeout", "controller_timeout_s", type=opt.Number(min=0, min_open=True, max=3600), default=5.0, show_default=True,
              metavar="S", help="Fail a controller call that goes unanswered this many seconds.")
@click.option("--burst-gap-ms", type=opt.Number(min=0, max=opt.HOUR_MS), default=20.0, show_default=True,
              help="burst policy: resume after the online side was idle this long.")
@click.option("--open-kfd", is_flag=True, help="Open /dev/kfd and RUNTIME_ENABLE first, as a ROCm process does (lab).")
@click.option("--backend", type=click.Choice(["torch", "numpy"]), default="torch", show_default=True,
              help="numpy: mlp/gemm on the CPU without torch (imports in seconds where torch takes minutes, e.g. the lab).")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), help="torch CPU threads (default: torch's choice).")
@click.option("--ready-file", type=opt.Path(dir_okay=False), help="Write this file once warmed up (experiments wait for it).")
def command(**kw):
    """Run a built-in torch workload in the ROLE online (an open-loop request stream at --rate) or
    offline (training steps back to back), e.g. under `gpreempt-trace record -- gpreempt-trace workload online`."""
    res = api.workload(WorkloadOptions(**kw))
    click.echo(res.summary())
