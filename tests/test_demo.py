"""`demo` end to end on this machine: every step runs (the recording needs root + BPF, as in CI), the
report has no empty plot, the verdict and index.html come last; a failing step fails the demo naming
the step; the output folder is only ever one the demo made."""
import os
import re

import pytest
from click.testing import CliRunner

from gpreempt_trace import api
from gpreempt_trace.cli.main import main
from gpreempt_trace.errors import GptError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the recording step needs root (BPF)")


@needs_root
def test_demo_runs_every_step_and_its_report_has_no_empty_plot(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "-o", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    steps = [line.split("]")[0] + "]" for line in lines if re.match(r"\[\d/7\] ", line)]
    assert steps == [f"[{i}/7]" for i in range(1, 8)]
    assert "skipped" not in res.output and "not possible" not in res.output
    assert "4. one MQD -> HQDs: yes: every compute queue has 4 MQD copies and is active on 4 HQDs on 4 XCCs" in res.output
    # the synthetic pair is labelled synthetic in the step title, each trace's meta, compare and the verdict
    assert any(line.startswith("[3/7] SYNTHETIC scheme A / scheme B pair") for line in lines)
    assert api.read_meta(out / "synthetic-A")["synthetic"] is True and api.read_meta(out / "synthetic-B")["synthetic"] is True
    assert lines[-2].startswith("verdict: [SYNTHETIC DATA] ")
    assert lines[-1] == f"report: {(out / 'report' / 'index.html').resolve()}"
    html = (out / "report" / "index.html").read_text()
    assert "class='missing'" not in html  # no plot replaced by a "what is missing" sentence
    assert sorted(re.findall(r"<img alt='([a-z_]+\.png)'", html)) == ["collateral.png", "latency_cdf.png", "queue_counts.png", "timeline.png"]
    # the recording comes before the report, and the report covers it and experiment 1 (its own section)
    assert any(line.startswith("[5/7] record: ") for line in lines)
    assert any(line.startswith("[6/7] report: index.html with plots over experiment 1, the synthetic pair and the recording") for line in lines)
    assert api.read_meta(out / "record")["run_id"] in html.replace("<wbr>", "") and "<h2>Online requests</h2>" in html
    assert "<h2>Experiment 1: queues per model, their ids, stability, MQD → HQD</h2>" in html
    assert "4 MQD copies and is active on 4 HQDs on 4 XCCs" in html
    assert (out / "synthetic-A.perfetto-trace").stat().st_size > 0
    # the recording: real eBPF ioctl path, nothing lost, the torch requests as markers in the same trace
    assert re.search(r"recorded \d+ events in \d+ segments, 0 lost ->", res.output)
    rows = {r["tgid"]: r for r in api.query("ioctl.queue_requests", [str(out / "record")]).to_pylist()}
    creates = sorted((r["create_calls"], dict(r["create_types"] or [])) for r in rows.values() if r["create_calls"])
    assert creates == [(3, {"compute_aql": 2, "sdma": 1}), (5, {"compute": 4, "sdma": 1})]
    con = api.connect([str(out / "record")])
    n = con.execute("SELECT count(*) FROM markers WHERE kind = 'request_end'").fetchone()[0]
    assert n >= 1 and f"{n} online torch requests as markers in the same trace" in res.output


def test_a_failing_step_fails_the_demo_naming_the_step(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise GptError("generator exploded", "fix it")

    monkeypatch.setattr(api, "synth", broken)
    res = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "d"), "--no-record"])
    assert res.exit_code == 1
    assert res.output.splitlines()[-1] == "Error: demo step synth failed: generator exploded: fix it"
    assert "[4/7]" not in res.output  # it stopped there
    assert (tmp_path / "d" / "exp01" / "meta.json").exists()  # what was done is kept


def test_demo_only_replaces_its_own_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    res = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "mine")])
    assert res.exit_code == 1 and "was not made by the demo" in res.output
    assert (tmp_path / "mine" / "keep.txt").exists()
