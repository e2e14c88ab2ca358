"""Derived rows: the costly views every output recomputes from the events (queue spans and off
intervals, preemption timings, collateral per process), computed once per trace and kept beside it.

TRACE/derived/ holds one Parquet file per view of VIEWS and manifest.json, which says what they were
computed from: the format, a hash of the SQL modules, and every segment's name, size and mtime plus
meta.json's bytes (`fingerprint`). An output reads them (`attach`) only while all of that is unchanged
and every trace it reads has them; otherwise it computes the views from the events as before, and
`keep` writes each finished trace's rows (meta.json has stop_ns: no recorder is still adding to it)
from what it computed (under the fingerprint taken before the connection listed the segments), so the
next output over that trace opens fast. `write` does it ahead, for
`gpreempt-trace derive` (and `record`, when it closes a trace).

Every view here is per run: each join, window and group stays within one run_id (or its hash `rk`),
so one trace's rows are the rows the view gives over several traces for that trace's run
(tests/test_derived.py compares both ways, row for row). Traces that share a run_id are read live.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import duckdb

from .. import __version__
from ..errors import GptError
from ..trace.directory import META, TABLE_NAMES, read_meta
from . import query

DIR = "derived"
MANIFEST = "manifest.json"
FORMAT = 1
MEMORY_LIMIT = "640MB"  # DuckDB's share of the report's < 1 GiB peak RSS (issue 23): larger operators spill to a temp folder
PARAMS = {"scheme": "%"}  # what the rows are computed with (preempt.preemption's default: every scheme)


@dataclass(frozen=True)
class View:
    name: str  # the view a module defines, replaced by the derived rows
    module: str  # the module that defines it
    key: str  # the column that names the run: run_id, or rk = hash(run_id)
    load: str = "SELECT * FROM {rows}"  # the view over the rows of every trace ({rows}: their read_parquet)


VIEWS = (
    View("preempt_preemption_run_keys", "preempt.preemption", "run_id",
         # the module's guard, over every trace's keys: two run ids with one hash stop the query
         "SELECT rk, CASE WHEN count(*) = 1 THEN any_value(run_id) ELSE error('preempt.preemption: two run ids hash alike: ' "
         "|| string_agg(run_id, ', ' ORDER BY run_id) || ' (query these traces separately)') END AS run_id FROM {rows} GROUP BY rk"),
    # computed with scheme '%' (every row); the filter a module applies with another pattern is applied here
    View("preempt_preemption_timings", "preempt.preemption", "rk",
         "SELECT * FROM {rows} WHERE coalesce(scheme, '') LIKE getvariable('scheme')"),
    View("queues_lifecycle_spans", "queues.lifecycle", "run_id"),
    View("queues_lifecycle_states_unsorted", "queues.lifecycle", "run_id"),
    View("preempt_collateral_per_process", "preempt.collateral", "run_id", "SELECT * FROM {rows} ORDER BY run_id, tgid"),
)
BY_NAME = {v.name: v for v in VIEWS}


@lru_cache(maxsize=1)
def sql_hash() -> str:
    """Hash of every SQL file the views could read (all of queries/) and of VIEWS itself."""
    h = hashlib.sha256(repr((FORMAT, __version__, VIEWS, PARAMS)).encode())
    for p in sorted(query.QUERIES_DIR.rglob("*.sql")):
        h.update(str(p.relative_to(query.QUERIES_DIR)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def fingerprint(trace: Path) -> dict:
    """What a trace's derived rows depend on: the SQL, meta.json's bytes, each table's segment files."""
    segments = {}
    for table in TABLE_NAMES:
        try:
            with os.scandir(trace / table) as it:
                segments[table] = sorted([e.name, e.stat().st_size, e.stat().st_mtime_ns] for e in it
                                         if e.name.endswith(".parquet") and not e.name.startswith("."))
        except OSError:  # no such table folder: no rows
            segments[table] = []
    return {"format": FORMAT, "sql": sql_hash(), "meta_sha256": hashlib.sha256((trace / META).read_bytes()).hexdigest(),
            "segments": segments}


def valid(trace: Path) -> bool:
    """Whether the trace's derived rows were computed from what it holds now, with this SQL."""
    try:
        manifest = json.loads((trace / DIR / MANIFEST).read_text())
        return manifest.get("fingerprint") == fingerprint(trace) and all((trace / DIR / f"{v.name}.parquet").is_file() for v in VIEWS)
    except (OSError, ValueError):
        return False


def _run_ids(traces: Sequence[Path]) -> list[str] | None:
    """Each trace's run id, or None when two traces share one (their runs would mix in the views)."""
    ids = [read_meta(t).get("run_id") for t in traces]
    return ids if None not in ids and len(set(ids)) == len(ids) else None


def attach(con: duckdb.DuckDBPyConnection, traces: Sequence[Path]) -> list[str]:
    """Replace the loaded views of VIEWS on `con` by the traces' derived rows, when every trace has valid
    ones; the views replaced (none when any trace lacks them: the views stay computed from the events)."""
    traces = [Path(t) for t in traces]
    if not traces or _run_ids(traces) is None or not all(valid(t) for t in traces):
        return []
    done = []
    for v in VIEWS:
        if not con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [v.name]).fetchall()[0][0]:
            continue  # its module is not loaded on this connection
        files = "[" + ", ".join(query._sql_literal(str(t / DIR / f"{v.name}.parquet")) for t in traces) + "]"
        con.execute(f"CREATE OR REPLACE VIEW {v.name} AS " + v.load.format(rows=f"read_parquet({files})"))
        done.append(v.name)
    return done


def _finished(trace: Path) -> bool:
    return read_meta(trace).get("stop_ns") is not None


def fingerprints(traces: Sequence[Path]) -> dict[Path, dict]:
    """Each trace's fingerprint, taken before a connection lists its segments: rows computed on that
    connection are kept under it, so any change after it (a segment closed, merged or deleted) leaves
    them invalid rather than passing for the newer state."""
    return {Path(t): fingerprint(Path(t)) for t in traces}


def keep(con: duckdb.DuckDBPyConnection, traces: Sequence[Path], before: dict[Path, dict], finished_only: bool = True) -> list[Path]:
    """Write the derived rows of each finished trace that lacks valid ones, split by run from the views of
    VIEWS on `con` (computed over all `traces`, with PARAMS; every module of VIEWS loaded), under the
    fingerprints `before` took. Best effort: a trace that cannot be written (read-only, full disk) or
    whose rows name another run is left without. Returns the traces written."""
    traces = [Path(t) for t in traces]
    ids = _run_ids(traces)
    todo = [(t, rid) for t, rid in zip(traces, ids or []) if (_finished(t) or not finished_only) and not valid(t)]
    if not todo:
        return []
    # every row must belong to one of the traces' runs, or splitting by run would drop it
    for v in VIEWS:
        col = "hash(run_id)" if v.key == "rk" else "run_id"
        stray = con.execute(f"SELECT count(*) FROM {v.name} WHERE {v.key} NOT IN (SELECT {col} FROM (SELECT unnest(?) AS run_id))",
                            [ids]).fetchall()[0][0]
        if stray:
            return []
    done = []
    for t, rid in todo:
        _sweep(t)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=".derived-", dir=t))
        except OSError:
            continue
        try:
            lit = query._sql_literal(rid)
            for v in VIEWS:
                where = f"rk = hash({lit})" if v.key == "rk" else f"run_id = {lit}"
                con.execute(f"COPY (SELECT * FROM {v.name} WHERE {where}) TO {query._sql_literal(str(tmp / (v.name + '.parquet')))} "
                            "(FORMAT parquet, COMPRESSION zstd)")
            (tmp / MANIFEST).write_text(json.dumps({"fingerprint": before[t], "views": [v.name for v in VIEWS], "run_id": rid}, indent=1))
            _replace(t / DIR, tmp)
            done.append(t)
        except (OSError, duckdb.Error):
            shutil.rmtree(tmp, ignore_errors=True)
    return done


STALE_S = 600  # a hidden .derived-* folder this old was left by a writer that died (a live one takes seconds)


def _sweep(trace: Path) -> None:
    """Remove the hidden folders of writers that died before their rename (kill -9 in the middle)."""
    import time

    for p in trace.glob(".derived-*"):
        try:
            if time.time() - p.stat().st_mtime > STALE_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _replace(dest: Path, new: Path) -> None:
    """Put folder `new` at `dest`, the old one (if any) removed; a reader sees the old or the new one."""
    old = None
    if dest.exists():
        old = dest.with_name(f".derived-old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
    os.rename(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def capped(spill: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose operators spill into `spill` past MEMORY_LIMIT (the report's, derive's)."""
    return duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": str(spill)})


def _load(con: duckdb.DuckDBPyConnection, unsorted_states: bool) -> None:
    for mod in dict.fromkeys(v.module for v in VIEWS):
        query.load_module(con, query.resolve(mod), PARAMS)
    if unsorted_states:
        con.execute("CREATE OR REPLACE VIEW queues_lifecycle_states AS SELECT * FROM queues_lifecycle_states_unsorted")


def compute(con: duckdb.DuckDBPyConnection, traces: Sequence[Path], before: dict[Path, dict], unsorted_states: bool = False,
            finished_only: bool = True) -> list[str]:
    """On a connection over `traces` (opened after `before = fingerprints(traces)`): load the modules of
    VIEWS (with PARAMS), then either attach the traces' derived rows or compute the views once (temp
    tables) and keep them for the finished traces (every trace: finished_only=False).
    `unsorted_states`: queues_lifecycle_states reads its rows in no order (what the report and the
    export need; its ORDER BY over 2.9 M rows of a 10 M-event trace cost 0.5 s of CPU).
    Returns the views read from derived rows (empty when computed)."""
    _load(con, unsorted_states)
    attached = attach(con, traces)
    if attached:
        return attached
    query.materialize(con, *(v.name for v in VIEWS))
    keep(con, traces, before, finished_only)
    return []


def write(traces: Sequence[str]) -> list[str]:
    """Compute and keep the derived rows of every trace under `traces` that lacks valid ones, finished or
    not (`gpreempt-trace derive`; an unfinished one's rows hold until it changes). One line per trace."""
    import time

    from ..trace.directory import find_traces

    out = []
    for t in find_traces(traces):
        if valid(t):
            out.append(f"{t}: derived rows up to date")
            continue
        t0 = time.perf_counter()
        spill = Path(tempfile.mkdtemp(prefix="gpt-derive-"))
        try:
            before = fingerprints([t])
            con = query.connect([str(t)], capped(spill))
            compute(con, [t], before, unsorted_states=True, finished_only=False)
            con.close()
        finally:
            shutil.rmtree(spill, ignore_errors=True)
        if not valid(t):
            raise GptError(f"could not write {t / DIR} ({_why_not(t)})", "make the trace folder writable, or copy the trace and derive the copy")
        out.append(f"{t}: derived rows written ({time.perf_counter() - t0:.1f} s)")
    return out


def _why_not(t: Path) -> str:
    if not os.access(t, os.W_OK):
        return "the folder is not writable"
    return "it changed while its rows were computed (a recorder still writing it?), its rows name another run than meta.json's run_id, or the disk refused the files"
