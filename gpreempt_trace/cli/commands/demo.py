import click

from ...experiment import demo
from .. import options as opt


@click.command("demo")
@click.option("-o", "--output", "out_dir", default="out/demo", show_default=True, type=opt.Path(file_okay=False),
              help="Folder for the demo's traces and report (replaced on each run).")
@click.option("--no-record", is_flag=True, help="Skip the eBPF recording step (it needs root/BPF); said so in the output.")
def command(out_dir, no_record):
    """Run the main job on embedded defaults: doctor, experiment 1 on an MI308X-like debugfs capture,
    a SYNTHETIC scheme A/B pair, compare, a few seconds of the eBPF recorder around a CPU torch workload,
    an HTML report over all of them, and a Perfetto export. Fails naming the step when a step fails."""
    demo.run(out_dir, not no_record, click.echo)
