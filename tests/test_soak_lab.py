"""The soak's controller parts against the REAL KFD: Debian 6.12.117 in the lab (no GPU; scheme A with
made-up ids, scheme B with --queues all where the patched module is built), tests/testing/lab_soak.py in
the guest. The figures of the long runs: `make soak-lab` (docs/controller.md, Soak)."""
from __future__ import annotations

import json

from gpreempt_trace.lab.scheme_b import built, load_amdgpu


def test_soak_cycles_and_kills_on_the_real_6_12_kfd(lab612):
    res = lab612.run(load_amdgpu() + ".venv/bin/python tests/testing/lab_soak.py",
                     timeout_s=1500, modules=(), cpus=2)
    assert res.rc == 0, res.output[-4000:]
    line = next((ln for ln in res.output.splitlines() if ln.startswith("RESULT ")), None)
    assert line, res.output[-4000:]
    r = json.loads(line[len("RESULT "):])
    assert r["schemes"] == (["A", "B"] if built() else ["A"])
    for s in r["schemes"]:
        c = r[f"controller_{s}"]
        assert (c["answered"], c["ok"]) == (40, 40) and len(c["fds"]) == 1 and len(c["threads"]) == 1, c
        assert c["held_at_end"] is None and c["stop_rc"] == 0 and c["dmesg_errors"] == [], c
        for run in r[f"sigkill_{s}"] + r[f"sigstop_{s}"]:
            # the target runs untraced and a new controller ENABLEs at once (KFD dropped the old session)
            assert run["target_runs"] is True and run["new_attach"] is True and run["queues_seen"] == 0, run
        [stop] = r[f"sigstop_{s}"]
        assert stop["resumed_by"].startswith("watchdog SIGKILLed it"), stop
        if s == "B":
            assert stop["resumed_by"].endswith("watchdog RESUME_QUEUES(all): ok"), stop
