"""`gpreempt-trace exp01`: experiment 1 verdicts."""
import json

import click

from ... import api
from .. import options as opt


@click.command("exp01", short_help="Experiment 1: queue inventory verdicts.")
@opt.traces
@click.option("--group-by", default=None, metavar="LABEL",
              help="Group runs by this meta.json label (default: model, when the runs have it; else one group). "
                   "A label no run has is an error.")
@click.option("--schedule", type=click.Choice(["ample", "tight", "unknown"]), default="unknown", show_default=True,
              help="Time available, for the scheme rule (stable + ample -> B, stable + tight -> A).")
@opt.json_flag
def command(traces, group_by, schedule, as_json):
    """Experiment 1 over TRACES: (1) queues per model, (2) queue ids, (3) stable across runs,
    (4) one MQD -> one HQD per XCC; then the scheme recommendation
    (stable + time -> B; stable + tight -> A; unstable -> A/B with dynamic identification; unsure -> C)."""
    res = api.exp01(list(traces), group_by, schedule)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2, default=str))
        return
    for line in res.lines():
        click.echo(line)
