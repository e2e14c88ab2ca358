"""`gpreempt-trace snapshot import`: PoC-style timestamped files, capture folders, the embedded sample."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gpreempt_trace.sql import query
from gpreempt_trace.cli.main import main
from gpreempt_trace.debugfs import MI308X_SAMPLE, collect_imports

FIX = Path(__file__).parent / "fixtures" / "debugfs"


def sql(trace, q):
    return query.connect([str(trace)]).execute(q).fetchall()


def test_poc_file_names_group_into_snapshots():
    caps, notes = collect_imports([FIX / "poc-import"])
    assert [(c.phase, sorted(c.files)) for c in caps] == [
        ("baseline", ["hqds", "mqds"]), ("during", ["hqds", "mqds"]), ("during", ["hqds", "mqds"]), ("after", ["hqds", "mqds"])]
    assert [c.ts_ns for c in caps[1:3]] == [1769750010 * 10**9, 1769750020 * 10**9]  # epoch seconds in the names
    assert notes == [f"skipped {FIX / 'poc-import' / 'snapshot_ps_1_1769750010.txt'} (not a debugfs capture by its name)"]


def test_import_cli_poc_folder(tmp_path):
    t = tmp_path / "t"
    r = CliRunner().invoke(main, ["snapshot", "import", "-o", str(t), "--label", "model=poc", str(FIX / "poc-import")])
    assert r.exit_code == 0, r.output
    assert "warning: skipped" in r.output and "4 snapshots" in r.output
    got = sql(t, "SELECT snapshot_seq, phase, count(*) FILTER (WHERE kind = 'mqd'), count(*) FILTER (WHERE kind = 'hqd_cp' AND active) "
                 "FROM snapshots GROUP BY ALL ORDER BY 1")
    assert got == [(0, "baseline", 0, 0), (1, "during", 13, 12), (2, "during", 13, 12), (3, "after", 0, 0)]


def test_import_embedded_sample_and_subcommand_after_options(tmp_path):
    t = tmp_path / "t"
    r = CliRunner().invoke(main, ["snapshot", "-o", str(t), "import", str(MI308X_SAMPLE)])
    assert r.exit_code == 0, r.output
    got = sql(t, "SELECT snapshot_seq, phase, count(DISTINCT gpu_id), count(*) FILTER (WHERE kind = 'hqd_cp'), "
                 "count(*) FILTER (WHERE kind = 'hqd_cp' AND active), count(*) FILTER (WHERE kind = 'hqd_hiq' AND active), "
                 "count(*) FILTER (WHERE kind = 'hqd_sdma') FROM snapshots GROUP BY ALL ORDER BY 1")
    # 8 GPUs x 4 XCCs x 24 KFD CP slots, 32 HIQs, 8 x 64 SDMA RLCs; the model's 3 compute queues x 4 XCCs while it runs
    assert got == [(0, "baseline", 8, 768, 0, 32, 512), (1, "during", 8, 768, 12, 32, 512),
                   (2, "during", 8, 768, 12, 32, 512), (3, "after", 8, 768, 0, 32, 512)]


def test_import_errors(tmp_path):
    r = CliRunner().invoke(main, ["snapshot", "import", "-o", str(tmp_path / "t"), str(FIX / "bad" / "not-a-dump.txt")])
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert r.output.startswith(f"Error: {FIX / 'bad' / 'not-a-dump.txt'} is not a KFD debugfs dump")
    r = CliRunner().invoke(main, ["snapshot", "import", str(FIX / "poc-import")])
    assert r.exit_code == 2 and "-o" in r.output
    r = CliRunner().invoke(main, ["snapshot", "import", "-o", str(tmp_path / "t2"), str(tmp_path / "missing")])
    assert r.exit_code == 1 and "does not exist" in r.output
