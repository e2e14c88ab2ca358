"""`demo` end to end on this machine: exp01 on the embedded capture, a real eBPF recording of the
replayed KFD calls (needs root + BPF, as in CI), and the report."""
import os

import pytest
from click.testing import CliRunner

from gpreempt_trace import api
from gpreempt_trace.cli import main

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the recording step needs root (BPF)")


@needs_root
def test_demo_runs_everything(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "4. one MQD -> HQDs: yes: every compute queue has 4 MQD copies and is active on 4 HQDs on 4 XCCs" in res.output
    assert ", 0 lost ->" in res.output
    rows = {r["tgid"]: r for r in api.query("ioctl.queue_requests", [str(out / "record")]).to_pylist()}
    creates = sorted((r["create_calls"], dict(r["create_types"] or [])) for r in rows.values() if r["create_calls"])
    # the replay: online 2 AQL compute + 1 SDMA, offline 4 compute + 1 SDMA
    assert creates == [(3, {"compute_aql": 2, "sdma": 1}), (5, {"compute": 4, "sdma": 1})]
    ctl = [r for r in rows.values() if r["suspend_calls"]]
    assert len(ctl) == 1 and ctl[0]["suspend_calls"] == 20 and ctl[0]["resume_calls"] == 20
    text = (out / "report.md").read_text()
    assert "## Queue requests per process (ioctl path)" in text and "## Queue inventory (debugfs)" in text
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    # a second run replaces its own folder, but never a folder it did not make
    assert CliRunner().invoke(main, ["demo", "-o", str(out), "--no-record"]).exit_code == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    res = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "mine")])
    assert res.exit_code == 1 and "was not made by the demo" in res.output
    assert (tmp_path / "mine" / "keep.txt").exists()
