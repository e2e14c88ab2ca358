"""A documented model of KFD on an HWS GPU, producing format-v1 traces with their ground truth.

What the model does (facts from docs/queries.md and the reference notes on KFD; numbers are parameters):
- Processes: an online model (one process for the whole run), an offline model (a new process every
  `cycles_per_epoch` preemptions: process churn), both on GPU `gpus[0]`; a decoy process on `gpus[1]`
  whose queue updates unmap that other GPU at random times (also inside preemption windows).
- Each HIP process creates `compute_queues` compute_aql queues and `sdma_queues` sdma queues (MI308X:
  5 compute per process, each MQD loaded on `xccs` XCCs; the events show one row per KFD queue).
- HWS: every queue change (create, destroy, update, suspend/resume, preempt/unpreempt) runs
  execute_queues: one device-wide `queues_unmap` (filter 2 = dynamic queues) holding one
  `hw_unmap_wait` (pm_send_unmap_queue -> fence wait return), then one `queues_map` holding one
  `runlist_submit`, all nested in the calling KFD function and its `kfd_ioctl`.
- The controller (scheme A: DBG_TRAP suspend/resume, `queues_suspend`/`queues_resume`; scheme B: the
  kernel/ series' PREEMPT/RESUME_QUEUES, `queues_preempt`/`queues_unpreempt`) preempts the offline
  model's compute queues on `gpus[0]`, holds them off for `hold_ns`, and resumes them, writing
  preempt_request/done, queue_result and resume_request/done markers.
- Latencies are log-normal (median, sigma) per scheme; `filler` kfd_ioctl rows (memory calls of the
  online model) pad the trace to exactly `events` rows; `lost` drops that fraction of event rows at
  random and counts them in meta.json (the ground truth then says NULL where a side was dropped).

Everything is vectorised over preemption cycles, so 10 M events take seconds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..trace import schema
from ..contracts import uapi
from ..recorder.plan import IOCTL_TP_FUNC

EVENT_ID = {n: i for i, n in enumerate(schema.EVENTS)}
QTYPE_ID = {n: i for i, n in enumerate(schema.QUEUE_TYPES)}
FUNCS = (
    "create_queue_cpsch", "destroy_queue_cpsch", "update_queue", "unmap_queues_cpsch", "map_queues_cpsch",
    "hw_unmap_wait", "pm_send_runlist", "suspend_queues", "resume_queues", "kfd:kfd_queues_preempt",
    "kfd:kfd_queues_unpreempt", IOCTL_TP_FUNC,
)
FUNC_ID = {n: i for i, n in enumerate(FUNCS)}
# request numbers, from the uapi source (names come from recorder.ioctls at decode time)
CREATE_QUEUE, DESTROY_QUEUE, UPDATE_QUEUE = uapi.CREATE_QUEUE, uapi.DESTROY_QUEUE, uapi.UPDATE_QUEUE
DBG_TRAP, ALLOC_MEMORY = uapi.DBG_TRAP, uapi.ALLOC_MEMORY_OF_GPU
PREEMPT_QUEUES, RESUME_QUEUES = uapi.PREEMPT_QUEUES, uapi.RESUME_QUEUES
DBG_SUSPEND, DBG_RESUME = uapi.DBG_TRAP_OP["SUSPEND_QUEUES"], uapi.DBG_TRAP_OP["RESUME_QUEUES"]
UNMAP_FILTER_DYNAMIC = 2
START_NS = 1_000_000_000


@dataclass
class Latency:
    median_ns: float
    sigma: float = 0.3

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.maximum(1, np.round(self.median_ns * np.exp(rng.normal(0.0, self.sigma, n)))).astype(np.int64)


@dataclass
class ModelParams:
    scheme: str = "A"
    events: int = 10_000
    seed: int = 0
    gpus: tuple[int, int] = (0xF7BC, 0x5E61)
    compute_queues: int = 5
    sdma_queues: int = 2
    xccs: int = 4
    online_label: str = "online-bert"
    offline_label: str = "offline-resnet"
    decoy_label: str = "decoy-gpu1"
    cycles_per_epoch: int = 1000
    hold_ns: int = 2_000_000
    gap_ns: int = 3_000_000
    filler_fraction: float = 0.3
    lost: float = 0.0
    # per scheme: call overhead before the unmap, hardware unmap (fence wait), remap
    ioctl_ns: dict = field(default_factory=lambda: {"A": Latency(40_000, 0.4), "B": Latency(12_000, 0.3)})
    unmap_ns: dict = field(default_factory=lambda: {"A": Latency(450_000, 0.5), "B": Latency(180_000, 0.4)})
    map_ns: dict = field(default_factory=lambda: {"A": Latency(90_000, 0.3), "B": Latency(60_000, 0.3)})

    def describe(self) -> dict:
        d = asdict(self)
        d["gpus"] = [f"0x{g:x}" for g in self.gpus]
        return d


class Columns:
    """Event rows as column chunks; a column a chunk does not give is NULL for its rows."""

    def __init__(self):
        self.chunks: list[tuple[int, dict]] = []

    def add(self, n: int, **cols) -> None:
        if n:
            self.chunks.append((n, {k: (np.broadcast_to(np.asarray(v), (n,) + np.shape(v)[1:]) if k == "queue_ids" else np.broadcast_to(np.asarray(v), (n,))) for k, v in cols.items() if v is not None}))

    def total(self) -> int:
        return sum(n for n, _ in self.chunks)

    def build(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(values, valid) per column over all chunks, in chunk order."""
        names = sorted({k for _, c in self.chunks for k in c})
        vals, valid = {}, {}
        for k in names:
            parts, ok = [], []
            for n, c in self.chunks:
                if k in c:
                    parts.append(np.asarray(c[k]))
                    ok.append(np.ones(n, bool))
                else:
                    shape = (n, schema.MAX_QUEUE_IDS) if k == "queue_ids" else (n,)
                    parts.append(np.zeros(shape, np.int32 if k == "queue_ids" else (np.int64 if k != "comm" else "S16")))
                    ok.append(np.zeros(n, bool))
            if k == "comm":
                parts = [p.astype("S16") for p in parts]
            vals[k] = np.concatenate(parts)
            valid[k] = np.concatenate(ok)
        return vals, valid


def _qids(ids: list[int], n: int) -> np.ndarray:
    a = np.zeros((n, schema.MAX_QUEUE_IDS), np.int32)
    a[:, : len(ids)] = ids
    return a


class Model:
    """Generates one trace's events, markers and ground truth."""

    def __init__(self, p: ModelParams):
        if p.scheme not in ("A", "B"):
            raise ValueError("scheme must be A or B")
        self.p = p
        self.rng = np.random.default_rng(p.seed)
        self.ev = Columns()
        self.markers: list[dict] = []
        self.bulk_markers: list[dict[str, np.ndarray]] = []
        self.queues: list[dict] = []  # ground truth per queue
        self.preemptions: list[dict[str, np.ndarray]] = []
        self.live: dict[int, list[tuple[int, int]]] = {g: [] for g in p.gpus}  # gpu -> [(tgid, qid)]
        self.next_tgid = 4000
        self.by_tgid: dict[int, list[dict]] = {}
        self.seq = 1

    # -- execute_queues: unmap + map on one gpu, nested in a caller spanning [t, t + total] --
    def _execute(self, t: np.ndarray, gpu: int, caller: np.ndarray, scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows for unmap/hw wait/map/runlist starting at t; returns (unmap_start, unmap_end, map_start, map_end)."""
        n = len(t)
        u = self.p.unmap_ns[scheme].draw(self.rng, n)
        m = self.p.map_ns[scheme].draw(self.rng, n)
        u_ts, u_end = t, t + u + 2_000
        m_ts = u_end + 1_000
        m_end = m_ts + m + 2_000
        self.ev.add(n, event=EVENT_ID["queues_unmap"], func=FUNC_ID["unmap_queues_cpsch"], ts_ns=u_ts, dur_ns=u_end - u_ts, tgid=caller,
                    gpu_id=gpu, unmap_filter=UNMAP_FILTER_DYNAMIC, grace_period=0xFFFFFFFF, ret=0)
        self.ev.add(n, event=EVENT_ID["hw_unmap_wait"], func=FUNC_ID["hw_unmap_wait"], ts_ns=u_ts + 1_000, dur_ns=u, tgid=caller,
                    gpu_id=gpu, unmap_filter=UNMAP_FILTER_DYNAMIC, ret=0)
        self.ev.add(n, event=EVENT_ID["queues_map"], func=FUNC_ID["map_queues_cpsch"], ts_ns=m_ts, dur_ns=m_end - m_ts, tgid=caller, gpu_id=gpu, ret=0)
        self.ev.add(n, event=EVENT_ID["runlist_submit"], func=FUNC_ID["pm_send_runlist"], ts_ns=m_ts + 1_000, dur_ns=m, tgid=caller, gpu_id=gpu, ret=0)
        return u_ts, u_end, m_ts, m_end

    def _queue_op(self, t: int, gpu: int, tgid: int, comm: str, qid: int, qtype: str, op: str) -> int:
        """One create/destroy/update of a queue: ioctl + KFD function + execute_queues. Returns end time."""
        sch = self.p.scheme
        ioc = self.p.ioctl_ns[sch].draw(self.rng, 1)[0]
        f_ts = t + ioc
        _, _, _, m_end = self._execute(np.array([f_ts + 3_000]), gpu, np.array([tgid]), sch)
        f_end = int(m_end[0]) + 2_000
        end = f_end + 1_000
        nr = {"queue_create": CREATE_QUEUE, "queue_destroy": DESTROY_QUEUE, "queue_update": UPDATE_QUEUE}[op]
        self.ev.add(1, event=EVENT_ID["kfd_ioctl"], func=FUNC_ID[IOCTL_TP_FUNC], ts_ns=t, dur_ns=end - t, tgid=tgid, tid=tgid,
                    comm=comm, ioctl_nr=nr, ret=0, queue_id=qid if op != "queue_create" else None,
                    queue_type=QTYPE_ID[qtype] if op == "queue_create" else None)
        func = {"queue_create": "create_queue_cpsch", "queue_destroy": "destroy_queue_cpsch", "queue_update": "update_queue"}[op]
        active = op != "queue_destroy"
        self.ev.add(1, event=EVENT_ID[op], func=FUNC_ID[func], ts_ns=f_ts, dur_ns=f_end - f_ts, tgid=tgid, tid=tgid, comm=comm, gpu_id=gpu,
                    queue_id=qid, owner_tgid=tgid, queue_type=QTYPE_ID[qtype], doorbell_off=qid * 2 + 0x1000, priority=15 if "online" in comm else 0,
                    is_active=op != "queue_create", is_active_after=active, ret=0)
        return end

    def _process_start(self, t: int, gpu: int, label: str, comm: str) -> tuple[int, int, list[int]]:
        tgid = self.next_tgid
        self.next_tgid += 1
        self.markers.append(dict(ts_ns=t, source="workload", kind="workload_start", tgid=tgid, target_tgid=tgid, label=label, gpu_id=gpu))
        t += 10_000
        ids = []
        for k in range(self.p.compute_queues + self.p.sdma_queues):
            qtype = "compute_aql" if k < self.p.compute_queues else "sdma"
            self.queues.append(dict(tgid=tgid, label=label, gpu_id=gpu, queue_id=k, queue_type=qtype, created_ts_ns=None, destroyed_ts_ns=None))
            self.by_tgid.setdefault(tgid, []).append(self.queues[-1])
            end = self._queue_op(t, gpu, tgid, comm, k, qtype, "queue_create")
            self.queues[-1]["created_ts_ns"] = int(self.ev.chunks[-1][1]["ts_ns"][0])
            self.live[gpu].append((tgid, k))
            if qtype == "compute_aql":
                ids.append(k)
            t = end + 5_000
        return tgid, t, ids

    def _process_stop(self, t: int, gpu: int, tgid: int, comm: str) -> int:
        for q in [q for q in self.by_tgid.get(tgid, []) if q["destroyed_ts_ns"] is None]:
            end = self._queue_op(t, gpu, tgid, comm, q["queue_id"], q["queue_type"], "queue_destroy")
            q["destroyed_ts_ns"] = int(self.ev.chunks[-1][1]["ts_ns"][0])
            self.live[gpu].remove((tgid, q["queue_id"]))
            t = end + 5_000
        self.markers.append(dict(ts_ns=t, source="workload", kind="workload_exit", tgid=tgid, target_tgid=tgid, value_ns=0))
        return t + 10_000

    def _cycles(self, t: int, n: int, gpu: int, target: int, ctl: int, qids: list[int], label: str) -> int:
        """n preemption cycles of the offline process, vectorised. Returns the time after the last one."""
        p, rng, sch = self.p, self.rng, self.p.scheme
        ioc_p = p.ioctl_ns[sch].draw(rng, n)
        ioc_r = p.ioctl_ns[sch].draw(rng, n)
        # cycle length is bounded: preempt part < 40 * medians; lay cycles on a fixed grid plus jitter
        period = p.hold_ns + p.gap_ns + 2 * (int(p.unmap_ns[sch].median_ns * 20) + int(p.map_ns[sch].median_ns * 20) + int(p.ioctl_ns[sch].median_ns * 20))
        req = t + np.arange(n, dtype=np.int64) * period + rng.integers(0, p.gap_ns // 2, n)
        seqs = self.seq + 2 * np.arange(n, dtype=np.int64)
        self.seq += 2 * n
        ctl_a = np.full(n, ctl)
        nq = len(qids)
        susp_ev, res_ev = ("queues_suspend", "queues_resume") if sch == "A" else ("queues_preempt", "queues_unpreempt")
        susp_fn, res_fn = ("suspend_queues", "resume_queues") if sch == "A" else ("kfd:kfd_queues_preempt", "kfd:kfd_queues_unpreempt")
        out = {}
        for phase, t0, ioc in (("preempt", req, ioc_p), ("resume", None, ioc_r)):
            if phase == "resume":
                t0 = out["preempt_done"] + p.hold_ns
            call_ts = t0 + 1_000
            f_ts = call_ts + ioc
            u_ts, u_end, m_ts, m_end = self._execute(f_ts + 2_000, gpu, ctl_a, sch)
            f_end = m_end + 2_000
            call_end = f_end + 1_000
            done = call_end + 1_000
            is_p = phase == "preempt"
            self.ev.add(n, event=EVENT_ID["kfd_ioctl"], func=FUNC_ID[IOCTL_TP_FUNC], ts_ns=call_ts, dur_ns=call_end - call_ts, tgid=ctl, tid=ctl,
                        comm="gpreempt-ctl", ioctl_nr=(DBG_TRAP if sch == "A" else (PREEMPT_QUEUES if is_p else RESUME_QUEUES)),
                        dbg_op=(DBG_SUSPEND if is_p else DBG_RESUME) if sch == "A" else None, target_pid=target, num_queues=nq,
                        queue_ids=_qids(qids, n), ret=nq)
            self.ev.add(n, event=EVENT_ID[susp_ev if is_p else res_ev], func=FUNC_ID[susp_fn if is_p else res_fn], ts_ns=f_ts, dur_ns=f_end - f_ts,
                        tgid=ctl, tid=ctl, comm="gpreempt-ctl", gpu_id=gpu, owner_tgid=target, target_pid=target, num_queues=nq,
                        queue_ids=_qids(qids, n), ret=nq)
            out[f"{phase}_request"] = t0
            out[f"{phase}_done"] = done
            out[f"{phase}_unmap_end"] = u_end
            out[f"{phase}_map_end"] = m_end
            out[f"{phase}_unmap_ts"] = u_ts
        for kind, ts, sq in (("preempt_request", out["preempt_request"], seqs), ("preempt_done", out["preempt_done"], seqs),
                             ("resume_request", out["resume_request"], seqs + 1), ("resume_done", out["resume_done"], seqs + 1)):
            self.bulk_markers.append(dict(ts_ns=ts, kind=kind, seq=sq, label="ok" if kind.endswith("done") else None, qlist=list(qids),
                                          value_ns=(out[kind] - out[kind.replace("done", "request")] if kind.endswith("done") else None)))
        for q in qids:
            self.bulk_markers.append(dict(ts_ns=out["preempt_done"], kind="queue_result", seq=seqs, label="ok", qid=q))
        common = dict(source="controller", tgid=ctl, target_tgid=target, gpu_id=gpu, scheme=sch)
        for b in self.bulk_markers:
            b.setdefault("common", common)
        self.preemptions.append(dict(seq=seqs, request_ts_ns=out["preempt_request"], target_tgid=np.full(n, target), label=label,
                                     gpu_id=gpu, queue_ids=list(qids),
                                     unmap_ts_ns=out["preempt_unmap_ts"], preempt_unmap_end=out["preempt_unmap_end"],
                                     preempt_done=out["preempt_done"], resume_request=out["resume_request"],
                                     resume_unmap_ts=out["resume_unmap_ts"], resume_map_end=out["resume_map_end"], resume_done=out["resume_done"]))
        # queue state truth: each queue named is suspended/preempted once per cycle; every unmap on the gpu hits all live queues
        return int(out["resume_done"][-1]) + p.gap_ns

    def _decoy_updates(self, t0: int, t1: int, gpu: int, tgid: int, qid: int, k: int) -> None:
        for t in np.sort(self.rng.integers(t0, max(t0 + 1, t1), k)):
            self._queue_op(int(t), gpu, tgid, "decoy", qid, "compute_aql", "queue_update")

    def generate(self) -> None:
        p = self.p
        t = START_NS
        g0, g1 = p.gpus
        ctl = 3000
        self.markers.append(dict(ts_ns=t, source="controller", kind="controller_attach", tgid=ctl, label=f"scheme {p.scheme}"))
        online, t, _ = self._process_start(t + 10_000, g0, p.online_label, "online")
        decoy, t, _ = self._process_start(t + 10_000, g1, p.decoy_label, "decoy")
        per_cycle = 12  # events per preemption cycle: 2 x (ioctl, suspend/preempt call, 4 of execute_queues)
        per_queue_op = 6  # ioctl, KFD function, 4 of execute_queues
        nq = p.compute_queues + p.sdma_queues
        fixed = self.ev.total() + nq * per_queue_op * 2  # online + decoy destroys at the end
        budget = p.events - fixed
        epoch_fixed = nq * per_queue_op * 2  # offline start + stop
        decoy_per_epoch = 2
        cycles_total = int(budget * (1 - p.filler_fraction)) // per_cycle
        if cycles_total < 1:
            raise ValueError(f"--events {p.events} is too small for this model: give at least {fixed + epoch_fixed + per_cycle + decoy_per_epoch * per_queue_op}")
        epochs = max(1, -(-cycles_total // p.cycles_per_epoch))
        cycles_total = max(1, (budget - epochs * (epoch_fixed + decoy_per_epoch * per_queue_op)) * (1 - p.filler_fraction) // per_cycle)
        cycles_total = int(min(cycles_total, (budget - epochs * (epoch_fixed + decoy_per_epoch * per_queue_op)) // per_cycle))
        if cycles_total < 1:
            raise ValueError(f"--events {p.events} is too small for this model: give at least {fixed + epoch_fixed + per_cycle + decoy_per_epoch * per_queue_op}")
        epochs = min(epochs, cycles_total)
        split = np.full(epochs, cycles_total // epochs)
        split[: cycles_total % epochs] += 1
        for k, n in enumerate(split):
            off, t, qids = self._process_start(t + 50_000, g0, p.offline_label, "offline")
            e0 = t
            t = self._cycles(t, int(n), g0, off, ctl, qids, p.offline_label)
            self._decoy_updates(e0, t, g1, decoy, 0, decoy_per_epoch)
            t = self._process_stop(t, g0, off, "offline")
        t = self._process_stop(t, g1, decoy, "decoy")
        t = self._process_stop(t, g0, online, "online")
        self.markers.append(dict(ts_ns=t, source="controller", kind="controller_detach", tgid=ctl, label="exit"))
        filler = p.events - self.ev.total()
        if filler < 0:
            raise AssertionError("event budget overrun")
        ft = np.sort(self.rng.integers(START_NS + 1, t, filler))
        self.ev.add(filler, event=EVENT_ID["kfd_ioctl"], func=FUNC_ID[IOCTL_TP_FUNC], ts_ns=ft, dur_ns=self.rng.integers(2_000, 20_000, filler),
                    tgid=online, tid=online, comm="online", ioctl_nr=ALLOC_MEMORY, ret=0)
        self.end_ns = t
