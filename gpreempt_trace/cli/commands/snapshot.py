"""`gpreempt-trace snapshot` and `gpreempt-trace snapshot import`."""
import click

from ... import api
from .. import options as opt
from .record import Seconds
from ...debugfs.snapshot import MAX_INTERVAL_S, SnapshotOptions
from ...trace.directory import parse_labels

IMPORT_HELP = """Ingest saved debugfs captures into a trace.

FILE is a capture folder (files mqds, hqds, rls; .gz allowed), a folder of capture folders
(00-baseline/, 01-during/, ...), or timestamped files such as the PoC saved (baseline_hqd.txt,
snapshot_mqd_3_1706600000.txt, final_hqd.txt, active_mqds_*.txt). Files differing only in the
kind word (mqd/hqd/rls) form one snapshot; baseline*/final*/after* set the phase."""


@click.command("import", help=IMPORT_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@opt.output_trace()
@opt.labels
@click.argument("files", nargs=-1, required=True, type=opt.Path())
def import_command(output, labels, files):
    res = api.snapshot_import(output, list(files), parse_labels(labels))
    click.echo(f"{res.trace}: {res.snapshots} snapshots, {res.rows} rows (run {res.run_id}{', appended' if res.appended else ''})")


@click.command("snapshot", short_help="Snapshot KFD debugfs (mqds, hqds, rls) into a trace.", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@opt.output_trace(required=False)
@click.option("--interval", "interval_s", type=Seconds(MAX_INTERVAL_S), default=1.0, show_default=True,
              help="Seconds between snapshots.")
@click.option("--count", type=click.IntRange(min=0, max=10 ** 9), help="Snapshots to take (with a workload: at most this many while it runs; default 1 without).")
@opt.labels
@opt.debugfs
@click.option("--phase", type=click.Choice(["baseline", "during", "after"]), help="Phase of the snapshots taken without a workload (default during).")
@opt.command_args
@click.pass_context
def command(ctx, cmd, **flags):
    """Snapshot KFD debugfs (mqds, hqds, rls) into the trace -o TRACE.

    \b
      gpreempt-trace snapshot -o TRACE [--interval S] [--count N] [--label k=v]... [--debugfs DIR] [-- CMD ARGS...]
      gpreempt-trace snapshot import -o TRACE FILE...

    With CMD: a baseline, a snapshot every S seconds while CMD runs, one after it exits; exits with
    CMD's status. --debugfs DIR reads a saved capture (files mqds, hqds, rls) instead of
    /sys/kernel/debug/kfd. If TRACE is a trace being recorded, the snapshots are added to it.
    """
    if cmd and cmd[0] == "import":
        args = list(cmd[1:]) + (["-o", flags["output"]] if flags["output"] else [])
        return import_command.main(args=args, prog_name="gpreempt-trace snapshot import", standalone_mode=False)
    if not flags["output"]:
        raise click.UsageError("give the trace to write with -o TRACE")
    flags["labels"] = parse_labels(flags["labels"])
    res = api.snapshot(SnapshotOptions(cmd=tuple(cmd), **flags))
    for n in res.notes:
        click.echo(f"note: {n}", err=True)
    tail = f", workload exit {res.exit_code}" if res.exit_code is not None else ""
    click.echo(f"{res.trace}: {res.snapshots} snapshots, {res.rows} rows (run {res.run_id}{', appended' if res.appended else ''}{tail})", err=bool(cmd))
    if res.exit_code:
        ctx.exit(res.exit_code)
