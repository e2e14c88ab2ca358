"""decode.EventDecoder against a plain per-record reference decoding: every column of every row equal,
for batches where a field is known in some records, in all, or in none (the decoder's three paths)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from gpreempt_trace.recorder import decode, record_layout
from gpreempt_trace.trace import schema

FUNCS = ["sys_enter_ioctl", "kfd_ioctl", "queues_unmap"]
IOCTL_NAMES = {0xC0584B02: "AMDKFD_IOC_CREATE_QUEUE", 0x80084B01: "AMDKFD_IOC_GET_VERSION"}


def _reference(rec: np.ndarray, run_id: str) -> list[dict]:
    """One dict per record, field by field, straight from the layout's validity bits."""
    lay = record_layout.layout()
    bit = {f.name: f.valid_bit for f in lay.fields}
    cols = {c.name: c for c in schema.EVENT_COLUMNS}
    out = []
    for r in rec:
        valid = int(r["valid"])

        def known(name, valid=valid):
            return bit[name] is None or bool(valid >> bit[name] & 1)

        row = {}
        for f in schema.table_schema("events"):
            c = cols[f.name]
            src = c.derive or c.name
            if c.name == "run_id":
                row[f.name] = run_id
            elif not known(src):
                row[f.name] = None
            elif src == "event_id":
                i = int(r[src])
                row[f.name] = schema.EVENTS[i] if i < len(schema.EVENTS) else None
            elif src == "func_id":
                i = int(r[src])
                row[f.name] = FUNCS[i] if i < len(FUNCS) else None
            elif src == "qtype_id":
                i = int(r[src])
                row[f.name] = schema.QUEUE_TYPES[i] if i < len(schema.QUEUE_TYPES) else None
            elif c.derive == "ioctl_nr":
                row[f.name] = IOCTL_NAMES.get(int(r[src]))
            elif c.name == "queue_ids":  # the id: the bits below KFD_DBG_QUEUE_ERROR_BIT (30)
                row[f.name] = [int(q) % (1 << 30) for q in r["qids"][: min(int(r["num_queues"]), schema.MAX_QUEUE_IDS)]]
            elif c.name == "queue_id_status":  # bit 31 INVALID (wins), bit 30 ERROR; unknown on ioctl rows (read at entry)
                row[f.name] = None if r["event_id"] == schema.EVENTS.index("kfd_ioctl") else [
                    "invalid" if int(q) >> 31 else "error" if int(q) >> 30 else "ok"
                    for q in r["qids"][: min(int(r["num_queues"]), schema.MAX_QUEUE_IDS)]]
            elif c.c and c.c.startswith("char"):
                row[f.name] = bytes(r[src]).rstrip(b"\0").decode()
            elif f.type == pa.bool_():
                row[f.name] = bool(r[src])
            else:
                row[f.name] = int(r[src].astype(f.type.to_pandas_dtype()))
        out.append(row)
    return out


def _random_records(n: int, seed: int, always: set[str], never: set[str]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lay = record_layout.layout()
    raw = rng.integers(0, 256, n * lay.size, dtype=np.uint8)
    rec = raw.view(record_layout.numpy_dtype(lay)).copy()
    rec["event_id"] = rng.integers(0, len(schema.EVENTS) + 2, n)  # ids past the table: NULL
    rec["func_id"] = rng.integers(0, len(FUNCS) + 2, n)
    rec["qtype_id"] = rng.integers(0, len(schema.QUEUE_TYPES) + 2, n)
    rec["ioctl_nr"] = rng.choice([0xC0584B02, 0x80084B01, 0xC0104B99], n)
    rec["comm"] = rng.choice([b"python3", b"ioctl_loop", b"a" * 16, b""], n)
    rec["num_queues"] = rng.integers(0, 20, n)
    valid = rng.integers(0, 2**63, n, dtype=np.uint64)
    for f in lay.fields:
        if f.valid_bit is None:
            continue
        if f.name in always:
            valid |= np.uint64(1 << f.valid_bit)
        if f.name in never:
            valid &= ~np.uint64(1 << f.valid_bit)
    rec["valid"] = valid
    return rec


NULLABLE = [f.name for f in record_layout.layout().fields if f.valid_bit is not None]


@pytest.mark.parametrize("seed", [1, 2])
def test_mixed_validity_equals_reference(seed):
    rec = _random_records(300, seed, set(), set())
    got = decode.EventDecoder("run-1", FUNCS, IOCTL_NAMES.get).decode(rec)
    assert got.schema.equals(schema.table_schema("events"))
    assert got.to_pylist() == _reference(rec, "run-1")


def test_fields_known_in_all_or_no_records_equal_reference():
    half = len(NULLABLE) // 2
    always, never = set(NULLABLE[:half:2]) | {"qids"}, set(NULLABLE[half:])
    never.discard("qids")
    rec = _random_records(200, 3, always, never)
    got = decode.EventDecoder("run-2", FUNCS, IOCTL_NAMES.get).decode(rec)
    assert got.to_pylist() == _reference(rec, "run-2")
    for name in never:
        col = next(c.name for c in schema.EVENT_COLUMNS if (c.derive or c.name) == name and c.in_parquet)
        assert got.column(col).null_count == 200, name


def test_every_field_null_and_empty_batch():
    rec = _random_records(50, 4, set(), set(NULLABLE))
    got = decode.EventDecoder("r", FUNCS, IOCTL_NAMES.get).decode(rec)
    assert got.to_pylist() == _reference(rec, "r")
    empty = decode.EventDecoder("r", FUNCS).decode(rec[:0])
    assert empty.num_rows == 0 and empty.schema.equals(schema.table_schema("events"))


def test_one_decoder_over_batches_of_growing_size_keeps_run_id():
    dec = decode.EventDecoder("run-3", FUNCS, IOCTL_NAMES.get)
    for n, seed in ((10, 5), (70000, 6), (3, 7)):
        rec = _random_records(n, seed, set(), set())
        t = dec.decode(rec)
        assert t.num_rows == n and t.column("run_id").to_pylist() == ["run-3"] * n
    assert dec.decode(rec).to_pylist() == _reference(rec, "run-3")


def test_decoded_table_shares_no_memory_with_the_records():
    """The recorder reuses one batch buffer for the whole run: a decoded table (written later, on the
    writer's thread) must not point into it."""
    rec = _random_records(1000, 8, {"qids"}, set())
    lo, hi = rec.ctypes.data, rec.ctypes.data + rec.nbytes
    t = decode.EventDecoder("r", FUNCS, IOCTL_NAMES.get).decode(rec)
    for name, col in zip(t.column_names, t.columns):
        for chunk in col.chunks:
            for buf in chunk.buffers():
                assert buf is None or not lo <= buf.address < hi, name
    want = t.to_pylist()
    rec[:] = np.zeros(1, rec.dtype)
    assert t.to_pylist() == want


@pytest.mark.parametrize("comm", [b"ioctl_loop", b""])
def test_one_name_per_column_batches_equal_reference(comm):
    """A burst of one call: every row has the same event, func, comm and ioctl name (built from buffers)."""
    rec = _random_records(500, 9, set(NULLABLE), set())
    rec["event_id"], rec["qtype_id"], rec["comm"], rec["ioctl_nr"] = 12, 5, comm, 0xC0584B02
    rec["func_id"] = len(FUNCS) + 1  # known id, no name: NULL in every row
    got = decode.EventDecoder("run-4", FUNCS, IOCTL_NAMES.get).decode(rec)
    assert got.to_pylist() == _reference(rec, "run-4")
    assert got.column("func").null_count == 500 and set(got.column("comm").to_pylist()) == {comm.decode()}


def test_a_repeated_name_column_is_exact_for_empty_null_and_zero_rows():
    from gpreempt_trace.recorder.decode import _repeated

    assert _repeated("ab", 3).to_pylist() == ["ab", "ab", "ab"]
    assert _repeated("", 2).to_pylist() == ["", ""]
    assert _repeated(None, 2).to_pylist() == [None, None]
    assert _repeated("x", 0).to_pylist() == []
