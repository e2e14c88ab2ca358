"""Parsers for /sys/kernel/debug/kfd/{mqds,hqds,rls} in every format the kernel has printed.

Format strings (see tests/fixtures/debugfs/README.md for the source of each):
  mqds  kfd_debugfs_mqds_by_process  "Process %d PASID 0x%x:\\n" (upstream 6.1 .. 6.12+, tgid and PASID),
                                     "Process %d PASID %d:\\n" (ROCm DKMS: decimal; ROCm/amdgpu prints the
                                     lead thread's pid there, older ROCK-Kernel-Driver the PASID)
        pqm_debugfs_mqds             "  Compute queue on device %x\\n", "  SDMA queue on device %x\\n",
                                     "  DIQ on device %x\\n", "  Bad user|kernel queue type %d on device %x\\n",
                                     "  Queue node with bad user queue type %d on device %x\\n",
                                     "  Weird: Queue node with neither kernel nor user queue\\n"
        debugfs_show_mqd             seq_hex_dump(m, "    ", DUMP_PREFIX_OFFSET, 32, 4, mqd, size, false):
                                     "    %.8x: " + up to 8 "%08x" words; MI300 compute queues print
                                     NUM_XCC dumps back to back, each restarting at offset 0.
  hqds  kfd_debugfs_hqds_by_device   "Node %u, gpu_id %x:\\n"
        dqm_debugfs_hqds             " Device is stopped\\n"; 6.1: "  HIQ on MEC %d Pipe %d Queue %d\\n",
                                     "  CP Pipe %d, Queue %d\\n"; >= 6.5: "   Inst %d, HIQ on MEC %d Pipe %d Queue %d\\n",
                                     " Inst %d,  CP Pipe %d, Queue %d\\n"; both: "  SDMA Engine %d, RLC %d\\n"
        seq_reg_dump                 "    %08x: %08x" then " %08x" (8 values a row; a new row also
                                     starts when the next register address is not the previous + 4)
  rls   kfd_debugfs_rls_by_device    "Node %u, gpu_id %x:\\n"
        pm_debugfs_runlist           "  No active runlist\\n" or seq_hex_dump(m, "  ", DUMP_PREFIX_OFFSET, 32, 4, ib, size, false)
Unknown or garbled lines become problems ("FILE:LINE: reason: text"); the rest is parsed. Input with no
line of the expected format at all raises NotAKfdDump.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ..errors import GptError
from . import decode
from . import layout as L

KINDS = ("mqds", "hqds", "rls")
MAX_PROBLEMS_LISTED = 20


class NotAKfdDump(GptError):
    pass


@dataclass
class Parsed:
    source_file: str
    name: str
    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    structure_lines: int = 0  # header lines of the expected format (hex rows not counted)

    def problem(self, line_no: int, reason: str, text: str = "") -> None:
        shown = text.strip()
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        self.problems.append(f"{self.name}:{line_no}: {reason}" + (f": {shown!r}" if shown else ""))

    def warning_lines(self) -> list[str]:
        if len(self.problems) <= MAX_PROBLEMS_LISTED:
            return list(self.problems)
        return self.problems[:MAX_PROBLEMS_LISTED] + [f"{self.name}: {len(self.problems) - MAX_PROBLEMS_LISTED} more problems not listed"]


_HEX = r"[0-9a-fA-F]{8}"
HEX_ROW = re.compile(rf"^( +)({_HEX}): ({_HEX}(?: {_HEX})*)\s*$")
NODE = re.compile(r"^Node (\d+), gpu_id ([0-9a-fA-F]+):\s*$")
PROCESS = re.compile(r"^Process (-?\d+) PASID (0x[0-9a-fA-F]+|\d+):\s*$")
USER_QUEUE = re.compile(r"^  (Compute|SDMA) queue on device ([0-9a-fA-F]+)\s*$")
DIQ = re.compile(r"^  DIQ on device ([0-9a-fA-F]+)\s*$")
BAD_QUEUE = re.compile(r"^  (?:Bad (?:user|kernel)|Q\w+ node with bad user) queue type (-?\d+) on device ([0-9a-fA-F]+)\s*$")
WEIRD = re.compile(r"^  Weird: Queue node with neither kernel nor user queue\s*$")
STOPPED = re.compile(r"^ Device is stopped\s*$")
HIQ_61 = re.compile(r"^  HIQ on MEC (\d+) Pipe (\d+) Queue (\d+)\s*$")
HIQ_XCC = re.compile(r"^   Inst (\d+), HIQ on MEC (\d+) Pipe (\d+) Queue (\d+)\s*$")
CP_61 = re.compile(r"^  CP Pipe (\d+), Queue (\d+)\s*$")
CP_XCC = re.compile(r"^ Inst (\d+),  CP Pipe (\d+), Queue (\d+)\s*$")
SDMA_RLC = re.compile(r"^  SDMA Engine (\d+), RLC (\d+)\s*$")
NO_RUNLIST = re.compile(r"^  No active runlist\s*$")


_ROW_START = re.compile(rf"^ +{_HEX}: ")


def _unrecognised(p: "Parsed", no: int, line: str) -> None:
    p.problem(no, "garbled or truncated dump row" if _ROW_START.match(line) else "unrecognised line", line)


def _hex_row(line: str):
    m = HEX_ROW.match(line)
    if not m:
        return None
    return len(m.group(1)), int(m.group(2), 16), [int(w, 16) for w in m.group(3).split()]


def _lines(text: str):
    for no, raw in enumerate(text.splitlines(), 1):
        yield no, raw.rstrip("\r\n")


def _dense(words: dict[int, int]) -> list[Optional[int]]:
    if not words:
        return []
    n = max(words) + 1
    return [words.get(i) for i in range(n)]


def _check_dump_kind(p: Parsed, text: str) -> Parsed:
    if text.strip() and p.structure_lines == 0:
        raise NotAKfdDump(
            f"{p.name} is not a KFD debugfs {p.source_file} dump (no line has its format)",
            "give the files /sys/kernel/debug/kfd/mqds, hqds and rls (or copies of them)",
        )
    return p


# -- mqds -------------------------------------------------------------------------------------------
@dataclass
class _Queue:
    line_no: int
    gpu_id: int
    queue_type: str  # compute, sdma, diq
    index: int
    dumps: list[dict[int, int]] = field(default_factory=list)
    last_offset: Optional[int] = None


def parse_mqds(text: str, name: str = "mqds") -> Parsed:
    p = Parsed("mqds", name)
    tgid = pasid = None
    pasid_note = None
    queue: Optional[_Queue] = None
    index = 0

    def flush():
        nonlocal queue
        if queue is not None:
            p.rows.extend(_mqd_rows(p, queue, tgid, pasid))
        queue = None

    for no, line in _lines(text):
        if not line.strip():
            continue
        if m := PROCESS.match(line):
            flush()
            p.structure_lines += 1
            tgid, field_val = int(m.group(1)), int(m.group(2), 0)
            # kernels with per-device PASIDs (upstream 8544374c0f82, ROCm DKMS "PASID %d") print the lead
            # thread's pid in the "PASID" field
            pasid, pasid_note = (None, "PASID field holds the pid") if field_val == tgid else (field_val, None)
            index = 0
            p.rows.append({"kind": "process", "tgid": tgid, "pasid": pasid, "note": pasid_note})
            continue
        if m := USER_QUEUE.match(line):
            flush()
            p.structure_lines += 1
            if tgid is None:
                p.problem(no, "queue line before any Process line", line)
            queue = _Queue(no, int(m.group(2), 16), m.group(1).lower(), index)
            index += 1
            continue
        if m := DIQ.match(line):
            flush()
            p.structure_lines += 1
            queue = _Queue(no, int(m.group(1), 16), "diq", index)
            index += 1
            continue
        if BAD_QUEUE.match(line) or WEIRD.match(line):
            flush()
            p.structure_lines += 1  # a kernel line, but it is followed by no dump
            index += 1
            continue
        row = _hex_row(line)
        if row is not None:
            indent, offset, words = row
            if queue is None:
                p.problem(no, "MQD dump row outside a queue", line)
                continue
            if indent != 4 or len(words) > 8 or offset % 32:
                p.problem(no, "garbled MQD dump row", line)
                continue
            if offset == 0 or not queue.dumps:
                if offset != 0:
                    p.problem(no, "MQD dump does not start at offset 0", line)
                queue.dumps.append({})
            elif queue.last_offset is not None and offset != queue.last_offset + 32:
                p.problem(no, f"MQD dump offset jumps from {queue.last_offset:08x} to {offset:08x}", line)
            for k, w in enumerate(words):
                queue.dumps[-1][offset // 4 + k] = w
            queue.last_offset = offset
            continue
        _unrecognised(p, no, line)
    flush()
    return _check_dump_kind(p, text)


def _mqd_rows(p: Parsed, q: _Queue, tgid, pasid) -> list[dict]:
    rows = []
    dumps = q.dumps
    if q.queue_type in ("sdma", "diq") and len(dumps) > 1:
        # >= 6.5 pqm_debugfs_mqds keeps num_xccs from an earlier compute queue, so an SDMA queue
        # listed after one is dumped NUM_XCC times; the copies are the same memory read again.
        dumps = dumps[:1]
    if not dumps:
        p.problem(q.line_no, f"{q.queue_type} queue on device {q.gpu_id:x} has no MQD dump")
    for copy, words in enumerate(dumps):
        dense = _dense(words)
        expected = L.V9_SDMA_MQD_DWORDS if q.queue_type == "sdma" else L.V9_MQD_DWORDS
        note = None
        if len(dense) != expected or None in dense:
            got = sum(w is not None for w in dense)
            note = f"MQD dump has {got} of {expected} dwords"
            p.problem(q.line_no, f"{q.queue_type} queue on device {q.gpu_id:x}, dump {copy}: {note}")
        fields = decode.v9_sdma_mqd(dense) if q.queue_type == "sdma" else decode.v9_mqd(dense)
        if q.queue_type != "sdma" and not fields and dense:
            note = (note + "; " if note else "") + "not a v9 MQD (header differs), fields not decoded"
        row = {
            "kind": "mqd",
            "tgid": tgid,
            "pasid": pasid,
            "gpu_id": q.gpu_id,
            "queue_type": q.queue_type,
            "queue_index": q.index,
            "xcc": copy if q.queue_type == "compute" else None,
            "note": note,
            "words": dense,
            "match": "mqds",
        }
        row.update(fields)
        if q.queue_type == "sdma":
            row["active"] = None  # RB_ENABLE is set in the register at load time, not in the MQD
        rows.append(row)
    return rows


# -- hqds -------------------------------------------------------------------------------------------
@dataclass
class _Block:
    line_no: int
    kind: str  # hqd_hiq, hqd_cp, hqd_sdma
    xcc: Optional[int]
    pipe: int
    queue: int
    engine: Optional[int] = None
    regs: list[tuple[int, int]] = field(default_factory=list)  # (byte address, value)


def parse_hqds(text: str, name: str = "hqds") -> Parsed:
    p = Parsed("hqds", name)
    node = gpu_id = None
    stopped = False
    block: Optional[_Block] = None

    def flush_block():
        nonlocal block
        if block is not None:
            p.rows.append(_hqd_row(p, block, node, gpu_id))
        block = None

    def flush_node():
        flush_block()
        if gpu_id is not None:
            p.rows.append({"kind": "device", "node_id": node, "gpu_id": gpu_id, "status": "stopped" if stopped else "running"})

    for no, line in _lines(text):
        if not line.strip():
            continue
        if m := NODE.match(line):
            flush_node()
            p.structure_lines += 1
            node, gpu_id, stopped = int(m.group(1)), int(m.group(2), 16), False
            continue
        if STOPPED.match(line):
            flush_block()
            p.structure_lines += 1
            stopped = True
            continue
        new = None
        if m := HIQ_XCC.match(line):
            new = _Block(no, "hqd_hiq", int(m.group(1)), int(m.group(3)), int(m.group(4)), engine=int(m.group(2)))
        elif m := HIQ_61.match(line):
            new = _Block(no, "hqd_hiq", 0, int(m.group(2)), int(m.group(3)), engine=int(m.group(1)))
        elif m := CP_XCC.match(line):
            new = _Block(no, "hqd_cp", int(m.group(1)), int(m.group(2)), int(m.group(3)))
        elif m := CP_61.match(line):
            new = _Block(no, "hqd_cp", 0, int(m.group(1)), int(m.group(2)))
        elif m := SDMA_RLC.match(line):
            new = _Block(no, "hqd_sdma", None, int(m.group(1)), int(m.group(2)))
        if new is not None:
            flush_block()
            p.structure_lines += 1
            if gpu_id is None:
                p.problem(no, "HQD header before any Node line", line)
            block = new
            continue
        row = _hex_row(line)
        if row is not None:
            indent, addr, values = row
            if block is None:
                p.problem(no, "register row outside an HQD block", line)
                continue
            if indent != 4 or len(values) > 8 or addr % 4:
                p.problem(no, "garbled register row", line)
                continue
            block.regs.extend((addr + 4 * k, v) for k, v in enumerate(values))
            continue
        _unrecognised(p, no, line)
    flush_node()
    return _check_dump_kind(p, text)


def _hqd_row(p: Parsed, b: _Block, node, gpu_id) -> dict:
    row = {"kind": b.kind, "node_id": node, "gpu_id": gpu_id, "xcc": b.xcc, "pipe": b.pipe, "queue": b.queue, "engine": b.engine}
    values = [v for _, v in b.regs]
    row["words"] = values
    if b.kind == "hqd_sdma":
        row["queue_type"] = "sdma"
        row.update(decode.sdma_hqd(values))
        return row
    row["queue_type"] = "hiq" if b.kind == "hqd_hiq" else "compute"
    if not b.regs:
        p.problem(b.line_no, "HQD block has no register rows")
        return row
    base = b.regs[0][0]
    dense: dict[int, int] = {}
    for addr, v in b.regs:
        if addr < base:
            p.problem(b.line_no, f"register address {addr:08x} below the block start {base:08x}")
            continue
        dense[(addr - base) // 4] = v
    regs = _dense(dense)
    if len(regs) != L.CP_HQD_N_REGS or None in regs:
        row["note"] = f"HQD dump has {sum(r is not None for r in regs)} of {L.CP_HQD_N_REGS} registers"
        p.problem(b.line_no, row["note"])
    row.update(decode.cp_hqd(regs))
    return row


# -- rls --------------------------------------------------------------------------------------------
def parse_rls(text: str, name: str = "rls") -> Parsed:
    p = Parsed("rls", name)
    node = gpu_id = None
    node_line = 0
    words: dict[int, int] = {}
    status = None
    last_offset = None

    def flush_node():
        if gpu_id is None:
            return
        packets, problems = decode.pm4_packets([w if w is not None else 0 for w in _dense(words)])
        for prob in problems:
            p.problem(node_line, f"runlist of gpu_id {gpu_id:x}: {prob}")
        n_queues = sum(1 for k in packets if k["opcode"] == "MAP_QUEUES")
        p.rows.append({"kind": "runlist", "node_id": node, "gpu_id": gpu_id, "status": status or "empty", "num_queues": n_queues})
        pasid = None
        for k in packets:
            row = {"kind": "rl_packet", "node_id": node, "gpu_id": gpu_id, "opcode": k["opcode"], "words": k["words"]}
            for f in ("pasid", "quantum", "num_queues", "engine", "queue_type", "doorbell_off", "mqd_addr"):
                if k.get(f) is not None:
                    row[f] = k[f]
            if k["opcode"] == "MAP_PROCESS":
                pasid = k.get("pasid")
            elif k["opcode"] == "MAP_QUEUES":  # pm_create_runlist_ib puts a process's queues after its MAP_PROCESS
                row["pasid"] = pasid
                row["note"] = k.get("map_queue_type")
            p.rows.append(row)

    for no, line in _lines(text):
        if not line.strip():
            continue
        if m := NODE.match(line):
            flush_node()
            p.structure_lines += 1
            node, gpu_id, words, status, last_offset = int(m.group(1)), int(m.group(2), 16), {}, None, None
            node_line = no
            continue
        if NO_RUNLIST.match(line):
            p.structure_lines += 1
            status = "none"
            continue
        row = _hex_row(line)
        if row is not None:
            indent, offset, values = row
            if gpu_id is None:
                p.problem(no, "runlist row before any Node line", line)
                continue
            if indent != 2 or len(values) > 8 or offset % 32:
                p.problem(no, "garbled runlist row", line)
                continue
            if last_offset is not None and offset != last_offset + 32:
                p.problem(no, f"runlist offset jumps from {last_offset:08x} to {offset:08x}", line)
            status = "active"
            for k, w in enumerate(values):
                words[offset // 4 + k] = w
            last_offset = offset
            continue
        _unrecognised(p, no, line)
    flush_node()
    return _check_dump_kind(p, text)


PARSERS = {"mqds": parse_mqds, "hqds": parse_hqds, "rls": parse_rls}


def parse(kind: str, text: str, name: Optional[str] = None) -> Parsed:
    return PARSERS[kind](text, name or kind)


def sniff(text: str) -> Optional[str]:
    """Which debugfs file a text is (mqds, hqds, rls), from its first structure lines; None if none."""
    has_node = False
    for _, line in _lines(text[:200_000]):
        if PROCESS.match(line) or USER_QUEUE.match(line):
            return "mqds"
        if HIQ_XCC.match(line) or HIQ_61.match(line) or CP_XCC.match(line) or CP_61.match(line) or SDMA_RLC.match(line) or STOPPED.match(line):
            return "hqds"
        if NO_RUNLIST.match(line):
            return "rls"
        if NODE.match(line):
            has_node = True
            continue
        if has_node and (r := _hex_row(line)) is not None:
            return "rls" if r[0] == 2 else "hqds"
    return None
