"""A Markdown summary of one or many traces, built from the query modules (plus an optional plot)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from ..sql import query
from .tables import format_table
from ..trace.directory import find_traces, read_meta

# a section is left out when its module is absent or its view has no rows
SECTIONS = (  # (title, module, the rows shown: a SELECT; None = every row of the module's own view)
    ("What fired", "events.overview", None),
    ("Queues per process", "queues.per_tgid", None),
    ("KFD ioctls", "ioctl.summary", None),
    ("Queue requests per process (ioctl path)", "ioctl.queue_requests", None),
    ("Controller call times (request -> done marker)", "preempt.call_stats", None),
    # per process, not per unmap (millions of rows on a day's trace: `query preempt.collateral` lists them)
    ("Collateral preemption (unmaps that hit other processes), per process", "preempt.collateral",
     "SELECT * FROM preempt_collateral_per_process ORDER BY collateral_unmaps DESC, run_id, tgid"),
    ("Queue inventory (debugfs)", "exp01.inventory", None),
)


def run_rows(con) -> dict[str, dict]:
    """The `runs` view by run_id, each with `events_readable`: the rows the events view holds (segments
    skipped with a warning are not in it). The Markdown and the HTML report both count from here."""
    runs = {r["run_id"]: dict(r, events_readable=0) for r in query._arrow(con.sql("SELECT * FROM runs")).to_pylist()}
    for rid, n in con.sql("SELECT run_id, count(*) FROM events GROUP BY run_id").fetchall():
        if rid in runs:
            runs[rid]["events_readable"] = n
    return runs


def events_text(r: dict) -> str:
    """Events of one run (a run_rows row): what was written, and what can be read when that differs."""
    ev, readable = r.get("events_written"), r.get("events_readable", 0)
    if ev is None:
        return "unknown"
    if r.get("events_written_derived"):
        return f"{ev:,} (counted from the segments: meta.json does not know)"
    if readable != ev:
        return f"{ev:,} written, {readable:,} readable (segments skipped: see the warnings)"
    return f"{ev:,}"


def lost_text(lost) -> str:
    return "unknown" if lost is None else f"{lost:,}"


def _runs_section(traces: Sequence[Path], runs: dict[str, dict]) -> list[str]:
    lines = ["| run_id | labels | kernel | duration | events | lost | probes attached | synthetic |", "|---|---|---|---|---|---|---|---|"]
    for t in traces:
        m = read_meta(t)
        r = runs.get(m["run_id"], {})
        dur = f"{(m['stop_ns'] - m['start_ns']) / 1e9:.2f} s" if m.get("stop_ns") and m.get("start_ns") else "unfinished"
        plan = m.get("attach_plan") or []
        att = sum(1 for p in plan if p.get("status") == "attached")
        labels = ", ".join(f"{k}={v}" for k, v in (m.get("labels") or {}).items())
        lines.append(f"| {m['run_id']} | {labels} | {m.get('kernel')} | {dur} | {events_text(r)} | "
                     f"{lost_text(r.get('events_lost'))} | {att}/{len(plan)} | {m.get('synthetic')} |")
    return lines


def _plan_section(traces: Sequence[Path]) -> list[str]:
    out = []
    for t in traces:
        plan = read_meta(t).get("attach_plan") or []
        missing = [p for p in plan if p.get("status") != "attached"]
        if missing:
            out.append(f"- {read_meta(t)['run_id']}: not attached: " + "; ".join(
                f"{p.get('probe')} ({p.get('reason') or p.get('status')})" for p in missing[:12])
                + (f"; … {len(missing) - 12} more" if len(missing) > 12 else ""))
    return out


def build(traces: Sequence[str], max_rows: int = 40) -> str:
    """The Markdown summary: each section's first max_rows rows and its row count, read from the traces'
    derived rows where they have them (sql/derived.py), DuckDB memory capped as for the HTML report."""
    from ..sql import derived

    paths = find_traces(traces)
    mods = query.list_modules()
    spill = Path(tempfile.mkdtemp(prefix="gpt-report-"))
    try:
        con = query.connect([str(p) for p in paths], derived.capped(spill))
        md = ["# gpreempt-trace report", "", "## Runs", "", *_runs_section(paths, run_rows(con)), ""]
        plan = _plan_section(paths)
        if plan:
            md += ["## Probes that did not attach", "", *plan, ""]
        sections = [(title, mods[name], sql or f"SELECT * FROM {mods[name].main_view}") for title, name, sql in SECTIONS if name in mods]
        for _, mod, _ in sections:
            query.load_module(con, mod)
        derived.attach(con, paths)
        for title, mod, sql in sections:
            n = con.sql(f"SELECT count(*) FROM ({sql})").fetchall()[0][0]
            if n == 0:
                continue
            tbl: pa.Table = query._arrow(con.sql(f"{sql} LIMIT {int(max_rows)}"))
            how = (f"`gpreempt-trace query {mod.name}`" if sql.endswith(f"FROM {mod.main_view}")
                   else f"`{sql}` (views of `gpreempt-trace query {mod.name}`, which lists {mod.main_view})")
            md += [f"## {title}", "", how, "", "```text", format_table(tbl, max_rows, n).rstrip(), "```", ""]
        con.close()
        return "\n".join(md)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def plot(traces: Sequence[str], png: str) -> str:
    """The controller's preempt/resume call time per request over time (one series per run, scheme and op)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    con = query.connect(traces)
    mods = query.list_modules()
    query.load_module(con, mods["preempt.calls"])
    rows = con.sql("SELECT run_id, scheme, op, request_ts_ns, call_ns FROM preempt_calls WHERE call_ns IS NOT NULL").fetchall()
    ev = con.sql("SELECT run_id, ts_ns // 100000000 AS bucket, count(*) FROM events GROUP BY ALL ORDER BY ALL").fetchall()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=False)
    series: dict[tuple, list] = {}
    t0 = min([r[3] for r in rows], default=0)
    for run_id, scheme, op, ts, call in rows:
        series.setdefault((run_id, scheme, op), []).append(((ts - t0) / 1e9, call / 1e6))
    for (run_id, scheme, op), pts in sorted(series.items()):
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], ".", label=f"{run_id[-8:]} {scheme} {op}")
    ax1.set_xlabel("time since first request (s)")
    ax1.set_ylabel("call time (ms)")
    ax1.set_title("preempt / resume call time per request (controller markers)")
    if series:
        ax1.legend(fontsize=7)
    runs: dict[str, list] = {}
    for run_id, bucket, n in ev:
        runs.setdefault(run_id, []).append((bucket, n))
    for run_id, pts in runs.items():
        b0 = pts[0][0]
        ax2.plot([(b - b0) / 10 for b, _ in pts], [n * 10 for _, n in pts], label=run_id[-8:])
    ax2.set_xlabel("time since first event (s)")
    ax2.set_ylabel("events/s")
    ax2.set_title("kernel events per second")
    if runs:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
