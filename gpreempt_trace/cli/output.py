"""Print or save an Arrow table as table, csv, json or parquet."""
from __future__ import annotations

import io
import json
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import GptError


def _jsonable(v):
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, list) and v and isinstance(v[0], tuple) and len(v[0]) == 2:
        return {k: x for k, x in v}
    return v


def render(tbl: pa.Table, fmt: str = "table", out_file: str | None = None) -> None:
    if fmt == "parquet":
        if not out_file:
            raise GptError("--format parquet writes a binary file", "add --out FILE.parquet")
        pq.write_table(tbl, out_file, compression="zstd")
        return
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(_flatten_nested(tbl), buf)
        text = buf.getvalue().decode()
    elif fmt == "json":
        rows = [{k: _jsonable(v) for k, v in r.items()} for r in tbl.to_pylist()]
        text = "\n".join(json.dumps(r, default=str) for r in rows) + ("\n" if rows else "")
    else:
        text = format_table(tbl)
    if out_file:
        with open(out_file, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def _flatten_nested(tbl: pa.Table) -> pa.Table:
    """CSV has no lists or maps: write them as JSON text."""
    for i, f in enumerate(tbl.schema):
        if pa.types.is_nested(f.type):
            vals = [None if v is None else json.dumps(_jsonable(v)) for v in tbl.column(i).to_pylist()]
            tbl = tbl.set_column(i, f.name, pa.array(vals, pa.string()))
    return tbl


HEX_COLUMNS = ("gpu_id", "pasid")  # shown in hex in tables, as KFD and debugfs print them


def _cell(col: str, v) -> str:
    if v is None:
        return "NULL"
    if col in HEX_COLUMNS and isinstance(v, int):
        return f"0x{v:x}"
    return str(_jsonable(v))


def format_table(tbl: pa.Table, max_rows: int = 200) -> str:
    cols = tbl.column_names
    rows = tbl.slice(0, max_rows).to_pylist()
    cells = [[_cell(c, r[c]) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells]
    if tbl.num_rows > max_rows:
        out.append(f"... {tbl.num_rows - max_rows} more rows (use --format csv or --out)")
    out.append(f"({tbl.num_rows} rows)")
    return "\n".join(out) + "\n"
