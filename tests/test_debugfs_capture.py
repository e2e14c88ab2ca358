"""Capture reading and grouping, and the rarer mqds lines (DIQ, bad queue types)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gpreempt_trace.debugfs import collect_imports, parse, read_capture_dir
from gpreempt_trace.debugfs import render as R
from gpreempt_trace.errors import GptError

FIX = Path(__file__).parent / "fixtures" / "debugfs"


def test_issue_style_names_group_by_timestamp(tmp_path):
    base = (FIX / "v6.5-mi300-baseline" / "hqds").read_text()
    during = {k: (FIX / "v6.5-mi300-4xcc" / k).read_text() for k in ("mqds", "hqds", "rls")}
    (tmp_path / "baseline_hqds_1769750000.txt").write_text(base)
    for k, text in during.items():
        (tmp_path / f"active_{k}_1769750100.txt").write_text(text)
        (tmp_path / f"active_{k}_1769750050.txt").write_text(text)
    caps, notes = collect_imports([tmp_path])
    assert notes == []
    assert [(c.phase, c.ts_ns // 10**9, sorted(c.files)) for c in caps] == [
        ("baseline", 1769750000, ["hqds"]),
        ("during", 1769750050, ["hqds", "mqds", "rls"]),
        ("during", 1769750100, ["hqds", "mqds", "rls"]),
    ]


def test_unnamed_files_are_sniffed(tmp_path):
    (tmp_path / "dump1.txt").write_text((FIX / "v6.1-gfx90a" / "rls").read_text())
    (tmp_path / "notes.txt").write_text("nothing to see\n")
    caps, notes = collect_imports([tmp_path])
    assert [sorted(c.files) for c in caps] == [["rls"]]
    assert notes == [f"skipped {tmp_path / 'notes.txt'} (not a KFD debugfs dump)"]


def test_capture_dir_errors(tmp_path):
    with pytest.raises(GptError, match="holds none of the files mqds, hqds, rls"):
        read_capture_dir(tmp_path)
    with pytest.raises(GptError, match="is not a directory"):
        read_capture_dir(tmp_path / "missing")
    (tmp_path / "hqds.gz").write_bytes(b"not gzip")
    with pytest.raises(GptError, match="is not a readable gzip file"):
        read_capture_dir(tmp_path)


def test_diq_and_bad_queue_type_lines():
    diq = R.v9_mqd_words(R.CpQueue(mqd_addr=0x1000, ring_base=0x20000, doorbell_off=0x30, aql=False), 0, 1)
    text = ("Process 10 PASID 0x8005:\n"
            "  DIQ on device 3f4a\n" + R.hex_dump(diq, "    ")
            + "  Bad kernel queue type 9 on device 3f4a\n"
            "  Queue node with bad user queue type 7 on device f7bc\n"
            "  Qeueu node with bad user queue type 7 on device f7bc\n"
            "  Weird: Queue node with neither kernel nor user queue\n")
    res = parse("mqds", text)
    assert res.problems == []
    mqd, = [r for r in res.rows if r["kind"] == "mqd"]
    assert (mqd["queue_type"], mqd["queue_index"], mqd["mqd_addr"], mqd["doorbell_off"], mqd["ring_base"]) == ("diq", 0, 0x1000, 0x30, 0x20000)


def test_foreign_mqd_layout_is_kept_raw():
    words = [0x12345678] + [0] * 511
    res = parse("mqds", "Process 10 PASID 0x8005:\n  Compute queue on device 1\n" + R.hex_dump(words, "    "))
    mqd, = [r for r in res.rows if r["kind"] == "mqd"]
    assert mqd["note"] == "not a v9 MQD (header differs), fields not decoded"
    assert mqd.get("mqd_addr") is None and mqd["words"][0] == 0x12345678
