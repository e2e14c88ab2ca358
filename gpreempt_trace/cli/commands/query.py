import click

from ... import api
from .. import options as opt
from ..output import render


@click.command("query")
@click.argument("name", required=False)
@click.argument("traces", nargs=-1, type=opt.Path())
@click.option("--list", "list_", is_flag=True, help="List the available query modules.")
@click.option("--param", "params", multiple=True, metavar="K=V", help="Set a module parameter (repeatable).")
@opt.result_output
def command(name, traces, list_, params, fmt, out_file):
    """Run a query module NAME (see --list) or a FILE.sql over one or more TRACES.

    A TRACE is a trace directory or a folder of traces (e.g. a hive-style runs/ folder).
    """
    if list_:
        for mod in api.list_queries():
            click.echo(f"{mod.name:32s} {mod.description}")
        return
    if not name:
        raise click.UsageError("give a query NAME (see --list) or FILE.sql, and at least one TRACE")
    if not traces:
        raise click.UsageError("give at least one TRACE directory")
    render(api.query(name, traces, api.parse_params(params)), fmt, out_file)
