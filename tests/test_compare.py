"""`compare`: distributions side by side, bootstrap CIs, rank test, verdict; bad input is one line."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from testing.traces import KFD_FUNCS, P2_EVENTS, P2_MARKERS, two_runs, write_trace

from gpreempt_trace import api, synthetic
from gpreempt_trace.cli.main import main
from gpreempt_trace.errors import GptError
from gpreempt_trace.report.compare import bootstrap_diff, rank_test


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    d = tmp_path_factory.mktemp("ab")
    return [str(synthetic.generate(d / "a", "A", 3000, 1)), str(synthetic.generate(d / "b", "B", 3000, 2))]


def test_scheme_b_beats_a_on_the_model(ab):
    res = api.compare(ab)
    g = {r["scheme"]: r for r in res.groups.to_pylist()}
    assert g["A"]["samples"] > 50 and g["B"]["samples"] > 50 and g["A"]["synthetic"] and g["B"]["events_lost"] == 0
    d = res.diffs.to_pylist()[0]
    assert (d["reference"], d["other"]) == ("A", "B")
    assert d["median_diff_ci_low_ns"] <= d["median_diff_ns"] <= d["median_diff_ci_high_ns"] < 0
    assert d["mann_whitney_p"] < 1e-6
    assert res.verdict.startswith("[SYNTHETIC DATA] B has lower preempt_latency_ns than A: median -")


def test_same_model_twice_cannot_tell_apart(tmp_path):
    a = synthetic.generate(tmp_path / "x", "A", 3000, 11, labels={"build": "x"})
    b = synthetic.generate(tmp_path / "y", "A", 3000, 12, labels={"build": "y"})
    res = api.compare([str(a), str(b)], by="build")
    assert "cannot tell x and y apart" in res.verdict
    res = CliRunner().invoke(main, ["compare", str(a), str(b), "--by", "build"])
    assert res.exit_code == 0 and "cannot tell x and y apart" in res.output.splitlines()[-1]


def test_one_sample_is_a_result_not_an_error(tmp_path, ab):
    one = write_trace(tmp_path / "p2", "p2", P2_EVENTS, P2_MARKERS, funcs=KFD_FUNCS)  # scheme B, one preemption, loss unknown
    res = api.compare([ab[0], str(one)])
    assert "too few samples (A n=" in res.verdict and "B n=1" in res.verdict
    assert "events lost: A 0, B unknown" in res.verdict


def test_stats_helpers_on_known_samples():
    import numpy as np

    rng = np.random.default_rng(0)
    lo, hi = bootstrap_diff(np.arange(100.0), np.arange(100.0) + 50, 0.5, 500, rng)
    assert lo <= 50 <= hi
    assert rank_test(np.arange(10.0), np.arange(10.0) + 100) < 0.001


def test_nothing_to_compare_is_an_error(tmp_path, ab):
    runs = [str(p) for p in two_runs(tmp_path)]  # labelled model=a, model=b
    with pytest.raises(GptError, match="nothing to compare: every preemption has scheme = A"):
        api.compare([ab[0]])
    none = write_trace(tmp_path / "n", "n", [], [])
    res = CliRunner().invoke(main, ["compare", str(none)])
    assert res.exit_code == 1 and res.output.strip() == (
        "Error: nothing to compare: the traces hold no preemption (no preempt_request marker): "
        "record while the controller preempts (gpreempt-trace preempt, or gpreempt-trace synth for a model)")
    res = CliRunner().invoke(main, ["compare", *runs, "--by", "nosuchlabel"])
    assert res.exit_code == 1 and "no trace has a label 'nosuchlabel'" in res.output and "model" in res.output


def test_newer_format_and_corrupt_segment_are_one_line(tmp_path, ab):
    new = synthetic.generate(tmp_path / "new", "B", 1500, 3)
    meta = json.loads((new / "meta.json").read_text())
    meta["version"] = 99
    (new / "meta.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(main, ["compare", ab[0], str(new)])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "format v99" in res.output
    bad = synthetic.generate(tmp_path / "bad", "B", 1500, 4)
    (bad / "events" / "seg-999999.parquet").write_bytes(b"garbage")
    pq.write_table(pa.table({"ts_ns": ["x"]}), bad / "markers" / "seg-999999.parquet")
    res = CliRunner().invoke(main, ["compare", ab[0], str(bad)])
    assert res.exit_code == 0
    warn = [x for x in res.output.splitlines() if x.startswith("warning:")]
    assert len(warn) == 2 and all("seg-999999.parquet" in w for w in warn)


def test_the_verdict_does_not_depend_on_the_row_order_of_the_connection(ab):
    """The report passes its own connection (timings materialized, in any physical order): the samples
    are sorted before the seeded bootstrap, so the CIs are those of a fresh connection."""
    from gpreempt_trace.report.compare import CompareOptions, compare
    from gpreempt_trace.sql import query

    fresh = compare(CompareOptions(list(ab)))
    con = query.connect(list(ab))
    query.load_module(con, query.resolve("preempt.preemption"), {"scheme": "%"})
    con.execute("CREATE TEMP TABLE shuffled AS SELECT * FROM preempt_preemption_timings ORDER BY hash(seq, request_ts_ns)")
    con.execute("CREATE OR REPLACE VIEW preempt_preemption_timings AS SELECT * FROM temp.shuffled")
    other = compare(CompareOptions(list(ab)), con)
    assert other.verdict == fresh.verdict and other.diffs.to_pylist() == fresh.diffs.to_pylist()
    assert other.groups.to_pylist() == fresh.groups.to_pylist()
