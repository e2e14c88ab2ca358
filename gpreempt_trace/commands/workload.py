import click

from .. import api
from ..workloads.torch_models import MODELS


@click.command("workload")
@click.argument("role", type=click.Choice(["online", "offline"]))
@click.option("--model", type=click.Choice(MODELS), default="mlp", show_default=True, help="Model to run.")
@click.option("--duration", "duration_s", type=float, default=10.0, show_default=True, help="Seconds to run.")
@click.option("--rate", "rate_hz", type=float, default=20.0, show_default=True, help="Online requests per second (0 = back to back).")
@click.option("--batch", type=int, default=8, show_default=True, help="Samples per request or step.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto picks the GPU when torch sees one (ROCm torch calls it cuda).")
@click.option("--stream-priority", type=click.Choice(["high", "normal", "low"]), default="normal", show_default=True,
              help="Run on a stream of this priority (ROCm maps it to the KFD queue priority).")
@click.option("--trace", type=click.Path(file_okay=False), help="Add request/step markers to this trace (e.g. the one `record` writes).")
@click.option("--iterations", "max_iterations", type=int, help="Stop after this many requests/steps.")
def command(role, model, duration_s, rate_hz, batch, device, stream_priority, trace, max_iterations):
    """Run a built-in torch workload in the ROLE online (timed requests at a rate) or offline
    (training steps back to back), e.g. under `gpreempt-trace record -- gpreempt-trace workload online`."""
    res = api.workload(role, model=model, duration_s=duration_s, rate_hz=rate_hz, batch=batch, device=device,
                       stream_priority=stream_priority, trace=trace, max_iterations=max_iterations)
    click.echo(res.summary())
