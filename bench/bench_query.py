"""Analysis over a 10 M-event model trace (gpreempt-trace synth): per-model queue counts and preemption
percentiles, DuckDB (the tool's modules queues.counts and preempt.summary) vs a straightforward pandas
implementation of the same results, same process, same data; then the Perfetto export (`report -o`:
bench_report.py).

Each figure is printed next to a floor measured in the same run: the DuckDB modules against pandas and
against the scan floor (the rows and columns preempt.summary reads, nothing joined); `gpreempt-trace
query preempt.summary` against one plain scan through the same CLI (count/sum/distinct over `events`,
start-up included; target: within 3x, issue 23); `export --perfetto` of 1 M events against its DuckDB
reads alone (perfetto.read; target: < 10 s), the file parsed back with Perfetto's protos and its tracks and slices
counted. Targets (issue 12): each DuckDB query < 2 s and >= 10x pandas on 2 cores. GPT_BENCH_EVENTS
overrides the size, GPT_BENCH_REPS the runs per query (3; the median is compared). The model trace is
deterministic per seed, so it is kept in ~/.cache/gpreempt-trace/bench/ and reused (GPT_BENCH_TRACE
names another one).
"""
from __future__ import annotations

import collections
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gpreempt_trace import api, synthetic

EVENTS = int(os.environ.get("GPT_BENCH_EVENTS", 10_000_000))
REPS = int(os.environ.get("GPT_BENCH_REPS", 3))  # the VM's speed moves by 10-20 % between runs: the median of REPS
METRICS = ("preempt_latency_ns", "preempt_call_ns", "resume_latency_ns", "suspended_ns")
INF = np.iinfo(np.int64).max


def _read(trace: Path, table: str, columns: list[str]) -> pd.DataFrame:
    files = sorted((trace / table).glob("seg-*.parquet"))
    return pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)


def _labels(mk: pd.DataFrame) -> pd.DataFrame:
    ws = mk[(mk.kind == "workload_start") & mk.label.notna()].sort_values("ts_ns")
    ws = ws.assign(tgid=ws.target_tgid.fillna(ws.tgid)).drop_duplicates(["run_id", "tgid"])
    return ws[["run_id", "tgid", "label"]].astype({"tgid": "int64"})


def pandas_counts(trace: Path) -> pd.DataFrame:
    """Queues per model and run, from queue_create rows (what queues.counts returns)."""
    ev = _read(trace, "events", ["run_id", "event", "tgid", "owner_tgid", "gpu_id", "queue_id", "queue_type", "ret", "comm", "ts_ns"])
    mk = _read(trace, "markers", ["run_id", "kind", "tgid", "target_tgid", "label", "ts_ns"])
    c = ev[(ev.event == "queue_create") & (ev.ret.fillna(0) >= 0) & ev.queue_id.notna()].copy()
    c["tgid"] = c.owner_tgid.fillna(c.tgid).astype("int64")
    c = c.merge(_labels(mk), on=["run_id", "tgid"], how="left")
    c["label"] = c.label.fillna(c.comm)
    c["compute"] = c.queue_type.isin(["compute", "compute_aql"])
    c["sdma"] = c.queue_type.str.startswith("sdma")
    per = c.groupby(["run_id", "label", "tgid"]).agg(queues=("queue_id", "size"), compute=("compute", "sum"), sdma=("sdma", "sum")).reset_index()
    out = per.groupby(["run_id", "label"]).agg(processes=("tgid", "size"), queues=("queues", "sum"), compute_queues=("compute", "sum"),
                                               sdma_queues=("sdma", "sum"), min_per_process=("queues", "min"),
                                               max_per_process=("queues", "max")).reset_index()
    return out.sort_values(["label", "run_id"]).reset_index(drop=True)


def pandas_summary(trace: Path) -> pd.DataFrame:
    """Preemption latency percentiles per scheme and label (what preempt.summary returns)."""
    ev = _read(trace, "events", ["run_id", "event", "gpu_id", "ts_ns", "dur_ns"])
    mk = _read(trace, "markers", ["run_id", "kind", "seq", "ts_ns", "scheme", "target_tgid", "gpu_id", "tgid", "label"])
    k = ev[ev.event.isin(["queues_unmap", "queues_map"]) & ev.gpu_id.notna()].copy()
    k["end_ns"] = k.ts_ns + k.dur_ns
    k["gpu_id"] = k.gpu_id.astype("int64")
    req = mk[mk.kind.isin(["preempt_request", "resume_request"])].copy()
    req = req.sort_values("ts_ns")
    req["next_ts"] = req.groupby(["run_id", "target_tgid", "kind"]).ts_ns.shift(-1)
    done = mk[mk.kind.isin(["preempt_done", "resume_done"])].groupby(["run_id", "seq", "kind"]).ts_ns.min().reset_index()

    def side(kind: str, ev_name: str, done_kind: str, col: str) -> pd.DataFrame:
        r = req[(req.kind == kind) & req.gpu_id.notna()].copy()
        r["gpu_id"] = r.gpu_id.astype("int64")
        r = r.merge(done[done.kind == done_kind][["run_id", "seq", "ts_ns"]].rename(columns={"ts_ns": "done_ts"}), on=["run_id", "seq"], how="left")
        kk = k[k.event == ev_name][["run_id", "gpu_id", "ts_ns", "end_ns"]].rename(columns={"ts_ns": "k_ts"}).sort_values("k_ts")
        r = pd.merge_asof(r.sort_values("ts_ns"), kk, left_on="ts_ns", right_on="k_ts", by=["run_id", "gpu_id"], direction="forward")
        bound = r.done_ts.fillna(r.next_ts).fillna(INF)
        r[col] = np.where(r.k_ts <= bound, r.end_ns - r.ts_ns, np.nan)
        return r

    p = side("preempt_request", "queues_unmap", "preempt_done", "preempt_latency_ns")
    p["preempt_call_ns"] = p.done_ts - p.ts_ns
    rs = side("resume_request", "queues_map", "resume_done", "resume_latency_ns")
    allp = req[req.kind == "preempt_request"][["run_id", "seq", "ts_ns", "scheme", "target_tgid", "gpu_id", "next_ts"]]
    allp = allp.merge(p[["run_id", "seq", "preempt_latency_ns", "preempt_call_ns", "done_ts"]], on=["run_id", "seq"], how="left")
    allp["gkey"] = allp.gpu_id.fillna(-1)
    rr = rs[["run_id", "target_tgid", "gpu_id", "ts_ns", "resume_latency_ns", "done_ts"]].rename(columns={"ts_ns": "r_ts", "done_ts": "r_done"})
    rr["gkey"] = rr.gpu_id.astype("float64")
    rr = rr.drop(columns="gpu_id").sort_values("r_ts")
    m = pd.merge_asof(allp.sort_values("ts_ns"), rr, left_on="ts_ns", right_on="r_ts", by=["run_id", "target_tgid", "gkey"], direction="forward")
    ok = m.r_ts < m.next_ts.fillna(INF)
    m["resume_latency_ns"] = m.resume_latency_ns.where(ok)
    m["suspended_ns"] = (m.r_done - m.done_ts).where(ok)
    m = m.merge(_labels(mk).rename(columns={"tgid": "target_tgid"}), on=["run_id", "target_tgid"], how="left")
    rows = []
    for (scheme, label), g in m.groupby(["scheme", "label"], dropna=False):
        for metric in METRICS:
            v = g[metric].dropna().to_numpy()
            rows.append(dict(scheme=scheme, label=label, metric=metric, samples=len(v), missing=len(g) - len(v),
                             p50_ns=int(np.quantile(v, 0.5, method="inverted_cdf")), p90_ns=int(np.quantile(v, 0.9, method="inverted_cdf")),
                             p99_ns=int(np.quantile(v, 0.99, method="inverted_cdf")), max_ns=int(v.max())))
    return pd.DataFrame(rows).sort_values(["scheme", "label", "metric"]).reset_index(drop=True)


def duck(trace: Path, module: str) -> tuple[pd.DataFrame, float]:
    """The module's result (an Arrow table, what the tool returns) and its time; the conversion to
    pandas for the comparison is not timed (its first call initializes pyarrow's pandas bridge, ~0.3 s)."""
    t0 = time.perf_counter()
    tbl = api.query(module, [str(trace)])
    t = time.perf_counter() - t0
    return tbl.to_pandas(), t


def _timed(f, *a):
    t0 = time.perf_counter()
    r = f(*a)
    return r, time.perf_counter() - t0


def _child(call: str, *args) -> tuple[float, float, float]:
    """Run `call` (an api call on sys.argv) in a child process: its wall time, its own peak RSS (MiB) and
    its CPU time (user + system)."""
    # VmHWM, not ru_maxrss: the latter keeps the parent's RSS at fork across exec
    code = (f"import sys; from gpreempt_trace import api; {call}; "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, stderr=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    t = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t, int(out.stdout.split()[-1]) / 1024, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


PLAIN_SCAN = "SELECT count(*), sum(ts_ns), count(DISTINCT event) FROM events;\n"


def _cli(*args) -> tuple[float, float]:
    """Wall and CPU (user + system) time of one `gpreempt-trace` command (a new process: start-up
    included), output discarded."""
    exe = Path(sys.executable).with_name("gpreempt-trace")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gpreempt_trace.cli.main"]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([*cmd, *map(str, args)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def _perfetto_counts(path: Path) -> tuple[int, int, int, int]:
    """Tracks, slice begins, slice ends and instants of a Perfetto trace, parsed with Perfetto's protos."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    t = pb.Trace()
    t.ParseFromString(path.read_bytes())
    tracks = sum(1 for p in t.packet if p.HasField("track_descriptor"))
    types = collections.Counter(p.track_event.type for p in t.packet if p.HasField("track_event"))
    TE = pb.TrackEvent
    return tracks, types[TE.TYPE_SLICE_BEGIN], types[TE.TYPE_SLICE_END], types[TE.TYPE_INSTANT]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gpt-bench-q-"))
    try:
        cache = Path.home() / ".cache" / "gpreempt-trace" / "bench" / f"synth-v3-A-1-{EVENTS}"  # v3: row groups by event family
        trace = Path(os.environ.get("GPT_BENCH_TRACE") or cache)
        if not (trace / "ground_truth" / "queues.parquet").exists():
            shutil.rmtree(trace, ignore_errors=True)
            trace.parent.mkdir(parents=True, exist_ok=True)
            _, t_gen = _timed(synthetic.generate, trace, "A", EVENTS, 1)
            print(f"synth: {EVENTS:,} events (scheme A model) in {t_gen:.1f} s")
        shutil.rmtree(trace / "derived", ignore_errors=True)  # the views computed from the events (bench_report times derived rows)
        n = api.connect([str(trace)]).sql("select count(*) from events").fetchall()[0][0]
        print(f"trace: {trace} ({n:,} event rows)")
        for module, pfun, keys in (("queues.counts", pandas_counts, ["run_id", "label", "processes", "queues", "compute_queues", "sdma_queues",
                                                                      "min_per_process", "max_per_process"]),
                                   ("preempt.summary", pandas_summary, ["scheme", "label", "metric", "samples", "missing", "p50_ns", "p90_ns",
                                                                        "p99_ns", "max_ns"])):
            t_ds, t_ps = [], []
            for _ in range(REPS):  # interleaved; each DuckDB run on a new connection, as `gpreempt-trace query` runs it
                d, t = duck(trace, module)
                t_ds.append(t)
                p, t = _timed(pfun, trace)
                t_ps.append(t)
            t_d, t_p = statistics.median(t_ds), statistics.median(t_ps)
            same = d[keys].astype(str).reset_index(drop=True).equals(p[keys].astype(str).reset_index(drop=True))
            print(flush=True, *[f"{module}: duckdb {t_d:.2f} s vs pandas {t_p:.2f} s ({t_p / t_d:.1f}x), median of {REPS} "
                  f"(duckdb {', '.join(f'{x:.2f}' for x in t_ds)}; pandas {', '.join(f'{x:.2f}' for x in t_ps)}); "
                  f"results identical: {same} (target < 2 s and >= 10x)"])
        # the floor under preempt.summary: only reading the rows and columns it needs (no join, no sort)
        con = api.connect([str(trace)])
        t0 = time.perf_counter()
        con.sql("SELECT count(*), sum(ts_ns), sum(dur_ns), sum(gpu_id), count(run_id) FROM events "
                "WHERE event IN ('queues_unmap', 'queues_map')").fetchall()
        con.sql("SELECT count(*), sum(ts_ns), sum(seq), count(scheme), sum(target_tgid), sum(gpu_id), count(label), count(run_id) "
                "FROM markers WHERE kind IN ('preempt_request', 'resume_request', 'preempt_done', 'resume_done')").fetchall()
        print(f"scan floor of preempt.summary (its columns and rows read, nothing joined): {time.perf_counter() - t0:.2f} s")
        # the CLI against one plain scan through the same CLI, interleaved (start-up included in both)
        plain_sql = tmp / "plain.sql"
        plain_sql.write_text(PLAIN_SCAN)
        t_plain, t_sum = [], []
        for _ in range(REPS):
            t_plain.append(_cli("query", plain_sql, trace))
            t_sum.append(_cli("query", "preempt.summary", trace))
        tp = (statistics.median([w for w, _ in t_plain]), statistics.median([c for _, c in t_plain]))
        ts = (statistics.median([w for w, _ in t_sum]), statistics.median([c for _, c in t_sum]))
        print(f"gpreempt-trace query preempt.summary: {ts[0]:.2f} s vs one plain scan (count/sum/distinct over events) through the same CLI "
              f"{tp[0]:.2f} s: {ts[0] / tp[0]:.1f}x; CPU {ts[1]:.2f} s vs {tp[1]:.2f} s: {ts[1] / tp[1]:.1f}x; medians of {REPS} "
              f"(wall: summary {', '.join(f'{w:.2f}' for w, _ in t_sum)}; plain {', '.join(f'{w:.2f}' for w, _ in t_plain)}) (target <= 3x)")
        _cli("derive", trace)  # the same over the trace's derived rows (sql/derived.py), the plain scan again beside it
        t_plain, t_sum = [], []
        for _ in range(REPS):
            t_plain.append(_cli("query", plain_sql, trace))
            t_sum.append(_cli("query", "preempt.summary", trace))
        shutil.rmtree(trace / "derived", ignore_errors=True)
        tp = (statistics.median([w for w, _ in t_plain]), statistics.median([c for _, c in t_plain]))
        ts = (statistics.median([w for w, _ in t_sum]), statistics.median([c for _, c in t_sum]))
        print(f"  with the trace's derived rows: {ts[0]:.2f} s vs the plain scan's {tp[0]:.2f} s: {ts[0] / tp[0]:.1f}x; "
              f"CPU {ts[1]:.2f} s vs {tp[1]:.2f} s: {ts[1] / tp[1]:.1f}x; medians of {REPS}")
        small = synthetic.generate(tmp / "small", "A", 1_000_000, 1)
        t_e, rss, c_e = _child("api.export_perfetto(sys.argv[1], sys.argv[2])", small, tmp / "small.pftrace")
        t_reads, _, c_reads = _child("from gpreempt_trace.report import perfetto; perfetto.read(sys.argv[1])", small)
        size = (tmp / "small.pftrace").stat().st_size
        print(f"export --perfetto of a 1,000,000-event model trace: {t_e:.1f} s, CPU {c_e:.1f} s ({size / 1e6:.0f} MB), peak RSS {rss:.0f} MiB; "
              f"floor: its DuckDB reads alone (perfetto.read) {t_reads:.1f} s, CPU {c_reads:.1f} s (target < 10 s)")
        out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]); from bench.bench_query import _perfetto_counts; "
                              "print(*_perfetto_counts(__import__('pathlib').Path(sys.argv[1])))", tmp / "small.pftrace",
                              Path(__file__).resolve().parent.parent], check=True, stdout=subprocess.PIPE, text=True)  # own process: ~5 GB parsed
        tracks, begins, ends, inst = map(int, out.stdout.split())
        calls = api.connect([str(small)]).sql("SELECT count(*) FROM events WHERE dur_ns IS NOT NULL").fetchall()[0][0]
        print(f"  parsed back with Perfetto's protos: {tracks} tracks, {begins:,} slices ({begins - calls:,} queue states + {calls:,} KFD calls), "
              f"{ends:,} slice ends, {inst:,} instants")
        print(f"peak RSS of the DuckDB/pandas comparison process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
