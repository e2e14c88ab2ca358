"""The marker vocabulary is one list (gpreempt_trace.trace.markers.KINDS): every kind the package writes and
every kind a SQL module reads is in it, and MarkerWriter refuses anything else."""
from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

from gpreempt_trace.trace import markers, directory as trace
from gpreempt_trace.contracts import resources
from gpreempt_trace.sql.query import connect



def _package_sources():
    import gpreempt_trace

    root = Path(gpreempt_trace.__file__).parent
    # debugfs/ writes rows of the snapshots table, whose `kind` is another vocabulary
    return [p for p in root.rglob("*.py") if p.name != "markers.py" and "debugfs" not in p.parts]


# calls whose first argument is a marker kind: MarkerWriter.add, the writers' own _mark wrappers, check_kind
KIND_CALLS = {"add", "_mark", "check_kind"}
NUMPY_SORT_KINDS = {"stable", "quicksort", "mergesort", "heapsort"}  # np.argsort(kind=...), not markers


class Unresolved(Exception):
    pass


def _strings(node: ast.AST, scope: ast.AST, depth: int = 0) -> set[str]:
    """Every string `node` can be: a literal, either branch of `a if c else b`, an f-string (each
    placeholder resolved the same way), or a local name bound by assignments or by a for loop over a
    literal tuple/list (an element, or one position of each element). Raises Unresolved otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body, scope, depth) | _strings(node.orelse, scope, depth)
    if isinstance(node, ast.JoinedStr):
        parts = [_strings(v.value if isinstance(v, ast.FormattedValue) else v, scope, depth) for v in node.values]
        return {"".join(combo) for combo in itertools.product(*parts)}
    if isinstance(node, ast.Name) and depth < 8:
        out: set[str] = set()
        for n in ast.walk(scope):
            if isinstance(n, ast.Assign) and any(isinstance(x, ast.Name) and x.id == node.id for x in n.targets):
                out |= _strings(n.value, scope, depth + 1)
            elif isinstance(n, (ast.For, ast.comprehension)) and isinstance(n.iter, (ast.Tuple, ast.List)):
                if isinstance(n.target, ast.Name) and n.target.id == node.id:
                    for e in n.iter.elts:
                        out |= _strings(e, scope, depth + 1)
                elif isinstance(n.target, ast.Tuple):
                    for i, x in enumerate(n.target.elts):
                        if isinstance(x, ast.Name) and x.id == node.id:
                            for e in n.iter.elts:
                                if not isinstance(e, (ast.Tuple, ast.List)):
                                    raise Unresolved(ast.unparse(node))
                                out |= _strings(e.elts[i], scope, depth + 1)
        if out:
            return out
    raise Unresolved(ast.unparse(node))


def kinds_written(source: str, where: str = "<source>") -> dict[str, str]:
    """Marker kinds a module's source writes -> where (file:line): the first argument of add/_mark/
    check_kind, `kind=` keywords and "kind" keys of dict literals. A kind built by an f-string counts
    with every value its placeholders can take; one whose values cannot be told is an error (a kind
    the vocabulary check cannot see). A plain name that cannot be resolved is a pass-through (a
    wrapper's `kind` parameter): its callers are checked."""
    tree = ast.parse(source)
    funcs = sorted((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), key=lambda f: f.lineno)
    out: dict[str, str] = {}
    for n in ast.walk(tree):
        exprs = []
        if isinstance(n, ast.Call):
            name = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None)
            if name in KIND_CALLS and n.args:
                exprs.append(n.args[0])
            exprs += [k.value for k in n.keywords if k.arg == "kind"]
        elif isinstance(n, ast.Dict):
            exprs += [v for k, v in zip(n.keys, n.values) if isinstance(k, ast.Constant) and k.value == "kind"]
        for e in exprs:
            if not isinstance(e, (ast.Constant, ast.JoinedStr, ast.Name, ast.IfExp)) or \
                    (isinstance(e, ast.Constant) and not isinstance(e.value, str)):
                continue
            scope = next((f for f in reversed(funcs) if f.lineno <= e.lineno <= f.end_lineno), tree)
            try:
                values = _strings(e, scope)
            except Unresolved:
                if isinstance(e, ast.Name):
                    continue
                raise AssertionError(f"{where}:{e.lineno}: cannot tell which marker kinds {ast.unparse(e)} builds")
            for v in values - NUMPY_SORT_KINDS:
                out.setdefault(v, f"{where}:{e.lineno}")
    return out


def test_the_scan_sees_literal_and_f_string_kinds():
    src = """
def flush(self, res, why):
    base = "preempt" if res.op == "preempt" else "resume"
    self._mark(f"{base}_request", 1, label=why)
    self.markers.add("queue_result", seq=1)
    rows = [dict(kind=k) for k in ("step_start", "step_done")]
    for kind, ts in (("request_start", 1), ("request_end", 2)):
        out.append({"kind": kind, "ts_ns": ts})
    np.argsort(x, kind="stable")

def _mark(self, kind, ts_ns):
    self.markers.add(kind, ts_ns=ts_ns)
"""
    assert sorted(kinds_written(src)) == ["preempt_request", "queue_result", "request_end", "request_start", "resume_request",
                                          "step_done", "step_start"]
    with pytest.raises(AssertionError, match=r"<source>:2: cannot tell which marker kinds f'\{op\}_done' builds"):
        kinds_written("def f(self, op):\n    self._mark(f'{op}_done')\n")


def test_every_kind_written_by_the_package_is_in_the_vocabulary():
    written: dict[str, str] = {}
    for p in _package_sources():
        written.update(kinds_written(p.read_text(), str(p)))
    unknown = sorted(f"{k} ({w})" for k, w in written.items() if k not in markers.KINDS)
    assert not unknown, f"marker kinds written but not in markers.KINDS: {unknown}"
    # the controller's f-string kinds are seen
    assert {"preempt_request", "preempt_done", "resume_request", "resume_done"} <= written.keys()


def test_every_marker_kind_read_by_sql_is_in_the_vocabulary():
    read = set()
    for p in resources.queries().rglob("*.sql"):
        sql = p.read_text()
        if "markers" not in sql:
            continue
        for m in re.finditer(r"kind\s*(?:=|IN)\s*\(?((?:\s*'[a-z_]+'\s*,?)+)\)?", sql):
            read |= set(re.findall(r"'([a-z_]+)'", m.group(1)))
    snapshot_kinds = {"device", "mqd", "hqd_cp", "hqd_hiq", "hqd_sdma", "rl_packet"}  # snapshots.kind, another table
    unknown = sorted(read - set(markers.KINDS) - snapshot_kinds)
    assert not unknown, f"SQL reads marker kinds not in markers.KINDS: {unknown}"


def test_marker_writer_refuses_unknown_kind_and_writes_known_ones(tmp_path):
    tw = trace.TraceWriter.create(tmp_path / "t", run_id="r")
    tw.close()
    with markers.MarkerWriter(tmp_path / "t", "controller") as mw:
        with pytest.raises(ValueError, match="'preempt_begin' is not in gpreempt_trace.trace.markers.KINDS"):
            mw.add("preempt_begin")
        mw.add("preempt_request", ts_ns=5, seq=1, scheme="A", target_tgid=42, queue_ids=[3])
    rows = connect([str(tmp_path / "t")]).execute(
        "SELECT run_id, ts_ns, source, kind, seq, scheme, target_tgid, queue_ids FROM markers").fetchall()
    assert rows == [("r", 5, "controller", "preempt_request", 1, "A", 42, [3])]


def test_no_writer_means_no_trace_and_no_error():
    mw = markers.MarkerWriter(None, "workload")
    mw.add("request_start", seq=1)
    mw.close()
