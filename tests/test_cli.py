"""CLI: thin layer over the API; one-line errors with non-zero exits; docs/cli.md is current."""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from testing.traces import two_runs

from gpreempt_trace import __version__
from gpreempt_trace.codegen import docgen
from gpreempt_trace.cli.main import COMMANDS, main

def run(*args):
    return CliRunner().invoke(main, list(args), prog_name="gpreempt-trace")


@pytest.fixture
def runs(tmp_path):
    return [str(p) for p in two_runs(tmp_path)]


def test_version_and_help():
    assert run("--version").output.strip() == f"gpreempt-trace, version {__version__}"
    assert run("-h").exit_code == 0 and "Commands:" in run("-h").output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_listed_command_loads(name):
    """Each name in the group's list imports its module and answers --help under that name."""
    res = run(name, "--help")
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"Usage: gpreempt-trace {name} ")


def test_cli_reference_is_current_and_complete():
    text = docgen.DOC.read_text()
    assert text == docgen.render(), "docs/cli.md is stale: run `make docs`"
    for name in COMMANDS:
        assert f"## `gpreempt-trace {name}`" in text


def test_query_formats(runs, tmp_path):
    res = run("query", "queues.per_tgid", *runs, "--format", "json")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [(r["run_id"], r["tgid"], r["created"]) for r in rows] == [("r1", 100, 2), ("r1", 200, 1), ("r2", 300, 1)]
    res = run("query", "queues.per_tgid", *runs, "--format", "csv")
    assert res.output.splitlines()[0].startswith('"run_id","tgid","gpu_id"')
    res = run("query", "queues.per_tgid", *runs)
    assert res.output.splitlines()[-1] == "(3 rows)"
    out = tmp_path / "o.parquet"
    assert run("query", "queues.per_tgid", *runs, "--format", "parquet", "--out", str(out)).exit_code == 0
    assert pq.read_table(out).num_rows == 3


def test_query_list():
    res = run("query", "--list")
    assert res.exit_code == 0
    names = [line.split()[0] for line in res.output.splitlines()]
    assert {"queues.per_tgid", "preempt.calls", "preempt.collateral", "ioctl.summary", "events.overview"} <= set(names)


@pytest.mark.parametrize(
    "args, message",
    [
        (["query", "nope", "{r1}"], "Error: unknown query 'nope': available: "),
        (["query", "queues.per_tgid", "{tmp}"], "is not a trace (no meta.json in it or below)"),
        (["query", "preempt.calls", "{r1}", "--param", "oops"], "Error: bad --param 'oops': write it as --param name=value"),
        (["query", "queues.per_tgid", "{r1}", "--format", "parquet"], "Error: --format parquet writes a binary file: add --out FILE.parquet"),
        (["export", "--hive", "{tmp}/h", "{tmp}/absent"], "does not exist"),
    ],
)
def test_errors_are_one_line_nonzero(runs, tmp_path, args, message):
    (tmp_path / "plain").mkdir()
    args = [a.format(r1=runs[0], tmp=tmp_path / "plain") for a in args]
    res = run(*args)
    assert res.exit_code != 0
    assert message in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert "Traceback" not in res.output


def test_newer_format_is_refused(runs):
    meta = Path(runs[1]) / "meta.json"
    m = json.loads(meta.read_text())
    m["version"] = 7
    meta.write_text(json.dumps(m))
    res = run("query", "events.overview", runs[1])
    assert res.exit_code == 1
    assert "is trace format v7, this tool reads up to v1: upgrade gpreempt-trace" in res.output


def test_corrupt_segment_warns_and_keeps_the_rest(runs):
    seg = Path(runs[0]) / "events" / "seg-000000.parquet"
    (seg.parent / "seg-000009.parquet").write_bytes(b"PAR1 garbage")
    res = run("query", "events.overview", runs[0], "--format", "json")
    assert res.exit_code == 0
    assert "warning: skipping unreadable segment" in res.output and "seg-000009.parquet" in res.output
    assert sum(json.loads(line)["rows"] for line in res.output.splitlines() if line.startswith("{")) == 10


def test_export_hive(runs, tmp_path):
    res = run("export", "--hive", str(tmp_path / "hive"), *runs)
    assert res.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "hive").iterdir()) == ["run_id=r1", "run_id=r2"]
    res = run("export", "--hive", str(tmp_path / "hive"), runs[0])
    assert res.exit_code == 1 and "already exists" in res.output


def test_console_script_error_has_no_traceback(tmp_path):
    exe = Path(sys.executable).parent / "gpreempt-trace"
    p = subprocess.run([str(exe), "query", "events.overview", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip().startswith("Error: ") and "Traceback" not in p.stderr
    assert p.stdout == ""


@pytest.mark.parametrize("args, line", [
    (["nosuch"], "Error: No such command 'nosuch': see 'gpreempt-trace --help'"),
    (["report", "--max-rows", "-5", "x"], "Error: Invalid value for '--max-rows': -5 is not in the range 1<=x<=1000000: see 'gpreempt-trace report --help'"),
    (["workload", "online", "--batch", "0"], "Error: Invalid value for '--batch': 0 is not in the range 1<=x<=1024: see 'gpreempt-trace workload --help'"),
    (["preempt", "run", "--pid", "1", "--hold", "-1"], "Error: Invalid value for '--hold': -1 is not in the range 0<=x<=3600000: see 'gpreempt-trace preempt run --help'"),
])
def test_usage_errors_are_one_line_naming_the_help_to_read(args, line):
    res = run(*args)
    assert res.exit_code == 2
    assert res.output.splitlines() == [line]
