"""Plausibility of the struct offsets on the first events, before anything is written.

A BTF built from sources (`btf build`) can be wrong for the module that runs: another source version,
another config.h. Some events are owned by their caller by construction: a queue is created by its
owner's own CREATE_QUEUE ioctl, RUNTIME_ENABLE is issued by the process it enables. On those the owner
read through the offsets (queue/process -> kfd_process.lead_thread -> task_struct.tgid) must be the
caller's tgid. The first CHECKS such rows decide: all agree -> trusted; any disagrees -> every column
read through struct offsets is NULL in every KFD-probe row from then on (valid bits cleared in the raw
records, before decoding), and the trace says so (meta.json recorder.btf_plausibility).
"""
from __future__ import annotations

import numpy as np

from . import record_layout
from ..trace import schema

CHECKS = 3
# events whose owner is their caller (kprobe and tracepoint rows alike)
SELF_OWNED = ("queue_create", "runtime_enable")
# record fields a KFD probe fills through struct offsets (kfd.bpf.c kfd_fill_owner, kfd_fill_queue,
# kfd_read_flags; target_pid is the owner read the same way)
OFFSET_FIELDS = ("gpu_id", "pasid", "owner_tgid", "target_pid", "queue_id", "qtype_id", "doorbell_off", "priority",
                 "queue_percentage", "ring_base", "ring_size", "is_active", "is_evicted", "is_suspended",
                 "is_active_after", "is_evicted_after", "is_suspended_after")


class OffsetGuard:
    def __init__(self, kfd_func_ids: set[int], btf_kind: str | None):
        lay = record_layout.layout()
        self.owner_bit = np.uint64(1 << lay.field("owner_tgid").valid_bit)
        mask = 0
        for name in OFFSET_FIELDS:
            bit = lay.field(name).valid_bit if any(f.name == name for f in lay.fields) else None
            if bit is not None:
                mask |= 1 << bit
        self.clear = np.uint64(~mask & 0xFFFFFFFFFFFFFFFF)
        self.self_owned = np.array([schema.EVENTS.index(e) for e in SELF_OWNED if e in schema.EVENTS], dtype=np.uint16)
        self.kfd_func_ids = np.array(sorted(kfd_func_ids), dtype=np.uint16)
        self.btf_kind = btf_kind
        self.checked = 0
        self.failed = 0
        self.first_bad: dict | None = None
        self.disabled_at_ns: int | None = None
        # the module's own BTF is the module's truth; only offsets from elsewhere (built, --btf) are checked
        self.state = "checking" if btf_kind in ("cache", "dir") and len(self.kfd_func_ids) else "off"

    def apply(self, rec: np.ndarray) -> None:
        """Check the batch's self-owned rows (while checking) and blank the offset fields (when disabled), in place."""
        if self.state == "checking" and len(rec):
            m = np.isin(rec["event_id"], self.self_owned) & np.isin(rec["func_id"], self.kfd_func_ids) & \
                ((rec["valid"] & self.owner_bit) != 0)
            idx = np.flatnonzero(m)[: CHECKS - self.checked]
            for i in idx:
                self.checked += 1
                if int(rec["owner_tgid"][i]) != int(rec["tgid"][i]):
                    self.failed += 1
                    if self.first_bad is None:
                        self.first_bad = {"event": schema.EVENTS[int(rec["event_id"][i])], "tgid": int(rec["tgid"][i]),
                                          "owner_tgid": int(rec["owner_tgid"][i]), "ts_ns": int(rec["ts_ns"][i])}
            if self.failed:
                self.state = "disabled"
                self.disabled_at_ns = self.first_bad["ts_ns"] if self.first_bad else None
            elif self.checked >= CHECKS:
                self.state = "trusted"
        if self.state == "disabled" and len(rec):
            rows = np.isin(rec["func_id"], self.kfd_func_ids)
            rec["valid"][rows] &= self.clear

    def warning(self) -> str | None:
        if self.state != "disabled" or self.first_bad is None:
            return None
        b = self.first_bad
        return (f"the {self.btf_kind} BTF's offsets are wrong for this module: a {b['event']} by tgid {b['tgid']} read owner "
                f"{b['owner_tgid']}; every KFD struct field is NULL from now on (rebuild it: gpreempt-trace btf build; see doctor)")

    def as_dict(self) -> dict:
        return {"state": self.state, "checked": self.checked, "failed": self.failed, "first_bad": self.first_bad,
                "disabled_at_ns": self.disabled_at_ns}
