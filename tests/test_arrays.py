"""arrays.py builds the same Arrow arrays as pyarrow's converters, and the recorder's data path (decode,
segment writer, markers) never imports pandas (pyarrow's converters do: ~45 MiB of the recorder's RSS)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from gpreempt_trace.trace import arrays, schema


@pytest.mark.parametrize("values,typ", [
    ([1, None, -3], pa.int32()),
    ([2**64 - 1, 0, None], pa.uint64()),
    ([True, None, False], pa.bool_()),
    (["a", None, "", "ünï"], pa.string()),
    ([[1, 2], None, [], [7]], pa.list_(pa.int32())),
    ([[1], None], pa.list_(pa.uint32())),
    ([None, None], pa.string()),
    ([], pa.int64()),
])
def test_column_equals_pa_array(values, typ):
    got = arrays.column(values, typ)
    got.validate(full=True)
    assert got.equals(pa.array(values, typ))


def test_out_of_range_values_raise_as_pa_array_does():
    with pytest.raises(pa.ArrowInvalid):
        arrays.column([2**40], pa.int32())


def test_from_numpy_with_nulls_and_strided_input():
    rec = np.zeros(5, [("a", "<u4"), ("b", "u1")])
    rec["a"] = [1, 2, 3, 4, 5]
    null = np.array([False, True, False, False, True])
    got = arrays.from_numpy(rec["a"], pa.int64(), null)
    assert got.to_pylist() == [1, None, 3, 4, None]
    assert got.null_count == 2


def test_table_from_rows_equals_from_pylist():
    sch = schema.table_schema("markers")
    rows = [{"run_id": "r", "ts_ns": 5, "source": "launcher", "kind": "workload_start", "tgid": 7, "queue_ids": [1, 2]},
            {"run_id": "r", "ts_ns": 6, "source": "x", "kind": "k", "label": "exit_code=0", "value_ns": 3, "gpu_id": 2**32 - 1}]
    assert arrays.table_from_rows(rows, sch).equals(pa.Table.from_pylist(rows, schema=sch))


DATA_PATH = """
import sys, numpy as np
from gpreempt_trace.recorder import record_layout
from gpreempt_trace.recorder.decode import EventDecoder
from gpreempt_trace.recorder import ioctls
from gpreempt_trace.trace.directory import TraceWriter
from gpreempt_trace.trace.markers import MarkerWriter
from gpreempt_trace.trace.processes import ProcessLog
tw = TraceWriter.create(sys.argv[1], {})
rec = np.zeros(100, record_layout.numpy_dtype())
lay = record_layout.layout()
rec["valid"] = (1 << lay.field("comm").valid_bit) | (1 << lay.field("ioctl_nr").valid_bit) | (1 << lay.field("qids").valid_bit)
rec["valid"][:50] |= 1 << lay.field("tgid").valid_bit  # a tgid column with NULLs (ProcessLog.see_table)
rec["tgid"] = 4242
rec["comm"][:50] = b"a"
rec["comm"][50:] = b"b"
rec["ioctl_nr"] = np.arange(100) % 3 + 0xC0184B00
rec["num_queues"] = 2
rec["event_id"] = 12
w = tw.writer("events")
tbl = EventDecoder(tw.run_id, ["f"], ioctls.ioctl_name).decode(rec)
w.append_table(tbl)
plog = ProcessLog(tw, "recorder", read=False)
plog.see_table(tbl)
assert list(plog.seen) == [4242], plog.seen
m = MarkerWriter(sys.argv[1], "launcher")
m.add("workload_start", target_tgid=1, queue_ids=[1])
m.close()
tw.close()
print("pandas" in sys.modules)
"""


def test_recorder_data_path_does_not_import_pandas(tmp_path):
    out = subprocess.run([sys.executable, "-c", DATA_PATH, str(tmp_path / "t")], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"], out.stderr
