"""The BPF header, the ctypes record, the numpy dtype and the Arrow schema agree (one source of truth)."""
import ctypes
import subprocess

import pyarrow as pa
import pytest

from gpreempt_trace.recorder import decode, record_layout
from gpreempt_trace.trace import schema
from gpreempt_trace.synthetic import records as synth


def test_checked_in_header_is_current():
    assert record_layout.HEADER_PATH.read_text() == record_layout.c_header(), "run `make codegen`"


def _compiled_layout(tmp_path):
    """sizeof/offsetof of struct gpt_event as gcc lays out the generated header."""
    lay = record_layout.layout()
    prog = ['#include <stdio.h>', '#include <stddef.h>', f'#include "{record_layout.HEADER_PATH}"', "int main(void) {",
            '  printf("size %zu\\n", sizeof(struct gpt_event));']
    for f in lay.fields:
        prog.append(f'  printf("{f.name} %zu %zu\\n", offsetof(struct gpt_event, {f.name}), sizeof(((struct gpt_event *)0)->{f.name}));')
    prog.append("  return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(prog))
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", exe, src], check=True)
    out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout.split("\n")
    size = int(out[0].split()[1])
    fields = {line.split()[0]: (int(line.split()[1]), int(line.split()[2])) for line in out[1:] if line}
    return size, fields


def test_c_ctypes_numpy_agree(tmp_path):
    size, c_fields = _compiled_layout(tmp_path)
    lay = record_layout.layout()
    ct = record_layout.ctypes_struct(lay)
    dt = record_layout.numpy_dtype(lay)
    assert size == lay.size == ctypes.sizeof(ct) == dt.itemsize
    for f in lay.fields:
        assert c_fields[f.name] == (f.offset, f.size), f.name
        assert getattr(ct, f.name).offset == f.offset, f.name
        assert getattr(ct, f.name).size == f.size, f.name
        assert dt.fields[f.name][1] == f.offset, f.name
        assert dt.fields[f.name][0].itemsize == f.size, f.name
    # the order of the C struct is the order codegen chose
    assert [f.name for f in lay.fields] == sorted(c_fields, key=lambda n: c_fields[n][0])


def test_arrow_schema_follows_declaration_order():
    sch = schema.table_schema("events")
    assert sch.names == [c.name for c in schema.EVENT_COLUMNS if c.in_parquet]
    for c in schema.EVENT_COLUMNS:
        if c.in_parquet:
            assert sch.field(c.name).type == c.arrow
            assert sch.field(c.name).metadata[b"doc"].decode() == c.doc


def test_v1_minimum_columns_present():
    must = {
        "events": dict(ts_ns=pa.int64(), dur_ns=pa.int64(), event=pa.string(), func=pa.string(), tgid=pa.int32(),
                       tid=pa.int32(), cpu=pa.int32(), comm=pa.string(), gpu_id=pa.uint32(), queue_id=pa.int32(),
                       pasid=pa.uint32(), queue_type=pa.string(), doorbell_off=pa.uint32(), priority=pa.int32(),
                       is_active=pa.bool_(), ret=pa.int64(), ioctl_cmd=pa.string()),
        "markers": dict(ts_ns=pa.int64(), source=pa.string(), kind=pa.string(), tgid=pa.int32(), target_tgid=pa.int32(),
                        gpu_id=pa.uint32(), scheme=pa.string(), queue_ids=pa.list_(pa.int32()), seq=pa.int64(),
                        label=pa.string(), value_ns=pa.int64()),
    }
    for table, cols in must.items():
        sch = schema.table_schema(table)
        for name, typ in cols.items():
            assert sch.field(name).type == typ, (table, name)


def test_every_column_documented_with_c_or_arrow_type():
    for table, cols in schema.TABLES.items():
        names = [c.name for c in cols]
        assert len(names) == len(set(names)), table
        for c in cols:
            assert c.doc and (c.in_record or c.in_parquet), (table, c.name)
            if c.derive:
                assert c.derive in names, (table, c.name)


def test_decode_nulls_names_and_lists():
    funcs = ["sys_enter_ioctl", "kfd_ioctl"]
    rec = synth.records(
        [
            dict(ts_ns=10, event="kfd_ioctl", func="kfd_ioctl", tgid=7, comm="python3", ret=-22, ioctl_nr=0xC0584B02, dur_ns=5),
            dict(ts_ns=20, event="queues_suspend", queue_ids=[3, 1, 2], num_queues=3, target_pid=9),
            dict(ts_ns=30, event="queue_create", queue_type="compute_aql", queue_id=0, is_active=True, priority=7),
        ],
        funcs,
    )
    names = {0xC0584B02: "AMDKFD_IOC_CREATE_QUEUE"}
    t = decode.EventDecoder("r1", funcs, names.get).decode(rec).to_pylist()
    assert [r["event"] for r in t] == ["kfd_ioctl", "queues_suspend", "queue_create"]
    assert t[0]["func"] == "kfd_ioctl" and t[1]["func"] is None
    assert t[0]["ioctl_cmd"] == "AMDKFD_IOC_CREATE_QUEUE" and t[1]["ioctl_cmd"] is None
    assert t[0]["ret"] == -22 and t[1]["ret"] is None  # never -1 for unknown
    assert t[0]["dur_ns"] == 5 and t[2]["dur_ns"] is None
    assert t[0]["comm"] == "python3" and t[1]["comm"] is None
    assert t[1]["queue_ids"] == [3, 1, 2] and t[0]["queue_ids"] is None
    assert t[2]["queue_type"] == "compute_aql" and t[2]["is_active"] is True and t[2]["priority"] == 7
    assert t[2]["queue_id"] == 0 and t[0]["queue_id"] is None
    assert all(r["run_id"] == "r1" for r in t)


def test_queue_ids_clipped_to_capacity():
    rec = synth.records([dict(ts_ns=1, event="queues_suspend", queue_ids=list(range(20)), num_queues=20)])
    t = decode.EventDecoder("r").decode(rec).to_pylist()
    assert t[0]["num_queues"] == 20 and t[0]["queue_ids"] == list(range(schema.MAX_QUEUE_IDS))




@pytest.mark.parametrize("name", [c.name for c in schema.EVENT_COLUMNS if c.in_record and c.nullable])
def test_header_defines_validity_bit(name):
    assert f"#define GPT_V_{name} " in record_layout.HEADER_PATH.read_text()
