"""The KFD/HWS trace generator: deterministic per seed, and what the queries compute equals its ground truth."""
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from gpreempt_trace import api, synthetic
from gpreempt_trace.cli.main import main
from gpreempt_trace.synthetic.model_trace import ground_truth

TRUTH_COLS = ["run_id", "seq", "scheme", "target_tgid", "label", "gpu_id", "queue_ids", "request_ts_ns",
              "preempt_latency_ns", "preempt_call_ns", "resume_latency_ns", "suspended_ns"]


def _rows(path, table):
    return pq.read_table(list((path / table).glob("seg-*.parquet"))).sort_by([("ts_ns", "ascending")]).to_pylist()


def test_same_seed_same_trace_other_seed_other_trace(tmp_path):
    a = synthetic.generate(tmp_path / "a", "A", 3000, 7)
    b = synthetic.generate(tmp_path / "b", "A", 3000, 7)
    c = synthetic.generate(tmp_path / "c", "A", 3000, 8)
    assert _rows(a, "events") == _rows(b, "events") and _rows(a, "markers") == _rows(b, "markers")
    assert json.loads((a / "meta.json").read_text()) == json.loads((b / "meta.json").read_text())
    assert _rows(a, "events") != _rows(c, "events")


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_exact_event_count_and_meta(tmp_path, scheme):
    t = synthetic.generate(tmp_path / "t", scheme, 2500, 1)
    meta = json.loads((t / "meta.json").read_text())
    assert meta["synthetic"] is True and meta["counters"]["events_written"] == 2500 and meta["counters"]["events_lost"] == 0
    assert meta["labels"]["scheme"] == scheme and meta["synthetic_model"]["compute_queues"] == 5
    assert api.connect([str(t)]).sql("select count(*) from events").fetchall() == [(2500,)]


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_preemption_query_equals_ground_truth(tmp_path, scheme):
    t = synthetic.generate(tmp_path / "t", scheme, 4000, 3)
    got = api.query("preempt.preemption", [str(t)]).select(TRUTH_COLS).to_pylist()
    truth = ground_truth(t, "preemption").to_pylist()
    assert len(truth) > 100 and got == truth


def test_lifecycle_and_counts_equal_ground_truth(tmp_path):
    t = synthetic.generate(tmp_path / "t", "A", 6000, 4, cycles_per_epoch=50)
    got = api.query("queues.lifecycle", [str(t)]).select(
        ["run_id", "tgid", "label", "gpu_id", "queue_id", "type", "created_ts_ns", "destroyed_ts_ns"]).to_pylist()
    truth = sorted(ground_truth(t, "queues").to_pylist(), key=lambda r: (r["tgid"], r["gpu_id"], r["queue_id"], r["created_ts_ns"]))
    assert [tuple(r.values()) for r in got] == [tuple(r.values()) for r in truth]
    counts = {r["label"]: r for r in api.query("queues.counts", [str(t)]).to_pylist()}
    offline = counts["offline-resnet"]  # a new offline process per 50 preemptions, 5 compute + 2 sdma each
    assert offline["processes"] > 1 and offline["compute_queues"] == 5 * offline["processes"]
    assert (offline["min_per_process"], offline["max_per_process"], offline["identical_across_runs"]) == (7, 7, True)


def test_lost_events_give_null_sides_not_neighbours(tmp_path):
    t = synthetic.generate(tmp_path / "t", "B", 5000, 5, lost=0.2)
    meta = json.loads((t / "meta.json").read_text())
    lost = meta["counters"]["events_lost"]
    assert lost > 0 and api.connect([str(t)]).sql("select count(*) from events").fetchall() == [(5000 - lost,)]
    got = api.query("preempt.preemption", [str(t)]).select(TRUTH_COLS).to_pylist()
    truth = ground_truth(t, "preemption").to_pylist()
    assert got == truth and any(r["preempt_latency_ns"] is None for r in truth)


def test_synth_cli(tmp_path):
    res = CliRunner().invoke(main, ["synth", "--scheme", "B", "--events", "1500", "--seed", "2", "-o", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "ground_truth" / "preemption.parquet").exists()
    res = CliRunner().invoke(main, ["synth", "--scheme", "A", "--events", "10", "-o", str(tmp_path / "x")])
    assert res.exit_code == 1 and "too small" in res.output and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(main, ["synth", "--scheme", "C", "-o", str(tmp_path / "y")])
    assert res.exit_code == 2
