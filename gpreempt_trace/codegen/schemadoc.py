"""Render the column tables of docs/trace-format.md from schema.py (kept current by a test)."""
from __future__ import annotations

from ..recorder import record_layout
from ..trace import schema


def column_table(table: str) -> str:
    lay = record_layout.layout() if table == "events" else None
    rows = ["| column | Arrow type | C type in the kernel record | unit | meaning |", "|---|---|---|---|---|"]
    for c in schema.TABLES[table]:
        if not c.in_parquet:
            continue
        ctype = c.c or (f"from `{c.derive}`" if c.derive else "user space")
        if lay and c.c:
            ctype = f"`{c.c}` @{lay.field(c.name).offset}"
        null = "" if c.nullable else " Never NULL."
        rows.append(f"| `{c.name}` | `{c.arrow}` | {ctype} | {c.unit} | {c.doc}{null} |")
    return "\n".join(rows)


def render_tables() -> str:
    out = []
    for t in schema.TABLES:
        out += [f"### `{t}`", "", column_table(t), ""]
    out += ["### Logical events (`events.event`)", "", ", ".join(f"`{e}`" for e in schema.EVENTS), "",
            "### Queue types (`queue_type`)", "", ", ".join(f"`{q}`" for q in schema.QUEUE_TYPES), ""]
    return "\n".join(out)
