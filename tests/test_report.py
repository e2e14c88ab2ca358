"""`report`: HTML with plots or sentences (never an empty plot), metadata up front; the Markdown summary."""
import json
import re

from click.testing import CliRunner
from testing.traces import set_counters, two_runs

from gpreempt_trace import api, synthetic
from gpreempt_trace.cli.main import main


def test_report_sections_and_numbers(tmp_path):
    runs = [str(p) for p in two_runs(tmp_path)]
    text = api.report(runs)
    assert text.startswith("# gpreempt-trace report\n")
    assert "| r1 | model=a |" in text and "| r2 | model=b |" in text
    for title in ("## What fired", "## Queues per process", "## KFD ioctls", "## Controller call times", "## Collateral preemption"):
        assert title in text
    # the preempt call row of scheme A (preempt.call_stats): 1 request, p50 = 50 ns (done 150 - request 100)
    assert any(line.split()[:7] == ["r1", "A", "preempt", "1", "0", "50", "50"] for line in text.splitlines())
    assert "## Queue inventory" not in text  # no snapshots in these traces: the section is left out


def test_html_report_on_model_traces_has_every_plot(tmp_path):
    a = synthetic.generate(tmp_path / "a", "A", 3000, 1)
    b = synthetic.generate(tmp_path / "b", "B", 3000, 2, lost=0.01)
    res = CliRunner().invoke(main, ["report", str(a), str(b), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "out" / "index.html").read_text()
    assert len(re.findall(r"<img alt='(latency_cdf|timeline|queue_counts|collateral)\.png' src='data:image/png;base64,", page)) == 4
    assert "class='missing'" not in page
    assert page.count("SYNTHETIC TRACE") == 2 and "B has lower preempt_latency_ns than A" in page
    lost = json.loads(b.joinpath("meta.json").read_text())["counters"]["events_lost"]
    assert isinstance(lost, int) and lost > 0  # the generator dropped 1 % of the events and counted them
    assert f"This run lost {lost:,} events" in page and f"synthetic-B-2: {lost}" in page  # loss next to the plots it touches
    for png in ("latency_cdf", "timeline", "queue_counts", "collateral"):
        assert (tmp_path / "out" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_report_without_data_says_what_is_missing(tmp_path):
    r1, r2 = two_runs(tmp_path)
    set_counters(r2, events_written=None, events_lost=None)  # a killed recorder's run
    out = api.report([str(r1), str(r2)], str(tmp_path / "out"))
    page = out.read_text()
    # preempt requests exist but no kernel unmap on their GPU (no gpu_id): sentences instead of the latency and timeline plots
    assert "none matched a kernel queues_unmap/queues_map" in page and "there is no timeline to draw" in page
    assert "<img alt='latency_cdf.png'" not in page and "<img alt='timeline.png'" not in page
    assert "<img alt='queue_counts.png'" in page  # queue creations exist
    assert "1 (counted from the segments: meta.json does not know)" in page and "This run lost an unknown number of events" in page
    assert "synthetic</th><td class='l'>no (recorded)" not in page  # fixtures are written as synthetic


def test_report_bad_options_are_usage_errors(tmp_path):
    runs = [str(p) for p in two_runs(tmp_path)]
    for bad in ("-5", "99999999999999999999"):
        res = CliRunner().invoke(main, ["report", *runs, "--max-rows", bad])
        assert res.exit_code == 2 and "--max-rows" in res.output


def test_report_newer_format_is_one_line(tmp_path):
    r1, _ = two_runs(tmp_path)
    meta = json.loads((r1 / "meta.json").read_text())
    meta["version"] = 2
    (r1 / "meta.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(main, ["report", str(r1), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "trace format v2, this tool reads up to v1" in res.output


def test_a_run_without_recorder_is_not_called_lossy(tmp_path):
    from gpreempt_trace.trace import markers, directory as trace

    tw = trace.TraceWriter.create(tmp_path / "snap")  # what `snapshot` alone writes: no recorder, no kernel events
    with markers.MarkerWriter(str(tmp_path / "snap"), "snapshot") as m:
        m.add("snapshot_phase", label="baseline")
    tw.close()
    page = api.report([str(tmp_path / "snap")], str(tmp_path / "out")).read_text()
    assert "No recorder ran in this run" in page and "none (no recorder ran)" in page
    assert "lost an unknown number of events" not in page


def test_markdown_shows_first_rows_and_the_whole_count(tmp_path):
    a = synthetic.generate(tmp_path / "a", "A", 3000, 1)
    con = api.connect([str(a)])
    from gpreempt_trace.sql import query

    query.load_module(con, query.resolve("preempt.collateral"))
    per = con.sql("SELECT tgid, collateral_unmaps FROM preempt_collateral_per_process ORDER BY collateral_unmaps DESC, run_id, tgid").fetchall()
    assert len(per) > 2 and per[0][1] > per[-1][1]
    text = api.report([str(a)], max_rows=2)
    sec = text.split("## Collateral preemption (unmaps that hit other processes), per process\n")[1].split("```text\n")[1].split("```")[0]
    rows = [line.split() for line in sec.splitlines()[2:4]]
    assert [(int(r[1]), int(r[4])) for r in rows] == per[:2]  # the most-hit processes first
    assert f"... {len(per) - 2} more rows (use --format csv or --out)\n({len(per)} rows)" in sec
