import click

from ... import api
from .. import options as opt


@click.command("export")
@click.option("--hive", "dest", type=opt.Path(file_okay=False), help="Root of a hive-style runs folder (DEST/run_id=…/).")
@click.option("--perfetto", "perfetto", is_flag=True, help="Write one trace as a Perfetto protobuf trace to -o FILE.")
@click.option("-o", "--output", "out_file", type=opt.Path(dir_okay=False), help="Output file for --perfetto.")
@opt.traces
def command(dest, perfetto, out_file, traces):
    """Copy TRACES into DEST/run_id=<id>/ so DuckDB or Spark read them as one data set (--hive), or
    write one trace for the Perfetto UI (--perfetto -o FILE): a track per (process, queue) with
    active/suspended/preempted/evicted slices, KFD calls as slices, markers as instants."""
    if perfetto:
        if dest:
            raise click.UsageError("give either --hive DEST or --perfetto -o FILE")
        if not out_file:
            raise click.UsageError("--perfetto needs -o FILE")
        if len(traces) != 1:
            raise click.UsageError("--perfetto exports one trace")
        click.echo(api.export_perfetto(traces[0], out_file))
        return
    if not dest:
        raise click.UsageError("give --hive DEST or --perfetto -o FILE")
    for p in api.export_hive(traces, dest):
        click.echo(p)
