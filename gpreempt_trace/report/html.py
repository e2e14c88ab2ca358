"""`report -o DIR`: one self-contained index.html (PNG plots embedded as data URIs, also saved beside it).

Sections: each trace's metadata (synthetic or not, kernel, attach plan, events and losses) first;
experiment 1's verdicts where traces hold debugfs snapshots; then the plots (latency CDF per scheme, a
per-queue active/off timeline around a preemption, queues per model, collateral preemption) and the
tables they come from, online requests, processes, what fired. A plot without data is replaced by a
sentence that says what is missing and how to get it. Loss is printed next to every number it touches.

Every number is aggregated in SQL and only the aggregates reach Python (a CDF is 201 quantiles per
line, the timeline reads one window around one preemption), so the report's memory does not grow with
the trace. Each figure carries the aggregate it was drawn from in `data-*` attributes
(tests/test_report_browser.py checks them against the query modules in a headless browser). The page fits
1400 px: wide tables wrap their cells, long lists are cut to the rows that fit (the query gives all).
"""
from __future__ import annotations

import base64
import html
import io
import re
import shutil
import tempfile
from concurrent.futures import Future
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from ..sql import derived, query
from ..errors import GptError
from ..trace.directory import find_traces, read_meta
from . import events_text, lost_text, run_rows

TOP = 12  # bars per bar chart: the processes / models with the most, the table below says how many more
CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1340px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0;max-width:100%} td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0} td{white-space:nowrap} td.l,th.l{text-align:left;white-space:normal;overflow-wrap:break-word}
.synthetic{background:#fff3cd;border:2px solid #e0a800;padding:8px 12px;font-weight:bold;font-size:18px;margin:12px 0}
.lost{background:#f8d7da;border:1px solid #dc3545;padding:6px 10px;margin:6px 0}
.missing{background:#eef;border:1px dashed #88a;padding:14px;margin:8px 0;max-width:900px}
.cards{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.card{border:1px solid #bbb;border-radius:6px;padding:8px 14px;flex:1 1 380px;max-width:100%;box-sizing:border-box}
.card .synthetic{font-size:15px;padding:4px 8px;margin:4px 0}
.verdict{font-size:16px;font-weight:bold;margin:8px 0}
figure{margin:8px 0} img{max-width:100%;border:1px solid #ddd}
"""


def _esc(v) -> str:
    return html.escape(str(v))


_BREAKS = re.compile(r"([_/]|(?<=[A-Za-z0-9])-(?=[A-Za-z0-9]))")


def _wrap(v) -> str:
    """Escaped text that may wrap after _ / and inner hyphens (long names, paths, run ids): tables fit the page."""
    return _BREAKS.sub(r"\1<wbr>", _esc(v))


def _cell(col: str, v) -> str:
    if v is None:
        return "unknown" if "lost" in col else "NULL"
    if col in ("gpu_id",) and isinstance(v, int):
        return f"0x{v:x}"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:,.0f}"
    if isinstance(v, list) and v and isinstance(v[0], tuple):
        return ", ".join(f"{k}: {x}" for k, x in v)
    if isinstance(v, list):
        return ", ".join(map(str, v))  # no space-less "[0,1,2]": a list wraps where it has to
    return str(v)


def table_html(tbl: pa.Table, max_rows: int) -> str:
    cols = tbl.column_names
    rows = tbl.slice(0, max_rows).to_pylist()
    out = ["<table><tr>" + "".join(f"<th>{_wrap(c)}</th>" for c in cols) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f"<td class='l'>{_wrap(_cell(c, r[c]))}</td>" if isinstance(r[c], (str, list)) or r[c] is None else f"<td>{_esc(_cell(c, r[c]))}</td>"
            for c in cols) + "</tr>")
    out.append("</table>")
    if tbl.num_rows > max_rows:
        out.append(f"<p>… {tbl.num_rows - max_rows} more rows (gpreempt-trace query … --format csv).</p>")
    return "\n".join(out)


def _short(run_id: str) -> str:
    return run_id if len(run_id) <= 22 else "…" + run_id[-20:]


def _missing(text: str) -> str:
    return f"<div class='missing'>{text}</div>"


class _Plots:
    """Draws the figures on one worker thread while the main thread goes on with the SQL (DuckDB releases
    the GIL while it runs): matplotlib's import and each figure's drawing overlap the queries. `draw`
    returns a Future of the figure's HTML; `_write_page` waits for them in page order."""

    def __init__(self, out: Path):
        from concurrent.futures import ThreadPoolExecutor

        self.out = out
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpt-report-plots")  # pyplot is used from this thread only
        self._plt = self.pool.submit(self._import)

    @staticmethod
    def _import():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt

    @property
    def plt(self):
        return self._plt.result()

    def draw(self, fn, *args) -> Future:
        """fn(self, *args) -> the figure's HTML (it ends with self.save), run on the plotting thread."""
        return self.pool.submit(fn, self, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def save(self, fig, name: str, **data) -> str:
        """The figure as <figure> with the PNG inline; `data` (what it was drawn from) as data-* attributes."""
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        self.plt.close(fig)
        png = buf.getvalue()
        (self.out / name).write_bytes(png)
        attrs = "".join(f" data-{k.replace('_', '-')}='{_esc(v)}'" for k, v in data.items())
        return (f"<figure id='{_esc(name.removesuffix('.png'))}'{attrs}>"
                f"<img alt='{_esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></figure>")


def _lost_note(lost: dict[str, object]) -> str:
    parts = [f"{rid}: {'unknown' if v is None else v}" for rid, v in lost.items()]
    bad = any(v is None or v for v in lost.values())
    cls = "lost" if bad else ""
    return f"<p class='{cls}'>Events lost (kernel ring buffer) in the runs behind this: " + ", ".join(_esc(p) for p in parts) + "</p>"


def _meta_cards(paths: Sequence[Path], runs: dict) -> str:
    out = []
    for t in paths:
        m = read_meta(t)
        r = runs.get(m.get("run_id"), {})
        plan = m.get("attach_plan") or []
        att = [p for p in plan if p.get("status") == "attached"]
        not_att = [p for p in plan if p.get("status") != "attached"]
        lost = r.get("events_lost")
        synth = bool(m.get("synthetic"))
        dur = f"{(m['stop_ns'] - m['start_ns']) / 1e9:.3f} s" if m.get("stop_ns") and m.get("start_ns") else "unknown (not finished: killed recorder?)"
        ev = r.get("events_written")
        # snapshots or markers only: no recorder ran, so there is no kernel event to lose
        unrecorded = not plan and not synth and lost is None and not ev
        ev_txt = events_text(r)
        rows = [
            ("run_id", m.get("run_id")), ("path", str(t)), ("synthetic", "YES — generated data, not a measurement" if synth else "no (recorded)"),
            ("kernel", m.get("kernel")), ("host", m.get("host")), ("format version", m.get("version")),
            ("labels", ", ".join(f"{k}={v}" for k, v in (m.get("labels") or {}).items()) or "none"),
            ("duration", dur), ("events", ev_txt), ("events lost", "none (no recorder ran)" if unrecorded else lost_text(lost)),
            ("attach plan", f"{len(att)} of {len(plan)} probes attached" if plan else ("none (synthetic trace)" if synth else "not recorded")),
        ]
        body = "".join(f"<tr><th class='l'>{_esc(k)}</th><td class='l'>{_wrap(v)}</td></tr>" for k, v in rows)
        extra = ""
        if not_att:
            extra = "<p>Not attached: " + "; ".join(_esc(f"{p.get('probe')} ({p.get('reason') or p.get('status')})") for p in not_att[:20]) + \
                (f"; … {len(not_att) - 20} more" if len(not_att) > 20 else "") + "</p>"
        if unrecorded:
            extra += "<p>No recorder ran in this run (debugfs snapshots / markers only): it holds no kernel events.</p>"
        elif lost is None or lost:
            extra += f"<p class='lost'>This run lost {'an unknown number of' if lost is None else f'{lost:,}'} events: every number below that comes from it may miss rows.</p>"
        banner = "<div class='synthetic'>SYNTHETIC TRACE</div>" if synth else ""
        out.append(f"<div class='card'>{banner}<table>{body}</table>{extra}</div>")
    return "<div class='cards'>" + "\n".join(out) + "</div>"


def _sql(con, sql: str, params=None) -> pa.Table:
    return query._arrow(con.execute(sql, params) if params else con.sql(sql))


def write(traces: Sequence[str], out_dir: str, max_rows: int = 40) -> Path:
    paths = find_traces(traces)
    out = _out_folder(out_dir)
    spill = Path(tempfile.mkdtemp(prefix="gpt-report-"))
    plots = _Plots(out)  # matplotlib is imported on the plotting thread while DuckDB computes the shared views
    try:
        return _write_page(out, _body(paths, _connect(paths, spill), plots, max_rows))
    finally:
        plots.close()
        shutil.rmtree(spill, ignore_errors=True)


def _body(paths, con, plots: _Plots, max_rows: int) -> list:
    """The page's parts in order: HTML strings, and Futures of figures still being drawn."""
    runs = run_rows(con)
    lost_all = {rid: r["events_lost"] for rid, r in runs.items()}
    kinds = dict(con.sql("SELECT kind, count(*) FROM markers GROUP BY kind").fetchall())
    body = ["<h1>gpreempt-trace report</h1>"]
    if any(r["synthetic"] for r in runs.values()):
        body.append("<div class='synthetic'>Contains SYNTHETIC data (gpreempt-trace synth): model output, not measurements.</div>")
    body += ["<h2>Traces</h2>", _meta_cards(paths, runs)]
    body += _exp01_section(con, paths, max_rows)
    body += _latency_section(con, plots, lost_all, paths, max_rows)
    body.append("<h2>Queues on the hardware around a preemption</h2>")
    body += _timeline(con, plots, lost_all)
    body += _queue_counts_section(con, plots, lost_all, max_rows)
    body += _collateral_section(con, plots, lost_all, max_rows)
    body += _requests_section(con, max_rows) if kinds.get("request_start") else []
    body += _processes_section(con, max_rows)
    body += _overview_section(con, max_rows)
    return body


def _out_folder(out_dir: str) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GptError(f"{out} exists and is not a folder", "give a folder with -o")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _connect(paths, spill: Path):
    """DuckDB over the traces (memory capped, spilling into `spill`) with the report's modules loaded
    and the shared views computed once: read from the traces' derived rows where they have them, else
    computed from the events and kept as derived rows for the next output (sql/derived.py)."""
    before = derived.fingerprints(paths)  # what the views will be computed from, should they be kept
    con = query.connect([str(p) for p in paths], derived.capped(spill))
    for name in ("report.preemption_cdf", "preempt.summary", "queues.counts", "preempt.collateral", "events.overview",
                 "workload.requests"):
        query.load_module(con, query.resolve(name), {"scheme": "%"})
    # views are recomputed at every reference: `runs` (every run's events counted) once, before the views
    # that read it (collateral's loss column) are computed
    query.materialize(con, "runs")
    derived.compute(con, paths, before, unsorted_states=True)
    return con


def _exp01_section(con, paths, max_rows) -> list[str]:
    """Experiment 1's verdicts (queues per model, ids, stability, MQD -> HQD) over the traces with snapshots."""
    snap = {r for (r,) in con.sql("SELECT DISTINCT run_id FROM snapshots").fetchall()}
    mine = [p for p in paths if read_meta(p).get("run_id") in snap]
    if not mine:
        return []
    from ..experiment.exp01 import exp01

    body = ["<h2>Experiment 1: queues per model, their ids, stability, MQD → HQD</h2>",
            "<p><code>gpreempt-trace exp01 " + " ".join(_esc(p) for p in mine) + "</code> over the debugfs snapshots "
            "(mqds, hqds, rls) of " + ", ".join(_esc(read_meta(p).get("run_id")) for p in mine) + ".</p>"]
    try:
        res = exp01([str(p) for p in mine])
    except GptError as e:
        return body + [_missing(_esc(e.line()))]
    for g in res.groups:
        rows = [("runs", g.runs), ("1. queues per model", g.queues), ("2. queue ids", g.ids), ("3. stable across runs", g.stable),
                ("4. one MQD → HQDs", g.mqd_hqd), ("scheme", g.recommendation)]
        body.append(f"<h3>{_esc(g.group)}</h3><table>" + "".join(
            f"<tr><th class='l'>{_esc(k)}</th><td class='l'>{_esc(v)}</td></tr>" for k, v in rows) + "</table>")
    body += [f"<p>note: {_esc(n)}</p>" for n in res.notes]
    query.load_module(con, query.resolve("exp01.inventory"))
    inv = _sql(con, "SELECT run_id, snapshot_seq, phase, tgid, gpu_id, compute_queues, sdma_queues, compute_mqd_copies, "
                    "active_cp_hqds, active_sdma_hqds, hqds_per_queue, xccs, queue_id_source FROM exp01_inventory "
                    "ORDER BY run_id, snapshot_seq, gpu_id, tgid")
    body.append("<p><code>gpreempt-trace query exp01.inventory</code> (queue ids and doorbells: all columns there):</p>" + table_html(inv, max_rows))
    return body


def _latency_section(con, plots, lost_all, paths, max_rows) -> list[str]:
    """1. latency CDF per scheme (201 quantiles per line from SQL), preempt.summary, compare's verdict
    when two schemes have latencies."""
    body = ["<h2>Preemption latency (CDF per scheme)</h2>"]
    cdf = _sql(con, "SELECT * FROM report_preemption_cdf").to_pylist()
    requests = con.sql("SELECT count(*) FROM preempt_preemption_timings").fetchall()[0][0]
    if cdf:
        body.append(plots.draw(_latency_cdf_plot, cdf))
        have = [r for (r,) in con.sql(
            "SELECT k.run_id FROM preempt_preemption_run_keys k SEMI JOIN preempt_preemption_timings t ON t.rk = k.rk "
            "AND (t.preempt_latency_ns IS NOT NULL OR t.resume_latency_ns IS NOT NULL) ORDER BY 1").fetchall()]
        body.append(_lost_note({r: lost_all.get(r) for r in have}))
    elif requests:
        body.append(_missing(f"{requests} preempt requests, but none matched a kernel queues_unmap/queues_map on the request's GPU: "
                             "the trace lacks the KFD function probes (unmap_queues_cpsch, map_queues_cpsch) or the kfd:* tracepoints, "
                             "or the controller's markers carry no gpu_id. Record with the KFD probes attached (gpreempt-trace doctor shows which attach)."))
    else:
        body.append(_missing("No preemption in these traces (no preempt_request marker). Record while the controller preempts "
                             "(gpreempt-trace preempt … with the recorder running), or generate a model trace with "
                             "<code>gpreempt-trace synth --scheme A -o DIR</code>."))
    summ = _sql(con, "SELECT * FROM preempt_summary")
    if summ.num_rows:
        body.append("<p><code>gpreempt-trace query preempt.summary</code></p>" + table_html(summ, max_rows))
    schemes = {r["scheme"] for r in cdf if r["metric"] == "preempt_latency_ns"}
    if len(schemes) >= 2:
        body.append(_verdict_html(con, paths, max_rows))
    return body


def _latency_cdf_plot(plots, cdf: list[dict]) -> str:
    fig, axes = plots.plt.subplots(1, 2, figsize=(12, 4))
    drawn = {}
    for ax, col, title in ((axes[0], "preempt_latency_ns", "request → queues off (end of unmap)"),
                           (axes[1], "resume_latency_ns", "resume request → queues back (end of map)")):
        for sch in sorted({r["scheme"] for r in cdf if r["metric"] == col}):
            pts = [r for r in cdf if r["metric"] == col and r["scheme"] == sch]
            n = pts[0]["samples"]
            ax.step([r["value_ns"] / 1e3 for r in pts], [r["fraction"] for r in pts], where="post", label=f"scheme {sch} (n={n:,})")
            drawn[f"{sch}:{col}"] = n
        ax.set_xlabel("µs"), ax.set_ylabel("fraction of preemptions"), ax.set_title(title), ax.grid(alpha=.3)
        if ax.lines:
            ax.legend(loc="lower right")
        else:
            ax.text(0.5, 0.5, f"no {col} in these traces", ha="center", va="center", transform=ax.transAxes)
    return plots.save(fig, "latency_cdf.png", samples=" ".join(f"{k}={v}" for k, v in sorted(drawn.items())))


def _verdict_html(con, paths, max_rows) -> str:
    from .compare import CompareOptions, compare

    try:
        res = compare(CompareOptions([str(p) for p in paths]), con)
    except GptError as e:
        return f"<p>{_esc(e.line())}</p>"
    us = lambda v: "NULL" if v is None else f"{v / 1e3:+,.1f}"  # noqa: E731
    rows = [{"reference": d["reference"], "other": d["other"], "metric": d["metric"], "n": f"{d['n_reference']:,} / {d['n_other']:,}",
             "median diff µs [95% CI]": f"{us(d['median_diff_ns'])} [{us(d['median_diff_ci_low_ns'])}, {us(d['median_diff_ci_high_ns'])}]",
             "p99 diff µs [95% CI]": f"{us(d['p99_diff_ns'])} [{us(d['p99_diff_ci_low_ns'])}, {us(d['p99_diff_ci_high_ns'])}]",
             "Mann-Whitney p": "NULL" if d["mann_whitney_p"] is None else f"{d['mann_whitney_p']:.3g}"}
            for d in res.diffs.to_pylist()]
    return (f"<p class='verdict'>{_esc(res.verdict)}</p><p><code>gpreempt-trace compare --by scheme</code> "
            "(other − reference; every column with --format json):</p>" + table_html(pa.Table.from_pylist(rows), max_rows))


def _queue_counts_section(con, plots, lost_all, max_rows) -> list[str]:
    """3. queue counts per model."""
    body = ["<h2>Queues per model</h2>"]
    counts = _sql(con, "SELECT * FROM queues_counts")
    if counts.num_rows:
        c = sorted(counts.to_pylist(), key=lambda r: -r["queues"])[:TOP]
        body.append(plots.draw(_queue_counts_plot, c, counts.num_rows))
        body.append(_lost_note({r: lost_all.get(r) for r in sorted({x["run_id"] for x in c})}))
        body.append("<p><code>gpreempt-trace query queues.counts</code></p>" + table_html(counts, max_rows))
    else:
        body.append(_missing("No queue creation in these traces. queue_create rows come from the KFD probes (create_queue_cpsch) "
                             "or the kfd:kfd_queue_create tracepoint: record with them attached while the model starts "
                             "(gpreempt-trace record -o DIR -- python model.py)."))
    return body


def _queue_counts_plot(plots, c: list[dict], total: int) -> str:
    import numpy as np

    fig, ax = plots.plt.subplots(figsize=(max(6, 1.4 * len(c)) + 2, 3.8))
    x = np.arange(len(c))
    comp = [r["compute_queues"] / r["processes"] for r in c]
    sdma = [r["sdma_queues"] / r["processes"] for r in c]
    ax.bar(x, comp, label="compute / process")
    ax.bar(x, sdma, bottom=comp, label="sdma / process")
    ax.set_xticks(x, [f"{r['label']}" + "".join(f"\n[{k}]" for k in (r.get("containers") or [])) + f"\n{_short(r['run_id'])}" for r in c], fontsize=8)
    ax.set_ylabel("queues per process")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the bars, never over them
    ax.set_title("queues created per process of each model (mean over its processes)"
                 + (f": the {TOP} of {total} with the most queues" if total > TOP else ""))
    return plots.save(fig, "queue_counts.png", bars=len(c), queues=sum(r["queues"] for r in c))


def _collateral_section(con, plots, lost_all, max_rows) -> list[str]:
    """4. collateral preemption per process, per second of its run and per unmap (runs differ in length)."""
    body = ["<h2>Collateral preemption</h2>"]
    coll = _sql(con, "SELECT c.*, (r.stop_ns - r.start_ns) / 1e9 AS run_s FROM preempt_collateral_per_process c "
                     "LEFT JOIN runs r USING (run_id) ORDER BY c.collateral_unmaps DESC, c.run_id, c.tgid")
    cc = [r for r in coll.to_pylist() if r["collateral_unmaps"]]
    if cc:
        body.append(plots.draw(_collateral_plot, cc[:TOP], len(cc)))
        body.append(_lost_note({r: lost_all.get(r) for r in sorted({x["run_id"] for x in cc})}))
        per_s = lambda v, s: None if v is None or not s else v / s  # noqa: E731
        tbl = coll.drop_columns(["run_s"]).append_column(
            "collateral_per_s", pa.array([per_s(r["collateral_unmaps"], r["run_s"]) for r in coll.to_pylist()], pa.float64())).append_column(
            "off_ms_per_s", pa.array([per_s((r["collateral_off_ns"] or 0) / 1e6 if r["collateral_off_ns"] is not None else None, r["run_s"])
                                      for r in coll.to_pylist()], pa.float64()))
        body.append("<p><code>gpreempt-trace query preempt.collateral</code> (per unmap); per process, with per second of its run "
                    "(collateral_per_s, off_ms_per_s: the run's duration from meta.json; NULL for a run without a stop):</p>"
                    + table_html(tbl, max_rows))
    else:
        body.append(_missing("No collateral preemption found: it needs queues_unmap rows (unmap_queues_cpsch probe or kfd:kfd_queues_unmap) "
                             "and queue_create rows of at least two processes on one GPU. Record both models and the controller together."))
    return body


def _collateral_plot(plots, cc, total) -> str:
    fig, (ax, ax2) = plots.plt.subplots(1, 2, figsize=(max(10, 2.4 * len(cc)), 3.8))
    names = [f"{r['label'] or r['tgid']}\n{_short(r['run_id'])}" for r in cc]
    x = range(len(cc))
    ax.bar(x, [r["collateral_unmaps"] / r["run_s"] if r["run_s"] else 0 for r in cc], color="#e67e22")
    ax2.bar(x, [(r["collateral_off_ns"] or 0) / 1e6 / r["run_s"] if r["run_s"] else 0 for r in cc], color="#c0392b")
    for i, r in enumerate(cc):
        if not r["run_s"]:
            for a in (ax, ax2):
                a.text(i, 0, "unknown\n(run not stopped)", ha="center", va="bottom", fontsize=8)
        elif r["collateral_off_ns"] is None:
            ax2.text(i, 0, "unknown\n(no queues_map rows)", ha="center", va="bottom", fontsize=8)
        else:  # the time off per collateral unmap, on the bar
            ax2.text(i, (r["collateral_off_ns"] / 1e6 / r["run_s"]), f"mean {r['collateral_off_ns'] / r['collateral_unmaps'] / 1e3:,.0f} µs / unmap",
                     ha="center", va="bottom", fontsize=8)
    for a in (ax, ax2):
        a.set_xticks(list(x), names, fontsize=8)
        a.margins(y=0.25)
    more = f" ({len(cc)} of {total} processes)" if total > len(cc) else ""
    ax.set_ylabel("collateral unmaps per second"), ax.set_title("unmaps caused by another process\nper second of the run" + more, fontsize=10)
    ax2.set_ylabel("ms off per second"), ax2.set_title("time off the GPU through them (unmap → next map)\nper second of the run", fontsize=10)
    return plots.save(fig, "collateral.png", bars=len(cc), collateral_unmaps=sum(r["collateral_unmaps"] for r in cc))


def _requests_section(con, max_rows) -> list[str]:
    req = _sql(con, "SELECT * FROM workload_requests_summary WHERE requests > 0")
    if not req.num_rows:
        return []
    return ["<h2>Online requests</h2><p>Response time (end − due) of the online workload's requests and the offline job's steps/s "
            "(<code>gpreempt-trace query workload.requests</code> per request):</p>" + table_html(req, max_rows)]


def _processes_section(con, max_rows) -> list[str]:
    procs = _sql(con, "SELECT run_id, tgid, ns_tgid, container, container_runtime, comm, cgroup FROM processes ORDER BY run_id, tgid")
    if not procs.num_rows:  # traces from before issue 21, and synthetic ones, have none
        return []
    return ["<h2>Processes and containers</h2><p>Host pid (tgid), pid in its container (ns_tgid), container short id "
            "(<code>gpreempt-trace query</code> over the <code>processes</code> view).</p>" + table_html(procs, max_rows)]


def _overview_section(con, max_rows) -> list[str]:
    ov = _sql(con, "SELECT * FROM events_overview")
    return ["<h2>What fired</h2>",
            table_html(ov, max_rows) if ov.num_rows else _missing("No kernel events in these traces (markers or snapshots only).")]


def _write_page(out: Path, body: list) -> Path:
    html_ = "".join(b.result() if isinstance(b, Future) else b for b in body)  # figures still being drawn: wait, in page order
    page = (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>gpreempt-trace report</title><style>{CSS}</style></head><body>{html_}</body></html>")
    index = out / "index.html"
    index.write_text(page)
    return index


MARKS = {"preempt_request": ("#000000", "--"), "preempt_done": ("#1f4e9c", ":"), "resume_request": ("#000000", "-."),
         "resume_done": ("#1f4e9c", "-")}  # the controller's markers drawn on the timeline (in the legend, not as text)


def _timeline(con, plots, lost_all) -> list:
    first = con.sql("SELECT k.run_id, t.gpu_id, t.request_ts_ns, t.target_tgid, t.seq FROM preempt_preemption_timings t "
                    "JOIN preempt_preemption_run_keys k USING (rk) WHERE t.preempt_latency_ns IS NOT NULL AND t.gpu_id IS NOT NULL "
                    "ORDER BY k.run_id, t.request_ts_ns LIMIT 1").fetchall()
    if not first:
        return [_missing("No preemption matched to kernel unmaps, so there is no timeline to draw. It needs preempt_request markers "
                        "with a gpu_id and queues_unmap/queues_map rows (KFD probes or kfd:* tracepoints); "
                        "<code>gpreempt-trace synth --scheme A -o DIR</code> shows what it looks like.")]
    run_id, gpu, req, target, seq = first[0]
    end = con.execute("SELECT min(ts_ns) FROM markers WHERE run_id = ? AND kind = 'resume_done' AND target_tgid = ? AND ts_ns > ?",
                      [run_id, target, req]).fetchall()[0][0] or req + 5_000_000
    pad = max(200_000, (end - req) // 4)
    t0, t1 = req - pad, end + pad
    qs = con.execute("SELECT s.tgid, coalesce(c.label, CAST(s.tgid AS VARCHAR)) || coalesce(' [' || c.container || ']', ''), s.queue_id, "
                     "s.queue_type FROM queues_lifecycle_spans s JOIN queues_created c USING (run_id, gpu_id, tgid, queue_id, created_ts_ns) "
                     "WHERE s.run_id = ? AND s.gpu_id = ? AND s.created_ts_ns < ? AND (s.destroyed_ts_ns IS NULL OR s.destroyed_ts_ns > ?) "
                     "ORDER BY s.tgid, s.queue_id", [run_id, gpu, t1, t0]).fetchall()
    if not qs:
        return [_missing("The preempted GPU has no queue with a recorded queue_create: the timeline needs queue_create rows.")]
    # device-wide unmaps in the window, each until the end of the next map on the GPU (or the window's end)
    off = con.execute("SELECT u.ts_ns, coalesce(m.ts_ns + m.dur_ns, ?) FROM (SELECT ts_ns, dur_ns FROM events WHERE run_id = ? AND "
                      "event = 'queues_unmap' AND gpu_id = ? AND ts_ns BETWEEN ? AND ?) u ASOF LEFT JOIN (SELECT ts_ns, dur_ns FROM events "
                      "WHERE run_id = ? AND event = 'queues_map' AND gpu_id = ? AND ts_ns BETWEEN ? AND ?) m ON m.ts_ns >= u.ts_ns ORDER BY 1",
                      [t1, run_id, gpu, t0, t1, run_id, gpu, t0, t1]).fetchall()
    states = con.execute("SELECT tgid, queue_id, state, start_ts_ns, coalesce(end_ts_ns, ?) FROM queues_lifecycle_states "
                         "WHERE run_id = ? AND gpu_id = ? AND start_ts_ns < ? AND coalesce(end_ts_ns, ?) > ?", [t1, run_id, gpu, t1, t1, t0]).fetchall()
    marks = con.execute("SELECT kind, min(ts_ns) FROM markers WHERE run_id = ? AND ts_ns BETWEEN ? AND ? AND kind IN "
                        f"({', '.join(repr(k) for k in MARKS)}) AND target_tgid IS NOT DISTINCT FROM ? GROUP BY kind ORDER BY 2",
                        [run_id, t0, t1, target]).fetchall()
    return [plots.draw(_timeline_plot, (run_id, gpu, req, seq, t0, t1), qs, off, states, marks), _lost_note({run_id: lost_all.get(run_id)})]


def _timeline_plot(plots, at: tuple, qs: list, off: list, states: list, marks: list) -> str:
    run_id, gpu, req, seq, t0, t1 = at
    fig, ax = plots.plt.subplots(figsize=(13, 0.32 * len(qs) + 2.2))
    us = lambda t: (t - req) / 1e3  # noqa: E731
    ylab = []
    colors = {"suspended": "#c0392b", "preempted": "#8e44ad", "evicted": "#d35400"}
    for i, (tgid, label, qid, typ) in enumerate(qs):
        ax.broken_barh([(us(t0), us(t1) - us(t0))], (i - 0.4, 0.8), color="#27ae60")
        ax.broken_barh([(us(a), us(b) - us(a)) for a, b in off], (i - 0.4, 0.8), color="#bbbbbb")
        for st in states:
            if st[0] == tgid and st[1] == qid:
                ax.broken_barh([(us(max(st[3], t0)), us(min(st[4], t1)) - us(max(st[3], t0)))], (i - 0.4, 0.8), color=colors.get(st[2], "k"))
        ylab.append(f"{label or tgid} q{qid} {typ}")
    from matplotlib.patches import Patch

    handles = [Patch(color="#27ae60", label="active"), Patch(color="#bbbbbb", label="unmapped (device-wide)"),
               Patch(color=colors["suspended"], label="suspended (A)"), Patch(color=colors["preempted"], label="preempted (B)")]
    for kind, ts in marks:  # one line per marker kind, named in the legend with its time: no labels over each other
        color, ls = MARKS[kind]
        handles.append(ax.axvline(us(ts), color=color, lw=1.2, ls=ls, label=f"{kind} ({us(ts):+,.0f} µs)"))
    ax.set_ylim(-0.6, len(qs) - 0.4)
    ax.set_yticks(range(len(qs)), ylab, fontsize=7)
    ax.set_xlabel(f"µs from preempt_request seq {seq} (run {run_id}, gpu 0x{gpu:x})")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(f"queues on the preempted GPU around preemption seq {seq}")
    return plots.save(fig, "timeline.png", queues=len(qs), unmaps=len(off), markers=len(marks))
