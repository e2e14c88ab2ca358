"""DuckDB over one or many traces: views `events`, `markers`, `snapshots`, `runs`, plus SQL modules.

Modules live in `queries/`; the file path is the module name (`queries/exp01/inventory.sql` is
`exp01.inventory`, its public objects are prefixed `exp01_inventory`). A module's header says what
it does; `-- @include other.module` pulls in a dependency; `-- @param name default  doc` declares a
parameter read with `getvariable('name')`. `gpreempt-trace query NAME` prints the view named after the
module (dots become underscores).
"""
from __future__ import annotations

import os
import re
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ..contracts import resources, uapi
from ..trace import schema
from ..errors import QueryError
from ..trace.directory import TABLE_NAMES, find_traces, hold_for_reading, segment_files

QUERIES_DIR = resources.queries()
PRELUDE = "prelude"  # queries/prelude.sql: the plain-duckdb setup, not a module

_INCLUDE = re.compile(r"^--\s*@include\s+([\w.]+)\s*$", re.M)
_PARAM = re.compile(r"^--\s*@param\s+(\w+)\s+(\S+)\s*(.*)$", re.M)


@dataclass
class Module:
    name: str
    path: Path
    sql: str
    description: str
    includes: list[str] = field(default_factory=list)
    params: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (default, doc)

    @property
    def main_view(self) -> str:
        return self.name.replace(".", "_")


def _parse_module(name: str, path: Path) -> Module:
    sql = path.read_text()
    desc_lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        text = line[2:].strip()
        if text.startswith("@"):
            continue
        desc_lines.append(text)
    params = {m.group(1): (m.group(2), m.group(3).strip()) for m in _PARAM.finditer(sql)}
    return Module(name, path, sql, " ".join(x for x in desc_lines if x).strip(), _INCLUDE.findall(sql), params)


def list_modules(root: Path = QUERIES_DIR) -> dict[str, Module]:
    mods = {}
    for p in sorted(root.rglob("*.sql")):
        rel = p.relative_to(root).with_suffix("")
        name = ".".join(rel.parts)
        if name == PRELUDE:
            continue
        mods[name] = _parse_module(name, p)
    if not mods:
        raise QueryError(f"no query modules in {root}", "the installation is incomplete: reinstall gpreempt-trace (pip install .)")
    return mods


def resolve(name_or_file: str) -> Module:
    p = Path(name_or_file)
    if name_or_file.endswith(".sql"):
        if not p.is_file():
            raise QueryError(f"query file {name_or_file} does not exist", "give an existing .sql file or a module name (gpreempt-trace query --list)")
        return _parse_module(p.stem, p)
    mods = list_modules()
    if name_or_file not in mods:
        raise QueryError(f"unknown query {name_or_file!r}", "available: " + ", ".join(mods))
    return mods[name_or_file]


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", k):
            raise QueryError(f"bad --param {p!r}", "write it as --param name=value")
        out[k] = v
    return out


def _sql_literal(v: str) -> str:
    if re.fullmatch(r"-?\d+", v):
        return v
    if re.fullmatch(r"-?\d+\.\d*", v):
        return v
    return "'" + v.replace("'", "''") + "'"


def _segment_mismatch(f: Path, expected: pa.Schema) -> str | None:
    """Why a segment cannot be read as its table (a column of another type, or a required one missing:
    it would read as NULLs), or None."""
    got = pq.read_schema(f)
    missing = [fld.name for fld in expected if not fld.nullable and got.get_field_index(fld.name) < 0]
    if missing:
        return f"no column {', '.join(missing)}, which every row needs"
    for fld in got:
        i = expected.get_field_index(fld.name)
        if i >= 0 and not fld.type.equals(expected.field(i).type):
            return f"column {fld.name} is {fld.type}, expected {expected.field(i).type}"
    return None


def _good_segments(traces: Sequence[Path], table: str) -> list[str]:
    """Closed segments that read (trace.segment_files) and whose columns have the schema's types;
    a mistyped one is named in a warning and skipped, like a corrupt one."""
    expected = schema.table_schema(table)
    out = []
    for t in traces:
        for f in segment_files(t, table):
            why = _segment_mismatch(f, expected)
            if why:
                warnings.warn(f"skipping segment {f} ({why})", stacklevel=3)
                continue
            out.append(str(f))
    return out


def _read_segments(table: str, files: list[str]) -> str:
    """SQL reading a table's segments. Events segments of schema_version 1 (no queue_id_status: their
    queue_ids still carry the KFD's written-back flag bits, negative when INVALID) read as version 2:
    the plain id and its status, decoded with the same uapi masks as decode.py."""
    lst = lambda fs: "[" + ", ".join(_sql_literal(f) for f in fs) + "]"  # noqa: E731
    old = [f for f in files if table == "events" and "queue_id_status" not in pq.read_schema(f).names]
    if not old:
        return f"SELECT * FROM read_parquet({lst(files)}, union_by_name=true)"
    ok, inv, err = uapi.QUEUE_ID_STATUSES
    status = (f"CASE WHEN q::BIGINT & {uapi.DBG_QUEUE_INVALID_MASK} <> 0 THEN '{inv}' "
              f"WHEN q::BIGINT & {uapi.DBG_QUEUE_ERROR_MASK} <> 0 THEN '{err}' ELSE '{ok}' END")
    sql = (f"SELECT * REPLACE (list_transform(queue_ids, lambda q: (q::BIGINT & {uapi.DBG_QUEUE_ID_MASK})::INTEGER) AS queue_ids), "
           f"CASE WHEN event = 'kfd_ioctl' THEN NULL ELSE list_transform(queue_ids, lambda q: {status}) END AS queue_id_status "
           f"FROM read_parquet({lst(old)}, union_by_name=true)")
    new = [f for f in files if f not in old]
    return sql + (f" UNION ALL BY NAME SELECT * FROM read_parquet({lst(new)}, union_by_name=true)" if new else "")


def prelude_statements(skip_tables: bool = True) -> list[str]:
    """The statements of queries/prelude.sql; without the events/markers/snapshots views when
    skip_tables (the tool builds those itself, skipping bad segments)."""
    out = []
    for stmt in _split_statements((QUERIES_DIR / f"{PRELUDE}.sql").read_text()):
        m = _CREATE.search(stmt)
        if not m or (skip_tables and m.group(2) in TABLE_NAMES):
            continue
        out.append(stmt)
    return out


# Arrow types of schema.py -> DuckDB column types (the empty tables below; registering an Arrow
# table instead would import pandas, +0.45 s on every query)
_DUCK_TYPES = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.uint32(): "UINTEGER", pa.uint64(): "UBIGINT",
               pa.string(): "VARCHAR", pa.bool_(): "BOOLEAN"}


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    return _DUCK_TYPES[t]


def _empty_table_ddl(table: str) -> str:
    cols = ", ".join(f'"{f.name}" {_duck_type(f.type)}' for f in schema.table_schema(table))
    return f"CREATE TEMP TABLE _gpt_empty_{table} ({cols})"


def connect(paths: Iterable[str], con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with `events`, `markers`, `snapshots`, `runs` and `dbg_trap_ops` over the traces."""
    traces = find_traces(paths)
    con = con or duckdb.connect()
    con.execute("SET parquet_metadata_cache = true")  # every view that reads a table binds its files again
    con.execute("SET enable_progress_bar = false")  # DuckDB drew one bar per long query on stderr, even into logs
    for t in traces:  # a flight recorder (record --keep) deletes none of its segments while the connection lives
        fd = hold_for_reading(t)
        if fd is not None:
            weakref.finalize(con, os.close, fd)
    for table in TABLE_NAMES:
        files = _good_segments(traces, table)
        con.execute(_empty_table_ddl(table))
        if files:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _gpt_empty_{table} UNION ALL BY NAME {_read_segments(table, files)}")
        else:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _gpt_empty_{table}")
    con.execute("SET VARIABLE traces = " + "[" + ", ".join(_sql_literal(str(t)) for t in traces) + "]")
    for stmt in prelude_statements():
        con.execute(stmt)
    return con


def load_module(con: duckdb.DuckDBPyConnection, mod: Module, params: dict[str, str] | None = None, _seen=None) -> None:
    seen = _seen if _seen is not None else set()
    if mod.name in seen:
        return
    seen.add(mod.name)
    if con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [mod.main_view]).fetchall()[0][0]:
        return  # loaded earlier on this connection (another module included it)
    for inc in mod.includes:
        load_module(con, resolve(inc), params, seen)
    params = params or {}
    for k, (default, _doc) in mod.params.items():
        v = params.get(k, default)
        con.execute(f"SET VARIABLE {k} = {_sql_literal(v)}")
    try:
        con.execute(mod.sql)
    except duckdb.Error as e:
        raise QueryError(f"query {mod.name} failed: {str(e).splitlines()[0]}", f"check {mod.path}") from None


def materialize(con: duckdb.DuckDBPyConnection, *views: str, rows_of: dict[str, str] | None = None) -> None:
    """Compute loaded views once: each becomes a view over a temp table of its rows, so every view that
    reads it (a module's own and the caller's) stops recomputing it. Views are bound by name when
    queried, so the order given matters only for cost: give the innermost first. `rows_of` maps a view
    to another that holds the same rows unsorted (its rows are taken from there: no sort, and the
    materialized view has no order)."""
    for v in views:
        con.execute(f"CREATE TEMP TABLE _gpt_m_{v} AS SELECT * FROM {(rows_of or {}).get(v, v)}")
        con.execute(f"CREATE OR REPLACE VIEW {v} AS SELECT * FROM temp._gpt_m_{v}")


def _check_params(mod: Module, params: dict[str, str]) -> None:
    known = set(mod.params)
    for inc in mod.includes:
        known |= set(resolve(inc).params)
    unknown = set(params) - known
    if unknown:
        raise QueryError(
            f"query {mod.name} has no parameter {sorted(unknown)[0]!r}",
            "its parameters: " + (", ".join(sorted(known)) or "none"),
        )


def run(name_or_file: str, traces: Sequence[str], params: dict[str, str] | None = None, prepare=None) -> pa.Table:
    """Run a module (or a .sql file) over traces and return its result as an Arrow table. `prepare(con,
    trace paths)` runs once the module is loaded (api.query: derived.attach, the traces' derived rows)."""
    mod = resolve(name_or_file)
    params = params or {}
    if not name_or_file.endswith(".sql"):
        _check_params(mod, params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        con = connect(traces)
    for w in caught:
        warnings.warn(str(w.message), stacklevel=2)
    if name_or_file.endswith(".sql"):  # an ad-hoc file: its last statement's result
        for k, v in params.items():
            con.execute(f"SET VARIABLE {k} = {_sql_literal(v)}")
        stmts = [s for s in _split_statements(mod.sql) if s.strip() and not all(
            x.strip().startswith("--") or not x.strip() for x in s.splitlines())]
        if not stmts:
            raise QueryError(f"query file {mod.path} is empty", "write at least one SELECT")
        try:
            for s in stmts[:-1]:  # for their effect (tables, variables); sql() leaves no pending result
                con.sql(s)
            return _arrow(con.sql(stmts[-1]), f"query {mod.path}")
        except duckdb.Error as e:
            raise QueryError(f"query {mod.path} failed: {str(e).splitlines()[0]}", "check the SQL") from None
    load_module(con, mod, params)
    if prepare is not None:
        prepare(con, find_traces(traces))
    return _arrow(con.sql(f"SELECT * FROM {mod.main_view}"), f"query {mod.name}")


def _arrow(result, what: str = "query") -> pa.Table:
    """The result as an Arrow table (DuckDB 2 renamed fetch_arrow_table to to_arrow_table). A query that
    fails while it runs (e.g. a module's own error(), such as the run-key guard of preempt.preemption)
    becomes one QueryError line naming `what`."""
    if result is None:
        raise QueryError("the last SQL statement returns no rows", "end the file with a SELECT")
    fetch = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
    try:
        return fetch()
    except duckdb.Error as e:
        raise QueryError(f"{what} failed: {str(e).splitlines()[0].removeprefix('Invalid Input Error: ')}") from None


def _split_statements(sql: str) -> list[str]:
    """Split on top-level semicolons (outside quotes and comments)."""
    out, buf, i, n = [], [], 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            buf.append(sql[i:j])
            i = j
            continue
        if ch in "'\"":
            j = i + 1
            while j < n and sql[j] != ch:
                j += 1
            buf.append(sql[i : j + 1])
            i = j + 1
            continue
        if ch == ";":
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    out.append("".join(buf))
    return out


# CREATE statements of a module or the prelude (the linter, gpreempt_trace/sql/lint.py, reads them too)
_CREATE = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+|TEMPORARY\s+)?(VIEW|TABLE|MACRO)\s+(\w+)", re.I)
