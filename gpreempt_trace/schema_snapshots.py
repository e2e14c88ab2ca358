"""Columns of the `snapshots` table: one row per parsed debugfs MQD (per XCC) and per HQD slot.

Declared with the same `Column` as the event schema (see schema.py). The debugfs parser fills it.
"""
from __future__ import annotations

import pyarrow as pa

from .columns import Column

SNAPSHOT_COLUMNS: tuple[Column, ...] = (
    Column("run_id", None, pa.string(), "", "Trace run this row belongs to.", nullable=False),
    Column("ts_ns", None, pa.int64(), "ns", "CLOCK_MONOTONIC time the snapshot was read.", nullable=False),
    Column("snapshot_seq", None, pa.int64(), "", "Snapshot sequence number within the run (0 = baseline).", nullable=False),
    Column("phase", None, pa.string(), "", "baseline, during or after (relative to the workload)."),
    Column("source_file", None, pa.string(), "", "mqds, hqds or rls."),
    Column("kind", None, pa.string(), "", "mqd, hqd_cp, hqd_hiq, hqd_sdma or rl_packet."),
    Column("gpu_id", None, pa.uint32(), "", "KFD gpu_id of the device."),
    Column("xcc", None, pa.int32(), "", "XCC instance (0 on single-XCC GPUs)."),
    Column("pipe", None, pa.int32(), "", "CP pipe (or SDMA engine)."),
    Column("queue", None, pa.int32(), "", "CP queue slot (or SDMA RLC)."),
    Column("tgid", None, pa.int32(), "", "Process owning the queue, where known."),
    Column("pasid", None, pa.uint32(), "", "PASID of the owning process, where known."),
    Column("queue_type", None, pa.string(), "", "compute, sdma, diq, hiq."),
    Column("active", None, pa.bool_(), "", "CP_HQD_ACTIVE bit 0 (HQDs) or the MQD's active field."),
    Column("doorbell_off", None, pa.uint32(), "", "Doorbell offset (dwords)."),
    Column("pq_base", None, pa.uint64(), "", "Ring (PQ) base address, as the register holds it."),
    Column("vmid", None, pa.int32(), "", "VMID the HQD runs under."),
    Column("priority", None, pa.int32(), "", "Pipe/queue priority from the registers or MQD."),
)
