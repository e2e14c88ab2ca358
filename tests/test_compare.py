"""`compare`: runs side by side, and grouped by a label, on the hand-checkable fixture runs."""
from click.testing import CliRunner
from tracefixtures import two_runs

from gpreempt_trace import api
from gpreempt_trace.cli import main


def test_compare_runs(tmp_path):
    runs = [str(p) for p in two_runs(tmp_path)]
    rows = api.compare(runs).to_pylist()
    got = [(r["run_id"], r["events"], r["processes"], r["queues_created"], r["min_per_process"], r["max_per_process"],
            r["ioctl_errors"], r["preempt_p50_ns"], r["resume_p50_ns"]) for r in rows]
    assert got == [("r1", 10, 2, 3, 1, 2, 1, 50, 60), ("r2", 1, 1, 1, 1, 1, 0, None, None)]


def test_compare_by_label(tmp_path):
    runs = [str(p) for p in two_runs(tmp_path)]
    rows = api.compare(runs, by="model").to_pylist()
    assert [(r["label_value"], r["runs"], r["min_queues"], r["max_queues"]) for r in rows] == [("a", 1, 3, 3), ("b", 1, 1, 1)]
    res = CliRunner().invoke(main, ["compare", *runs, "--by", "model", "--format", "csv"])
    assert res.exit_code == 0 and res.output.splitlines()[1].startswith('"a",1,3,3')
