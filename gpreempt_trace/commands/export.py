import click

from .. import api
from .. import options as opt


@click.command("export")
@click.option("--hive", "dest", required=True, type=click.Path(file_okay=False), help="Root of a hive-style runs folder (DEST/run_id=…/).")
@opt.traces
def command(dest, traces):
    """Copy TRACES into DEST/run_id=<id>/ so DuckDB or Spark read them as one data set."""
    for p in api.export_hive(traces, dest):
        click.echo(p)
