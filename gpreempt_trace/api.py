"""The Python API. The CLI (cli.py, commands/) is a thin layer over these functions, same shapes."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa

from .errors import GptError
from .trace.directory import find_traces, parse_labels, read_meta  # noqa: F401  (re-exported)


def _query():
    """query.py, imported when first used: DuckDB adds ~65 MiB of shared-library pages to processes
    that never query (the recorder, workloads, the controller)."""
    from .sql import query

    return query


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    return _query().parse_params(pairs)


def list_queries() -> list:
    return list(_query().list_modules().values())


def query(name_or_file: str, traces: Sequence[str], params: dict[str, str] | None = None) -> pa.Table:
    """Run a query module (or a .sql file) over traces; returns an Arrow table. A module reads its costly
    inner views from the traces' derived rows where they are valid (sql/derived.py): the same rows."""
    from .sql import derived

    return _query().run(name_or_file, traces, params, prepare=derived.attach)


def connect(traces: Sequence[str]):
    """A DuckDB connection with views events, markers, snapshots, runs over the traces."""
    return _query().connect(traces)


def export_hive(traces: Iterable[str], dest: str) -> list[Path]:
    """Copy each trace to DEST/run_id=<run_id>/ (hive layout); returns the new paths. A segment that
    `query` would skip (corrupt, mistyped, a required column missing) is named in the same warning and
    left out of the copy, so DuckDB and Spark read the export as a whole."""
    from .sql.query import _good_segments
    from .trace.directory import TABLE_NAMES
    from .trace.writer import SCHEMA_FILE

    out = []
    root = Path(dest)
    for t in find_traces(traces):
        run_id = read_meta(t)["run_id"]
        target = root / f"run_id={run_id}"
        if target.exists():
            raise GptError(f"{target} already exists", "export each run once, or pick another --hive folder")
        keep = {Path(f) for table in TABLE_NAMES for f in _good_segments([t], table)}

        def ignore(d, names, t=t, keep=keep):
            here = Path(d)
            table = here.parent == t and here.name in TABLE_NAMES
            return [n for n in names if (n.startswith(".") and n.endswith(".tmp"))
                    or (here == t and (n in ("triggered", ".readers.lock") or n.startswith(".derived-")))  # flight recorder windows: traces of their own
                    or (table and n.endswith(".parquet") and n != SCHEMA_FILE and here / n not in keep)]

        shutil.copytree(t, target, ignore=ignore)
        out.append(target)
    return out


def report(traces: Sequence[str], out_dir: str | None = None, max_rows: int = 40):
    """With out_dir: a self-contained HTML report (index.html + PNG plots) in out_dir; returns the
    Path of index.html. Without: the Markdown summary as a string."""
    from . import report as _report

    if out_dir is None:
        return _report.build(traces, max_rows)
    from .report import html as _html

    return _html.write(traces, out_dir, max_rows)


def plot(traces: Sequence[str], png: str) -> str:
    """Controller call-time (request -> done marker) and event-rate plots of the traces, as a PNG file."""
    from . import report as _report

    return _report.plot(traces, png)


def doctor(kallsyms: str | None = None, btf_dir: str | None = None, probes: list[str] | None = None, tracefs: str | None = None):
    """The recorder's attach plan and system checks (running kernel, or offline kallsyms/BTF)."""
    from .doctor.report import run_doctor

    return run_doctor(kallsyms=kallsyms, btf_dir=btf_dir, probes=probes, tracefs=tracefs)


def btf_build(opts=None, **options):
    """A split BTF for the amdgpu module, from its sources (or a module with DWARF): `gpreempt-trace btf
    build`. `opts` is a recorder.btf_build.BuildOptions, or None with its fields as keywords. Returns a
    BuildResult (.output: the BTF file, .meta: its sidecar)."""
    from .recorder.btf_build import BuildOptions, build

    return build(opts if opts is not None else BuildOptions(**options))


def record(opts, progress=None, **options):
    """Record KFD queue events into a trace. `opts` is a recorder.runtime.RecordOptions (fields named
    like the flags of `record`), or the output path with those fields as keywords. `progress` is called
    with a runtime.Progress about twice a second. Returns a RecordResult."""
    from .recorder.runtime import RecordOptions, Recorder

    if not isinstance(opts, RecordOptions):
        opts = RecordOptions(output=str(opts), **options)
    res = Recorder(opts).run(progress)
    res.derived = derive_at_close(res.path, res.events)
    return res


DERIVE_AT_CLOSE_MIN_EVENTS = 1_000_000  # below this the first report computes the views in about a second


def derive_at_close(trace, events: int) -> str | None:
    """A large finished recording's derived rows (sql/derived.py), computed as it closes so that its
    first report opens fast: `gpreempt-trace derive` in a child process (DuckDB never enters the
    recorder's). What it gave, in a few words; None below DERIVE_AT_CLOSE_MIN_EVENTS events."""
    import subprocess
    import time

    if events < DERIVE_AT_CLOSE_MIN_EVENTS:
        return None
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "gpreempt_trace.cli.main", "derive", str(trace)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode:
        why = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return f"derived rows not written ({why}): the first report computes them"
    return f"derived rows in {time.perf_counter() - t0:.1f} s"


def record_program(opts) -> str:
    """The BPF program `record` would load for these RecordOptions, with its cflags (`--print-bpf`)."""
    from .recorder.runtime import Recorder

    return Recorder(opts).bpf_text()


def snapshot(opts, interval_s: float = 1.0, count: int | None = None, labels: dict[str, str] | None = None,
             debugfs_dir: str | None = None, cmd: Sequence[str] = (), phase: str | None = None):
    """KFD debugfs snapshots into a trace: with `cmd`, a baseline, snapshots while it runs, one after
    (returns SnapshotResult; .exit_code is the workload's). `opts` is a snapshot.SnapshotOptions (fields
    named like the flags of `snapshot`), or the output path with the other arguments. debugfs_dir reads
    a saved capture."""
    from .debugfs.snapshot import SnapshotOptions, run_snapshot

    if not isinstance(opts, SnapshotOptions):
        opts = SnapshotOptions(str(opts), interval_s, count, dict(labels or {}), debugfs_dir, tuple(cmd), phase)
    return run_snapshot(opts)


def snapshot_import(output: str, paths: Sequence[str], labels: dict[str, str] | None = None):
    """Ingest saved debugfs captures (capture folders, or files like baseline_hqds_*.txt) as snapshots."""
    from .debugfs.snapshot import run_import

    return run_import(output, paths, labels)


def exp01(traces: Sequence[str], group_by: str | None = None, schedule: str = "unknown"):
    """Experiment 1 verdicts (queues per model, ids, stability, MQD->HQD) and the scheme recommendation.
    group_by None: label "model" when the runs have it, else all runs as one group."""
    from .experiment.exp01 import exp01 as _exp01

    return _exp01(traces, group_by, schedule)


def workload(role: str, **kw):
    """Run a built-in torch workload (role 'online' or 'offline'); returns a WorkloadResult."""
    from .workloads.torch_models import run

    return run(role, **kw)


def compare(traces: Sequence[str], by: str = "scheme", metric: str = "preempt_latency_ns", resamples: int = 1000):
    """Preemption latency per value of `by` ('scheme' or a label key) side by side, differences of
    median and p99 with bootstrap CIs, a Mann-Whitney test and a one-line verdict (CompareResult)."""
    from .report.compare import CompareOptions, compare as _compare

    return _compare(CompareOptions(traces, "scheme" if by is None else by, metric, resamples))


def derive(traces: Sequence[str]) -> list[str]:
    """Compute and keep the derived rows of each finished trace under TRACES (sql/derived.py); one line per trace."""
    from .sql import derived

    return derived.write(traces)


def export_perfetto(trace: str, out_file: str):
    """Write one trace as a Perfetto protobuf trace (open it in ui.perfetto.dev); returns the Path."""
    from .report.perfetto import export

    return export(trace, out_file)


def synth(dest: str, scheme: str = "A", events: int = 10_000, seed: int = 0, **params):
    """A synthetic trace from the KFD/HWS model with ground truth beside it; returns its Path."""
    from . import synthetic

    return synthetic.generate(dest, scheme, events, seed, **params)


def preempt_serve(options, io=None, on_ready=None, say=None, show_ioctl=None) -> str:
    """The preemption controller as a service (control.PreemptOptions); returns why it stopped.
    Clients: gpreempt_trace.control.Client(socket). `say(line)`: its status lines; `show_ioctl(line)`:
    --dry-run's ioctls (both default: logged)."""
    from .control import serve

    return serve(options, io=io, on_ready=on_ready, say=say, show_ioctl=show_ioctl)


def preempt_run(options, io=None, show_ioctl=None):
    """One-shot preempt/hold/resume cycles (control.RunOptions); returns control.RunResult.
    `show_ioctl(line)`: --dry-run's ioctls (default: logged)."""
    from .control import run

    return run(options, io=io, show_ioctl=show_ioctl)
