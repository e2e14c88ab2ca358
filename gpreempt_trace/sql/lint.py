"""The query-module linter: the rules every module of `queries/` keeps (Perfetto-stdlib style).

Per module (`lint_module`):
- docs: a description comment at the top; no `CREATE OR REPLACE`; every object is prefixed with the
  module's name (`queries/preempt/calls.sql` -> `preempt_calls...`) or private (`_name`); every output
  column of a public view has a `--` comment above it.
- quantiles: reported percentiles use `quantile_disc` only (the reason is in queries/prelude.sql):
  `quantile_cont`, `median`, `quantile`, `percentile_cont`/`_disc` and `approx_quantile` are refused.
- latency: "latency" names the kernel-measured latency of a preemption's two sides only
  (LATENCY_COLUMNS); any other identifier with the word (a controller's call time, a request's
  response time) is refused.
Across modules (`lint_tree`):
- private views: a `_name` defined in a module is used only in that module; another module or the
  Python code (the report, the export) reads a public, documented view instead.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from .query import _CREATE, QUERIES_DIR, Module, _split_statements, list_modules

# the one word for kernel-measured preemption latency: request -> end of the kernel's unmap (preempt)
# or map (resume) on the request's GPU (preempt.preemption)
LATENCY_COLUMNS = frozenset({"preempt_latency_ns", "resume_latency_ns"})
QUANTILE_FUNCTION = "quantile_disc"
_OTHER_QUANTILES = re.compile(r"\b(quantile_cont|median|quantile|percentile_cont|percentile_disc|approx_quantile|reservoir_quantile)\s*\(", re.I)
_IDENT = re.compile(r"\b[A-Za-z_]\w*\b")


def lint_module(mod: Module) -> list[str]:
    """Problems of one module: documentation, quantile function, the word "latency"."""
    return _doc_problems(mod) + _quantile_problems(mod) + _latency_problems(mod)


def lint_tree(root: Path = QUERIES_DIR, python: Iterable[Path] = (Path(__file__).parents[1],)) -> list[str]:
    """Problems of every module under root, and private views used outside their module (by another
    module, or in the .py files under the `python` folders)."""
    mods = list_modules(root)
    problems = [p for m in mods.values() for p in lint_module(m)]
    return problems + private_view_leaks(mods, python)


def private_views(mod: Module) -> list[str]:
    """The private (`_name`) objects a module defines."""
    return [m.group(2) for stmt in _split_statements(mod.sql) if (m := _CREATE.search(stmt)) and m.group(2).startswith("_")]


def private_view_leaks(mods: dict[str, Module], python: Iterable[Path] = ()) -> list[str]:
    """`file: uses _x, private to module m` for every use of a module's private view outside it."""
    owner = {v: m for m in mods.values() for v in private_views(m)}
    if not owner:
        return []
    used = re.compile(r"\b(" + "|".join(map(re.escape, sorted(owner))) + r")\b")
    out = []
    for m in mods.values():
        for name in sorted(set(used.findall(_code(m.sql))) - set(private_views(m))):
            out.append(f"{m.path}: uses {name}, private to module {owner[name].name}")
    for folder in python:
        for f in sorted(Path(folder).rglob("*.py")):
            for name in sorted(set(used.findall(f.read_text()))):
                out.append(f"{f}: uses {name}, private to module {owner[name].name}")
    return out


def _doc_problems(mod: Module) -> list[str]:
    problems = []
    if not mod.description:
        problems.append(f"{mod.path}: no description comment at the top")
    if re.search(r"CREATE\s+OR\s+REPLACE", mod.sql, re.I):
        problems.append(f"{mod.path}: uses CREATE OR REPLACE")
    prefix = mod.main_view
    for stmt in _split_statements(mod.sql):
        m = _CREATE.search(stmt)
        if not m:
            continue
        name = m.group(2)
        if not (name == prefix or name.startswith(prefix + "_") or name.startswith("_")):
            problems.append(f"{mod.path}: {name} is neither prefixed {prefix!r} nor private (_name)")
        if name.startswith("_") or m.group(1).upper() == "MACRO":
            continue
        problems += [f"{mod.path}: {name}.{col} has no comment above it" for col in _undocumented_columns(stmt[m.end():])]
    return problems


def _quantile_problems(mod: Module) -> list[str]:
    found = sorted({m.group(1).lower() for m in _OTHER_QUANTILES.finditer(_code(mod.sql))})
    return [f"{mod.path}: uses {f}(); reported percentiles use {QUANTILE_FUNCTION} (queries/prelude.sql says why)" for f in found]


def _latency_problems(mod: Module) -> list[str]:
    words = sorted({w for w in _IDENT.findall(_code(mod.sql)) if "latency" in w.lower() and w.lower() not in LATENCY_COLUMNS})
    return [f"{mod.path}: {w}: \"latency\" is the kernel-measured preemption latency only ({', '.join(sorted(LATENCY_COLUMNS))}); "
            "name a controller's call time *call*, a request's end - due its response time" for w in words]


def _code(sql: str) -> str:
    """The SQL without `--` comments and string literals (each literal becomes '')."""
    out, i, n = [], 0, len(sql)
    while i < n:
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql[i] == "'":
            j = i + 1
            while j < n and not (sql[j] == "'" and not sql.startswith("''", j)):
                j += 2 if sql.startswith("''", j) else 1
            out.append("''")
            i = j + 1
        else:
            out.append(sql[i])
            i += 1
    return "".join(out)


def _top_level_words(body: str, word: str, start: int = 0):
    """Positions of `word` (case-insensitive, whole word) outside parentheses and `--` comments."""
    low, depth, i = body.lower(), 0, start
    while i < len(body):
        ch = body[i]
        if ch == "-" and body.startswith("--", i):
            i = body.find("\n", i)
            if i < 0:
                return
            continue
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and low.startswith(word, i) and not body[i - 1 : i].isalnum() and not body[i + len(word) : i + len(word) + 1].isalnum():
            yield i
        i += 1


def _undocumented_columns(body: str) -> list[str]:
    """Output columns of the outermost (last top-level) SELECT list that lack a `--` comment above them."""
    selects = list(_top_level_words(body, "select"))
    if not selects:
        return []
    sel_start = selects[-1] + len("select")
    end = next(_top_level_words(body, "from", sel_start), len(body))
    items, depth, cur = [], 0, []
    for line in body[sel_start:end].splitlines():
        cur.append(line)
        depth += line.count("(") - line.count(")")
        if depth == 0 and line.rstrip().endswith(","):
            items.append(cur)
            cur = []
    if any(x.strip() for x in cur):
        items.append(cur)
    missing = []
    for it in items:
        code = [x for x in it if x.strip() and not x.strip().startswith("--")]
        if not code:
            continue
        has_doc = any(x.strip().startswith("--") for x in it[: it.index(code[0])])
        if not has_doc:
            missing.append(re.split(r"\s+as\s+", code[-1].strip().rstrip(","), flags=re.I)[-1].strip())
    return missing
