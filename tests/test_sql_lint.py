"""gpreempt_trace.sql.lint: each rule fails on a tiny bad module, and the real queries/ pass them all."""
from pathlib import Path

import pytest

from gpreempt_trace.sql import query, lint as sql_lint

PKG = Path(sql_lint.__file__).parent
TESTS = Path(__file__).parent


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_real_queries_pass_every_rule():
    assert sql_lint.lint_tree(python=[PKG, TESTS]) == []


@pytest.mark.parametrize("name", sorted(query.list_modules()))
def test_each_real_module_passes(name):
    assert sql_lint.lint_module(query.list_modules()[name]) == []


def test_private_view_used_by_another_module_or_python(tmp_path):
    q = _tree(tmp_path / "q", {
        "a/b.sql": "-- A.\nCREATE VIEW _a_b_rows AS SELECT 1 AS x;\nCREATE VIEW a_b AS\nSELECT\n  -- x.\n  x\nFROM _a_b_rows;\n",
        "c/d.sql": "-- C.\n-- @include a.b\nCREATE VIEW c_d AS\nSELECT\n  -- x.\n  x\nFROM _a_b_rows;\n",
    })
    py = _tree(tmp_path / "py", {"report.py": 'SQL = "SELECT * FROM _a_b_rows"\n'})
    assert sql_lint.lint_tree(q, [py]) == [
        f"{q / 'c/d.sql'}: uses _a_b_rows, private to module a.b",
        f"{py / 'report.py'}: uses _a_b_rows, private to module a.b",
    ]
    (q / "c/d.sql").write_text("-- C.\n-- @include a.b\nCREATE VIEW c_d AS\nSELECT\n  -- x.\n  x\nFROM a_b;\n")  # the public view
    assert sql_lint.lint_tree(q, []) == []


def test_undocumented_output_column(tmp_path):
    q = _tree(tmp_path, {"x.sql": "-- Demo.\nCREATE VIEW x AS\nSELECT\n  -- documented\n  a,\n  b AS bee\nFROM t;\n"})
    assert sql_lint.lint_tree(q, []) == [f"{q / 'x.sql'}: x.bee has no comment above it"]


def test_other_quantile_functions(tmp_path):
    q = _tree(tmp_path, {"x.sql": "-- Demo (quantile_cont in a comment is fine).\nCREATE VIEW x AS\nSELECT\n"
                                   "  -- p50.\n  quantile_cont(v, 0.5) AS p50,\n  -- p50 again.\n  median(v) AS m,\n"
                                   "  -- p99.\n  quantile_disc(v, 0.99) AS p99\nFROM t;\n"})
    why = "reported percentiles use quantile_disc (queries/prelude.sql says why)"
    assert sql_lint.lint_tree(q, []) == [f"{q / 'x.sql'}: uses median(); {why}", f"{q / 'x.sql'}: uses quantile_cont(); {why}"]


def test_latency_only_for_kernel_measured_preemption_latency(tmp_path):
    q = _tree(tmp_path, {"x.sql": "-- Demo.\nCREATE VIEW x AS\nSELECT\n  -- controller call: not a latency.\n"
                                   "  done_ns - request_ns AS latency_ns,\n  -- kernel-measured.\n  preempt_latency_ns,\n"
                                   "  -- a string may say it.\n  'latency' AS word\nFROM t;\n"})
    (problem,) = sql_lint.lint_tree(q, [])
    assert problem.startswith(f"{q / 'x.sql'}: latency_ns: \"latency\" is the kernel-measured preemption latency only "
                              "(preempt_latency_ns, resume_latency_ns)")


def test_docs_rules(tmp_path):
    q = _tree(tmp_path, {"x.sql": "CREATE OR REPLACE VIEW y AS SELECT 1 AS one;\n"})
    probs = sql_lint.lint_tree(q, [])
    assert any("no description" in s for s in probs) and any("CREATE OR REPLACE" in s for s in probs)
    assert any("neither prefixed" in s for s in probs)
