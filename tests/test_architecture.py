"""The package's imports follow docs/architecture.md: no cycle, and no import from an earlier stage into a later
one. Every `import`/`from ... import` counts, at module level or inside a function."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "gpreempt_trace"
DOC = REPO / "docs" / "architecture.md"


def stages(doc: str = None) -> list[tuple[str, list[str]]]:
    """(stage, module patterns) in table order, from the architecture page."""
    text = doc if doc is not None else DOC.read_text()
    out = []
    for line in text.splitlines():
        m = re.match(r"^\| ([^|]+?) \| (`[^|]+) \|$", line)
        if m:
            out.append((m.group(1), re.findall(r"`([\w.*]+)`", m.group(2))))
    return out


def modules(pkg: Path = PKG) -> dict[str, Path]:
    out = {}
    for f in pkg.rglob("*.py"):
        parts = list(f.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> package modules it imports (a `from pkg import name` of a submodule counts as that submodule)."""
    edges = {}
    for m, f in mods.items():
        base = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        out = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom):
                target = ".".join(base[: len(base) - (n.level - 1)] + ([n.module] if n.module else [])) if n.level else (n.module or "")
                for a in n.names:
                    sub = f"{target}.{a.name}"
                    out.add(sub if sub in mods else target)
            elif isinstance(n, ast.Import):
                out |= {a.name for a in n.names}
        edges[m] = {t for t in out if t in mods and t != m}
    return edges


def stage_of(module: str, table: list[tuple[str, list[str]]]) -> int | None:
    name = module.removeprefix("gpreempt_trace.") if module != "gpreempt_trace" else "gpreempt_trace"
    best = None
    for i, (_, pats) in enumerate(table):
        for p in pats:
            if p == name or (p.endswith(".*") and (name == p[:-2] or name.startswith(p[:-1]))):
                # the most specific pattern wins (recorder.runtime over recorder.*)
                spec = len(p.rstrip("*"))
                if best is None or spec > best[1]:
                    best = (i, spec)
    return None if best is None else best[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def upward(edges, table) -> list[str]:
    bad = []
    for m, targets in sorted(edges.items()):
        sm = stage_of(m, table)
        for t in sorted(targets):
            st = stage_of(t, table)
            if sm is not None and st is not None and st > sm:
                bad.append(f"{m} ({table[sm][0]}) imports {t} ({table[st][0]})")
    return bad


def test_every_module_has_a_stage():
    table = stages()
    assert [s for s, _ in table][:2] == ["contracts", "probe"] and len(table) >= 10
    assert [m for m in modules() if stage_of(m, table) is None] == []


def test_no_import_cycle():
    assert cycles(imports(modules())) == []


def test_no_import_goes_up_the_stages():
    assert upward(imports(modules()), stages()) == []


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "gpreempt_trace"
    (pkg / "recorder").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "recorder" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from . import api\n")  # contracts -> API: upward, and a cycle
    (pkg / "api.py").write_text("from .errors import f\nfrom .recorder import plan\n")
    (pkg / "recorder" / "plan.py").write_text("X = 1\n")
    edges = imports(modules(pkg))
    assert edges["gpreempt_trace.errors"] == {"gpreempt_trace.api"}
    assert cycles(edges) == [["gpreempt_trace.api", "gpreempt_trace.errors"]]
    table = stages()
    assert upward(edges, table) == ["gpreempt_trace.errors (contracts) imports gpreempt_trace.api (API)"]


@pytest.mark.parametrize("module, stage", [("gpreempt_trace.recorder.runtime", "record"), ("gpreempt_trace.recorder.plan", "probe"),
                                           ("gpreempt_trace.debugfs.parse", "debugfs"), ("gpreempt_trace", "contracts"),
                                           ("gpreempt_trace.cli.commands.record", "CLI and code generation")])
def test_stage_of(module, stage):
    table = stages()
    assert table[stage_of(module, table)][0] == stage
