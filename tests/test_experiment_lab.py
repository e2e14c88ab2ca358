"""`experiment ab --lab` in the Debian 6.12 lab guest (real KFD 1.17, no GPU): the offline job opens
/dev/kfd and does RUNTIME_ENABLE, the controller is the real scheme-A service (made-up queue ids, the
KFD answers INVALID), the recorder records the real DBG_TRAP kfd_ioctl rows and queues_suspend /
queues_resume between the matching markers; every number is labelled environment=qemu-tcg. Scheme B
runs where `make lab-scheme-b` built the patched module, and is refused in one line where not."""
from __future__ import annotations

import pytest

from gpreempt_trace import api
from gpreempt_trace.contracts import uapi
from gpreempt_trace.errors import GptError
from gpreempt_trace.experiment import lab as lab_driver
from gpreempt_trace.experiment.ab import ABOptions
from gpreempt_trace.lab import scheme_b

pytestmark = pytest.mark.lab


def test_experiment_ab_in_the_6_12_lab(lab612, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "lab"
    lines: list[str] = []
    try:
        res = lab_driver.run(ABOptions(str(out), online="gemm", offline="gemm", schemes=("none", "A", "B"),
                                              backend="numpy", duration_s=5, rate_hz=2, batch=1), say=lines.append)
    except GptError as e:
        pytest.fail(f"{e.line()}\n" + "\n".join(lines[-60:]))
    text = "\n".join(lines)
    if scheme_b.built():  # make lab-scheme-b ran here: the guest loads the patched module and B runs
        assert f"guest| {scheme_b.PATCHED_LINE}" in lines and "guest| scheme B: runs" in lines, text
        assert sorted(p.name for p in res.traces) == ["A-1", "B-1", "none-1"], text
    else:  # Debian's module: B is refused in one line, the other cells run
        assert "guest| scheme B skipped: this kernel has no scheme B ioctls (ENOTTY: the kernel/ series is not applied)" in lines, text
        assert sorted(p.name for p in res.traces) == ["A-1", "none-1"], text
    for t in res.traces:
        assert api.read_meta(t)["labels"]["environment"] == "qemu-tcg"
    assert "environment qemu-tcg: software-path times under emulation, not hardware numbers" in text
    a = str(out / "ab" / "A-1")
    con = api.connect([a])
    offline = con.execute("SELECT tgid FROM markers WHERE kind = 'workload_start' AND label LIKE 'role=offline%'").fetchone()[0]
    # the offline job did RUNTIME_ENABLE on the real KFD (kfd_ioctl row, ret 0)
    assert con.execute("SELECT count(*) FROM events WHERE event = 'kfd_ioctl' AND ioctl_nr = ? AND ret = 0 AND tgid = ?",
                       [uapi.RUNTIME_ENABLE, offline]).fetchone()[0] >= 1
    marks = con.execute("SELECT kind, seq, ts_ns, label FROM markers WHERE source = 'controller' ORDER BY ts_ns").fetchall()
    pairs = {}
    for kind, seq, ts, label in marks:
        if kind.endswith(("_request", "_done")):
            pairs.setdefault((kind.split("_")[0], seq), {})[kind.split("_")[1]] = (ts, label)
    done = [(op, v["request"][0], v["done"][0]) for (op, _), v in pairs.items() if "request" in v and "done" in v and v["done"][1] == "ok"]
    assert {op for op, *_ in done} == {"preempt", "resume"}, marks
    rows = con.execute("SELECT ts_ns, event, dbg_op FROM events WHERE (event = 'kfd_ioctl' AND ioctl_nr = ?) "
                       "OR event IN ('queues_suspend', 'queues_resume') ORDER BY ts_ns", [uapi.DBG_TRAP]).fetchall()
    for op, t0, t1 in done:  # each controller call: its DBG_TRAP row and the kernel's queue row in between
        dbg_op, qev = (6, "queues_suspend") if op == "preempt" else (7, "queues_resume")
        inside = [r for r in rows if t0 <= r[0] <= t1]
        assert any(r[1] == "kfd_ioctl" and r[2] == dbg_op for r in inside) and any(r[1] == qev for r in inside), (op, inside)
    results = {r[0] for r in con.execute("SELECT label FROM markers WHERE kind = 'queue_result'").fetchall()}
    assert results == {"invalid"}  # ids 1 and 7 do not exist in a guest without a GPU
    summary = {r["scheme"]: r for r in res.summary}
    assert summary["A"]["preemptions"] >= 1 and summary["A"]["overlapped_requests"] >= 1
    assert summary["none"]["preemptions"] == 0 and summary["A"]["environment"] == "qemu-tcg"
    if scheme_b.built():
        assert summary["B"]["preemptions"] >= 1 and summary["B"]["environment"] == "qemu-tcg"
    assert (out / "report" / "index.html").exists()
