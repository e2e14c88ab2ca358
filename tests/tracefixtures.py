"""Tiny hand-checkable traces built through the real record path (synth → EventDecoder → writer)."""
from __future__ import annotations

from gpreempt_trace import decode, trace
from gpreempt_trace.synthetic import records as synth

FUNCS = ["create_queue_cpsch", "destroy_queue_cpsch", "unmap_queues_cpsch", "kfd_ioctl"]
GPU = 0x1111

# run r1: tgid 100 creates compute queues 0 and 1, tgid 200 an SDMA queue 0; unmap at 50 (3 live
# queues of 2 processes, caller 100), queue 1 of 100 destroyed at 60, unmap at 70 (2 live, caller 200)
R1_EVENTS = [
    dict(ts_ns=10, dur_ns=4, event="queue_create", func="create_queue_cpsch", tgid=100, gpu_id=GPU, queue_id=0, queue_type="compute_aql", ret=0),
    dict(ts_ns=20, dur_ns=6, event="queue_create", func="create_queue_cpsch", tgid=100, gpu_id=GPU, queue_id=1, queue_type="compute_aql", ret=0),
    dict(ts_ns=30, dur_ns=2, event="queue_create", func="create_queue_cpsch", tgid=200, gpu_id=GPU, queue_id=0, queue_type="sdma", ret=0),
    dict(ts_ns=35, dur_ns=1, event="queue_create", func="create_queue_cpsch", tgid=200, gpu_id=GPU, queue_id=1, queue_type="sdma", ret=-12),
    dict(ts_ns=50, dur_ns=8, event="queues_unmap", func="unmap_queues_cpsch", tgid=100, gpu_id=GPU, unmap_filter=3, ret=0),
    dict(ts_ns=60, dur_ns=3, event="queue_destroy", func="destroy_queue_cpsch", tgid=100, gpu_id=GPU, queue_id=1, ret=0),
    dict(ts_ns=70, dur_ns=9, event="queues_unmap", func="unmap_queues_cpsch", tgid=200, gpu_id=GPU, unmap_filter=3, ret=0),
    dict(ts_ns=80, dur_ns=100, event="kfd_ioctl", func="kfd_ioctl", tgid=100, ioctl_nr=0xC0584B02, ret=0),
    dict(ts_ns=90, dur_ns=300, event="kfd_ioctl", func="kfd_ioctl", tgid=200, ioctl_nr=0xC0584B02, ret=-22),
    dict(ts_ns=95, dur_ns=50, event="kfd_ioctl", func="kfd_ioctl", tgid=200, ioctl_nr=0xC0284B82, ret=0),
]
R1_MARKERS = [
    dict(ts_ns=100, source="controller", kind="preempt_request", target_tgid=200, scheme="A", seq=1, queue_ids=[0]),
    dict(ts_ns=150, source="controller", kind="preempt_done", target_tgid=200, scheme="A", seq=1, label="ok"),
    dict(ts_ns=200, source="controller", kind="resume_request", target_tgid=200, scheme="A", seq=2),
    dict(ts_ns=260, source="controller", kind="resume_done", target_tgid=200, scheme="A", seq=2, label="ok"),
    dict(ts_ns=300, source="controller", kind="preempt_request", target_tgid=200, scheme="B", seq=3),
]
# run r2: tgid 300 creates one compute queue
R2_EVENTS = [
    dict(ts_ns=5, dur_ns=7, event="queue_create", func="create_queue_cpsch", tgid=300, gpu_id=GPU, queue_id=0, queue_type="compute", ret=0),
]
NAMES = {0xC0584B02: "AMDKFD_IOC_CREATE_QUEUE", 0xC0084B03: "AMDKFD_IOC_DESTROY_QUEUE", 0xC0204B26: "AMDKFD_IOC_DBG_TRAP"}


def write_trace(path, run_id, events, markers=(), labels=None, funcs=FUNCS):
    tw = trace.TraceWriter.create(path, labels=labels or {}, run_id=run_id, synthetic=True)
    dec = decode.EventDecoder(run_id, funcs, NAMES.get)
    if events:
        tw.writer("events").append_table(dec.decode(synth.records(events, funcs)))
    if markers:
        tw.writer("markers").append_rows(markers)
    tw.close()
    return path


def two_runs(root):
    a = write_trace(root / "r1", "r1", R1_EVENTS, R1_MARKERS, {"model": "a"})
    b = write_trace(root / "r2", "r2", R2_EVENTS, (), {"model": "b"})
    return a, b

# the ioctl tracepoint path's view of an online/offline pair and a controller (run r3)
IOCTL_FUNCS = ["syscalls:sys_enter_ioctl", "kfd_ioctl"]
CQ, DQ, DBG = 0xC0584B02, 0xC0084B03, 0xC0204B26
R3_EVENTS = [
    dict(ts_ns=1, event="kfd_ioctl", func="syscalls:sys_enter_ioctl", tgid=10, comm="online", ioctl_nr=CQ, queue_type="compute_aql", priority=15, ret=0),
    dict(ts_ns=2, event="kfd_ioctl", func="kfd_ioctl", tgid=10, comm="online", ioctl_nr=CQ, ret=0),  # kprobe: same call
    dict(ts_ns=3, event="kfd_ioctl", func="syscalls:sys_enter_ioctl", tgid=10, comm="online", ioctl_nr=CQ, queue_type="sdma", priority=15, ret=0),
    dict(ts_ns=4, event="kfd_ioctl", func="syscalls:sys_enter_ioctl", tgid=20, comm="offline", ioctl_nr=CQ, queue_type="compute", priority=0, ret=0),
    dict(ts_ns=5, event="kfd_ioctl", func="syscalls:sys_enter_ioctl", tgid=30, comm="ctl", ioctl_nr=DBG, dbg_op=6, target_pid=20, num_queues=1, queue_ids=[0], ret=0),
    dict(ts_ns=6, event="kfd_ioctl", func="syscalls:sys_enter_ioctl", tgid=30, comm="ctl", ioctl_nr=DBG, dbg_op=7, target_pid=20, num_queues=1, queue_ids=[0], ret=-22),
    dict(ts_ns=7, event="kfd_ioctl", func="syscalls:sys_enter_ioctl", tgid=20, comm="offline", ioctl_nr=DQ, queue_id=0, ret=0),
]
