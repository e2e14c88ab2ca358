"""`report`: the Markdown summary is built from the modules over the fixture traces."""
from click.testing import CliRunner
from tracefixtures import two_runs

from gpreempt_trace import api
from gpreempt_trace.cli import main


def test_report_sections_and_numbers(tmp_path):
    runs = [str(p) for p in two_runs(tmp_path)]
    text = api.report(runs)
    assert text.startswith("# gpreempt-trace report\n")
    assert "| r1 | model=a |" in text and "| r2 | model=b |" in text
    for title in ("## What fired", "## Queues per process", "## KFD ioctls", "## Preemption latency", "## Collateral preemption"):
        assert title in text
    # the preempt latency row of scheme A: 1 request, p50 = 50 ns (150 - 100)
    assert any(line.split()[:7] == ["r1", "A", "preempt", "1", "0", "50", "50"] for line in text.splitlines())
    assert "## Queue inventory" not in text  # no snapshots in these traces: the section is left out


def test_report_cli_writes_file_and_plot(tmp_path):
    runs = [str(p) for p in two_runs(tmp_path)]
    res = CliRunner().invoke(main, ["report", *runs, "--out", str(tmp_path / "r.md"), "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.md").read_text().startswith("# gpreempt-trace report")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
