"""Arrow tables as fixed-width text: the Markdown report's tables and `query`'s default output."""
from __future__ import annotations

import pyarrow as pa


def jsonable(v):
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, list) and v and isinstance(v[0], tuple) and len(v[0]) == 2:
        return {k: x for k, x in v}
    return v


HEX_COLUMNS = ("gpu_id", "pasid")  # shown in hex in tables, as KFD and debugfs print them


def _cell(col: str, v) -> str:
    if v is None:
        return "NULL"
    if col in HEX_COLUMNS and isinstance(v, int):
        return f"0x{v:x}"
    return str(jsonable(v))


def format_table(tbl: pa.Table, max_rows: int = 200, total: int | None = None) -> str:
    """The first max_rows rows of `tbl` as aligned text, and the row count (`total`: of the whole result,
    when `tbl` holds only its first rows)."""
    total = tbl.num_rows if total is None else total
    cols = tbl.column_names
    rows = tbl.slice(0, max_rows).to_pylist()
    cells = [[_cell(c, r[c]) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells]
    if total > max_rows:
        out.append(f"... {total - max_rows} more rows (use --format csv or --out)")
    out.append(f"({total} rows)")
    return "\n".join(out) + "\n"
