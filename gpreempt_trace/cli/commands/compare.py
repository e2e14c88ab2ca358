import click

from ... import api
from .. import options as opt
from ..output import render
from ...report.compare import METRICS


def _by(ctx, param, value):
    if not value.strip():
        raise click.BadParameter("empty: give scheme or a meta.json label key (e.g. --by model)")
    return value


@click.command("compare")
@opt.traces
@click.option("--by", "by", default="scheme", show_default=True, metavar="scheme|LABEL", callback=_by,
              help="Group preemptions by scheme, or by the value of a meta.json label (e.g. model).")
@click.option("--metric", type=click.Choice(METRICS), default="preempt_latency_ns", show_default=True, help="Column of preempt.preemption: kernel-measured latency (preempt_/resume_latency_ns), the controller's call (preempt_call_ns) or time off (suspended_ns).")
@click.option("--resamples", type=click.IntRange(min=100, max=100_000), default=1000, show_default=True, help="Bootstrap resamples.")
@opt.result_output
def command(traces, by, metric, resamples, fmt, out_file):
    """Compare preemption latency across TRACES (trace directories or folders of traces): the
    distribution per group side by side, the difference of medians and of p99 with bootstrap 95 %
    CIs, a Mann-Whitney rank test, and a one-line verdict. "cannot tell them apart" is a result
    (exit 0); nothing to compare is an error."""
    res = api.compare(traces, by, metric, resamples)
    if fmt == "table" and not out_file:
        render(res.groups, fmt)
        render(res.diffs.drop_columns(["verdict"]), fmt)
        click.echo(res.verdict)
    else:
        render(res.diffs if fmt != "table" else res.groups, fmt, out_file)
        click.echo(res.verdict, err=True)
