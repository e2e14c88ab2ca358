"""Print or save an Arrow table as table, csv, json or parquet."""
from __future__ import annotations

import io
import json
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import GptError
from ..report.tables import format_table, jsonable


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
        rows = [{k: jsonable(v) for k, v in r.items()} for r in tbl.to_pylist()]
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
            vals = [None if v is None else json.dumps(jsonable(v)) for v in tbl.column(i).to_pylist()]
            tbl = tbl.set_column(i, f.name, pa.array(vals, pa.string()))
    return tbl
