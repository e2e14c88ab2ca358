"""Derived rows (sql/derived.py): each trace's rows of the costly views, kept beside it, are the rows the
views give computed from the events (over that trace alone or over several), and are read only while
the trace, its meta.json and the SQL are what they were computed from."""
import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from testing.traces import COLL_FUNCS, random_collateral_events, write_trace

from gpreempt_trace import api
from gpreempt_trace.cli.main import main as cli
from gpreempt_trace.sql import derived, query


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    root = tmp_path_factory.mktemp("derived")
    return [api.synth(str(root / "a"), "A", 20_000, 1), api.synth(str(root / "b"), "B", 20_000, 2),
            write_trace(root / "c", "c", random_collateral_events(3), funcs=COLL_FUNCS)]


def _rows(traces, use_derived: bool) -> dict:
    con = query.connect([str(t) for t in traces])
    derived._load(con, unsorted_states=False)
    assert derived.attach(con, [Path(t) for t in traces]) == ([v.name for v in derived.VIEWS] if use_derived else [])
    return {v.name: con.sql(f"SELECT * FROM {v.name} ORDER BY ALL").fetchall() for v in derived.VIEWS}


def _copy(traces, dest: Path) -> list[Path]:
    import shutil

    return [Path(shutil.copytree(t, dest / Path(t).name)) for t in traces]


def test_each_traces_rows_are_the_views_rows(traces, tmp_path):
    mine = _copy(traces, tmp_path)
    live = _rows(mine, use_derived=False)
    alone = {t: _rows([t], use_derived=False) for t in mine}
    assert all(live[v.name] for v in derived.VIEWS)  # every view has rows to compare
    lines = api.derive([str(t) for t in mine])
    assert [re.sub(r"\(\d+\.\d s\)", "(T s)", x) for x in lines] == [f"{t}: derived rows written (T s)" for t in mine]
    for t in mine:
        assert derived.valid(t)
    assert _rows(mine, use_derived=True) == live  # all three together
    for t in mine:  # and each alone
        assert _rows([t], use_derived=True) == alone[t]


def test_derive_says_what_it_did(traces, tmp_path):
    mine = _copy(traces[:1], tmp_path)
    r = CliRunner().invoke(cli, ["derive", str(mine[0])])
    assert r.exit_code == 0 and re.fullmatch(rf"{re.escape(str(mine[0]))}: derived rows written \(\d+\.\d s\)\n", r.output)
    r = CliRunner().invoke(cli, ["derive", str(mine[0])])
    assert r.exit_code == 0 and r.output == f"{mine[0]}: derived rows up to date\n"
    assert sorted(p.name for p in (mine[0] / "derived").iterdir()) == sorted([derived.MANIFEST] + [f"{v.name}.parquet" for v in derived.VIEWS])
    assert not [p for p in mine[0].iterdir() if p.name.startswith(".derived-")]  # no temp folder left


def test_a_module_query_reads_them_with_its_parameters(traces, tmp_path):
    mine = _copy(traces[:2], tmp_path)
    paths = [str(t) for t in mine]
    live = {s: api.query("preempt.preemption", paths, {"scheme": s}) for s in ("A", "B", "%")}
    live_lc = {m: api.query(m, paths) for m in ("queues.lifecycle", "preempt.collateral")}
    cmp = api.compare(paths)
    api.derive(paths)
    again = api.compare(paths)  # compare reads the timings too
    assert (again.verdict, again.diffs.to_pylist()) == (cmp.verdict, cmp.diffs.to_pylist()) and cmp.diffs.num_rows > 0
    for s, want in live.items():
        got = api.query("preempt.preemption", paths, {"scheme": s})
        assert got.equals(want) and want.num_rows > 0
    for m, want in live_lc.items():  # modules over the derived spans and states: the same rows, in the same order
        assert api.query(m, paths).equals(want) and want.num_rows > 0
    # the query really reads them: keep 3 of trace a's timings (the manifest still matches)
    f = mine[0] / "derived" / "preempt_preemption_timings.parquet"
    pq.write_table(pq.read_table(f).slice(0, 3), f)
    assert api.query("preempt.preemption", [paths[0]]).num_rows == 3


def test_they_are_read_only_while_nothing_changed(traces, tmp_path, monkeypatch):
    mine = _copy(traces[:2], tmp_path)
    api.derive([str(t) for t in mine])
    a, b = mine
    assert derived.valid(a) and derived.valid(b)
    seg = next(p for p in (a / "events").iterdir() if p.name != "schema.parquet")
    os.utime(seg, ns=(seg.stat().st_atime_ns, seg.stat().st_mtime_ns + 1))  # a segment rewritten
    assert not derived.valid(a) and derived.valid(b)
    con = query.connect([str(a), str(b)])
    derived._load(con, False)
    assert derived.attach(con, [a, b]) == []  # one trace without: every view computed from the events
    meta = json.loads((b / "meta.json").read_text())
    (b / "meta.json").write_text(json.dumps({**meta, "labels": {"x": "y"}}))  # meta.json edited
    assert not derived.valid(b)
    api.derive([str(b)])
    assert derived.valid(b)
    monkeypatch.setattr(derived, "sql_hash", lambda: "other SQL")  # a module changed
    assert not derived.valid(b)


def test_traces_sharing_a_run_id_are_read_from_the_events(traces, tmp_path):
    a = _copy(traces[:1], tmp_path / "1")[0]
    a2 = _copy(traces[:1], tmp_path / "2")[0]
    api.derive([str(a), str(a2)])
    con = query.connect([str(a), str(a2)])
    derived._load(con, False)
    assert derived.attach(con, [a, a2]) == []  # their runs mix in the views: never split by trace


def test_the_report_keeps_them_for_finished_traces_and_reads_them_next_time(traces, tmp_path):
    mine = _copy(traces[:2], tmp_path)
    meta = json.loads((mine[1] / "meta.json").read_text())
    (mine[1] / "meta.json").write_text(json.dumps({**meta, "stop_ns": None}))  # a recorder still writing (or killed)
    api.report([str(t) for t in mine], str(tmp_path / "r1"))
    assert derived.valid(mine[0]) and not (mine[1] / "derived").exists()
    (mine[1] / "meta.json").write_text(json.dumps(meta))
    md_cold = api.report([str(t) for t in mine])  # the Markdown summary: b has none, every view from the events
    cold = api.report([str(t) for t in mine], str(tmp_path / "r2"))  # b has none: every view from the events
    assert derived.valid(mine[1])
    warm = api.report([str(t) for t in mine], str(tmp_path / "r3"))  # every view from derived rows
    assert api.report([str(t) for t in mine]) == md_cold and "## Collateral preemption" in md_cold
    strip = lambda p: re.sub(r"<img[^>]*>", "", Path(p).read_text())  # noqa: E731
    assert strip(warm) == strip(cold)
    assert len(list((tmp_path / "r2").glob("*.png"))) >= 3
    for png in (tmp_path / "r2").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "r3" / png.name).read_bytes()


def test_the_perfetto_export_is_the_same_from_them(traces, tmp_path):
    a = _copy(traces[:1], tmp_path)[0]
    cold = api.export_perfetto(str(a), str(tmp_path / "cold.pftrace"))
    api.derive([str(a)])
    warm = api.export_perfetto(str(a), str(tmp_path / "warm.pftrace"))
    assert Path(cold).read_bytes() == Path(warm).read_bytes()


def test_a_large_recording_gets_them_as_it_closes(traces, tmp_path, monkeypatch):
    a = _copy(traces[:1], tmp_path)[0]
    assert api.derive_at_close(a, api.DERIVE_AT_CLOSE_MIN_EVENTS - 1) is None and not (a / "derived").exists()
    line = api.derive_at_close(a, api.DERIVE_AT_CLOSE_MIN_EVENTS)  # in a child process: `gpreempt-trace derive`
    assert re.fullmatch(r"derived rows in \d+\.\d s", line) and derived.valid(a)
    gone = tmp_path / "gone"  # the child's error, in the record's summary line; the recording itself stands
    assert api.derive_at_close(gone, 10**9) == (f"derived rows not written (Error: {gone} does not exist: give the path of a trace "
                                                "directory): the first report computes them")


def test_a_dead_writers_folder_is_swept_and_a_live_ones_kept(traces, tmp_path):
    a = _copy(traces[:1], tmp_path)[0]
    dead, live = a / ".derived-dead", a / ".derived-live"
    for d in (dead, live):
        d.mkdir()
        (d / "x.parquet").write_bytes(b"half")
    old = dead.stat().st_mtime - derived.STALE_S - 1
    os.utime(dead, (old, old))
    api.report([str(a)], str(tmp_path / "r"))  # keeps the derived rows: sweeps first
    assert derived.valid(a) and not dead.exists() and live.exists()


def test_rows_of_a_trace_that_changed_while_they_were_computed_are_not_read(traces, tmp_path):
    a = _copy(traces[:1], tmp_path)[0]
    before = derived.fingerprints([a])
    con = query.connect([str(a)])  # lists the segments the rows are computed from
    seg = next(p for p in (a / "events").iterdir() if p.name != "schema.parquet")
    os.utime(seg, ns=(seg.stat().st_atime_ns, seg.stat().st_mtime_ns + 1))  # e.g. a recorder closing or merging one meanwhile
    assert derived.compute(con, [a], before, finished_only=False) == []
    assert (a / "derived" / derived.MANIFEST).is_file()  # written, under the fingerprint of before the change
    assert not derived.valid(a)
    con = query.connect([str(a)])
    derived._load(con, False)
    assert derived.attach(con, [a]) == []  # so never read for the trace as it is now
