import click

from .. import api
from .. import options as opt
from ..output import render


@click.command("compare")
@opt.traces
@click.option("--by", "by", metavar="KEY", help="Group runs by this label (e.g. model) and show min/max per group.")
@opt.result_output
def command(traces, by, fmt, out_file):
    """Put TRACES side by side: one row per run (events, queues created per process, ioctl errors,
    preempt/resume latency), or one row per value of label KEY with --by."""
    render(api.compare(traces, by), fmt, out_file)
