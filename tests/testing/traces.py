"""Tiny hand-checkable traces built through the real record path (synth → EventDecoder → writer)."""
from __future__ import annotations

from gpreempt_trace.recorder import decode
from gpreempt_trace.trace import directory as trace
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


def write_trace(path, run_id, events, markers=(), labels=None, funcs=FUNCS, processes=()):
    """processes: process_reads rows (/proc facts; see gpreempt_trace/trace/processes.py)."""
    tw = trace.TraceWriter.create(path, labels=labels or {}, run_id=run_id, synthetic=True)
    if processes:
        tw.writer("process_reads").append_rows(processes)
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


# ---- issue 12: preemption, lifecycle and collateral fixtures (exact ns, hand-checkable) ----------
KFD_FUNCS = ["create_queue_cpsch", "destroy_queue_cpsch", "update_queue", "unmap_queues_cpsch", "map_queues_cpsch",
             "suspend_queues", "resume_queues", "hw_unmap_wait", "evict_process_queues_cpsch", "restore_process_queues_cpsch"]
GA, GB = 0xA, 0xB  # two GPUs


def _u(ts, dur, gpu, tgid=900):
    return dict(ts_ns=ts, dur_ns=dur, event="queues_unmap", func="unmap_queues_cpsch", tgid=tgid, gpu_id=gpu, unmap_filter=2, ret=0)


def _m(ts, dur, gpu, tgid=900):
    return dict(ts_ns=ts, dur_ns=dur, event="queues_map", func="map_queues_cpsch", tgid=tgid, gpu_id=gpu, ret=0)


def _mk(ts, kind, seq=None, target=None, gpu=GA, scheme="A", **kw):
    return dict(ts_ns=ts, source="controller", kind=kind, seq=seq, target_tgid=target, gpu_id=gpu, scheme=scheme, tgid=900, **kw)


# run p1. Targets: 200 (offline) and 100 (online), both on GPU A.
#  seq 1 (200): decoy unmap on A at 95 (starts before the request), decoy on B at 102, match at 110+20 -> 30;
#               done 150 -> call 50; resume seq 2 at 300, map on A 311+19 -> 30; resume_done 340 -> off 190
#  seq 3 (100) at 400 and seq 5 (200) at 405 overlap: one unmap on A 410+10 serves both -> 20 and 15;
#               resume seq 4 (100) at 500, map 505+5 -> 10, done 520 -> off 90; seq 5 is never resumed
#  seq 7 (200) at 600, done 650, the next unmap on A starts at 700 (after done) -> NULL
#  seq 9 (100) at 800, no done marker, unmap 810+5 -> 15
#  seq 11 (200) at 900 without gpu_id -> NULL
P1_EVENTS = [
    _u(95, 10, GA), _u(102, 3, GB), _u(110, 20, GA), _m(131, 9, GA),
    _u(305, 5, GA), _m(311, 19, GA),
    _u(410, 10, GA), _m(505, 5, GA),
    _u(700, 4, GA), _u(810, 5, GA),
]
P1_MARKERS = [
    dict(ts_ns=1, source="workload", kind="workload_start", tgid=200, target_tgid=200, label="offline"),
    dict(ts_ns=2, source="workload", kind="workload_start", tgid=100, target_tgid=100, label="online"),
    _mk(100, "preempt_request", 1, 200, queue_ids=[0, 1]), _mk(150, "preempt_done", 1, 200, label="ok"),
    _mk(150, "queue_result", 1, 200, queue_ids=[0], label="ok"), _mk(150, "queue_result", 1, 200, queue_ids=[1], label="invalid"),
    _mk(300, "resume_request", 2, 200), _mk(340, "resume_done", 2, 200, label="ok"),
    _mk(400, "preempt_request", 3, 100), _mk(405, "preempt_request", 5, 200),
    _mk(430, "preempt_done", 3, 100, label="ok"), _mk(435, "preempt_done", 5, 200, label="ok"),
    _mk(500, "resume_request", 4, 100), _mk(520, "resume_done", 4, 100, label="ok"),
    _mk(600, "preempt_request", 7, 200), _mk(650, "preempt_done", 7, 200, label="EBUSY"),
    _mk(800, "preempt_request", 9, 100),
    _mk(900, "preempt_request", 11, 200, gpu=None),
]
# run p2: a second run, scheme B, whose recorder lost 5 events; the unmap starts exactly at the request
P2_EVENTS = [_u(100, 7, GA)]
P2_MARKERS = [_mk(100, "preempt_request", 1, 300, scheme="B"), _mk(120, "preempt_done", 1, 300, scheme="B", label="ok")]

# run q1: queue lifecycles. 100 creates q0 (A) at 10 and q1 (sdma, A) at 20; 200 creates q0 on B at 15.
# unmaps on A at 30, 50, 62, 82 and on B at 40; update of 100/q0 at 45; 100/q0 suspended 60 -> resumed 80;
# 100/q1 destroyed at 70; 100/q0 destroyed at 90 and created again at 95; 100 evicted 100 -> restored 110.
Q1_EVENTS = [
    dict(ts_ns=10, dur_ns=2, event="queue_create", func="create_queue_cpsch", tgid=100, gpu_id=GA, queue_id=0, queue_type="compute_aql", ret=0, comm="online"),
    dict(ts_ns=15, dur_ns=2, event="queue_create", func="create_queue_cpsch", tgid=200, gpu_id=GB, queue_id=0, queue_type="compute_aql", ret=0, comm="offline"),
    dict(ts_ns=20, dur_ns=2, event="queue_create", func="create_queue_cpsch", tgid=100, gpu_id=GA, queue_id=1, queue_type="sdma", ret=0, comm="online"),
    _u(30, 2, GA), _u(40, 2, GB),
    dict(ts_ns=45, dur_ns=2, event="queue_update", func="update_queue", tgid=100, gpu_id=GA, queue_id=0, ret=0),
    _u(50, 2, GA),
    dict(ts_ns=60, dur_ns=5, event="queues_suspend", func="suspend_queues", tgid=900, owner_tgid=100, target_pid=100, num_queues=1, queue_ids=[0], ret=1),
    _u(62, 2, GA),
    dict(ts_ns=70, dur_ns=2, event="queue_destroy", func="destroy_queue_cpsch", tgid=100, gpu_id=GA, queue_id=1, ret=0),
    dict(ts_ns=80, dur_ns=5, event="queues_resume", func="resume_queues", tgid=900, owner_tgid=100, target_pid=100, num_queues=1, queue_ids=[0], ret=1),
    _u(82, 2, GA),
    dict(ts_ns=90, dur_ns=2, event="queue_destroy", func="destroy_queue_cpsch", tgid=100, gpu_id=GA, queue_id=0, ret=0),
    dict(ts_ns=95, dur_ns=2, event="queue_create", func="create_queue_cpsch", tgid=100, gpu_id=GA, queue_id=0, queue_type="compute_aql", ret=0, comm="online"),
    dict(ts_ns=100, dur_ns=3, event="process_evict", func="evict_process_queues_cpsch", tgid=5, owner_tgid=100, gpu_id=GA, ret=0),
    dict(ts_ns=110, dur_ns=3, event="process_restore", func="restore_process_queues_cpsch", tgid=5, owner_tgid=100, gpu_id=GA, ret=0),
]

# run c1: collateral. 100/q0 and 200/q0 live on A. An update by 100 (29..39) unmaps A at 30 (remap ends 37);
# a suspend of 200/q0 by the controller 900 (50..70) unmaps A at 52 (remap ends 61); the resume (80..100)
# unmaps A at 82 (remap ends 90). An unmap on B at 31 hits nobody.
C1_EVENTS = [
    dict(ts_ns=10, dur_ns=2, event="queue_create", func="create_queue_cpsch", tgid=100, gpu_id=GA, queue_id=0, queue_type="compute_aql", ret=0),
    dict(ts_ns=20, dur_ns=2, event="queue_create", func="create_queue_cpsch", tgid=200, gpu_id=GA, queue_id=0, queue_type="compute_aql", ret=0),
    dict(ts_ns=29, dur_ns=10, event="queue_update", func="update_queue", tgid=100, gpu_id=GA, queue_id=0, ret=0),
    _u(30, 4, GA, tgid=100), _u(31, 1, GB, tgid=100), _m(35, 2, GA, tgid=100),
    dict(ts_ns=50, dur_ns=20, event="queues_suspend", func="suspend_queues", tgid=900, owner_tgid=200, target_pid=200, gpu_id=GA, num_queues=1, queue_ids=[0], ret=1),
    dict(ts_ns=53, dur_ns=3, event="hw_unmap_wait", func="hw_unmap_wait", tgid=900, gpu_id=GA, unmap_filter=2, ret=-62),
    _u(52, 5, GA), _m(58, 3, GA),
    dict(ts_ns=57, event="queue_reset", func="hw_unmap_wait", tgid=900, gpu_id=GA, ret=0),
    dict(ts_ns=80, dur_ns=20, event="queues_resume", func="resume_queues", tgid=900, owner_tgid=200, target_pid=200, gpu_id=GA, num_queues=1, queue_ids=[0], ret=1),
    dict(ts_ns=83, dur_ns=1, event="hw_unmap_wait", func="hw_unmap_wait", tgid=900, gpu_id=GA, unmap_filter=2, ret=0),
    _u(82, 3, GA), _m(86, 4, GA),
]
C1_MARKERS = [dict(ts_ns=1, source="workload", kind="workload_start", tgid=200, target_tgid=200, label="offline")]


def set_counters(path, **counters):
    """Rewrite meta.json counters (e.g. events_lost=5, or None for a killed recorder's unknown)."""
    import json

    mp = path / "meta.json"
    meta = json.loads(mp.read_text())
    meta["counters"] = {**(meta.get("counters") or {}), **counters}
    mp.write_text(json.dumps(meta))
    return path


# ---- random traces for preempt.collateral's oracle test -----------------------------------------
COLL_FUNCS = KFD_FUNCS + ["kfd:kfd_queues_preempt", "kfd:kfd_queues_unpreempt"]
_OFF_CALLS = [("queues_suspend", "suspend_queues"), ("queues_resume", "resume_queues"),
              ("queues_preempt", "kfd:kfd_queues_preempt"), ("queues_unpreempt", "kfd:kfd_queues_unpreempt"),
              ("process_evict", "evict_process_queues_cpsch"), ("process_restore", "restore_process_queues_cpsch")]


def random_collateral_events(seed: int, n: int = 150) -> list[dict]:
    """A random mix on two GPUs and three processes: queue create/destroy with id reuse, suspend/resume,
    preempt/unpreempt (named ids or all), evict/restore (with or without a GPU), repeated offs without a
    put-back, unmaps and maps. Timestamps are unique, except that some unmaps start exactly when another
    call does (the boundaries: created < t < destroyed, an off call counts from its start)."""
    import random

    rnd = random.Random(seed)
    free = rnd.sample(range(1, 3000), n)
    out, taken = [], []
    for ts in free:
        tgid, gpu = rnd.choice([100, 200, 300]), rnd.choice([GA, GB])
        r = rnd.random()
        if r < 0.2:
            out.append(dict(ts_ns=ts, dur_ns=rnd.randrange(1, 4), event="queue_create", func="create_queue_cpsch", tgid=tgid, gpu_id=gpu,
                            queue_id=rnd.randrange(3), queue_type="compute", ret=0))
        elif r < 0.3:
            out.append(dict(ts_ns=ts, dur_ns=2, event="queue_destroy", func="destroy_queue_cpsch", tgid=tgid, gpu_id=gpu,
                            queue_id=rnd.randrange(3), ret=0))
        elif r < 0.55:
            event, func = rnd.choice(_OFF_CALLS)
            call = dict(ts_ns=ts, dur_ns=rnd.randrange(1, 60), event=event, func=func, tgid=900, gpu_id=rnd.choice([gpu, None]), ret=0)
            if event.startswith("process_"):
                call.update(owner_tgid=tgid)
            else:
                ids = rnd.choice([[], [0], [1, 2]])
                call.update(owner_tgid=tgid, target_pid=tgid, queue_ids=ids, num_queues=len(ids))
            out.append(call)
        elif r < 0.85:
            if taken and rnd.random() < 0.3:
                ts = rnd.choice(taken)  # starts with another call
            out.append(_u(ts, rnd.randrange(0, 6), gpu, tgid=rnd.choice([tgid, 900])))
            continue
        else:
            out.append(_m(ts, rnd.randrange(1, 6), gpu))
        taken.append(ts)
    return sorted(out, key=lambda e: e["ts_ns"])


# containers (issue 21): 64-hex ids and /proc reads of the q1 processes. 100 (online) runs in a docker
# container (pid 7 inside), 200 (offline) in a CRI-O one; 900 (the controller) on the host.
CID_ONLINE = "3f4e1c0a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
CID_OFFLINE = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


def proc_read(ts, tgid, ns_tgid=None, cid=None, runtime=None, comm=None, cgroup=None, first=None, last=None, source="recorder", pidns=None):
    if cgroup is None and cid:
        cgroup = f"/docker/{cid}" if runtime == "docker" else f"/kubepods.slice/crio-{cid}.scope"
    return dict(ts_ns=ts, source=source, tgid=tgid, ns_tgid=ns_tgid, pidns=pidns, cgroup=cgroup, container_id=cid,
                container_runtime=runtime, comm=comm, first_seen_ts_ns=first, last_seen_ts_ns=last)


Q1_PROCESSES = [
    proc_read(11, 100, 7, CID_ONLINE, "docker", "online", first=10, pidns=4026532890),
    proc_read(16, 200, 1, CID_OFFLINE, "crio", "offline", first=15, pidns=4026532999),
    proc_read(61, 900, 900, None, None, "gpreempt-trace", cgroup="/user.slice", first=60, pidns=4026531836),
    # end of run: 100 read again (same facts), 200 gone (NULL facts, never a guess), 900 still there
    proc_read(120, 100, 7, CID_ONLINE, "docker", "online", last=110, pidns=4026532890),
    proc_read(120, 200, last=15),
    proc_read(120, 900, 900, None, None, "gpreempt-trace", cgroup="/user.slice", last=80, pidns=4026531836),
]
