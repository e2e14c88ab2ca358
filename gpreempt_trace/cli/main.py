"""`gpreempt-trace`: a thin click layer over gpreempt_trace.api.

Every command lives in gpreempt_trace/cli/commands/<name>.py as `command`; they are imported lazily so
`--help` stays fast. Library errors (GptError) become one line and a non-zero exit here, in one place.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

import click

from .. import __version__
from ..errors import GptError

COMMANDS = {
    "record": "Record KFD queue events (eBPF) into a trace.",
    "snapshot": "Snapshot KFD debugfs (mqds, hqds, rls) into a trace.",
    "preempt": "Preempt/resume a process's GPU queues (scheme A or B).",
    "query": "Run a SQL module or file over traces.",
    "report": "Summarise traces (HTML with plots, or Markdown).",
    "compare": "Compare preemption latency across traces, with statistics.",
    "export": "Export traces (hive-style run folder, or Perfetto).",
    "derive": "Compute traces' derived rows ahead, for fast outputs.",
    "synth": "Write a synthetic trace (KFD/HWS model) with ground truth.",
    "doctor": "Check what the running (or a given) kernel lets the recorder attach.",
    "btf": "Build the amdgpu module's BTF where it has none (ROCm DKMS hosts).",
    "exp01": "Experiment 1: queue inventory verdicts.",
    "workload": "Run a built-in GPU workload (torch).",
    "experiment": "Run a scripted experiment.",
    "demo": "Run the main job on an embedded default.",
}


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class GptGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        mod = importlib.import_module(f"gpreempt_trace.cli.commands.{name}")
        return mod.command

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                # the user sees our warnings, not the interpreter's housekeeping (a file that some other
                # object left open, a library's deprecation)
                for category in (ResourceWarning, DeprecationWarning, PendingDeprecationWarning):
                    warnings.simplefilter("ignore", category)
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except GptError as e:
            raise CliError(e.line(), e.exit_code) from None
        except BrokenPipeError:  # `... | head`: stop quietly, like other Unix tools
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(141) from None
        except OSError as e:
            where = f" {e.filename}" if e.filename else ""
            raise CliError(f"{e.strerror or e}:{where}".rstrip(":"), 1) from None
        except KeyboardInterrupt:
            raise CliError("interrupted", 130) from None
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.UsageError as e:  # bad input at the CLI boundary: one line naming the option and the fix
            names, c = [], e.ctx
            while c is not None and c.parent is not None:  # the subcommand path, under our name
                names.insert(0, c.info_name)
                c = c.parent
            where = " ".join(["gpreempt-trace", *names, "--help"])
            msg = " ".join(e.format_message().split())  # one line: click lays out some (choices) over several
            raise CliError(f"{msg.rstrip('.')}: see '{where}'", e.exit_code) from None
        except click.ClickException:
            raise
        except Exception as e:  # noqa: BLE001 - a bug must still end in one line, not a traceback
            if os.environ.get("GPT_DEBUG"):
                raise
            raise CliError(f"internal error: {e.__class__.__name__}: {e}: rerun with GPT_DEBUG=1 for the traceback and report it", 1) from None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)


@click.group(cls=GptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="gpreempt-trace")
def main() -> None:
    """Observe and control GPU queue preemption on AMD GPUs driven by KFD."""


if __name__ == "__main__":
    sys.exit(main())
