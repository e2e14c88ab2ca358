"""`compare`: preemption latency distributions side by side, with statistics and a one-line verdict.

Groups are the values of `by` ('scheme', or a meta.json label key such as model). Against the first
group (sorted), every other group gets the difference of medians and of p99 with bootstrap 95 %
confidence intervals (percentile method, fixed seed) and a two-sided Mann-Whitney U test. The verdict
says "cannot tell them apart" when a side has fewer than MIN_SAMPLES values, or when the CI of the
difference of medians contains 0 or the rank test is not significant (p >= ALPHA). "Nothing to
compare" (no preemption, or a single group) is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa

from ..sql import derived, query
from ..trace.directory import find_traces
from ..errors import GptError

METRICS = ("preempt_latency_ns", "preempt_call_ns", "resume_latency_ns", "suspended_ns")
MIN_SAMPLES = 5
ALPHA = 0.05
SEED = 12


@dataclass
class CompareOptions:
    traces: Sequence[str]
    by: str = "scheme"
    metric: str = "preempt_latency_ns"
    resamples: int = 1000


@dataclass
class CompareResult:
    groups: pa.Table  # one row per group: n, missing, p50, p90, p99, max, events lost, synthetic
    diffs: pa.Table  # one row per group after the first: differences with CIs, rank test
    verdict: str
    synthetic: bool = False
    samples: dict = field(default_factory=dict)  # group -> np.ndarray (for plots)

    def lines(self) -> list[str]:
        return [self.verdict]


def _lost_text(v) -> str:
    return "unknown" if v is None else str(int(v))


def bootstrap_diff(a: np.ndarray, b: np.ndarray, q: float, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile-bootstrap CI of quantile_q(b) - quantile_q(a)."""
    if len(a) < 2 or len(b) < 2:
        return (float("nan"), float("nan"))
    k = resamples if max(len(a), len(b)) <= 50_000 else min(resamples, 200)
    d = np.empty(k)
    for i in range(k):
        d[i] = np.quantile(b[rng.integers(0, len(b), len(b))], q) - np.quantile(a[rng.integers(0, len(a), len(a))], q)
    lo, hi = np.quantile(d, [0.025, 0.975])
    return float(lo), float(hi)


def rank_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (scipy, asymptotic for large samples)."""
    from scipy.stats import mannwhitneyu

    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _samples(opts: CompareOptions, con=None):
    """(group, value, run_id) per preemption from preempt_preemption_timings (the numbers of
    preempt.preemption without its per-queue columns), and each run's (events_lost, synthetic). `con`: a
    connection with preempt.preemption loaded (the report's), else a new one over opts.traces."""
    if con is None:
        con = query.connect(opts.traces)
        query.load_module(con, query.resolve("preempt.preemption"), {"scheme": "%"})
        derived.attach(con, find_traces(opts.traces))  # the traces' derived timings, where valid
    if opts.by == "scheme":
        key = "p.scheme"
    else:
        known = {r[0] for r in con.execute("SELECT DISTINCT unnest(map_keys(labels)) FROM runs").fetchall()}
        if opts.by not in known:
            raise GptError(f"nothing to compare: no trace has a label {opts.by!r}",
                           "use --by scheme or one of the labels: " + (", ".join(sorted(known)) or "none (record with --label KEY=VALUE)"))
        key = "runs.labels[$by]"
    rows = con.execute(
        f"SELECT {key} AS grp, p.{opts.metric} AS v, k.run_id FROM preempt_preemption_timings p "
        "JOIN preempt_preemption_run_keys k USING (rk) JOIN runs USING (run_id) ORDER BY k.run_id, p.request_ts_ns, p.seq",  # the bootstrap's order
        {"by": opts.by} if opts.by != "scheme" else None,
    ).fetchall()
    runs = {r[0]: (r[1], r[2]) for r in con.execute("SELECT run_id, events_lost, coalesce(synthetic, false) FROM runs").fetchall()}
    return rows, runs


def compare(opts: CompareOptions, con=None) -> CompareResult:
    """`con`: read the preemptions from this connection (preempt.preemption loaded), not a new one."""
    if opts.metric not in METRICS:
        raise GptError(f"unknown metric {opts.metric!r}", "one of " + ", ".join(METRICS))
    rows, runs = _samples(opts, con)
    if not rows:
        raise GptError("nothing to compare: the traces hold no preemption (no preempt_request marker)",
                       "record while the controller preempts (gpreempt-trace preempt, or gpreempt-trace synth for a model)")
    groups: dict[str, dict] = {}
    for grp, v, run_id in rows:
        g = groups.setdefault("(none)" if grp is None else str(grp), {"v": [], "missing": 0, "runs": set()})
        g["runs"].add(run_id)
        if v is None:
            g["missing"] += 1
        else:
            g["v"].append(v)
    if len(groups) < 2:
        only = next(iter(groups))
        raise GptError(f"nothing to compare: every preemption has {opts.by} = {only}",
                       f"give traces of at least two values of {opts.by}, or another --by")
    names = sorted(groups)
    synthetic = any(runs[r][1] for g in groups.values() for r in g["runs"])
    samples = {n: np.asarray(groups[n]["v"], dtype=np.float64) for n in names}
    grows = []
    for n in names:
        s, g = samples[n], groups[n]
        lost = [runs[r][0] for r in g["runs"]]
        grows.append({
            opts.by: n, "metric": opts.metric, "runs": len(g["runs"]), "samples": len(s), "missing": g["missing"],
            "p50_ns": int(np.quantile(s, 0.5, method="inverted_cdf")) if len(s) else None,
            "p90_ns": int(np.quantile(s, 0.9, method="inverted_cdf")) if len(s) else None,
            "p99_ns": int(np.quantile(s, 0.99, method="inverted_cdf")) if len(s) else None,
            "max_ns": int(s.max()) if len(s) else None,
            "events_lost": None if any(x is None for x in lost) else int(sum(lost)),
            "synthetic": any(runs[r][1] for r in g["runs"]),
        })
    rng = np.random.default_rng(SEED)
    ref = names[0]
    drows, verdicts = [], []
    for n in names[1:]:
        a, b = samples[ref], samples[n]
        med = float(np.median(b) - np.median(a)) if len(a) and len(b) else float("nan")
        p99 = float(np.quantile(b, 0.99) - np.quantile(a, 0.99)) if len(a) and len(b) else float("nan")
        mlo, mhi = bootstrap_diff(a, b, 0.5, opts.resamples, rng)
        plo, phi = bootstrap_diff(a, b, 0.99, opts.resamples, rng)
        p = rank_test(a, b)
        few = min(len(a), len(b)) < MIN_SAMPLES
        ci_has_0 = not (mlo > 0 or mhi < 0)
        if few:
            v = f"cannot tell {ref} and {n} apart: too few samples ({ref} n={len(a)}, {n} n={len(b)}; need >= {MIN_SAMPLES} each)"
        elif ci_has_0 or not (p < ALPHA):
            v = (f"cannot tell {ref} and {n} apart: median difference {med / 1e3:+.1f} us, 95% CI [{mlo / 1e3:+.1f}, {mhi / 1e3:+.1f}] us, "
                 f"Mann-Whitney p={p:.3g}")
        else:
            word = "lower" if med < 0 else "higher"
            v = (f"{n} has {word} {opts.metric} than {ref}: median {med / 1e3:+.1f} us (95% CI [{mlo / 1e3:+.1f}, {mhi / 1e3:+.1f}]), "
                 f"p99 {p99 / 1e3:+.1f} us (95% CI [{plo / 1e3:+.1f}, {phi / 1e3:+.1f}]), Mann-Whitney p={p:.3g}")
        lost = [r for r in grows if r[opts.by] in (ref, n)]
        if any(r["events_lost"] is None or r["events_lost"] > 0 for r in lost):
            v += " (events lost: " + ", ".join(f"{r[opts.by]} {_lost_text(r['events_lost'])}" for r in lost) + ")"
        verdicts.append(v)
        nan = lambda x: None if x != x else round(x)  # noqa: E731
        drows.append({
            "reference": ref, "other": n, "metric": opts.metric, "n_reference": len(a), "n_other": len(b),
            "median_diff_ns": nan(med), "median_diff_ci_low_ns": nan(mlo), "median_diff_ci_high_ns": nan(mhi),
            "p99_diff_ns": nan(p99), "p99_diff_ci_low_ns": nan(plo), "p99_diff_ci_high_ns": nan(phi),
            "mann_whitney_p": None if p != p else p, "verdict": v,
        })
    verdict = "; ".join(verdicts)
    if synthetic:
        verdict = "[SYNTHETIC DATA] " + verdict
    return CompareResult(pa.Table.from_pylist(grows), pa.Table.from_pylist(drows), verdict, synthetic, samples)
