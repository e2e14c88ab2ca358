import click

from ... import api
from .. import options as opt


@click.command("synth")
@click.option("--scheme", type=click.Choice(["A", "B"]), required=True, help="Preemption scheme the model's controller uses.")
@click.option("--events", type=click.IntRange(min=1, max=2_000_000_000), default=10_000, show_default=True, help="Event rows to write.")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True, help="Random seed (same seed, same trace).")
@click.option("--lost", type=opt.Number(min=0.0, max=1.0, max_open=True), default=0.0, show_default=True,
              help="Fraction of event rows dropped (counted as lost), to exercise loss handling.")
@click.option("-o", "--output", "output", required=True, type=opt.Path(file_okay=False), help="Trace directory to write.")
def command(scheme, events, seed, lost, output):
    """Write a synthetic trace from a documented model of KFD on HWS (gpreempt_trace/synthetic/kfd_model.py):
    an online and an offline model on one GPU, a decoy on another, a controller preempting the
    offline model with scheme A or B. meta.json says synthetic: true; the ground truth of every
    preemption and queue is written beside the tables (ground_truth/)."""
    click.echo(api.synth(output, scheme, events, seed, lost=lost))
