"""Write debugfs text the way the kernel prints it, from a small structured description. Used to
build the embedded MI308X-like sample capture and the larger test fixtures; tests check it
reproduces the hand-written fixtures byte for byte (tests/test_debugfs_render.py).

Printing rules (kernel): seq_hex_dump(prefix, DUMP_PREFIX_OFFSET, rowsize 32, groupsize 4) prints
"<prefix>%.8x: " then the row's u32 words as "%08x" joined by one space; seq_reg_dump prints
"    %08x: %08x" and " %08x", starting a new row after 8 values or when an address is not the
previous + 4.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from . import layout as L

MASK32 = 0xFFFFFFFF


def hex_dump(words: Sequence[int], prefix: str) -> str:
    out = []
    for off in range(0, len(words), 8):
        row = " ".join(f"{w & MASK32:08x}" for w in words[off : off + 8])
        out.append(f"{prefix}{off * 4:08x}: {row}\n")
    return "".join(out)


def reg_dump(regs: Sequence[tuple[int, int]]) -> str:
    text, count = "", 0
    for i, (addr, val) in enumerate(regs):
        if count == 0 or regs[i - 1][0] + 4 != addr:
            text += f"{chr(10) if i else ''}    {addr:08x}: {val:08x}"
            count = 7
        else:
            text += f" {val:08x}"
            count -= 1
    return text + "\n"


# -- queue descriptions -------------------------------------------------------------------------------
@dataclass
class CpQueue:
    """A user compute queue (or the HIQ) as the MQD/HQD hold it."""

    mqd_addr: int  # GPU address of XCC0's MQD; XCC k's copy is at mqd_addr + k * mqd_stride
    ring_base: int  # byte address of the ring (PQ)
    doorbell_off: int
    vmid: int = 0
    queue_priority: int = 7
    pipe_priority: int = 1
    aql: bool = True
    hiq: bool = False
    mqd_stride: int = 0x1000
    eop_base: int = 0
    ctx_save_base: int = 0
    rptr_addr: int = 0
    wptr_addr: int = 0
    logical_xcc_start: int = 0


@dataclass
class SdmaQueue:
    ring_base: int
    doorbell_off: int
    engine: int
    queue: int


def _pq_control(q: CpQueue) -> int:
    v = 0x00000505 if not q.hiq else 0xC0000505  # illustrative ring size bits; KMD_QUEUE|PRIV_STATE for the HIQ
    return v | (0x08000000 if (q.aql and not q.hiq) else 0)


def _hqd_block(q: CpQueue, xcc: int, active: bool, num_xcc: int) -> list[int]:
    """The 56 registers mmCP_MQD_BASE_ADDR.. as the CP holds them (same order as v9_mqd dword 128..)."""
    r = [0] * L.CP_HQD_N_REGS
    H = L.CP_HQD
    mqd = q.mqd_addr + xcc * q.mqd_stride
    pq = q.ring_base >> 8
    r[H["CP_MQD_BASE_ADDR_LO"]] = mqd & MASK32
    r[H["CP_MQD_BASE_ADDR_HI"]] = mqd >> 32
    r[H["CP_HQD_ACTIVE"]] = 1 if active else 0
    r[H["CP_HQD_VMID"]] = q.vmid
    r[H["CP_HQD_PERSISTENT_STATE"]] = 0x00005301 if q.hiq else 0x0000d301
    r[H["CP_HQD_PIPE_PRIORITY"]] = q.pipe_priority
    r[H["CP_HQD_QUEUE_PRIORITY"]] = q.queue_priority
    r[H["CP_HQD_QUANTUM"]] = 0x00000111
    r[H["CP_HQD_PQ_BASE_LO"]] = pq & MASK32
    r[H["CP_HQD_PQ_BASE_HI"]] = pq >> 32
    r[11], r[12] = q.rptr_addr & MASK32, q.rptr_addr >> 32  # CP_HQD_PQ_RPTR_REPORT_ADDR(_HI)
    r[13], r[14] = q.wptr_addr & MASK32, q.wptr_addr >> 32  # CP_HQD_PQ_WPTR_POLL_ADDR(_HI)
    db = (q.doorbell_off << L.DOORBELL_OFFSET_SHIFT) | (0x2 if q.aql else 0)
    r[H["CP_HQD_PQ_DOORBELL_CONTROL"]] = db | (L.DOORBELL_EN_MASK if active else 0)
    r[H["CP_HQD_PQ_CONTROL"]] = _pq_control(q)
    r[37], r[38] = (q.eop_base >> 8) & MASK32, q.eop_base >> 40  # CP_HQD_EOP_BASE_ADDR(_HI), dwords 165/166
    r[43], r[44] = q.ctx_save_base & MASK32, q.ctx_save_base >> 32  # CP_HQD_CTX_SAVE_BASE_ADDR_LO/HI, 171/172
    r[53] = 1 if q.aql else 0  # CP_HQD_AQL_CONTROL, dword 181
    return r


def v9_mqd_words(q: CpQueue, xcc: int, num_xcc: int) -> list[int]:
    w = [0] * L.V9_MQD_DWORDS
    w[0] = L.V9_MQD_HEADER
    w[11] = 1  # compute_pipelinestat_enable
    w[23] = w[24] = w[26] = w[27] = MASK32  # compute_static_thread_mgmt_se0..se3
    if num_xcc > 1:
        w[L.MQD["compute_current_logic_xcc_id"]] = (q.logical_xcc_start + xcc) % num_xcc
        w[L.MQD["cp_mqd_stride_size"]] = q.mqd_stride
    block = _hqd_block(q, xcc, active=False, num_xcc=num_xcc)
    w[L.HQD_MQD_FIRST_DWORD : L.HQD_MQD_FIRST_DWORD + L.CP_HQD_N_REGS] = block
    w[162] = 0x00000100  # cp_mqd_control
    return w


def v9_sdma_mqd_words(q: SdmaQueue) -> list[int]:
    w = [0] * L.V9_SDMA_MQD_DWORDS
    rb = q.ring_base >> 8
    w[0] = 0x00001012  # rb_cntl: ring size / writeback bits, RB_ENABLE clear (illustrative)
    w[1], w[2] = rb & MASK32, rb >> 32
    w[22] = q.doorbell_off << 2
    w[27] = 0xF  # sdmax_rlcx_dummy_reg = SDMA_RLC_DUMMY_DEFAULT
    w[128], w[129] = q.engine, q.queue
    return w


SDMA_RANGES_943 = (19, 6, 7, 12)  # kgd_gfx_v9_4_3_hqd_sdma_dump: HQD_N_REGS (19+6+7+12)
SDMA_RANGES_V9 = (19, 6, 7, 10)  # kgd_hqd_sdma_dump (gfx v9 / arcturus): (19+6+7+10)


def sdma_regs(base_addr: int, q: Optional[SdmaQueue], ranges=SDMA_RANGES_943) -> list[tuple[int, int]]:
    """An SDMA RLC register dump: contiguous ranges separated by a one-register gap (addresses are
    illustrative; the decoder reads values by position)."""
    vals = [0] * sum(ranges)
    if q is not None:
        rb = q.ring_base >> 8
        vals[0] = 0x00001013  # RB_ENABLE set
        vals[1], vals[2] = rb & MASK32, rb >> 32
        vals[18] = 0x10000000  # DOORBELL: ENABLE
        vals[22] = q.doorbell_off << 2
    out, addr, i = [], base_addr, 0
    for n in ranges:
        for _ in range(n):
            out.append((addr, vals[i]))
            addr += 4
            i += 1
        addr += 4
    return out


# -- whole files ------------------------------------------------------------------------------------
@dataclass
class Process:
    tgid: int
    pasid: int
    queues: list = field(default_factory=list)  # CpQueue / SdmaQueue, in printing order
    # "upstream": "Process %d PASID 0x%x:" (tgid, pasid); "dkms": ROCm/amdgpu's "Process %d PASID %d:"
    # with the lead thread's pid in the PASID field
    style: str = "upstream"

    def line(self) -> str:
        if self.style == "dkms":
            return f"Process {self.tgid} PASID {self.tgid}:\n"
        return f"Process {self.tgid} PASID 0x{self.pasid:x}:\n"


def render_mqds(processes: Sequence[Process], gpu_id: int, num_xcc: int, sdma_repeats_bug: bool = False) -> str:
    out = []
    for p in processes:
        out.append(p.line())
        seen_compute = False
        for q in p.queues:
            if isinstance(q, SdmaQueue):
                out.append(f"  SDMA queue on device {gpu_id:x}\n")
                copies = num_xcc if (sdma_repeats_bug and seen_compute) else 1
                for _ in range(copies):
                    out.append(hex_dump(v9_sdma_mqd_words(q), "    "))
            else:
                seen_compute = True
                out.append(f"  Compute queue on device {gpu_id:x}\n")
                for xcc in range(num_xcc):
                    out.append(hex_dump(v9_mqd_words(q, xcc, num_xcc), "    "))
    return "".join(out)


@dataclass
class Node:
    node_id: int
    gpu_id: int
    num_xcc: int
    xcc_reg_base: Sequence[int]  # byte address of mmCP_MQD_BASE_ADDR per XCC (e.g. 0xc914, 0xcc914)
    cp_slots: Sequence[tuple[int, int]]  # (pipe, queue) in cp_queue_bitmap order
    hiq: Optional[CpQueue] = None
    resident: dict = field(default_factory=dict)  # (xcc, pipe, queue) -> CpQueue (active HQD)
    stale: dict = field(default_factory=dict)  # (xcc, pipe, queue) -> CpQueue (inactive, old registers)
    sdma_engines: Sequence[int] = (0, 1)
    sdma_rlcs: int = 2
    sdma_resident: dict = field(default_factory=dict)  # (engine, rlc) -> SdmaQueue
    sdma_ranges: tuple = SDMA_RANGES_943
    stopped: bool = False
    runlist: Optional[list[int]] = None  # runlist IB dwords; None = "No active runlist"


def render_hqds(nodes: Sequence[Node], style: str = "6.5") -> str:
    out = []
    for n in nodes:
        out.append(f"Node {n.node_id}, gpu_id {n.gpu_id:x}:\n")
        if n.stopped:
            out.append(" Device is stopped\n")
            continue
        for xcc in range(n.num_xcc):
            base = n.xcc_reg_base[xcc]
            regs_of = lambda vals: [(base + 4 * i, v) for i, v in enumerate(vals)]  # noqa: E731
            if n.hiq is not None:
                hdr = "  HIQ on MEC 2 Pipe 0 Queue 0\n" if style == "6.1" else f"   Inst {xcc}, HIQ on MEC 2 Pipe 0 Queue 0\n"
                out.append(hdr)
                out.append(reg_dump(regs_of(_hqd_block(n.hiq, xcc, True, n.num_xcc))))
            for pipe, queue in n.cp_slots:
                out.append(f"  CP Pipe {pipe}, Queue {queue}\n" if style == "6.1" else f" Inst {xcc},  CP Pipe {pipe}, Queue {queue}\n")
                key = (xcc, pipe, queue)
                if key in n.resident:
                    vals = _hqd_block(n.resident[key], xcc, True, n.num_xcc)
                elif key in n.stale:
                    vals = _hqd_block(n.stale[key], xcc, False, n.num_xcc)
                else:
                    vals = [0] * L.CP_HQD_N_REGS
                out.append(reg_dump(regs_of(vals)))
        for e in n.sdma_engines:
            for rlc in range(n.sdma_rlcs):
                out.append(f"  SDMA Engine {e}, RLC {rlc}\n")
                out.append(reg_dump(sdma_regs(0x4000 * (e + 1) + 0x200 * rlc, n.sdma_resident.get((e, rlc)), n.sdma_ranges)))
    return "".join(out)


def render_rls(nodes: Sequence[Node]) -> str:
    out = []
    for n in nodes:
        out.append(f"Node {n.node_id}, gpu_id {n.gpu_id:x}:\n")
        if not n.runlist:
            out.append("  No active runlist\n")
        else:
            out.append(hex_dump(n.runlist, "  "))
    return "".join(out)


# -- runlist packets (pm_map_process_aldebaran / pm_map_queues_v9 layouts) ---------------------------
def pm4_header(opcode: int, dwords: int) -> int:
    return (3 << 30) | ((dwords - 2) << 16) | (opcode << 8)


def map_process(pasid: int, num_queues: int, aldebaran: bool = True, quantum: int = 10) -> list[int]:
    n = 21 if aldebaran else 16
    w = [0] * n
    w[0] = pm4_header(0xA1, n)
    w[1] = pasid | (quantum << 25)
    w[13] = num_queues << 22
    return w


def map_queues(doorbell_off: int, mqd_addr: int, wptr_addr: int, engine: int = 0) -> list[int]:
    w = [0] * 7
    w[0] = pm4_header(0xA2, 7)
    w[1] = (1 << 4) | (engine << 26) | (1 << 29)  # queue_sel: hws determined slots, num_queues 1
    w[2] = doorbell_off << 2
    w[3], w[4] = mqd_addr & MASK32, mqd_addr >> 32
    w[5], w[6] = wptr_addr & MASK32, wptr_addr >> 32
    return w
