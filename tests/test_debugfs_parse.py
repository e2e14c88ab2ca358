"""Parsers over the debugfs fixtures (tests/fixtures/debugfs/README.md lists every value checked here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gpreempt_trace.debugfs import NotAKfdDump, parse, parse_capture, read_capture_dir, sniff
from gpreempt_trace.debugfs.capture import _read_text

FIX = Path(__file__).parent / "fixtures" / "debugfs"


def rows_of(file_kind, folder, **match):
    res = parse(file_kind, (FIX / folder / file_kind).read_text(), file_kind)
    assert res.problems == []
    return [r for r in res.rows if all(r.get(k) == v for k, v in match.items())]


# -- 6.1, hand-written -------------------------------------------------------------------------------
def test_v61_hqds_decodes_each_slot():
    hiq, = rows_of("hqds", "v6.1-gfx90a", kind="hqd_hiq")
    assert (hiq["gpu_id"], hiq["node_id"], hiq["xcc"], hiq["engine"], hiq["pipe"], hiq["queue"]) == (0x3F4A, 1, 0, 2, 0, 0)
    assert hiq["active"] is True and hiq["mqd_addr"] == 0x7FFC001000 and hiq["doorbell_off"] == 0x60
    cp = rows_of("hqds", "v6.1-gfx90a", kind="hqd_cp")
    assert [(r["pipe"], r["queue"], r["active"]) for r in cp] == [(0, 2, True), (0, 3, False)]
    q = cp[0]
    assert len(q["words"]) == 56
    assert q["mqd_addr"] == 0x7F0000200000  # CP_MQD_BASE_ADDR 0x00200000, _HI 0x00007f00
    assert q["pq_base"] == 0x7F12345600 and q["ring_base"] == 0x7F1234560000
    assert q["doorbell_off"] == 0x1002  # 0x4000400a: EN | 0x1002 << 2 | BIF_DROP
    assert (q["vmid"], q["priority"], q["pipe_priority"], q["quantum"]) == (8, 7, 1, 0x111)
    sdma = rows_of("hqds", "v6.1-gfx90a", kind="hqd_sdma")
    assert [(r["pipe"], r["queue"], r["active"], len(r["words"])) for r in sdma] == [(0, 0, True, 42), (0, 1, False, 42)]
    assert sdma[0]["ring_base"] == 0x7F123A000000 and sdma[0]["doorbell_off"] == 0x1100
    devices = rows_of("hqds", "v6.1-gfx90a", kind="device")
    assert [(d["node_id"], d["gpu_id"], d["status"]) for d in devices] == [(1, 0x3F4A, "running"), (2, 0x8C21, "stopped")]


def test_v61_mqds_sdma_then_compute():
    proc, = rows_of("mqds", "v6.1-gfx90a", kind="process")
    assert (proc["tgid"], proc["pasid"]) == (4242, 0x8001)
    sdma, comp = rows_of("mqds", "v6.1-gfx90a", kind="mqd")
    assert (sdma["queue_type"], sdma["queue_index"], sdma["xcc"], len(sdma["words"])) == ("sdma", 0, None, 130)
    assert (sdma["doorbell_off"], sdma["ring_base"], sdma["pipe"], sdma["queue"]) == (0x1100, 0x7F123A000000, 0, 0)
    assert (comp["queue_type"], comp["queue_index"], comp["xcc"], len(comp["words"])) == ("compute", 1, 0, 512)
    assert comp["words"][0] == 0xC0310800
    assert (comp["mqd_addr"], comp["doorbell_off"], comp["ring_base"], comp["vmid"]) == (0x7F0000200000, 0x1002, 0x7F1234560000, 8)
    assert comp["active"] is False  # cp_hqd_active (dword 130) is 0 in the MQD


def test_v61_rls_packets():
    rl = rows_of("rls", "v6.1-gfx90a", kind="runlist")
    assert [(r["gpu_id"], r["status"], r["num_queues"]) for r in rl] == [(0x3F4A, "active", 2), (0x8C21, "none", 0)]
    pk = rows_of("rls", "v6.1-gfx90a", kind="rl_packet")
    assert [p["opcode"] for p in pk] == ["MAP_PROCESS", "MAP_QUEUES", "MAP_QUEUES"]
    assert (pk[0]["pasid"], pk[0]["num_queues"], pk[0]["quantum"], len(pk[0]["words"])) == (0x8001, 2, 10, 21)
    assert (pk[1]["doorbell_off"], pk[1]["mqd_addr"], pk[1]["engine"], pk[1]["queue_type"], pk[1]["pasid"]) == (0x1002, 0x7F0000200000, 0, "compute", 0x8001)
    assert (pk[2]["doorbell_off"], pk[2]["engine"], pk[2]["queue_type"]) == (0x1100, 2, "sdma")


# -- >= 6.5, MI300 4 XCCs ----------------------------------------------------------------------------
def test_mi300_hqds_inst_headers_and_counts():
    rows = rows_of("hqds", "v6.5-mi300-4xcc")
    hiq = [r for r in rows if r["kind"] == "hqd_hiq"]
    assert [(r["xcc"], r["engine"], r["pipe"], r["queue"]) for r in hiq] == [(x, 2, 0, 0) for x in range(4)]
    cp = [r for r in rows if r["kind"] == "hqd_cp"]
    assert len(cp) == 16 and sum(r["active"] for r in cp) == 12
    active = {(r["xcc"], r["pipe"], r["queue"]): r for r in cp if r["active"]}
    assert sorted({k[1:] for k in active}) == [(0, 2), (0, 3), (1, 2)]
    # Pipe 0 Queue 2 holds the doorbell-0x1000 queue; XCC k points at MQD copy k (stride 0x7000)
    assert [active[(x, 0, 2)]["mqd_addr"] for x in range(4)] == [0x7F0F00000000 + x * 0x7000 for x in range(4)]
    assert {active[(x, 0, 2)]["doorbell_off"] for x in range(4)} == {0x1000}
    assert {active[(x, 0, 3)]["vmid"] for x in range(4)} == {9}


def test_mi300_mqds_one_dump_per_xcc_and_sdma_repeat_dropped():
    res = parse("mqds", (FIX / "v6.5-mi300-4xcc" / "mqds").read_text())
    assert res.problems == []
    mqd = [r for r in res.rows if r["kind"] == "mqd"]
    got = [(r["tgid"], r["queue_index"], r["queue_type"], r["xcc"]) for r in mqd]
    assert got == ([(5001, 0, "compute", x) for x in range(4)] + [(5001, 1, "sdma", None)]
                   + [(5001, 2, "compute", x) for x in range(4)] + [(5002, 0, "compute", x) for x in range(4)])
    a1 = [r for r in mqd if r["tgid"] == 5001 and r["queue_index"] == 0]
    assert [r["mqd_addr"] for r in a1] == [0x7F0F00008000 + x * 0x7000 for x in range(4)]
    assert [r["words"][39] for r in a1] == [1, 2, 3, 0]  # compute_current_logic_xcc_id, start 1
    assert {r["words"][226] for r in a1} == {0x7000}  # cp_mqd_stride_size
    text = (FIX / "v6.5-mi300-4xcc" / "mqds").read_text()
    assert text.count("  SDMA queue on device f7bc\n") == 1
    assert len(text.splitlines()) == 2 + 4 + 3 * 4 * 64 + 4 * 17  # headers, queue lines, 3 compute queues x 4 dumps, SDMA dumped 4x


def test_capture_join_gives_hqds_their_process():
    rows, problems = parse_capture(read_capture_dir(FIX / "v6.5-mi300-4xcc"))
    assert problems == []
    cp = [r for r in rows if r["kind"] == "hqd_cp" and r["active"]]
    assert sorted((r["tgid"], r["queue_index"], r["match"]) for r in cp if r["xcc"] == 0) == [
        (5001, 0, "mqd_addr"), (5001, 2, "mqd_addr"), (5002, 0, "mqd_addr")]
    sdma = [r for r in rows if r["kind"] == "hqd_sdma" and r["active"]]
    assert [(r["tgid"], r["queue_index"], r["match"]) for r in sdma] == [(5001, 1, "doorbell")]
    pk = [r for r in rows if r["kind"] == "rl_packet"]
    assert [(p["opcode"], p.get("tgid"), p.get("match")) for p in pk] == [
        ("MAP_PROCESS", 5001, "pasid"), ("MAP_QUEUES", 5001, "mqd_addr"), ("MAP_QUEUES", 5001, "mqd_addr"),
        ("MAP_QUEUES", 5001, "doorbell"), ("MAP_PROCESS", 5002, "pasid"), ("MAP_QUEUES", 5002, "mqd_addr")]
    assert {r["source_file"] for r in rows} == {"mqds", "hqds", "rls"}


def test_baseline_only_hiqs_active_and_empty_mqds():
    rows, problems = parse_capture(read_capture_dir(FIX / "v6.5-mi300-baseline"))
    assert problems == []
    assert [r["kind"] for r in rows if r["source_file"] == "mqds"] == []
    active = [(r["kind"], r["xcc"]) for r in rows if r.get("active")]
    assert active == [("hqd_hiq", x) for x in range(4)]
    assert [(r["kind"], r["status"]) for r in rows if r["source_file"] == "rls"] == [("runlist", "none")]


def test_stopped_devices_without_mqds_file():
    cap = read_capture_dir(FIX / "v6.5-stopped")
    assert sorted(cap.files) == ["hqds", "rls"]
    rows, problems = parse_capture(cap)
    assert problems == []
    assert [(r["kind"], r["gpu_id"], r["status"]) for r in rows] == [
        ("device", 0xF7BC, "stopped"), ("device", 0xF05B, "stopped"), ("runlist", 0xF7BC, "none"), ("runlist", 0xF05B, "none")]


def test_pasid_field_holding_the_pid_is_not_a_pasid():
    res = parse("mqds", "Process 777 PASID 0x309:\n")
    assert res.rows == [{"kind": "process", "tgid": 777, "pasid": None, "note": "PASID field holds the pid"}]


# -- bad input ---------------------------------------------------------------------------------------
def test_truncated_hqds_keeps_what_parsed_and_names_the_line():
    res = parse("hqds", (FIX / "bad" / "hqds-truncated").read_text(), "bad/hqds-truncated")
    assert res.problems == [
        "bad/hqds-truncated:17: garbled or truncated dump row: '0000c9d4: 00000000 00000000 000'",
        "bad/hqds-truncated:10: HQD dump has 48 of 56 registers",
    ]
    hiq, cp, dev = res.rows
    assert (hiq["kind"], hiq["active"], len(hiq["words"])) == ("hqd_hiq", True, 56)
    assert (cp["kind"], cp["pipe"], cp["queue"], cp["active"], cp["doorbell_off"], len(cp["words"])) == ("hqd_cp", 0, 2, True, 0x1000, 48)
    assert dev == {"kind": "device", "node_id": 2, "gpu_id": 0xF7BC, "status": "running"}


def test_garbage_lines_are_warned_and_skipped():
    res = parse("mqds", _read_text(FIX / "bad" / "mqds-garbage"), "mqds-garbage")
    assert [p.split(": ")[0] for p in res.problems] == [
        "mqds-garbage:4", "mqds-garbage:7", "mqds-garbage:8", "mqds-garbage:2", "mqds-garbage:11"]
    assert "unrecognised line" in res.problems[0] and "### pasted" in res.problems[0]
    assert res.problems[3] == "mqds-garbage:2: sdma queue on device 3f4a, dump 0: MQD dump has 24 of 130 dwords"
    kinds = [(r["kind"], r["tgid"], r.get("doorbell_off"), r.get("pipe"), r.get("queue")) for r in res.rows]
    assert kinds == [("process", 4242, None, None, None), ("mqd", 4242, 0x1100, None, None),
                     ("process", 4343, None, None, None), ("mqd", 4343, 0, 2, 5)]


def test_not_a_dump_is_one_error():
    with pytest.raises(NotAKfdDump) as e:
        parse("hqds", (FIX / "bad" / "not-a-dump.txt").read_text(), "not-a-dump.txt")
    assert str(e.value) == ("not-a-dump.txt is not a KFD debugfs hqds dump (no line has its format): "
                            "give the files /sys/kernel/debug/kfd/mqds, hqds and rls (or copies of them)")


def test_empty_file_is_no_rows():
    for kind in ("mqds", "hqds", "rls"):
        res = parse(kind, "")
        assert (res.rows, res.problems) == ([], [])


def test_sniff():
    assert sniff((FIX / "v6.1-gfx90a" / "mqds").read_text()) == "mqds"
    assert sniff((FIX / "v6.5-mi300-4xcc" / "hqds").read_text()) == "hqds"
    assert sniff((FIX / "v6.1-gfx90a" / "rls").read_text()) == "rls"
    assert sniff((FIX / "v6.5-stopped" / "hqds").read_text()) == "hqds"
    assert sniff((FIX / "bad" / "not-a-dump.txt").read_text()) is None


def test_problem_list_is_capped():
    text = "Node 1, gpu_id 1:\n" + "junk\n" * 30
    res = parse("hqds", text, "x")
    lines = res.warning_lines()
    assert len(res.problems) == 30 and len(lines) == 21 and lines[-1] == "x: 10 more problems not listed"


def test_runlist_that_is_not_pm4_is_reported_at_its_node_line():
    text = "Node 1, gpu_id 3f4a:\n  No active runlist\nNode 2, gpu_id 8c21:\n  00000000: c005a200 20000010 00004008 00000000 00000000 00000000 00000000 12345678\n"
    res = parse("rls", text, "rls")
    assert res.problems == ["rls:3: runlist of gpu_id 8c21: dword 7 (0x12345678) is not a PM4 type-3 header; rest of the runlist skipped"]
    assert [(r["kind"], r.get("opcode"), r.get("doorbell_off")) for r in res.rows] == [
        ("runlist", None, None), ("runlist", None, None), ("rl_packet", "MAP_QUEUES", 0x1002)]


# -- ROCm DKMS 6.12.x (the users' MI308X hosts) -------------------------------------------------------
DKMS = "rocm-dkms-6.12-mi308x"


def test_dkms_process_line_is_decimal_and_holds_the_pid():
    """ROCm/amdgpu prints "Process %d PASID %d:" with the lead thread's pid in the PASID field."""
    res = parse("mqds", (FIX / DKMS / "mqds").read_text(), "mqds")
    assert res.problems == []
    proc, = [r for r in res.rows if r["kind"] == "process"]
    assert (proc["tgid"], proc["pasid"], proc["note"]) == (93034, None, "PASID field holds the pid")
    mqds = [r for r in res.rows if r["kind"] == "mqd"]
    assert len(mqds) == 20  # 5 compute queues x 4 XCC copies
    assert {(r["queue_index"], r["xcc"]) for r in mqds} == {(i, x) for i in range(5) for x in range(4)}
    assert sorted({r["doorbell_off"] for r in mqds}) == [0x1000, 0x1002, 0x1004, 0x1006, 0x1008]
    assert {r["tgid"] for r in mqds} == {93034} and {r["gpu_id"] for r in mqds} == {0xC66D}


def test_decimal_pasid_other_than_the_pid_is_the_pasid():
    """Older ROCK-Kernel-Driver trees print the real PASID in decimal ("Process %d PASID %d:", p->pasid)."""
    res = parse("mqds", "Process 1234 PASID 32769:\nProcess 1235 PASID 0x8002:\n", "mqds")
    assert [(r["tgid"], r["pasid"], r["note"]) for r in res.rows] == [(1234, 32769, None), (1235, 0x8002, None)]


def test_dkms_hqds_have_20_active_cp_hqds_on_4_xccs():
    cp = rows_of("hqds", DKMS, kind="hqd_cp")
    active = [r for r in cp if r["active"]]
    assert (len(cp), len(active)) == (24, 20)  # 6 slots x 4 XCCs; one slot per XCC free
    assert sorted({r["xcc"] for r in active}) == [0, 1, 2, 3]
    assert sorted(r["doorbell_off"] for r in active) == sorted([0x1000, 0x1002, 0x1004, 0x1006, 0x1008] * 4)
    assert [r["active"] for r in rows_of("hqds", DKMS, kind="hqd_hiq")] == [True] * 4


def test_unknown_line_in_a_capture_is_a_named_warning(tmp_path):
    from gpreempt_trace.debugfs.snapshot import Snapshotter
    from gpreempt_trace.trace.directory import TraceWriter

    cap = tmp_path / "cap"
    cap.mkdir()
    text = (FIX / DKMS / "mqds").read_text().splitlines(keepends=True)
    (cap / "mqds").write_text("".join(text[:2] + ["  Queue snapshot follows\n"] + text[2:]))
    tw = TraceWriter.create(tmp_path / "t")
    with pytest.warns(UserWarning, match=r"mqds:3: unrecognised line: 'Queue snapshot follows'"):
        Snapshotter(tw, debugfs_dir=cap).take("during")
    tw.close()


def test_capture_in_which_no_line_parses_is_one_line_error(tmp_path):
    from gpreempt_trace.debugfs import parse_capture

    cap = tmp_path / "cap"
    cap.mkdir()
    (cap / "mqds").write_text("Process 93034 PID 93034:\n  Compute queue 3\n")
    with pytest.raises(NotAKfdDump) as e:
        parse_capture(read_capture_dir(cap))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{cap / 'mqds'} is not a KFD debugfs mqds dump")
