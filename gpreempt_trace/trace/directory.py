"""Trace directory format v1 (docs/trace-format.md): meta.json + events/ markers/ snapshots/ process_reads/."""
from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow.parquet as pq

from .. import __version__
from . import schema
from ..errors import GptError, NewerFormat, NotATrace
from .arrays import empty_table
from .writer import READERS_LOCK, SCHEMA_FILE, SegmentWriter, covered_names

FORMAT = "gpreempt-trace"
VERSION = 1
META = "meta.json"
TABLE_NAMES = ("events", "markers", "snapshots", "process_reads")
COUNTER_OF_TABLE = {"events": "events_written", "markers": "markers_written", "snapshots": "snapshots_written"}


def already_a_trace(p: Path) -> GptError:
    try:
        run = read_meta(p).get("run_id")
    except GptError:
        run = None
    return GptError(f"output {p} already holds a trace{f' (run {run})' if run else ''}",
                    "write each run into its own directory (-o NEW); query runs together by naming both traces")


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")  # NaN is not JSON
    os.replace(tmp, path)


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    labels = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise GptError(f"label {p!r} is not key=value", "write it as --label model=resnet50")
        labels[k] = v
    return labels


@dataclass
class TraceWriter:
    """An open trace being written. `meta.json` is written at start and rewritten on finish, so a
    killed recorder leaves a readable trace (stop fields NULL)."""

    path: Path
    meta: dict
    writers: dict[str, SegmentWriter] = field(default_factory=dict)
    owns_meta: bool = True  # False for a process that only adds rows to another's trace
    prefix: str = "seg"  # segment file prefix of this process's writers
    extra_rows: dict[str, int] = field(default_factory=dict)  # see add_rows_written
    compact_s: float | None = None  # merge this process's closed segments (SegmentWriter compact_s); None: off

    @classmethod
    def join(cls, path: str | os.PathLike, prefix: str) -> "TraceWriter":
        """Add rows to a trace that another process (the recorder) owns: own segment names, and
        meta.json is left to its owner."""
        p = Path(path)
        return cls(p, read_meta(p), owns_meta=False, prefix=prefix)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        labels: dict[str, str] | None = None,
        synthetic: bool = False,
        run_id: str | None = None,
    ) -> "TraceWriter":
        if not os.fspath(path).strip():  # Path("") is "." : the current directory
            raise GptError("output path is empty", "give the trace directory to write with -o, e.g. -o runs/a")
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise GptError(f"output {p} exists and is not a directory", "choose a new path with -o")
        if (p / META).exists():  # one run per trace: never reopen another run's meta.json
            raise already_a_trace(p)
        if p.is_dir() and any(p.iterdir()):
            raise GptError(f"output {p} is not empty", "choose a new path with -o, or remove it first")
        p.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "schema_version": schema.SCHEMA_VERSION,
            "run_id": run_id or new_run_id(),
            "host": socket.gethostname(),
            "kernel": platform.release(),
            "clock": "CLOCK_MONOTONIC",
            "start_ns": time.monotonic_ns(),
            "start_wall": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z",
            "stop_ns": None,
            "stop_wall": None,
            "labels": dict(labels or {}),
            "synthetic": bool(synthetic),
            "attach_plan": [],
            # NULL until known: a killed run keeps them NULL (trace.disk_counters derives what it can)
            "counters": {"events_written": None, "events_lost": None, "markers_written": None, "snapshots_written": None},
            "tool_version": __version__,
        }
        tw = cls(p, meta)
        for table in TABLE_NAMES:  # zero-row schema files: plain-SQL globs always match
            (p / table).mkdir()
            pq.write_table(empty_table(schema.table_schema(table)), p / table / SCHEMA_FILE)
        tw.save_meta()
        return tw

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    def writer(self, table: str, **kw) -> SegmentWriter:
        if table not in self.writers:
            kw.setdefault("prefix", self.prefix)
            if self.compact_s is not None:
                kw.setdefault("compact_s", self.compact_s)
                kw.setdefault("readers_lock", self.readers_lock())
            self.writers[table] = SegmentWriter(self.path / table, table, self.run_id, **kw)
        return self.writers[table]

    def readers_lock(self) -> Path:
        """The trace's readers lock file, created when absent (readers hold it shared: no segment they
        listed is unlinked while they read; trace.hold_for_reading)."""
        p = self.path / READERS_LOCK
        if not p.exists():
            os.close(os.open(p, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        return p

    def save_meta(self) -> None:
        if self.owns_meta:
            _write_json_atomic(self.path / META, self.meta)

    def tick(self) -> None:
        for w in self.writers.values():
            w.tick()

    def add_rows_written(self, table: str, n: int) -> None:
        """Count rows another writer of this run wrote into `table` (e.g. the launcher's markers)."""
        self.extra_rows[table] = self.extra_rows.get(table, 0) + n

    def close(self, **meta_updates) -> None:
        for w in self.writers.values():
            w.close()
        if not self.owns_meta:
            return
        self.meta.update(meta_updates)
        counters = self.meta.setdefault("counters", {})
        for table, key in COUNTER_OF_TABLE.items():  # a finished run knows what it wrote (0 when nothing)
            w = self.writers.get(table)
            counters[key] = (w.rows_written if w else 0) + self.extra_rows.get(table, 0)
        comp = {t: {"segments_merged": w.segments_merged, "merge_cpu_s": round(w.merge_cpu_s, 3), "merge_failures": w.merge_failures}
                for t, w in self.writers.items() if w.compact_ns is not None}
        if comp:  # compaction (writer.py): merges done, their CPU (children included), failed ones (small segments kept)
            self.meta["compaction"] = comp
            failed = [f for c in comp.values() for f in c["merge_failures"]]
            if failed:
                warnings.warn(f"{len(failed)} segment merge(s) failed, their small segments kept (readable): {failed[0]}", stacklevel=2)
        self.meta["stop_ns"] = time.monotonic_ns()
        self.meta["stop_wall"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
        self.save_meta()

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_meta(path: str | os.PathLike) -> dict:
    p = Path(path)
    mp = p / META
    if not p.is_dir():
        raise NotATrace(f"{p} is not a directory", "give the path of a trace written by `gpreempt-trace record`")
    if not mp.exists():
        raise NotATrace(f"{p} is not a trace (no {META})", "give a trace directory or a folder of traces")
    try:
        text = mp.read_bytes()
    except OSError as e:
        raise NotATrace(f"cannot read {mp}: {e.strerror or e}", "make it a readable file (check its type, owner and permissions)") from None
    try:
        meta = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        why = f"{e.msg}, line {e.lineno}" if isinstance(e, json.JSONDecodeError) else str(e).split(":")[0]
        raise NotATrace(f"{mp} is not valid JSON ({why})", "restore it from the recorder's output") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NotATrace(f"{mp} is not a gpreempt-trace meta file", f"expected \"format\": \"{FORMAT}\"")
    v = meta.get("version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise NotATrace(f"{mp} has no integer version", "the file is damaged")
    if v > VERSION:
        raise NewerFormat(f"{p} is trace format v{v}, this tool reads up to v{VERSION}", "upgrade gpreempt-trace")
    sv = meta.get("schema_version", schema.SCHEMA_VERSION)
    if _is_int(sv) and sv > schema.SCHEMA_VERSION:
        raise NewerFormat(f"{p} has schema version {sv}, this tool reads up to {schema.SCHEMA_VERSION}", "upgrade gpreempt-trace")
    _check_meta_fields(mp, meta)
    return meta


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_JSON_TYPE = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}


def _check_meta_fields(mp: Path, meta: dict) -> None:
    """The documented fields (docs/trace-format.md) have their documented types: a reader fails here, in
    one line naming the field, rather than deep inside a report. Unknown keys are left alone."""
    def bad(key: str, expected: str):
        v = meta[key] if "." not in key else meta["counters"][key.split(".", 1)[1]]
        shown = json.dumps(v)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        shown = "" if v is None else f" ({shown})"
        return NotATrace(f"{mp}: \"{key}\" is {_JSON_TYPE.get(type(v), 'a value')}{shown}, expected {expected}",
                         "the file is damaged: restore it from the recorder's output")

    rid = meta.get("run_id")
    if "run_id" not in meta:
        raise NotATrace(f"{mp} has no \"run_id\"", "the file is damaged: restore it from the recorder's output")
    if not isinstance(rid, str) or not rid.strip() or "/" in rid or "\0" in rid or rid in (".", ".."):
        raise bad("run_id", "a non-empty string without '/'")
    if "schema_version" in meta and not (_is_int(meta["schema_version"]) and meta["schema_version"] >= 1):
        raise bad("schema_version", "an integer >= 1")
    for key in ("host", "kernel", "clock", "start_wall", "stop_wall", "tool_version"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(key, "a string or null")
    for key in ("start_ns", "stop_ns"):
        if meta.get(key) is not None and not (_is_int(meta[key]) and 0 <= meta[key] < 2 ** 63):
            raise bad(key, "a CLOCK_MONOTONIC time in ns (an integer >= 0) or null")
    if meta.get("synthetic") is not None and not isinstance(meta["synthetic"], bool):
        raise bad("synthetic", "true or false")
    labels = meta.get("labels")
    if labels is not None and not (isinstance(labels, dict) and all(isinstance(x, str) for x in labels.values())):
        raise bad("labels", "an object of strings (key -> value)")
    for key in ("attach_plan",):
        if meta.get(key) is not None and not (isinstance(meta[key], list) and all(isinstance(x, dict) for x in meta[key])):
            raise bad(key, "a list of objects")
    if meta.get("func_names") is not None and not (isinstance(meta["func_names"], list) and all(isinstance(x, str) for x in meta["func_names"])):
        raise bad("func_names", "a list of strings")
    counters = meta.get("counters")
    if counters is None:
        return
    if not isinstance(counters, dict):
        raise bad("counters", "an object of counts")
    for k, v in counters.items():
        if v is not None and not (_is_int(v) and 0 <= v < 2 ** 63):
            raise bad(f"counters.{k}", "a count (an integer >= 0) or null (unknown)")


def find_traces(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Each path is a trace directory, or a folder holding traces at any depth (e.g. hive-style
    `runs/run_id=…/`). Raises when a path holds no trace."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise NotATrace(f"{p} does not exist", "give the path of a trace directory")
        if (p / META).exists():
            read_meta(p)
            out.append(p)
            continue
        if not p.is_dir():
            raise NotATrace(f"{p} is not a trace directory", "give a directory written by `gpreempt-trace record`")
        found = sorted(m.parent for m in p.rglob(META))
        # a trace inside another's directory (a flight recorder's triggered/<window>/, same run_id) is read
        # only when named itself: found under the folder above, its rows would count twice
        roots = set(found)
        found = [f for f in found if not any(a in roots for a in f.parents)]
        if not found:
            raise NotATrace(f"{p} is not a trace (no {META} in it or below)", "give a trace directory or a folder of traces")
        for f in found:
            read_meta(f)
        out.extend(found)
    return out


def segment_files(trace: Path, table: str, warn: bool = True) -> list[Path]:
    """Closed segments of one table that read; a truncated or corrupt one is named in a warning
    and skipped; a small one a merged segment covers is left out (its rows are in the merged one)."""
    d = trace / table
    if not d.is_dir():
        if d.exists() or d.is_symlink():  # absent is "no rows" (older traces); anything else is damage
            raise NotATrace(f"{d} is not a folder: the trace's {table} cannot be read",
                            f"restore {table}/ from the recorder's output, or remove it to read the trace as having no {table} rows")
        return []
    good = []
    # a small segment a merged one covers is left out (compaction: both exist between the rename and the unlinks)
    names = os.listdir(d)
    drop = covered_names(names)
    for f in (d / n for n in sorted(names) if n.endswith(".parquet") and not n.startswith(".") and n not in drop):
        try:
            pq.read_metadata(f)
        except Exception as e:  # noqa: BLE001 - any unreadable footer means a bad segment
            if warn:
                warnings.warn(f"skipping unreadable segment {f} ({str(e).splitlines()[0][:120]})", stacklevel=2)
            continue
        if f.name == SCHEMA_FILE:
            continue
        good.append(f)
    return good


@dataclass
class TableOnDisk:
    """What the closed segments of one table hold, read from their Parquet footers only (cheap)."""

    rows: int = 0
    segments: int = 0
    min_ts_ns: int | None = None  # from the ts_ns column statistics; None when no row (or no statistics)
    max_ts_ns: int | None = None


def table_on_disk(trace: str | os.PathLike, table: str) -> TableOnDisk:
    """Rows, segments and ts_ns range of `table` from the segment footers (every writer of the trace,
    joined ones included; unreadable segments skipped with a warning, as segment_files does)."""
    out = TableOnDisk()
    for f in segment_files(Path(trace), table, warn=False):
        try:
            md = pq.read_metadata(f)
        except Exception:  # noqa: BLE001 - vanished or damaged since listing
            continue
        out.rows += md.num_rows
        out.segments += 1
        ts = next((i for i in range(md.num_columns) if md.schema.column(i).path == "ts_ns"), -1)
        for g in range(md.num_row_groups) if ts >= 0 else ():
            st = md.row_group(g).column(ts).statistics
            if st is None or not st.has_min_max:
                continue
            out.min_ts_ns = st.min if out.min_ts_ns is None else min(out.min_ts_ns, st.min)
            out.max_ts_ns = st.max if out.max_ts_ns is None else max(out.max_ts_ns, st.max)
    return out


# READERS_LOCK (trace/writer.py): record --keep deletes, and compaction unlinks, segments only while no
# reader holds this file shared


def hold_for_reading(trace: str | os.PathLike) -> int | None:
    """Hold a trace's readers lock, shared, when it has one (a flight recorder writes it: `record --keep`
    deletes old segments only under an exclusive lock, so none a reader listed vanishes before it is
    read). Returns the file descriptor to close when done reading, or None when there is no lock."""
    try:
        fd = os.open(Path(trace) / READERS_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


def disk_counters(trace: str | os.PathLike) -> dict[str, int]:
    """`*_written` counters as the closed segments show them (for a run killed before it wrote its
    counters). Losses cannot be derived from the segments: they stay unknown."""
    return {key: table_on_disk(trace, table).rows for table, key in COUNTER_OF_TABLE.items()}
