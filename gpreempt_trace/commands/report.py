import click

from .. import api
from .. import options as opt


@click.command("report")
@opt.traces
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Write the Markdown report to this file.")
@click.option("--plot", "plot_png", type=click.Path(dir_okay=False), help="Also draw latency and event-rate plots to this PNG.")
@click.option("--max-rows", default=40, show_default=True, help="Rows shown per section.")
def command(traces, out_file, plot_png, max_rows):
    """Summarise TRACES in Markdown: runs, probes, queues per process, ioctls, preemption latency,
    collateral preemption and the debugfs queue inventory."""
    text = api.report(traces, max_rows=max_rows)
    if out_file:
        with open(out_file, "w") as f:
            f.write(text)
        click.echo(out_file)
    else:
        click.echo(text)
    if plot_png:
        click.echo(api.plot(traces, plot_png))
