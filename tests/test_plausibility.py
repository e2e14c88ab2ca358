"""The offsets' plausibility check on the first self-owned events (recorder/plausibility.py): exact rows."""
from __future__ import annotations

import numpy as np

from gpreempt_trace.recorder import record_layout
from gpreempt_trace.trace import schema
from gpreempt_trace.recorder.decode import EventDecoder, empty_records
from gpreempt_trace.recorder.plausibility import CHECKS, OffsetGuard

LAY = record_layout.layout()
KFD_FID, IOCTL_FID = 7, 0


def _bit(name: str) -> int:
    return 1 << LAY.field(name).valid_bit


def _rows(spec):
    """spec: (event, func_id, tgid, owner_tgid, queue_id) per row."""
    rec = empty_records(len(spec))
    for i, (ev, fid, tgid, owner, qid) in enumerate(spec):
        rec["event_id"][i] = schema.EVENTS.index(ev)
        rec["func_id"][i] = fid
        rec["tgid"][i] = tgid
        rec["ts_ns"][i] = 1000 + i
        rec["owner_tgid"][i] = owner
        rec["queue_id"][i] = qid
        rec["valid"][i] = _bit("func_id") | _bit("tgid") | _bit("owner_tgid") | _bit("queue_id")
    return rec


def _decoded(rec):
    t = EventDecoder("r", [f"f{i}" for i in range(10)]).decode(rec)
    return list(zip(t["owner_tgid"].to_pylist(), t["queue_id"].to_pylist()))


def test_agreeing_owners_are_trusted_and_values_kept():
    g = OffsetGuard({KFD_FID}, "cache")
    rec = _rows([("queue_create", KFD_FID, 100, 100, 1), ("queue_create", KFD_FID, 100, 100, 2),
                 ("runtime_enable", KFD_FID, 200, 200, 0), ("queues_unmap", KFD_FID, 0, 100, 3)])
    g.apply(rec)
    assert (g.state, g.checked, g.failed) == ("trusted", CHECKS, 0)
    assert _decoded(rec) == [(100, 1), (100, 2), (200, 0), (100, 3)]


def test_a_disagreeing_owner_blanks_every_offset_field_of_kfd_rows_from_then_on():
    g = OffsetGuard({KFD_FID}, "cache")
    rec = _rows([("kfd_ioctl", IOCTL_FID, 100, 100, 5), ("queue_create", KFD_FID, 100, 4242, 1), ("queues_unmap", KFD_FID, 0, 100, 3)])
    g.apply(rec)
    assert g.state == "disabled"
    assert g.first_bad == {"event": "queue_create", "tgid": 100, "owner_tgid": 4242, "ts_ns": 1001}
    # the ioctl row keeps its values (they come from the uapi, not from struct offsets)
    assert _decoded(rec) == [(100, 5), (None, None), (None, None)]
    later = _rows([("queue_destroy", KFD_FID, 100, 100, 1)])
    g.apply(later)
    assert _decoded(later) == [(None, None)]
    assert g.warning().startswith("the cache BTF's offsets are wrong for this module: a queue_create by tgid 100 read owner 4242")
    assert g.as_dict() == {"state": "disabled", "checked": 1, "failed": 1, "first_bad": g.first_bad, "disabled_at_ns": 1001}


def test_checking_waits_for_self_owned_rows_and_ignores_rows_without_an_owner():
    g = OffsetGuard({KFD_FID}, "dir")
    rec = _rows([("queues_unmap", KFD_FID, 0, 5, 0), ("queue_create", KFD_FID, 100, 7, 1)])
    rec["valid"][1] &= np.uint64(~_bit("owner_tgid") & 0xFFFFFFFFFFFFFFFF)  # owner unknown: not a check
    g.apply(rec)
    assert (g.state, g.checked) == ("checking", 0)


def test_the_modules_own_btf_is_not_second_guessed():
    for kind in ("module", "none", None):
        g = OffsetGuard({KFD_FID}, kind)
        rec = _rows([("queue_create", KFD_FID, 100, 4242, 1)])
        g.apply(rec)
        assert g.state == "off" and _decoded(rec) == [(4242, 1)]
