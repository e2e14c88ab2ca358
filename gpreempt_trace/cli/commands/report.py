import click

from ... import api
from .. import options as opt


@click.command("report")
@opt.traces
@click.option("-o", "--output", "out_dir", type=opt.Path(file_okay=False),
              help="Write a self-contained HTML report (index.html + PNG plots) into this folder.")
@click.option("--max-rows", type=click.IntRange(min=1, max=1_000_000), default=40, show_default=True, help="Rows shown per table.")
def command(traces, out_dir, max_rows):
    """Summarise TRACES: with -o DIR an HTML report (latency CDF per scheme, per-queue timeline around
    preemptions, queue counts per model, collateral preemption, tables, each trace's metadata);
    without it, a Markdown summary on stdout."""
    if out_dir:
        click.echo(api.report(traces, out_dir, max_rows))
    else:
        click.echo(api.report(traces, None, max_rows))
