"""Shared click option decorators, so every command spells an option the same way."""
from __future__ import annotations

import math
import os

import click

MAX_SECONDS = 10 ** 7  # ~4 months: bounds every duration option (time arithmetic never overflows)
MAX_RATE_HZ = 1e6  # requests per second
HOUR_MS = 3_600_000


class Number(click.FloatRange):
    """A float in a range that is never NaN or infinite (FloatRange lets `nan` through: every comparison
    with it is false): a one-line usage error otherwise."""

    def convert(self, value, param, ctx):
        v = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value} is not a finite number in the range {self._describe_range()}.", param, ctx)
        return super().convert(v, param, ctx)


class Path(click.Path):
    """click.Path that refuses an empty value (pathlib reads "" as ".", the current directory)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("the path is empty: give a file or directory name.", param, ctx)
        return super().convert(value, param, ctx)


class SocketPath(click.Path):
    """A Unix socket path: not empty, and short enough for sockaddr_un (107 bytes)."""

    MAX = 107

    def __init__(self):
        super().__init__(dir_okay=False)

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        n = len(os.fsencode(v))
        if n == 0:
            self.fail("the socket path is empty: give the path `preempt serve --socket` listens on.", param, ctx)
        if n > self.MAX:
            self.fail(f"{v} is {n} bytes, longer than a Unix socket path can be ({self.MAX}): pick a shorter path (e.g. under /tmp or /run).", param, ctx)
        return v


def _compose(*decorators):
    def wrap(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return wrap


def output_trace(required: bool = True):
    return click.option("-o", "--output", "output", required=required, type=Path(file_okay=False), help="Trace directory to write.")


labels = click.option("--label", "labels", multiple=True, metavar="K=V", help="Label stored in meta.json (repeatable), e.g. model=resnet50.")
traces = click.argument("traces", nargs=-1, required=True, type=Path())
output_format = click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table", show_default=True, help="Output format."
)
out_file = click.option("--out", "out_file", type=Path(dir_okay=False), help="Write the result to this file (required for parquet).")
btf_dir = click.option("--btf", "btf_dir", type=Path(), help="Directory laid out like /sys/kernel/btf (files vmlinux, amdgpu).")
kallsyms = click.option("--kallsyms", "kallsyms", type=Path(), help="A /proc/kallsyms copy to plan against instead of the running kernel.")
debugfs = click.option("--debugfs", "debugfs_dir", type=Path(), help="Read a saved capture (files mqds, hqds, rls) instead of the live debugfs.")
json_flag = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
command_args = click.argument("cmd", nargs=-1, type=click.UNPROCESSED)

result_output = _compose(output_format, out_file)
