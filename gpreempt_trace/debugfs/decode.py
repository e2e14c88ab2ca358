"""Decode raw debugfs words into the fields the inventory needs. Every field names its source
register or MQD dword in docs/exp01.md; positions live in layout.py."""
from __future__ import annotations

from typing import Optional, Sequence

from . import layout as L

Words = Sequence[Optional[int]]


def _get(words: Words, i: int) -> Optional[int]:
    return words[i] if 0 <= i < len(words) else None


def _u64(lo: Optional[int], hi: Optional[int]) -> Optional[int]:
    if lo is None or hi is None:
        return None
    return (hi << 32) | lo


def _ring(pq_base: Optional[int]) -> Optional[int]:
    """PQ base registers hold the ring address >> 8 (update_mqd: lower/upper_32_bits(addr >> 8))."""
    return None if pq_base is None else (pq_base << 8) & 0xFFFFFFFFFFFFFFFF


def _doorbell(ctrl: Optional[int]) -> Optional[int]:
    return None if ctrl is None else (ctrl & L.DOORBELL_OFFSET_MASK) >> L.DOORBELL_OFFSET_SHIFT


def cp_queue_fields(words: Words, base: int) -> dict:
    """Fields of a CP queue laid out like the HQD register block starting at `base` (0 for an HQD
    register dump indexed from mmCP_MQD_BASE_ADDR, 128 for a v9_mqd)."""
    g = lambda name: _get(words, base + L.CP_HQD[name])  # noqa: E731
    active = g("CP_HQD_ACTIVE")
    vmid = g("CP_HQD_VMID")
    pq_base = _u64(g("CP_HQD_PQ_BASE_LO"), g("CP_HQD_PQ_BASE_HI"))
    pipe_prio = g("CP_HQD_PIPE_PRIORITY")
    queue_prio = g("CP_HQD_QUEUE_PRIORITY")
    return {
        "mqd_addr": _u64(g("CP_MQD_BASE_ADDR_LO"), g("CP_MQD_BASE_ADDR_HI")),
        "active": None if active is None else bool(active & L.CP_HQD_ACTIVE__ACTIVE_MASK),
        "vmid": None if vmid is None else vmid & L.CP_HQD_VMID__VMID_MASK,
        "pipe_priority": pipe_prio,
        "priority": queue_prio,
        "quantum": g("CP_HQD_QUANTUM"),
        "pq_base": pq_base,
        "ring_base": _ring(pq_base),
        "doorbell_off": _doorbell(g("CP_HQD_PQ_DOORBELL_CONTROL")),
    }


def cp_hqd(regs: Words) -> dict:
    """A CP (or HIQ) HQD register dump, regs[i] = register mmCP_MQD_BASE_ADDR + i."""
    return cp_queue_fields(regs, 0)


def v9_mqd(words: Words) -> dict:
    """A struct v9_mqd dump (512 dwords). Returns {} when the header is not the v9 compute header,
    so other MQD layouts (v10/v11/v12) are kept raw instead of being misread."""
    if _get(words, L.MQD["header"]) != L.V9_MQD_HEADER:
        return {}
    return cp_queue_fields(words, L.HQD_MQD_FIRST_DWORD)


def _sdma_fields(words: Words) -> dict:
    rb_base = _u64(_get(words, L.SDMA["sdmax_rlcx_rb_base"]), _get(words, L.SDMA["sdmax_rlcx_rb_base_hi"]))
    off = _get(words, L.SDMA["sdmax_rlcx_doorbell_offset"])
    return {
        "pq_base": rb_base,
        "ring_base": _ring(rb_base),
        "doorbell_off": None if off is None else (off & L.SDMA_DOORBELL_OFFSET_MASK) >> 2,
    }


def sdma_hqd(values: Words) -> dict:
    """An SDMA RLC register dump, values in dump order (= struct v9_sdma_mqd order)."""
    out = _sdma_fields(values)
    cntl = _get(values, L.SDMA["sdmax_rlcx_rb_cntl"])
    out["active"] = None if cntl is None else bool(cntl & L.SDMA_RB_ENABLE_MASK)
    return out


def v9_sdma_mqd(words: Words) -> dict:
    """A struct v9_sdma_mqd dump (130 dwords): ring, doorbell, engine and queue ids."""
    out = _sdma_fields(words)
    out["pipe"] = _get(words, L.SDMA["sdma_engine_id"])
    out["queue"] = _get(words, L.SDMA["sdma_queue_id"])
    return out


def pm4_packets(words: Sequence[int]) -> tuple[list[dict], list[str]]:
    """Walk the runlist IB as PM4 type-3 packets (header: type 31:30, count 29:16, opcode 15:8; a
    packet is count + 2 dwords). Zero dwords are padding. Returns (packets, problems)."""
    out: list[dict] = []
    problems: list[str] = []
    i, n = 0, len(words)
    while i < n:
        hdr = words[i]
        if hdr == 0:
            i += 1
            continue
        if hdr >> 30 != 3:
            problems.append(f"dword {i} (0x{hdr:08x}) is not a PM4 type-3 header; rest of the runlist skipped")
            break
        count = (hdr >> 16) & 0x3FFF
        opcode = (hdr >> 8) & 0xFF
        body = list(words[i : i + count + 2])
        if len(body) < count + 2:
            problems.append(f"packet at dword {i} is cut short ({len(body)} of {count + 2} dwords)")
        pkt = {"dword": i, "opcode": L.PM4_OPCODES.get(opcode, f"0x{opcode:02x}"), "words": body}
        pkt.update(_packet_fields(pkt["opcode"], body))
        out.append(pkt)
        i += count + 2
    return out, problems


def _packet_fields(opcode: str, b: list[int]) -> dict:
    g = lambda k: b[k] if k < len(b) else None  # noqa: E731
    if opcode == "MAP_PROCESS":
        o2, o14 = g(1), g(13)  # ordinal14 (num_queues 31:22) is dword 13 in both ai and aldebaran layouts
        return {
            "pasid": None if o2 is None else o2 & 0xFFFF,
            "quantum": None if o2 is None else (o2 >> 25) & 0x7F,
            "num_queues": None if o14 is None else o14 >> 22,
        }
    if opcode == "MAP_QUEUES":
        o2, o3 = g(1), g(2)
        engine = None if o2 is None else (o2 >> 26) & 0x7
        return {
            "queue_sel": None if o2 is None else (o2 >> 4) & 0x3,
            "map_queue_type": None if o2 is None else L.MAP_QUEUES_QUEUE_TYPES.get((o2 >> 21) & 0x7),
            "engine": engine,
            "queue_type": None if engine is None else ("compute" if engine == 0 else "sdma"),
            "num_queues": None if o2 is None else o2 >> 29,
            "doorbell_off": None if o3 is None else (o3 >> 2) & 0x3FFFFFF,
            "mqd_addr": _u64(g(3), g(4)),
        }
    return {}
