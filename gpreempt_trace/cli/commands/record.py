import math
import sys

import click

from ... import api
from .. import options as opt
from ...errors import GptError
from ...recorder import flight
from ...recorder.runtime import RINGBUF_MB_MAX, Progress, RecordOptions, parse_compact
from ...trace.directory import parse_labels

MAX_SECONDS = 10 ** 7  # ~4 months: bounds every duration option (time arithmetic never overflows)


class PowerOfTwo(click.ParamType):
    """An integer that is a power of two from 1 to `max` (a one-line usage error otherwise)."""

    name = "integer"

    def __init__(self, max: int):
        self.max = max

    def convert(self, value, param, ctx):
        v = click.INT.convert(value, param, ctx)
        if not 1 <= v <= self.max or v & (v - 1):
            self.fail(f"{v} is not a power of two from 1 to {self.max}.", param, ctx)
        return v


class Seconds(click.FloatRange):
    """A number of seconds in (0, max] (never NaN): a one-line usage error otherwise."""

    def __init__(self, max: float = MAX_SECONDS):
        super().__init__(min=0, min_open=True, max=max)

    def convert(self, value, param, ctx):
        v = click.FLOAT.convert(value, param, ctx)
        if math.isnan(v):
            self.fail(f"{value} is not in the range {self._describe_range()}.", param, ctx)
        return super().convert(v, param, ctx)


class FlightValue(click.ParamType):
    """A --keep / --trigger value, checked by its recorder/flight.py parser: its error is a one-line usage error."""

    def __init__(self, name: str, parse, prefix: str = ""):
        self.name, self._parse, self._prefix = name, parse, prefix

    def convert(self, value, param, ctx):
        try:
            self._parse(value)
        except GptError as e:
            self.fail(f"{e.what.removeprefix(self._prefix)}: {e.hint}.", param, ctx)
        return value


@click.command("record", context_settings={"ignore_unknown_options": False})
@opt.output_trace()
@click.option("--probes", default=None, metavar="kfd,ioctl",
              help="Probe groups: kfd (KFD function kprobes), ioctl (syscalls:sys_*_ioctl tracepoints). Default: both, recording what attaches.")
@click.option("--attach", type=click.Choice(["auto", "kprobe"]), default="auto", show_default=True,
              help="How KFD functions are hooked (kprobe; raw tracepoints where the kernel has the kfd:* series).")
@click.option("-p", "--pid", "tgids", type=click.IntRange(min=1, max=2 ** 31 - 1), multiple=True, metavar="TGID",
              help="Record only this process (its host pid; repeatable).")
@click.option("--container", "containers", multiple=True, metavar="ID",
              help="Record only the processes of this container, those started later included (repeatable; with -p: both). "
                   "ID: the full id, a unique prefix of at least 12 hex digits, or a name (through the docker or podman CLI).")
@opt.labels
@click.option("--duration", "duration_s", type=Seconds(), metavar="S", help="Stop after S seconds.")
@click.option("--btf", "btf_dir", type=opt.Path(exists=True, file_okay=False), help="Directory laid out like /sys/kernel/btf (files vmlinux, amdgpu).")
@opt.kallsyms
@click.option("--kfd-path", default="/dev/kfd", show_default=True, metavar="PATH", help="Device whose ioctls the ioctl path records (e.g. /dev/null in tests).")
@click.option("--ringbuf-mb", type=PowerOfTwo(RINGBUF_MB_MAX), default=32, show_default=True,
              help=f"Ring buffer size in MiB (a power of two from 1 to {RINGBUF_MB_MAX}).")
@click.option("--keep", type=FlightValue("time|size", flight.parse_keep, "--keep "), metavar="TIME|SIZE",
              help="Flight recorder: keep only the newest segments on disk, the last TIME (10m, 1h) or SIZE (2GiB); "
                   "older ones are deleted whole and counted in meta.json.")
@click.option("--trigger", "triggers", type=FlightValue("list", flight.parse_triggers), metavar="LIST",
              help="Save the kept window plus --after seconds as OUT/triggered/<UTC time>-<cause>/ when a row of one of "
                   "these comes: queue_reset, hws_hang, preempt_over=T (a preemption whose kernel-measured dur_ns "
                   "exceeds T, e.g. 5ms). SIGUSR1 saves one too (cause signal). Recording goes on.")
@click.option("--after", "after_s", type=opt.Number(min=0, max=MAX_SECONDS), default=5.0, show_default=True, metavar="S",
              help="Seconds a saved window runs past its trigger.")
@click.option("--compact", type=FlightValue("time|off", parse_compact, "--compact "), default="60s", show_default=True,
              metavar="TIME|off", help="Merge closed segments into one file per TIME of them (a day: ~1,440 files per table "
                                       "instead of ~345,600); off: keep every 0.25 s segment.")
@click.option("--snapshot-interval", "snapshot_interval_s", type=Seconds(), metavar="S", help="Also snapshot KFD debugfs every S seconds.")
@opt.debugfs
@click.option("--print-bpf", is_flag=True, help="Print the BPF program and its cflags, and exit.")
@opt.command_args
@click.pass_context
def command(ctx, print_bpf, **flags):
    """Record KFD queue lifecycle events into trace OUTPUT while a workload runs.

    With `-- CMD ARGS...` it starts CMD, records it and its descendants, stops when it exits and
    returns its exit code (`-- docker exec C CMD`: the processes that start in container C). Without a
    command it records until --duration or Ctrl-C (every process, or those given with -p/--container). Stopping drains what the ring holds for at most 2 s; the rest is counted
    as lost. Ends with one line: events, segments, lost. A recording of 1,000,000 events or more then
    computes its derived rows (`gpreempt-trace derive`, in a child process) so its first report opens
    fast; the line says how long that took.
    """
    flags["labels"] = parse_labels(flags["labels"])
    opts = RecordOptions(**flags)
    if print_bpf:
        click.echo(api.record_program(opts), nl=False)
        return
    res = api.record(opts, progress=_status_line if sys.stderr.isatty() else None)
    if sys.stderr.isatty():
        click.echo("", err=True)
    click.echo(res.summary_line(), err=True)
    if res.exit_code:
        ctx.exit(res.exit_code)


def _status_line(p: Progress) -> None:
    lost = "?" if p.lost is None else p.lost
    click.echo(f"\rrecord: {p.events} events  {p.rate_per_s:,.0f}/s  lost {lost}   ", nl=False, err=True)
