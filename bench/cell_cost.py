"""Where the time of one `experiment ab` cell goes (issue 24: 100 repeats in the 6.12 lab).

    python -m bench.cell_cost [--schemes none,A,B] [--starts N] [--no-cells]   # anywhere; in the lab guest:
    python -m bench.soak --lab cellcost                                       # (boots the guest, runs this)

Prints, per process kind a cell starts (cell driver, offline and online workload, `preempt serve`, its
watchdog), the wall and CPU time of a new interpreter that only does that process's imports, each with the
package's bytecode as it is (no .pyc where PYTHONDONTWRITEBYTECODE=1 everywhere: compiled on every start)
with no .pyc of the package and with every .pyc at hand (PYTHONPYCACHEPREFIX on a scratch folder filled
by a first start, without and with the package's); then one
cell per scheme run in this process (cell.Cell, the code `experiment ab` runs) with a timestamp at each
step: offline start -> ready, controller start -> socket, online start -> exit, and each stop.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PY = sys.executable

# what each process of a cell imports before it does its work (read from the code: cell.py's _cli argv
# and the commands' imports; the watchdog is started as `python -m gpreempt_trace.control.watchdog`)
STARTS = {
    "bare interpreter (-S)": ["-S", "-c", "pass"],
    "interpreter + site (editable finder)": ["-c", "pass"],
    "cell driver (experiment.cell)": ["-c", "import gpreempt_trace.experiment.cell"],
    "workload (cli main + commands.workload + numpy backend)": [
        "-c", "import gpreempt_trace.cli.main, gpreempt_trace.cli.commands.workload, numpy, gpreempt_trace.trace.markers, "
              "gpreempt_trace.trace.directory, gpreempt_trace.trace.processes"],
    "preempt serve (cli main + commands.preempt + control.service)": [
        "-c", "import gpreempt_trace.cli.main, gpreempt_trace.cli.commands.preempt, gpreempt_trace.control.service"],
    "watchdog (control.watchdog)": ["-c", "import gpreempt_trace.control.watchdog"],
    "numpy alone": ["-c", "import numpy"],
    "pyarrow + parquet alone": ["-c", "import pyarrow, pyarrow.parquet"],
}


def timed(argv: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s of the child, exit status)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    p = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        print(f"  ! {' '.join(argv[-1:])[:80]}: exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), p.returncode


def starts(n: int) -> dict:
    """Each start kind in three bytecode states: as it is (whatever __pycache__ the host has), with no .pyc of
    the package (a PYTHONPYCACHEPREFIX holding every other module's .pyc) and with every .pyc (the same
    prefix, the package's included). The prefix lives on the guest's tmpfs; sources are stat'ed where they are."""
    import shutil

    base = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    full, nopkg = tempfile.mkdtemp(prefix="gpt-pyc-"), tempfile.mkdtemp(prefix="gpt-pyc-nopkg-")
    env_full = {**base, "PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": full}
    t = time.monotonic()
    for argv in STARTS.values():  # fill the prefix: every module each start imports, compiled once
        timed([PY, *argv], env_full)
    shutil.rmtree(nopkg)
    shutil.copytree(full, nopkg)
    pkg = Path(nopkg + str(REPO)) / "gpreempt_trace"  # the prefix mirrors the sources' absolute paths
    shutil.rmtree(pkg)
    print(f"(prefix filled in {time.monotonic() - t:.0f} s)")
    modes = {"as is": base, "no pkg .pyc": {**base, "PYTHONPYCACHEPREFIX": nopkg}, "all .pyc": {**base, "PYTHONPYCACHEPREFIX": full}}
    out = {}
    print(f"interpreter starts ({PY}, {n} each; PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE')!r}), "
          f"wall / CPU s, median; load {os.getloadavg()[0]:.2f}")
    for name, argv in STARTS.items():
        row = {}
        for mode, env in modes.items():
            xs = sorted(timed([PY, *argv], env)[:2] for _ in range(n))
            row[mode] = xs[len(xs) // 2]
        out[name] = row
        print(f"  {name:<64} " + "  ".join(f"{m}: {w:6.2f} / {c:6.2f}" for m, (w, c) in row.items()), flush=True)
    return out


def importtime(names: list[str]) -> dict:
    """-X importtime of the given start kinds (bytecode as it is): the whole import, the package's own
    modules (their self time: compile + run), and each third-party/stdlib root package (cumulative)."""
    out = {}
    for name in names:
        p = subprocess.run([PY, "-X", "importtime", *STARTS[name]], cwd=REPO, capture_output=True, text=True)
        own, roots, total = 0, {}, 0
        for ln in p.stderr.splitlines():
            parts = ln.split("|")
            if not ln.startswith("import time:") or len(parts) != 3:
                continue
            try:
                self_us, cum = int(parts[0].split(":")[1]), int(parts[1])
            except ValueError:
                continue
            mod = parts[2].strip()
            if len(parts[2]) - len(parts[2].lstrip()) == 1:
                total += cum
            if mod.startswith("gpreempt_trace"):
                own += self_us
            elif "." not in mod and not mod.startswith("_"):
                roots[mod] = roots.get(mod, 0) + cum
        big = sorted(((c, m) for m, c in roots.items()), reverse=True)[:6]
        out[name] = {"total_s": total / 1e6, "package_self_s": own / 1e6, "roots": big}
        print(f"  -X importtime {name}: {total / 1e6:.2f} s; package modules' own {own / 1e6:.2f} s; "
              + ", ".join(f"{m} {c / 1e6:.2f}" for c, m in big))
    return out


def cell(scheme: str, work: Path, kfd: bool) -> dict:
    """One cell in this process with a timestamp at each step (the cell's own processes are real)."""
    from gpreempt_trace.experiment import cell as C
    from gpreempt_trace.trace.directory import TraceWriter

    steps: list[tuple[float, str]] = []
    t0 = time.monotonic()
    mark = lambda what: steps.append((time.monotonic() - t0, what))  # noqa: E731

    class Timed(C.Cell):
        def _start(self, name, argv):
            mark(f"start {name}")
            return super()._start(name, argv)

        def _wait_for(self, what, ready, proc_name, timeout_s):
            super()._wait_for(what, ready, proc_name, timeout_s)
            mark(f"{what} ready")

        def _stop(self, name):
            if name in self.procs:
                super()._stop(name)
                mark(f"{name} stopped (exit {self.res.exit_codes.get(name)})")

    trace = work / f"{scheme}-cell"
    tw = TraceWriter.create(trace, {"scheme": scheme, "experiment": "cellcost"})
    spec = C.CellSpec(trace=str(trace), scheme=scheme, online="gemm", offline="gemm", duration_s=1.0, rate_hz=5.0,
                      batch=1, device="cpu" if kfd else "auto", threads=1, backend="numpy", queues="all",
                      unchecked_ids="1,7" if kfd else None, open_kfd=kfd, warmup_timeout_s=1200.0)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        res = Timed(spec).run()
    finally:
        tw.close()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    prev = 0.0
    print(f"cell {scheme}: {wall:.1f} s wall, {cpu:.1f} s CPU of its processes, ok={res.ok} {res.errors or ''}; "
          f"load {os.getloadavg()[0]:.2f}")
    for t, what in steps:
        print(f"  +{t - prev:6.2f} s -> {t:6.2f} s  {what}")
        prev = t
    print(f"  online: {res.online_line}")
    return {"scheme": scheme, "wall_s": wall, "cpu_s": cpu, "ok": res.ok, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cell_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--schemes", default="none,A,B", help="cells to run, among none, A, B (A/B need /dev/kfd)")
    ap.add_argument("--starts", type=int, default=3, help="interpreter starts per kind and mode (0: none)")
    ap.add_argument("--no-cells", action="store_true")
    a = ap.parse_args(argv)
    kfd = os.path.exists("/dev/kfd")
    out = {"kernel": os.uname().release, "kfd": kfd}
    if a.starts:
        out["starts"] = starts(a.starts)
        out["importtime"] = importtime([k for k in STARTS if "alone" not in k and "bare" not in k])
    if not a.no_cells:
        work = Path(tempfile.mkdtemp(prefix="gpt-cellcost-"))
        out["cells"] = []
        for s in [x for x in a.schemes.split(",") if x]:
            if s != "none" and not kfd:
                print(f"cell {s}: not run (no /dev/kfd)")
                continue
            if s == "B":
                from bench.soak import scheme_b_loaded

                if not scheme_b_loaded():
                    print("cell B: not run (the kernel/ series' ioctls are not in this kernel's amdgpu)")
                    continue
            out["cells"].append(cell(s, work, kfd))
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
