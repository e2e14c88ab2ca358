"""The marker vocabulary is one list (gpreempt_trace.markers.KINDS): every kind the package writes and
every kind a SQL module reads is in it, and MarkerWriter refuses anything else."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpreempt_trace import markers, resources, trace
from gpreempt_trace.query import connect



def _package_sources():
    import gpreempt_trace

    root = Path(gpreempt_trace.__file__).parent
    # debugfs/ writes rows of the snapshots table, whose `kind` is another vocabulary
    return [p for p in root.rglob("*.py") if p.name != "markers.py" and "debugfs" not in p.parts]


def test_every_kind_written_by_the_package_is_in_the_vocabulary():
    written = set()
    for p in _package_sources():
        text = p.read_text()
        written |= set(re.findall(r"""\bkind\s*=\s*["']([a-z_]+)["']""", text))
        written |= set(re.findall(r"""["']kind["']\s*:\s*["']([a-z_]+)["']""", text))
        written |= set(re.findall(r"""\.add\(\s*["']([a-z_]+)["']""", text))
    numpy_sort_kinds = {"stable", "quicksort", "mergesort", "heapsort"}  # np.argsort(kind=...), not markers
    unknown = sorted(k for k in written - numpy_sort_kinds if k not in markers.KINDS)
    assert not unknown, f"marker kinds written but not in markers.KINDS: {unknown}"


def test_every_marker_kind_read_by_sql_is_in_the_vocabulary():
    read = set()
    for p in resources.queries().rglob("*.sql"):
        sql = p.read_text()
        if "markers" not in sql:
            continue
        for m in re.finditer(r"kind\s*(?:=|IN)\s*\(?((?:\s*'[a-z_]+'\s*,?)+)\)?", sql):
            read |= set(re.findall(r"'([a-z_]+)'", m.group(1)))
    snapshot_kinds = {"device", "mqd", "hqd_cp", "hqd_hiq", "hqd_sdma", "rl_packet"}  # snapshots.kind, another table
    unknown = sorted(read - set(markers.KINDS) - snapshot_kinds)
    assert not unknown, f"SQL reads marker kinds not in markers.KINDS: {unknown}"


def test_marker_writer_refuses_unknown_kind_and_writes_known_ones(tmp_path):
    tw = trace.TraceWriter.create(tmp_path / "t", run_id="r")
    tw.close()
    with markers.MarkerWriter(tmp_path / "t", "controller") as mw:
        with pytest.raises(ValueError, match="'preempt_begin' is not in gpreempt_trace.markers.KINDS"):
            mw.add("preempt_begin")
        mw.add("preempt_request", ts_ns=5, seq=1, scheme="A", target_tgid=42, queue_ids=[3])
    rows = connect([str(tmp_path / "t")]).execute(
        "SELECT run_id, ts_ns, source, kind, seq, scheme, target_tgid, queue_ids FROM markers").fetchall()
    assert rows == [("r", 5, "controller", "preempt_request", 1, "A", 42, [3])]


def test_no_writer_means_no_trace_and_no_error():
    mw = markers.MarkerWriter(None, "workload")
    mw.add("request_start", seq=1)
    mw.close()
