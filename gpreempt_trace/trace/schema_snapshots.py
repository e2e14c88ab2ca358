"""Columns of the `snapshots` table: one row per parsed debugfs MQD (per XCC) and per HQD slot, plus a
row per process header (mqds), device (hqds), runlist and runlist packet (rls).

Declared with the same `Column` as the event schema (see schema.py). The debugfs parser fills it
(gpreempt_trace/debugfs/); docs/exp01.md says where each decoded field comes from.
"""
from __future__ import annotations

import pyarrow as pa

from .columns import Column

SNAPSHOT_COLUMNS: tuple[Column, ...] = (
    Column("run_id", None, pa.string(), "", "Trace run this row belongs to.", nullable=False),
    Column("ts_ns", None, pa.int64(), "ns", "CLOCK_MONOTONIC time the snapshot was read (imported captures: CLOCK_REALTIME of the file name or mtime).", nullable=False),
    Column("snapshot_seq", None, pa.int64(), "", "Snapshot sequence number within the run (0 = first, normally the baseline).", nullable=False),
    Column("phase", None, pa.string(), "", "baseline, during or after (relative to the workload)."),
    Column("source_file", None, pa.string(), "", "mqds, hqds or rls."),
    Column("kind", None, pa.string(), "", "process, mqd, device, hqd_hiq, hqd_cp, hqd_sdma, runlist or rl_packet."),
    Column("node_id", None, pa.int32(), "", "KFD topology node index from the 'Node %u' header (hqds, rls)."),
    Column("gpu_id", None, pa.uint32(), "", "KFD gpu_id of the device."),
    Column("xcc", None, pa.int32(), "", "XCC: 'Inst %d' of an HQD (physical), or the MQD copy index (logical); 0 on single-XCC GPUs."),
    Column("pipe", None, pa.int32(), "", "CP pipe of an HQD slot, or SDMA engine."),
    Column("queue", None, pa.int32(), "", "CP queue slot of an HQD, or SDMA RLC."),
    Column("engine", None, pa.int32(), "", "MEC of a HIQ header, or MAP_QUEUES engine_sel (0 compute, 2/3 sdma0/1, or the SDMA engine id)."),
    Column("tgid", None, pa.int32(), "", "Process owning the queue: the mqds 'Process %d' header, or joined (see match)."),
    Column("pasid", None, pa.uint32(), "", "PASID of the owning process, where known (NULL when the kernel prints the pid in that field)."),
    Column("queue_type", None, pa.string(), "", "compute, sdma, diq or hiq."),
    Column("queue_index", None, pa.int32(), "", "Position of the queue in its process block of mqds (0 = printed first); joined onto HQDs and packets."),
    Column("active", None, pa.bool_(), "", "CP_HQD_ACTIVE bit 0 (CP HQDs, MQD copy), SDMA RB_CNTL.RB_ENABLE (SDMA RLC)."),
    Column("doorbell_off", None, pa.uint32(), "", "Doorbell offset (dwords): CP_HQD_PQ_DOORBELL_CONTROL[27:2], SDMA DOORBELL_OFFSET[27:2], MAP_QUEUES ordinal3[27:2]."),
    Column("pq_base", None, pa.uint64(), "", "Ring (PQ) base address as the registers hold it (address >> 8)."),
    Column("ring_base", None, pa.uint64(), "", "Ring byte address (pq_base << 8); joins events.ring_base."),
    Column("mqd_addr", None, pa.uint64(), "", "MQD GPU address: CP_MQD_BASE_ADDR(_HI) of an HQD, cp_mqd_base_addr of an MQD copy, MAP_QUEUES mqd_addr."),
    Column("vmid", None, pa.int32(), "", "VMID the HQD runs under (CP_HQD_VMID[3:0])."),
    Column("priority", None, pa.int32(), "", "CP_HQD_QUEUE_PRIORITY (= the queue's priority 0..15)."),
    Column("pipe_priority", None, pa.int32(), "", "CP_HQD_PIPE_PRIORITY (pipe_priority_map of the queue priority)."),
    Column("quantum", None, pa.uint32(), "", "CP_HQD_QUANTUM raw, or MAP_PROCESS process_quantum."),
    Column("opcode", None, pa.string(), "", "PM4 opcode of a runlist packet (MAP_PROCESS, MAP_QUEUES, RUN_LIST, ...)."),
    Column("num_queues", None, pa.int32(), "", "MAP_PROCESS num_queues, MAP_QUEUES num_queues, or MAP_QUEUES packets in a runlist."),
    Column("status", None, pa.string(), "", "device: running or stopped; runlist: active, none or empty."),
    Column("match", None, pa.string(), "", "How tgid was found: mqds (printed there), mqd_addr, doorbell or pasid (joined in the same snapshot)."),
    Column("note", None, pa.string(), "", "Parser remark (incomplete dump, foreign MQD layout, PASID field holds the pid, ...)."),
    Column("words", None, pa.list_(pa.uint32()), "", "Raw dwords: the HQD registers in dump order, the MQD copy, or the packet."),
)
