import click

from ... import api
from .. import options as opt


@click.command("derive")
@opt.traces
def command(traces):
    """Compute the derived rows of TRACES now (queue spans and off intervals, preemption timings,
    collateral per process: TRACE/derived/), so that report, query and export read them instead of
    recomputing them from the events. The first report over a finished trace does this too."""
    for line in api.derive(traces):
        click.echo(line)
