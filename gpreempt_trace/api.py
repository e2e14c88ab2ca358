"""The Python API. The CLI (cli.py, commands/) is a thin layer over these functions, same shapes."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa

from . import query as _query
from .errors import GptError
from .trace import find_traces, parse_labels, read_meta  # noqa: F401  (re-exported)

parse_params = _query.parse_params


def list_queries() -> list[_query.Module]:
    return list(_query.list_modules().values())


def query(name_or_file: str, traces: Sequence[str], params: dict[str, str] | None = None) -> pa.Table:
    """Run a query module (or a .sql file) over traces; returns an Arrow table."""
    return _query.run(name_or_file, traces, params)


def connect(traces: Sequence[str]):
    """A DuckDB connection with views events, markers, snapshots, runs over the traces."""
    return _query.connect(traces)


def export_hive(traces: Iterable[str], dest: str) -> list[Path]:
    """Copy each trace to DEST/run_id=<run_id>/ (hive layout); returns the new paths."""
    out = []
    root = Path(dest)
    for t in find_traces(traces):
        run_id = read_meta(t)["run_id"]
        target = root / f"run_id={run_id}"
        if target.exists():
            raise GptError(f"{target} already exists", "export each run once, or pick another --hive folder")
        shutil.copytree(t, target, ignore=shutil.ignore_patterns(".*.tmp"))
        out.append(target)
    return out


def report(traces: Sequence[str], max_rows: int = 40) -> str:
    """A Markdown summary of the traces."""
    from . import report as _report

    return _report.build(traces, max_rows)


def plot(traces: Sequence[str], png: str) -> str:
    """Latency and event-rate plots of the traces, as a PNG file."""
    from . import report as _report

    return _report.plot(traces, png)


def doctor(kallsyms: str | None = None, btf_dir: str | None = None, probes: list[str] | None = None, tracefs: str | None = None):
    """The recorder's attach plan and system checks (running kernel, or offline kallsyms/BTF)."""
    from .doctor import run_doctor

    return run_doctor(kallsyms=kallsyms, btf_dir=btf_dir, probes=probes, tracefs=tracefs)


def record(output: str, **options):
    """Record KFD queue events into trace OUTPUT (see recorder.runtime.RecordOptions for the options:
    probes, tgids, cmd, duration_s, kfd_path, ringbuf_mb, ...). Returns a RecordResult."""
    from .recorder import record as _record

    return _record(output, **options)


def snapshot(output: str, interval_s: float = 1.0, count: int | None = None, labels: dict[str, str] | None = None,
             debugfs_dir: str | None = None, cmd: Sequence[str] = (), phase: str | None = None):
    """KFD debugfs snapshots into a trace: with `cmd`, a baseline, snapshots while it runs, one after
    (returns SnapshotResult; .exit_code is the workload's). debugfs_dir reads a saved capture."""
    from .snapshot import run_snapshot

    return run_snapshot(output, interval_s, count, labels, debugfs_dir, cmd, phase)


def snapshot_import(output: str, paths: Sequence[str], labels: dict[str, str] | None = None):
    """Ingest saved debugfs captures (capture folders, or files like baseline_hqds_*.txt) as snapshots."""
    from .snapshot import run_import

    return run_import(output, paths, labels)


def exp01(traces: Sequence[str], group_by: str = "model", schedule: str = "unknown"):
    """Experiment 1 verdicts (queues per model, ids, stability, MQD->HQD) and the scheme recommendation."""
    from .exp01 import exp01 as _exp01

    return _exp01(traces, group_by, schedule)


def workload(role: str, **kw):
    """Run a built-in torch workload (role 'online' or 'offline'); returns a WorkloadResult."""
    from .workloads.torch_models import run

    return run(role, **kw)


def demo(out_dir: str = "out/demo", record: bool = True, say=print):
    """The main job on embedded defaults (see gpreempt_trace.demo)."""
    from . import demo as _demo

    return _demo.run(out_dir, record, say)


def compare(traces: Sequence[str], by: str | None = None) -> pa.Table:
    """One row per run (module compare.runs), or per value of label `by` with min/max across runs."""
    if not by:
        return query("compare.runs", traces)
    con = connect(traces)
    mods = _query.list_modules()
    _query.load_module(con, mods["compare.runs"])
    rel = con.sql(
        "SELECT labels[$k] AS label_value, count(*) AS runs, min(queues_created) AS min_queues, "
        "max(queues_created) AS max_queues, min(max_per_process) AS min_queues_per_process, "
        "max(max_per_process) AS max_queues_per_process, sum(ioctl_errors) AS ioctl_errors, "
        "min(preempt_p50_ns) AS best_preempt_p50_ns, max(preempt_p50_ns) AS worst_preempt_p50_ns "
        "FROM compare_runs GROUP BY 1 ORDER BY 1",
        params={"k": by},
    )
    return _query._arrow(rel)
