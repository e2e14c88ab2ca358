"""trace/arrays.column() builds a list<int> column with NULLs without importing pyarrow.compute (every
marker-writing process paid that import on its first marker: seconds under TCG, docs/controller.md Soak)."""
from __future__ import annotations

import subprocess
import sys

CODE = r'''
import sys
import pyarrow as pa
from gpreempt_trace.trace.arrays import column
t, t32 = pa.list_(pa.int64()), pa.list_(pa.int32())
cases = [([[1, 2], None, [3]], t), ([None, None], t), ([[], None, [5, 6, 7]], t), ([[2**40]], t), ([], t), ([[1], None], t32)]
built = [column(vals, typ) for vals, typ in cases]
print("compute imported:", "pyarrow.compute" in sys.modules)  # before pa.array below, which may import it
for (vals, typ), a in zip(cases, built):
    a.validate(full=True)
    assert a.equals(pa.array(vals, typ)) and a.null_count == vals.count(None), (vals, a)
'''


def test_list_column_with_nulls_equals_pa_array_and_leaves_pyarrow_compute_unimported():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "compute imported: False"
