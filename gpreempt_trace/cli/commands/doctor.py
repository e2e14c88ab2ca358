"""`gpreempt-trace doctor`: the attach plan and the checks behind it, for this kernel or a saved one."""
from __future__ import annotations

import json

import click

from .. import options


@click.command("doctor")
@options.kallsyms
@options.btf_dir
@click.option("--probe", "probes", multiple=True, metavar="NAME", help="Only plan these KFD probes (repeatable).")
@click.option("--tracefs", "tracefs", type=options.Path(file_okay=False), hidden=True, help="tracefs root to look for kfd:* tracepoints in.")
@options.json_flag
def command(kallsyms, btf_dir, probes, tracefs, as_json):
    """Check what the running (or a given) kernel lets the recorder attach.

    Without options: the running kernel (/proc/kallsyms, /sys/kernel/btf, /dev/kfd, tracefs, debugfs,
    privileges). With --kallsyms FILE and/or --btf DIR (laid out like /sys/kernel/btf: files vmlinux,
    amdgpu): offline, for that kernel build.
    """
    from ... import api

    report = api.doctor(kallsyms=kallsyms, btf_dir=btf_dir, probes=list(probes) or None, tracefs=tracefs)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1))
    else:
        from ...doctor.report import render_text

        click.echo(render_text(report), nl=False)
