"""`report -o` over a 10 M-event model trace against its floor: one plain scan through the same CLI.

Both run as `gpreempt-trace` commands in a child process each (start-up, import, DuckDB connect and
exit included), interleaved, GPT_BENCH_REPS times (3; medians compared). The floor is `query` of an
ad-hoc file over `events` (count, sum and a distinct count: every row read once). Each child's CPU time
(user + system, os.wait4) is printed too: on a loaded VM the wall-clock ratio moves with the load, the
CPU ratio much less. Peak RSS is each child's own VmHWM (written by the child at exit), not ru_maxrss
(which keeps the parent's RSS at fork).

Targets (issue 23 item 3): the report within 10x the floor's time, under 1 GiB peak RSS. Three
figures per run: the first report over the trace (it computes the shared views from the events and
keeps them as the trace's derived rows, sql/derived.py), `derive` alone (the same rows, what a finished
recording pays once), and the report over the derived rows (every later output). The trace is
the one bench_query.py uses (`gpreempt-trace synth --scheme A --seed 1`, cached in
~/.cache/gpreempt-trace/bench/; GPT_BENCH_TRACE names another, GPT_BENCH_EVENTS another size).
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVENTS = int(os.environ.get("GPT_BENCH_EVENTS", 10_000_000))
REPS = int(os.environ.get("GPT_BENCH_REPS", 3))
FLOOR_SQL = "SELECT count(*) AS rows, sum(ts_ns) AS ts_sum, count(DISTINCT tgid) AS tgids FROM events;\n"
TIME_TARGET = 10.0
RSS_TARGET_MIB = 1024

# the CLI as its console script runs it, then the process's own peak RSS (kB) into $GPT_BENCH_HWM
_CLI = ("import os, sys\n"
        "from gpreempt_trace.cli.main import main\n"
        "try:\n    main(sys.argv[1:], prog_name='gpreempt-trace')\n"
        "finally:\n"
        "    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "    open(os.environ['GPT_BENCH_HWM'], 'w').write(hwm)\n")


def cli(args: list[str], tmp: Path) -> tuple[float, float, float]:
    """Run `gpreempt-trace ARGS` in a child: (wall seconds, CPU seconds, peak RSS MiB); a failure stops the bench."""
    hwm = tmp / "hwm"
    env = dict(os.environ, GPT_BENCH_HWM=str(hwm))
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", _CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)  # this child's own CPU time (user + system, all its threads)
    t = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"gpreempt-trace {' '.join(args)} failed ({p.returncode}): {err.strip()[-500:]}")
    return t, ru.ru_utime + ru.ru_stime, int(hwm.read_text()) / 1024


def trace_path() -> Path:
    """The 10 M-event scheme-A model trace (made once with `gpreempt-trace synth`)."""
    cache = Path.home() / ".cache" / "gpreempt-trace" / "bench" / f"synth-v3-A-1-{EVENTS}"  # bench_query's (v3: row groups by event family), same generator and seed
    trace = Path(os.environ.get("GPT_BENCH_TRACE") or cache)
    if not (trace / "ground_truth" / "queues.parquet").exists():
        shutil.rmtree(trace, ignore_errors=True)
        trace.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gpreempt_trace.cli.main", "synth", "--scheme", "A", "--seed", "1",
                        "--events", str(EVENTS), "-o", str(trace)], check=True, stdout=subprocess.DEVNULL)
        print(f"synth: {EVENTS:,} events (scheme A model) in {time.perf_counter() - t0:.1f} s")
    return trace


def _ratio(name: str, runs: list, floor: list, target: bool = True) -> str:
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    w, f, rss = med(runs, 0), med(floor, 0), max(x[2] for x in runs)
    verdict = f" (target <= {TIME_TARGET:g}x: {'met' if w <= TIME_TARGET * f else 'NOT met'})" if target else ""
    return (f"{name}: {w:.2f} s median of {REPS} ({', '.join(f'{x[0]:.2f}' for x in runs)}) = {w / f:.1f}x the floor"
            f"{verdict}; CPU {med(runs, 1):.1f} s = "
            f"{med(runs, 1) / med(floor, 1):.1f}x the floor's; peak RSS {rss:.0f} MiB (target < {RSS_TARGET_MIB} MiB: "
            f"{'met' if rss < RSS_TARGET_MIB else 'NOT met'})")


def main() -> int:
    trace = trace_path()
    tmp = Path(tempfile.mkdtemp(prefix="gpt-bench-r-"))
    derived_dir = trace / "derived"
    try:
        floor_sql = tmp / "floor.sql"
        floor_sql.write_text(FLOOR_SQL)
        # per run, interleaved (the VM's speed moves between runs): the floor; the first report, which
        # computes the shared views from the events and keeps them as derived rows; `derive` alone (what a
        # finished recording pays once); the report over the derived rows (every later output)
        floor, cold, derive, warm = [], [], [], []  # (wall s, CPU s, peak RSS MiB) per run
        for i in range(REPS):
            floor.append(cli(["query", str(floor_sql), str(trace)], tmp))
            shutil.rmtree(derived_dir, ignore_errors=True)
            cold.append(cli(["report", str(trace), "-o", str(tmp / f"cold{i}")], tmp))
            shutil.rmtree(derived_dir, ignore_errors=True)
            derive.append(cli(["derive", str(trace)], tmp))
            warm.append(cli(["report", str(trace), "-o", str(tmp / f"warm{i}")], tmp))
        f = statistics.median(r[0] for r in floor)
        print(f"trace: {trace}")
        print(f"floor, `query` of count/sum/distinct over events (CLI, start-up incl.): {f:.2f} s median of {REPS} "
              f"({', '.join(f'{x[0]:.2f}' for x in floor)}), CPU {statistics.median(r[1] for r in floor):.2f} s, "
              f"peak RSS {max(x[2] for x in floor):.0f} MiB")
        print(_ratio("report -o, first over the trace (views from the events, derived rows kept)", cold, floor))
        print(_ratio("derive alone (a finished trace's derived rows, paid once; no target)", derive, floor, target=False))
        print(_ratio("report -o over the derived rows", warm, floor))
        same = all((tmp / f"cold{i}" / "index.html").read_text() == (tmp / f"warm{i}" / "index.html").read_text() for i in range(REPS))
        print(f"the two reports identical (index.html): {same}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        return 0 if same else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(derived_dir, ignore_errors=True)  # bench_query reads the trace from its events


if __name__ == "__main__":
    sys.exit(main())
