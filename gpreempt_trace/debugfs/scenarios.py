"""Structured descriptions of the generated captures: the MI300 test fixture and the embedded
MI308X-like sample (baseline, during x2, after). `python -m gpreempt_trace.debugfs.scenarios` rewrites
them; tests/test_debugfs_render.py checks the committed files equal this output.

Facts used (see docs/exp01.md): 4 XCCs per GPU; HIQ on MEC 2 Pipe 0 Queue 0 on every XCC; KFD CP
slots pipes 0-3 x queues 2-7 (num_kcq = 8); 8 SDMA engines x 8 RLC queues; Inst 0 registers at
0000c914 and Inst 1 at 000cc914 (real MI308X dumps); Inst 2 and 3 continue the same stride (an
assumption: the decoders never read absolute addresses). Addresses, rings and doorbells are made up.
"""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

from . import render as R

XCC_REG_BASE = (0x0000C914, 0x000CC914, 0x0018C914, 0x0024C914)
MI308X_GPU_IDS = (0xF7BC, 0xF05B, 0xEB40, 0xC66D, 0xF220, 0xF5C7, 0xEEDC, 0xC3F1)  # KFD nodes 2..9
ALL_CP_SLOTS = tuple((p, q) for p in range(4) for q in range(2, 8))  # 24 per XCC
MQD_STRIDE = 0x7000  # ALIGN(ctl_stack_size, PAGE) + ALIGN(sizeof(v9_mqd), PAGE), illustrative


def _hiq(node: int) -> R.CpQueue:
    return R.CpQueue(mqd_addr=0x7FFC000000 + node * 0x100000, ring_base=0x7FFC800000 + node * 0x100000,
                     doorbell_off=0x0, vmid=0, queue_priority=0, pipe_priority=0, aql=False, hiq=True, mqd_stride=0x800)


def _cq(base: int, i: int, vmid: int, doorbell: int, start: int = 0) -> R.CpQueue:
    ring = base + 0x10_0000 * (i + 1)
    return R.CpQueue(mqd_addr=base - 0x1_0000_0000 + i * 0x8000, ring_base=ring, doorbell_off=doorbell, vmid=vmid,
                     mqd_stride=MQD_STRIDE, rptr_addr=ring - 0x1000 + 0x80, wptr_addr=ring - 0x1000 + 0x38,
                     eop_base=ring + 0x8_0000, ctx_save_base=ring + 0x100_0000, logical_xcc_start=start)


# -- test fixture: 1 GPU x 4 XCC, 2 processes, reduced slot bitmap ----------------------------------
FIX_SLOTS = ((0, 2), (0, 3), (1, 2), (1, 3))


def mi300_fixture(phase: str):
    """phase 'baseline' (no process, only HIQs active) or 'during' (processes 5001 and 5002)."""
    a0 = _cq(0x7F10_0000_0000, 0, vmid=8, doorbell=0x1000, start=0)
    a1 = _cq(0x7F10_0000_0000, 1, vmid=8, doorbell=0x1002, start=1)
    a_s = R.SdmaQueue(ring_base=0x7F10_0800_0000, doorbell_off=0x10F0, engine=0, queue=0)
    b0 = _cq(0x7F20_0000_0000, 0, vmid=9, doorbell=0x1400, start=2)
    node = R.Node(2, 0xF7BC, 4, XCC_REG_BASE, FIX_SLOTS, hiq=_hiq(2), sdma_engines=(0, 1), sdma_rlcs=2)
    procs: list[R.Process] = []
    if phase == "during":
        procs = [R.Process(5001, 0x8001, [a1, a_s, a0]), R.Process(5002, 0x8002, [b0])]
        for x in range(4):
            node.resident[(x, 0, 2)] = a0
            node.resident[(x, 1, 2)] = a1
            node.resident[(x, 0, 3)] = b0
        node.sdma_resident[(0, 0)] = a_s
        node.runlist = (R.map_process(0x8001, 3) + R.map_queues(a0.doorbell_off, a0.mqd_addr, a0.wptr_addr)
                        + R.map_queues(a1.doorbell_off, a1.mqd_addr, a1.wptr_addr)
                        + R.map_queues(a_s.doorbell_off, 0x7F00_0030_0000, a_s.ring_base + 0x38, engine=2)
                        + R.map_process(0x8002, 1) + R.map_queues(b0.doorbell_off, b0.mqd_addr, b0.wptr_addr))
    return procs, [node]


# -- ROCm DKMS 6.12.x (MI308X host): one process with 5 compute queues on a 4-XCC GPU -------------------
DKMS_SLOTS = tuple((p, q) for p in range(3) for q in (2, 3))  # reduced bitmap: 6 slots per XCC


def dkms_mi308x_fixture():
    """Process 93034 (DKMS prints "Process 93034 PASID 93034:") with 5 compute queues, every one
    resident on all 4 XCCs (20 active CP HQDs); one slot per XCC stays free."""
    qs = [_cq(0x7F30_0000_0000, i, vmid=8, doorbell=0x1000 + 2 * i, start=i % 4) for i in range(5)]
    node = R.Node(2, 0xC66D, 4, XCC_REG_BASE, DKMS_SLOTS, hiq=_hiq(2), sdma_engines=(0, 1), sdma_rlcs=2)
    for x in range(4):
        for i, q in enumerate(qs):
            node.resident[(x,) + DKMS_SLOTS[i]] = q
    rl = R.map_process(0x8005, 5)
    for q in qs:
        rl += R.map_queues(q.doorbell_off, q.mqd_addr, q.wptr_addr)
    node.runlist = rl
    return [R.Process(93034, 0x8005, list(reversed(qs)), style="dkms")], [node]


# -- embedded sample: 8 GPUs, full slot bitmap, one model process on the first GPU ------------------
def mi308x_sample(phase: str, variant: int = 0):
    """phase: baseline | during | after. variant 1 moves queue 2 on XCC 3 to another slot (the CP picks
    HQD slots itself under HWS)."""
    nodes = []
    model = [_cq(0x7E00_0000_0000, i, vmid=9, doorbell=0x800 + 2 * i, start=i % 4) for i in range(3)]
    sdma = [R.SdmaQueue(ring_base=0x7E00_4000_0000 + 0x10_0000 * i, doorbell_off=0x8F0 + 2 * i, engine=2 + i, queue=0) for i in range(2)]
    for k, gpu in enumerate(MI308X_GPU_IDS):
        n = R.Node(2 + k, gpu, 4, XCC_REG_BASE, ALL_CP_SLOTS, hiq=_hiq(2 + k), sdma_engines=tuple(range(8)), sdma_rlcs=8)
        if k == 0 and phase in ("during", "after"):
            target = n.resident if phase == "during" else n.stale
            for x in range(4):
                for i, q in enumerate(model):
                    slot = (3, 2) if (variant == 1 and i == 2 and x == 3) else (i, 2)
                    target[(x,) + slot] = q
            if phase == "during":
                n.sdma_resident = {(s.engine, s.queue): s for s in sdma}
                rl = R.map_process(0x8003, 5)
                for q in model:
                    rl += R.map_queues(q.doorbell_off, q.mqd_addr, q.wptr_addr)
                for s in sdma:
                    rl += R.map_queues(s.doorbell_off, 0x7F00_0040_0000 + 0x1000 * s.engine, s.ring_base + 0x38, engine=s.engine)
                n.runlist = rl
        nodes.append(n)
    procs = [R.Process(31337, 0x8003, [model[2], sdma[1], model[1], sdma[0], model[0]])] if phase == "during" else []
    return procs, nodes


def render_capture(procs, nodes) -> dict[str, str]:
    gpu = nodes[0].gpu_id
    return {
        "mqds": R.render_mqds(procs, gpu, nodes[0].num_xcc, sdma_repeats_bug=True),
        "hqds": R.render_hqds(nodes),
        "rls": R.render_rls(nodes),
    }


SAMPLE_DIR = Path(__file__).resolve().parent / "samples" / "mi308x"
SAMPLE_STEPS = (("00-baseline", "baseline", 0), ("01-during", "during", 0), ("02-during", "during", 1), ("03-after", "after", 0))


def sample_files() -> dict[str, bytes]:
    """Relative path -> gzip bytes (mtime 0, so the output is reproducible)."""
    out = {}
    for step, phase, variant in SAMPLE_STEPS:
        for name, text in render_capture(*mi308x_sample(phase, variant)).items():
            out[f"{step}/{name}.gz"] = gzip.compress(text.encode(), mtime=0)
    return out


def fixture_files() -> dict[str, str]:
    out = {}
    for d, phase in (("v6.5-mi300-4xcc", "during"), ("v6.5-mi300-baseline", "baseline")):
        for name, text in render_capture(*mi300_fixture(phase)).items():
            out[f"{d}/{name}"] = text
    for name, text in render_capture(*dkms_mi308x_fixture()).items():
        out[f"rocm-dkms-6.12-mi308x/{name}"] = text
    return out


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fixtures = Path(args[0]) if args else Path("tests/fixtures/debugfs")
    for rel, data in sample_files().items():
        p = SAMPLE_DIR / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for rel, text in fixture_files().items():
        p = fixtures / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    print(f"wrote {SAMPLE_DIR} and {fixtures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
