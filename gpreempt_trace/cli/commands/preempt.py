"""`gpreempt-trace preempt {serve,suspend,resume,status,run}`: the preemption controller (docs/controller.md)."""
from __future__ import annotations

import json

import click

from ... import api
from .. import options as opt
from ...control.service import MAX_HOLD_DEFAULT_MS, PreemptOptions, RunOptions, parse_queues

U32 = click.IntRange(min=0, max=2 ** 32 - 1)
HOUR_MS = 3_600_000


def _target_options(f):
    for d in reversed([
        click.option("--scheme", type=click.Choice(["A", "B"]), default="A", show_default=True,
                     help="A: KFD debugger suspend/resume (ptrace; KFD ioctl >= 1.13). B: kernel/'s PREEMPT/RESUME_QUEUES ioctls."),
        click.option("--pid", type=click.IntRange(min=1, max=2 ** 22),
                     help="Host pid (TGID as the host sees it, not the pid inside a container) of the process whose queues are preempted."),
        click.option("--container", metavar="ID",
                     help="Instead of --pid: the process of this container (id, >= 12-hex prefix or name) that has /dev/kfd open."),
        click.option("--ns-pid", type=click.IntRange(min=1, max=2 ** 22), metavar="N",
                     help="With --container: the process whose pid inside the container is N."),
        click.option("--queues", default="all", show_default=True, help="`all` or comma-separated queue ids (checked against the target's queues)."),
        click.option("--grace", type=U32, default=0, show_default=True, help="Scheme A: SUSPEND_QUEUES grace period in GPU cycles (0: KFD default). Scheme B: only the default exists."),
        click.option("--unchecked-ids", is_flag=True, help="Send --queues as given and report the kernel's per-queue INVALID/ERROR bits."),
        opt.output_trace(required=False),
        click.option("--kfd-path", default="/dev/kfd", show_default=True, type=opt.Path(dir_okay=False),
                     help="The KFD device (another path only in tests)."),
    ]):
        f = d(f)
    return f


def _queues(value: str):
    try:
        return parse_queues(value)
    except Exception as e:  # one usage line
        raise click.BadParameter(str(e), param_hint="--queues") from None


timeout_option = click.option("--timeout", "timeout_s", type=opt.Number(min=0, min_open=True, max=3600), default=5.0, show_default=True,
                              metavar="S", help="Fail when the service does not answer within S seconds.")
socket_option = click.option("--socket", "socket_path", type=opt.SocketPath(), help="Unix socket of the service.")


@click.group("preempt", context_settings={"help_option_names": ["-h", "--help"]})
def command():
    """Preempt/resume a process's GPU queues (scheme A or B).

    \b
      gpreempt-trace preempt serve --pid TGID|--container ID [--ns-pid N] [--scheme A|B] [--queues IDS|all] [--grace CYCLES] [--max-hold MS] [--socket PATH] [-o TRACE]
      gpreempt-trace preempt suspend|resume|status --socket PATH
      gpreempt-trace preempt run --pid TGID|--container ID [--ns-pid N] --hold MS --repeat N --interval MS [-o TRACE] [--dry-run]

    Markers (preempt_request/_done, resume_request/_done, queue_result) go into TRACE's markers/,
    next to a running `record` on the same trace or alone. Queues are resumed on every exit path.
    """


@command.command("serve")
@_target_options
@click.option("--max-hold", type=click.IntRange(min=1, max=HOUR_MS), default=MAX_HOLD_DEFAULT_MS, show_default=True,
              help="Resume on its own after this many ms held.")
@socket_option
@click.option("--dry-run", is_flag=True, help="Issue no ioctl and no ptrace; print each ioctl it would issue.")
def serve_cmd(queues, socket_path, **flags):
    """Attach to --pid and answer preempt/resume/status on a Unix socket until SIGINT/SIGTERM."""
    why = api.preempt_serve(PreemptOptions(queues=_queues(queues), socket=socket_path, **flags),
                            say=lambda line: click.echo(line, err=True), show_ioctl=click.echo)
    click.echo(f"stopped: {why}", err=True)


@command.command("run")
@_target_options
@click.option("--hold", type=click.IntRange(min=0, max=HOUR_MS), required=True, help="ms the queues stay off per cycle.")
@click.option("--repeat", type=click.IntRange(min=1, max=1_000_000), default=1, show_default=True, help="Cycles.")
@click.option("--interval", type=click.IntRange(min=0, max=HOUR_MS), default=100, show_default=True, help="ms between cycles.")
@click.option("--max-hold", type=click.IntRange(min=1, max=HOUR_MS), default=MAX_HOLD_DEFAULT_MS, show_default=True,
              help="Resume on its own after this many ms held.")
@click.option("--dry-run", is_flag=True, help="Issue no ioctl and no ptrace; print each ioctl it would issue (name, request, argument bytes).")
@click.pass_context
def run_cmd(ctx, queues, **flags):
    """One-shot: preempt, hold, resume, --repeat times. Exit 0 only when every cycle was carried out
    and every queue resumed."""
    res = api.preempt_run(RunOptions(queues=_queues(queues), **flags), show_ioctl=click.echo)
    for cycle, op, qid, result, raw in res.bad_queues:
        click.echo(f"cycle {cycle} {op}: queue {qid} {result} (kernel wrote {raw & 0xFFFFFFFF:#010x})", err=True)
    for cycle, op, what in res.failures:
        click.echo(f"cycle {cycle} {op} failed: {what}", err=True)
    click.echo(res.summary() + (f"; stopped by {res.stopped_by}" if res.stopped_by else ""), err=True)
    if not res.ok:
        ctx.exit(1)


def _client_call(op: str, socket_path: str, timeout_s: float, **kw):
    from ...control import Client

    with Client(socket_path, timeout_s=timeout_s) as c:
        ans = getattr(c, op)(**kw)
    click.echo(json.dumps(ans))


@command.command("suspend")
@click.option("--socket", "socket_path", required=True, type=opt.SocketPath(), help="Unix socket of `preempt serve`.")
@click.option("--queues", default=None, help="Override the service's --queues for this request.")
@click.option("--grace", type=U32, default=None, help="Override the service's --grace.")
@timeout_option
def suspend_cmd(socket_path, queues, grace, timeout_s):
    """Ask the service to preempt (held until `resume` or --max-hold)."""
    _client_call("preempt", socket_path, timeout_s, queues=None if queues is None else _queues(queues), grace=grace, keep=True)


@command.command("resume")
@click.option("--socket", "socket_path", required=True, type=opt.SocketPath(), help="Unix socket of `preempt serve`.")
@timeout_option
def resume_cmd(socket_path, timeout_s):
    """Ask the service to resume what it holds."""
    _client_call("resume", socket_path, timeout_s)


@command.command("status")
@click.option("--socket", "socket_path", required=True, type=opt.SocketPath(), help="Unix socket of `preempt serve`.")
@timeout_option
def status_cmd(socket_path, timeout_s):
    """The service's target, held queues and counters, as JSON."""
    _client_call("status", socket_path, timeout_s)
