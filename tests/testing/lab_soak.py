"""Run inside the 6.12 lab guest (real KFD, no GPU): a few soak cycles and runs of each scheme the module
offers (scheme B where the patched amdgpu.ko is loaded), as one line `RESULT {json}`. The controller cycles
run `preempt serve` as a new interpreter; the kill runs fork it from here, as `python -m bench.soak` does.

    python tests/testing/lab_soak.py OUTDIR
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import soak  # noqa: E402


def main() -> int:
    work = Path("/tmp/soak")  # guest-local (sockets, logs)
    res: dict = {"schemes": ["A", "B"] if soak.scheme_b_loaded() else ["A"]}
    for s in res["schemes"]:
        c = soak.controller_soak(work / f"ctl-{s}", kfd=True, scheme=s, cycles=20)
        res[f"controller_{s}"] = {"answered": c.answered, "ok": c.ok, "fds": sorted({u.fds for u in c.first + c.last}),
                                  "threads": sorted({u.threads for u in c.first + c.last}), "held_at_end": c.held_at_end,
                                  "stop_rc": c.stop_rc, "dmesg_errors": c.dmesg_errors}
        soak.FORK = True  # the kill runs as bench/soak runs them: controller and target forked from here
        soak.preload()
        try:
            res[f"sigkill_{s}"] = [asdict(r) for r in soak.controller_sigkill_runs(work / f"k-{s}", True, s, 1, 24)]
            res[f"sigstop_{s}"] = [asdict(r) for r in soak.controller_sigstop_runs(work / f"s-{s}", True, s, 1, 24, 1000)]
        finally:
            soak.FORK = False
    print("RESULT " + json.dumps(res, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
