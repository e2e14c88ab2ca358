"""The renderer (which writes the MI300 fixture and the embedded sample) against the hand-written
6.1 fixture, byte for byte; the committed generated files against the generator; a few lines of the
generated MI300 fixture checked by hand against the >= 6.5 format strings."""
from __future__ import annotations

import gzip
from pathlib import Path

from gpreempt_trace.debugfs import MI308X_SAMPLE
from gpreempt_trace.debugfs import render as R
from gpreempt_trace.debugfs import scenarios

FIX = Path(__file__).parent / "fixtures" / "debugfs"


def _v61_nodes():
    hiq = R.CpQueue(mqd_addr=0x7FFC001000, ring_base=0x7FFC100000, doorbell_off=0x60, queue_priority=0, pipe_priority=0, aql=False, hiq=True)
    cq = R.CpQueue(mqd_addr=0x7F0000200000, ring_base=0x7F1234560000, doorbell_off=0x1002, vmid=8, rptr_addr=0x7F1234550080,
                   wptr_addr=0x7F1234550038, eop_base=0x7F1234000000, ctx_save_base=0x7F1230000000)
    sq = R.SdmaQueue(ring_base=0x7F123A000000, doorbell_off=0x1100, engine=0, queue=0)
    rl = (R.map_process(0x8001, 2) + R.map_queues(0x1002, 0x7F0000200000, 0x7F1234550038)
          + R.map_queues(0x1100, 0x7F0000300000, 0x7F123A100000, engine=2))
    n1 = R.Node(1, 0x3F4A, 1, [0xC914], [(0, 2), (0, 3)], hiq=hiq, resident={(0, 0, 2): cq}, sdma_engines=(0,), sdma_rlcs=2,
                sdma_resident={(0, 0): sq}, sdma_ranges=R.SDMA_RANGES_V9, runlist=rl)
    n2 = R.Node(2, 0x8C21, 1, [0xC914], [], stopped=True)
    return [R.Process(4242, 0x8001, [sq, cq])], [n1, n2]


def test_renderer_reproduces_hand_written_v61_fixture():
    procs, nodes = _v61_nodes()
    d = FIX / "v6.1-gfx90a"
    assert R.render_hqds(nodes, style="6.1") == (d / "hqds").read_text()
    assert R.render_mqds(procs, 0x3F4A, 1) == (d / "mqds").read_text()
    assert R.render_rls(nodes) == (d / "rls").read_text()


def test_reg_dump_breaks_rows_at_eight_and_at_gaps():
    regs = [(0x100 + 4 * i, i) for i in range(10)] + [(0x200, 0xAB)]
    assert R.reg_dump(regs) == (
        "    00000100: 00000000 00000001 00000002 00000003 00000004 00000005 00000006 00000007\n"
        "    00000120: 00000008 00000009\n"
        "    00000200: 000000ab\n")


def test_committed_generated_files_match_the_generator():
    for rel, text in scenarios.fixture_files().items():
        assert (FIX / rel).read_text() == text, rel
    for rel, data in scenarios.sample_files().items():
        assert gzip.decompress((MI308X_SAMPLE / rel).read_bytes()) == gzip.decompress(data), rel


def test_mi300_fixture_lines_by_hand():
    lines = (FIX / "v6.5-mi300-4xcc" / "hqds").read_text().splitlines()
    assert lines[0] == "Node 2, gpu_id f7bc:"
    assert lines[1] == "   Inst 0, HIQ on MEC 2 Pipe 0 Queue 0"
    assert lines[9] == " Inst 0,  CP Pipe 0, Queue 2"
    # first register row of Inst 0 Pipe 0 Queue 2: MQD 0x7f0f00000000, ACTIVE 1, VMID 8, persistent state,
    # pipe priority 1, queue priority 7, quantum
    assert lines[10] == "    0000c914: 00000000 00007f0f 00000001 00000008 0000d301 00000001 00000007 00000111"
    # second row: PQ base = ring 0x7f1000100000 >> 8, ..., CP_HQD_PQ_DOORBELL_CONTROL = EN | 0x1000 << 2 | BIF_DROP
    assert lines[11].endswith(" 40004002") and lines[11].startswith("    0000c934: 10001000 0000007f ")
    assert lines[41] == "   Inst 1, HIQ on MEC 2 Pipe 0 Queue 0"
    assert lines[50] == "    000cc914: 00007000 00007f0f 00000001 00000008 0000d301 00000001 00000007 00000111"
    assert lines[161] == "  SDMA Engine 0, RLC 0"
    assert len(lines) == 1 + 4 * 5 * 8 + 4 * 8  # node, 4 XCC x (HIQ + 4 slots) x (header + 7 rows), 4 SDMA x (header + 7 rows)
