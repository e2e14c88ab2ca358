"""Join the rows of one snapshot: give HQD slots and runlist packets the process (tgid, pasid) and
queue position of the MQD they hold. debugfs hqds prints no pid, so this is the only way to see whose
queue sits in a slot.

Keys, strongest first: CP_MQD_BASE_ADDR(_HI) of an HQD equals the cp_mqd_base_addr of one MQD copy
(each XCC's copy holds its own address); else the doorbell offset on the same gpu_id. Runlist
MAP_QUEUES packets carry XCC0's MQD address and the doorbell; MAP_PROCESS carries the PASID.
"""
from __future__ import annotations

from typing import Iterable


def attribute(rows: Iterable[dict]) -> list[dict]:
    rows = list(rows)
    by_addr: dict[tuple, dict] = {}
    by_doorbell: dict[tuple, dict] = {}
    by_pasid: dict[int, dict] = {}
    for r in rows:
        if r.get("kind") == "process" and r.get("pasid") is not None:
            by_pasid[r["pasid"]] = r
        if r.get("kind") != "mqd" or r.get("tgid") is None:
            continue
        if r.get("mqd_addr"):
            by_addr.setdefault((r["gpu_id"], r["mqd_addr"]), r)
        if r.get("doorbell_off"):
            by_doorbell.setdefault((r["gpu_id"], r.get("queue_type"), r["doorbell_off"]), r)
    for r in rows:
        kind = r.get("kind")
        if kind not in ("hqd_cp", "hqd_sdma", "rl_packet"):
            continue
        src, how = None, None
        if r.get("mqd_addr") and (r.get("gpu_id"), r["mqd_addr"]) in by_addr:
            src, how = by_addr[(r["gpu_id"], r["mqd_addr"])], "mqd_addr"
        elif r.get("doorbell_off") and (r.get("gpu_id"), r.get("queue_type"), r["doorbell_off"]) in by_doorbell:
            src, how = by_doorbell[(r["gpu_id"], r.get("queue_type"), r["doorbell_off"])], "doorbell"
        elif kind == "rl_packet" and r.get("opcode") == "MAP_PROCESS" and r.get("pasid") in by_pasid:
            src, how = by_pasid[r["pasid"]], "pasid"
        if src is None:
            continue
        r["tgid"] = src["tgid"]
        if src.get("pasid") is not None:
            r["pasid"] = src["pasid"]
        if kind != "rl_packet" or r.get("opcode") == "MAP_QUEUES":
            r["queue_index"] = src.get("queue_index")
        r["match"] = how
    return rows
