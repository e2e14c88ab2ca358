"""Experiment 1: the query modules and the four verdicts over known captures."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpreempt_trace import api
from gpreempt_trace.sql import query, lint as sql_lint
from gpreempt_trace.cli.main import main
from gpreempt_trace.debugfs import MI308X_SAMPLE
from gpreempt_trace.errors import GptError
from gpreempt_trace.debugfs.snapshot import Snapshotter
from gpreempt_trace.trace.directory import TraceWriter

FIX = Path(__file__).parent / "fixtures" / "debugfs"
MI300 = FIX / "v6.5-mi300-4xcc"


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = []
    for i in range(2):
        api.snapshot_import(str(root / f"r{i}"), [str(MI308X_SAMPLE)], {"model": "demo"})
        out.append(str(root / f"r{i}"))
    return out


def test_lint_clean():
    for name in ("exp01.queues", "exp01.inventory", "exp01.device"):
        assert sql_lint.lint_module(query.resolve(name)) == []


def test_inventory_on_the_mi300_fixture(tmp_path):
    t = tmp_path / "t"
    api.snapshot(str(t), debugfs_dir=str(MI300))
    inv = query.run("exp01.inventory", [str(t)]).to_pylist()
    got = [(r["tgid"], r["gpu_id"], r["compute_queues"], r["sdma_queues"], r["compute_mqd_copies"], r["active_cp_hqds"],
            r["active_sdma_hqds"], r["hqds_per_queue"], r["xccs"], r["queue_ids"], r["queue_id_source"], r["doorbell_offs"]) for r in inv]
    assert got == [
        (5001, 0xF7BC, 2, 1, 8, 8, 1, 4.0, 4, None, "none", [0x1000, 0x1002, 0x10F0]),
        (5002, 0xF7BC, 1, 0, 4, 4, 0, 4.0, 4, None, "none", [0x1400]),
    ]
    dev, = query.run("exp01.device", [str(t)]).to_pylist()
    assert {k: dev[k] for k in ("cp_slots", "active_cp_hqds", "attributed_cp_hqds", "free_cp_slots", "hiqs", "active_hiqs",
                                "active_sdma_hqds", "xccs", "rl_processes", "rl_queues", "processes_with_queues",
                                "baseline_active_cp_hqds")} == {
        "cp_slots": 16, "active_cp_hqds": 12, "attributed_cp_hqds": 12, "free_cp_slots": 4, "hiqs": 4, "active_hiqs": 4,
        "active_sdma_hqds": 1, "xccs": 4, "rl_processes": 2, "rl_queues": 4, "processes_with_queues": 2,
        "baseline_active_cp_hqds": None}


def test_device_view_subtracts_the_baseline(sample_runs):
    rows = query.run("exp01.device", sample_runs[:1]).to_pylist()
    model_gpu = [(r["phase"], r["active_cp_hqds"], r["active_cp_hqds_over_baseline"], r["active_sdma_hqds_over_baseline"], r["free_cp_slots"])
                 for r in rows if r["gpu_id"] == 0xF7BC]
    assert model_gpu == [("baseline", 0, 0, 0, 96), ("during", 12, 12, 2, 84), ("during", 12, 12, 2, 84), ("after", 0, 0, 0, 96)]


def test_recorder_queue_ids_join_by_doorbell(tmp_path):
    tw = TraceWriter.create(tmp_path / "t", labels={"model": "m"})
    now = time.monotonic_ns()
    ev = [(5001, 0x1000, 0), (5001, 0x1002, 1), (5001, 0x10F0, 2), (5002, 0x1400, 0)]
    tw.writer("events").append_rows([{"ts_ns": now + i, "event": "queue_create", "tgid": tg, "gpu_id": 0xF7BC, "doorbell_off": db,
                                      "queue_id": qid} for i, (tg, db, qid) in enumerate(ev)])
    Snapshotter(tw, debugfs_dir=MI300).take("during", ts_ns=now + 100)
    tw.close()
    inv = query.run("exp01.inventory", [str(tmp_path / "t")]).to_pylist()
    assert [(r["tgid"], r["queue_ids"], r["queue_id_source"]) for r in inv] == [(5001, [0, 1, 2], "events"), (5002, [0], "events")]
    res = api.exp01([str(tmp_path / "t")])
    assert res.groups[0].ids == "[0, 1, 2] in every snapshot (recorder events)"  # tgid 5001 has the most queues


def test_verdicts_stable_runs(sample_runs):
    res = api.exp01(sample_runs, schedule="ample")
    g, = res.groups
    assert g.group == "model=demo" and g.runs == 2 and g.stable_state == "yes"
    assert g.queues.startswith("3 compute + 2 SDMA per process (tgid 31337, 31337; 2 run(s), 4 snapshot(s) while running)")
    assert g.stable == "yes: 2 runs: compute min 3 max 3, SDMA min 2 max 2; ids not observable"
    assert g.mqd_hqd == "yes: every compute queue has 4 MQD copies and is active on 4 HQDs on 4 XCCs (12/12 queue-snapshots)"
    assert g.ids.startswith("not in debugfs (it prints no queue id); doorbell offsets [2048, 2050, 2052, 2288, 2290]")
    assert g.recommendation == "B (Map/Unmap): queues are stable and there is time"
    assert api.exp01(sample_runs, schedule="tight").groups[0].recommendation.startswith("A (DBG_TRAP")


def test_verdicts_unstable_and_single_run(sample_runs, tmp_path):
    t = tmp_path / "other"
    api.snapshot(str(t), debugfs_dir=str(MI300), labels={"model": "demo"})  # 2 compute + 1 SDMA for tgid 5001
    g, = api.exp01(sample_runs + [str(t)]).groups
    assert g.stable_state == "no" and g.stable == "no: 3 runs: compute min 2 max 3, SDMA min 1 max 2; ids not observable"
    assert g.recommendation == "A or B with dynamic queue identification: queues are not stable across runs"
    g, = api.exp01(sample_runs[:1]).groups
    assert g.stable_state == "unknown" and g.recommendation == "C (progressive: A first, then B): stability not established"


def test_cli_text_and_json(sample_runs):
    r = CliRunner().invoke(main, ["exp01", *sample_runs])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "[model=demo] 2 run(s)"
    assert [x.split(":")[0] for x in lines[1:6]] == ["  1. queues per model", "  2. queue ids", "  3. stable across runs",
                                                     "  4. one MQD -> HQDs", "  scheme"]
    r = CliRunner().invoke(main, ["exp01", "--json", *sample_runs])
    doc = json.loads(r.output)
    assert doc["groups"][0]["numbers"]["fully_mapped"] == 12 and doc["groups"][0]["numbers"]["compute_queue_snapshots"] == 12


def test_no_snapshots_is_an_error(tmp_path):
    TraceWriter.create(tmp_path / "empty").close()
    with pytest.raises(GptError):
        api.exp01([str(tmp_path / "empty")])
    r = CliRunner().invoke(main, ["exp01", str(tmp_path / "empty")])
    assert r.exit_code == 1 and r.output.startswith("Error: no debugfs snapshots in")
    t = tmp_path / "base"
    api.snapshot(str(t), debugfs_dir=str(FIX / "v6.5-mi300-baseline"))
    r = CliRunner().invoke(main, ["exp01", str(t)])
    assert r.exit_code == 1 and "no process had queues" in r.output


def test_queue_slots_per_xcc_in_the_sample(sample_runs):
    rows = query.run("exp01.queues", sample_runs[:1]).to_pylist()
    first = {(r["snapshot_seq"], r["queue_index"]): r for r in rows if r["queue_type"] == "compute"}
    # 01-during: queue 0 (printed first) on CP Pipe 2 Queue 2 of every XCC; 02-during: on XCC 3 the CP picked Pipe 3 Queue 2
    assert (first[(1, 0)]["slots"], first[(1, 0)]["xcc_list"]) == ([202], [0, 1, 2, 3])
    assert (first[(2, 0)]["slots"], first[(2, 0)]["xcc_list"]) == ([202, 302], [0, 1, 2, 3])
    assert {(r["queue_index"], r["doorbell_off"], r["mqd_copies"], r["active_hqds"]) for r in rows if r["snapshot_seq"] == 1} == {
        (0, 0x804, 4, 4), (2, 0x802, 4, 4), (4, 0x800, 4, 4), (1, 0x8F2, 1, 1), (3, 0x8F0, 1, 1)}


DKMS = FIX / "rocm-dkms-6.12-mi308x"


def test_dkms_capture_one_process_5_queues_on_4_xccs(tmp_path):
    """A ROCm DKMS 6.12 capture ("Process 93034 PASID 93034:"): 5 compute queues x 4 MQD copies and
    20 active CP HQDs, through snapshot -> exp01.inventory/queues/device -> verdict."""
    t = tmp_path / "t"
    api.snapshot(str(t), debugfs_dir=str(DKMS), labels={"model": "m"})
    inv = query.run("exp01.inventory", [str(t)]).to_pylist()
    got = [(r["tgid"], r["gpu_id"], r["compute_queues"], r["sdma_queues"], r["compute_mqd_copies"], r["active_cp_hqds"],
            r["hqds_per_queue"], r["xccs"], r["doorbell_offs"]) for r in inv]
    assert got == [(93034, 0xC66D, 5, 0, 20, 20, 4.0, 4, [0x1000, 0x1002, 0x1004, 0x1006, 0x1008])]
    qs = query.run("exp01.queues", [str(t)]).to_pylist()
    assert sorted((r["doorbell_off"], r["mqd_copies"], r["active_hqds"], r["xccs"]) for r in qs) == [
        (db, 4, 4, 4) for db in (0x1000, 0x1002, 0x1004, 0x1006, 0x1008)]
    dev, = query.run("exp01.device", [str(t)]).to_pylist()
    assert (dev["cp_slots"], dev["active_cp_hqds"], dev["free_cp_slots"], dev["active_hiqs"], dev["rl_queues"]) == (24, 20, 4, 4, 5)
    g, = api.exp01([str(t)]).groups
    assert g.group == "model=m"
    assert g.queues.startswith("5 compute + 0 SDMA per process (tgid 93034; 1 run(s), 1 snapshot(s) while running)")
    assert g.mqd_hqd == "yes: every compute queue has 4 MQD copies and is active on 4 HQDs on 4 XCCs (5/5 queue-snapshots)"


def test_group_by_a_label_no_run_has_is_a_one_line_error(sample_runs, tmp_path):
    with pytest.raises(GptError, match="no run has the label 'nosuch'"):
        api.exp01(sample_runs, group_by="nosuch")
    r = CliRunner().invoke(main, ["exp01", "--group-by", "nosuch", *sample_runs])
    assert r.exit_code != 0
    assert r.output.strip().count("\n") == 0
    assert r.output.startswith("Error: --group-by nosuch: no run has the label 'nosuch' (labels present: model)")
    # without --group-by, runs that have no model label form one group; asking for model by name is an error
    t = tmp_path / "nolabel"
    api.snapshot(str(t), debugfs_dir=str(MI300))
    assert [g.group for g in api.exp01([str(t)]).groups] == ["(all runs)"]
    with pytest.raises(GptError, match=r"labels present: none"):
        api.exp01([str(t)], group_by="model")
