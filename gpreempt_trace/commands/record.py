import sys

import click

from .. import options as opt
from ..trace import parse_labels


@click.command("record", context_settings={"ignore_unknown_options": False})
@opt.output_trace()
@click.option("--probes", default=None, metavar="kfd,ioctl",
              help="Probe groups: kfd (KFD function kprobes), ioctl (syscalls:sys_*_ioctl tracepoints). Default: both, recording what attaches.")
@click.option("--attach", type=click.Choice(["auto", "kprobe", "fentry"]), default="auto", show_default=True, help="How KFD functions are hooked.")
@click.option("-p", "--pid", "tgids", type=int, multiple=True, metavar="TGID", help="Record only this process (repeatable).")
@opt.labels
@click.option("--duration", "duration_s", type=float, metavar="S", help="Stop after S seconds.")
@opt.btf_dir
@opt.kallsyms
@click.option("--kfd-path", default="/dev/kfd", show_default=True, metavar="PATH", help="Device whose ioctls the ioctl path records (e.g. /dev/null in tests).")
@click.option("--ringbuf-mb", type=int, default=32, show_default=True, help="Ring buffer size in MiB (power of two).")
@click.option("--snapshot-interval", "snapshot_interval_s", type=float, metavar="S", help="Also snapshot KFD debugfs every S seconds.")
@opt.debugfs
@click.option("--print-bpf", is_flag=True, help="Print the BPF program and its cflags, and exit.")
@opt.command_args
@click.pass_context
def command(ctx, output, probes, attach, tgids, labels, duration_s, btf_dir, kallsyms, kfd_path, ringbuf_mb,
            snapshot_interval_s, debugfs_dir, print_bpf, cmd):
    """Record KFD queue lifecycle events into trace OUTPUT while a workload runs.

    With `-- CMD ARGS...` it starts CMD, records it and its descendants, stops when it exits and
    returns its exit code. Without a command it records until --duration or Ctrl-C (every process,
    or those given with -p). Ends with one line: events, segments, lost.
    """
    from ..recorder.runtime import RecordOptions, Recorder, parse_probes

    groups, explicit = parse_probes(probes)
    o = RecordOptions(output=output, probes=groups, probes_explicit=explicit, attach=attach, tgids=tuple(tgids),
                      labels=parse_labels(labels), duration_s=duration_s, btf_dir=btf_dir, kallsyms=kallsyms,
                      kfd_path=kfd_path, cmd=tuple(cmd), ringbuf_mb=ringbuf_mb,
                      snapshot_interval_s=snapshot_interval_s, debugfs_dir=debugfs_dir)
    rec = Recorder(o)
    if print_bpf:
        rec.print_bpf(sys.stdout)
        return
    res = rec.run()
    click.echo(res.summary_line(), err=True)
    if res.exit_code:
        ctx.exit(res.exit_code)
