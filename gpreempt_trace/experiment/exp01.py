"""Experiment 1 verdicts: how many queues a model uses, which ids, whether that is stable across runs,
and whether one MQD maps to one HQD per XCC (MI300); then the PoC's scheme recommendation rule.

Input: traces with debugfs snapshots (`gpreempt-trace snapshot`, `record --snapshot-interval`, or
`snapshot import`). Uses the query modules exp01.queues / exp01.inventory.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from ..sql import query as _query
from ..errors import GptError

SCHEDULES = ("ample", "tight", "unknown")
DEFAULT_GROUP_BY = "model"


@dataclass
class RunFacts:
    run_id: str
    group: str
    tgid: Optional[int]
    tgid_source: str  # marker, new process, largest, none
    gpu_ids: list[int] = field(default_factory=list)
    snapshots: int = 0  # during snapshots in which the process had queues
    compute: list[int] = field(default_factory=list)  # per snapshot, summed over GPUs
    sdma: list[int] = field(default_factory=list)
    queue_ids: list[Optional[list[int]]] = field(default_factory=list)  # per snapshot; None when not all joined
    doorbells: list[list[int]] = field(default_factory=list)
    mqd_map: list[tuple[int, int, int]] = field(default_factory=list)  # per compute queue-snapshot: (mqd_copies, active_hqds, xccs)
    container: Optional[str] = None  # the process's container (short id; view processes), None: host or unknown


@dataclass
class GroupVerdict:
    group: str
    runs: int
    queues: str
    ids: str
    stable: str
    mqd_hqd: str
    recommendation: str
    stable_state: str  # yes, no, unknown
    numbers: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"[{self.group}] {self.runs} run(s)",
            f"  1. queues per model: {self.queues}",
            f"  2. queue ids: {self.ids}",
            f"  3. stable across runs: {self.stable}",
            f"  4. one MQD -> HQDs: {self.mqd_hqd}",
            f"  scheme: {self.recommendation}",
        ]


@dataclass
class Exp01Result:
    groups: list[GroupVerdict]
    runs: list[RunFacts]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for g in self.groups:
            out += g.lines()
        return out + [f"note: {n}" for n in self.notes]

    def to_dict(self) -> dict:
        return {"groups": [asdict(g) for g in self.groups], "runs": [asdict(r) for r in self.runs], "notes": self.notes}


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}..{hi}"


def _collect(traces: Sequence[str], group_by: str, strict: bool = True) -> tuple[list[RunFacts], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        con = _query.connect(traces)
    for w in caught:
        warnings.warn(str(w.message), stacklevel=3)
    _query.load_module(con, _query.resolve("exp01.inventory"))
    if con.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0:
        raise GptError("no debugfs snapshots in " + ", ".join(map(str, traces)),
                       "take them with `gpreempt-trace snapshot -o TRACE -- CMD` (or record --snapshot-interval)")
    runs = con.execute("SELECT run_id, map_extract(labels, ?)[1] FROM runs ORDER BY start_ns, run_id", [group_by]).fetchall()
    if strict and runs and all(label is None for _, label in runs):
        keys = sorted({k for (ks,) in con.execute("SELECT map_keys(labels) FROM runs").fetchall() for k in (ks or [])})
        raise GptError(f"--group-by {group_by}: no run has the label {group_by!r} (labels present: {', '.join(keys) or 'none'})",
                       "group by a label the runs have, or leave --group-by out to take all runs as one group")
    marked = dict(con.execute(
        "SELECT run_id, arg_max(coalesce(target_tgid, tgid), ts_ns) FROM markers WHERE source IN ('launcher', 'snapshot', 'recorder') AND kind = 'workload_start' GROUP BY run_id").fetchall())
    inv = con.execute(
        "SELECT run_id, snapshot_seq, phase, tgid, gpu_id, compute_queues, sdma_queues, queue_ids, queue_id_source, doorbell_offs "
        "FROM exp01_inventory ORDER BY run_id, snapshot_seq, gpu_id").fetchall()
    qrows = con.execute(
        "SELECT run_id, snapshot_seq, tgid, mqd_copies, active_hqds, xccs FROM exp01_queues WHERE queue_type = 'compute'").fetchall()
    containers = {(r, t): c for r, t, c in con.execute("SELECT run_id, tgid, container FROM processes WHERE container IS NOT NULL").fetchall()}
    notes: list[str] = []
    facts: list[RunFacts] = []
    for run_id, label in runs:
        rows = [r for r in inv if r[0] == run_id]
        phases = {r[2] for r in rows}
        during = [r for r in rows if r[2] == "during"] if "during" in phases else [r for r in rows if r[2] not in ("baseline", "after")]
        baseline_tgids = {r[3] for r in rows if r[2] == "baseline"}
        tgid, how = None, "none"
        with_queues = {r[3] for r in during if r[5] + r[6] > 0}
        if marked.get(run_id) in with_queues:
            tgid, how = marked[run_id], "marker"
        else:
            new = with_queues - baseline_tgids
            pool = new or with_queues
            if pool:
                most = {t: max(r[5] + r[6] for r in during if r[3] == t) for t in pool}
                tgid = sorted(pool, key=lambda t: (-most[t], t))[0]
                how = "new process" if new else "largest"
                if len(pool) > 1:
                    notes.append(f"run {run_id}: {len(pool)} processes had queues; judged tgid {tgid} (most queues)")
        f = RunFacts(run_id, label if label is not None else "(all runs)", tgid, how, container=containers.get((run_id, tgid)))
        if tgid is not None:
            mine = [r for r in during if r[3] == tgid]
            f.gpu_ids = sorted({r[4] for r in mine})
            for seq in sorted({r[1] for r in mine}):
                snap = [r for r in mine if r[1] == seq]
                f.compute.append(sum(r[5] for r in snap))
                f.sdma.append(sum(r[6] for r in snap))
                all_ids = all(r[8] == "events" for r in snap)
                f.queue_ids.append(sorted(i for r in snap for i in (r[7] or [])) if all_ids else None)
                f.doorbells.append([d for r in snap for d in (r[9] or [])])
            f.snapshots = len(f.compute)
            seqs = {r[1] for r in mine}
            f.mqd_map = [(q[3], q[4], q[5]) for q in qrows if q[0] == run_id and q[2] == tgid and q[1] in seqs]
        else:
            notes.append(f"run {run_id}: no process had queues in a snapshot taken while the workload ran")
        facts.append(f)
    return facts, notes


def _verdict(group: str, runs: list[RunFacts], schedule: str) -> GroupVerdict:
    seen = [r for r in runs if r.snapshots]
    nums: dict = {"runs": len(runs), "runs_with_queues": len(seen)}
    if not seen:
        return GroupVerdict(group, len(runs), "unknown: no queues seen while the workload ran", "unknown", "unknown (no data)",
                            "unknown", "C (progressive: A first, then B) -- nothing measured yet", "unknown", nums)
    comp = [c for r in seen for c in r.compute]
    sdma = [s for r in seen for s in r.sdma]
    snaps = sum(r.snapshots for r in seen)
    nums.update(compute_min=min(comp), compute_max=max(comp), sdma_min=min(sdma), sdma_max=max(sdma), snapshots=snaps)
    queues = f"{_span(comp)} compute + {_span(sdma)} SDMA per process (tgid {', '.join(str(r.tgid) + (f' [{r.container}]' if r.container else '') for r in seen)}; {len(seen)} run(s), {snaps} snapshot(s) while running)"

    id_sets = [tuple(i) for r in seen for i in r.queue_ids if i is not None]
    ids_known = len(id_sets) == snaps
    if ids_known:
        distinct = sorted(set(id_sets))
        ids = f"{list(distinct[0])} in every snapshot (recorder events)" if len(distinct) == 1 else f"{len(distinct)} different sets: " + "; ".join(str(list(d)) for d in distinct[:4])
        nums["queue_id_sets"] = [list(d) for d in distinct]
    else:
        db = seen[0].doorbells[0] if seen[0].doorbells else []
        ids = (f"not in debugfs (it prints no queue id); doorbell offsets {db} in run {seen[0].run_id}; "
               "record with the recorder (record + snapshot on one trace) to get KFD queue ids")
    nums["ids_known"] = ids_known

    if len(seen) < 2:
        stable_state = "unknown"
        stable = f"unknown: {len(seen)} run with queues (need >= 2 runs of the same {group or 'label'})"
        if len(set(comp)) == 1 and len(set(sdma)) == 1:
            stable += f"; within the run counts were constant ({comp[0]} compute, {sdma[0]} SDMA over {snaps} snapshot(s))"
    else:
        same_counts = len(set(comp)) == 1 and len(set(sdma)) == 1
        same_ids = (len(set(id_sets)) == 1) if ids_known else None
        stable_state = "yes" if same_counts and same_ids is not False else "no"
        ids_txt = "identical ids" if same_ids else ("ids differ" if same_ids is False else "ids not observable")
        stable = (f"{stable_state}: {len(seen)} runs: compute min {min(comp)} max {max(comp)}, "
                  f"SDMA min {min(sdma)} max {max(sdma)}; {ids_txt}")

    maps = [m for r in seen for m in r.mqd_map]
    if not maps:
        mqd_hqd = "unknown: no compute queue while running"
    else:
        copies = Counter(m[0] for m in maps)
        full = [m for m in maps if m[1] == m[0] and m[2] == m[0]]
        n_copies = copies.most_common(1)[0][0]
        nums.update(compute_queue_snapshots=len(maps), mqd_copies=dict(copies), fully_mapped=len(full),
                    active_hqds=dict(Counter(m[1] for m in maps)))
        if n_copies > 1 and len(full) == len(maps):
            mqd_hqd = (f"yes: every compute queue has {n_copies} MQD copies and is active on {n_copies} HQDs on {n_copies} XCCs "
                       f"({len(full)}/{len(maps)} queue-snapshots)")
        elif n_copies == 1:
            mqd_hqd = f"no: one MQD per queue (single-XCC GPU); active on one HQD in {sum(1 for m in maps if m[1] == 1)}/{len(maps)} queue-snapshots"
        else:
            hist = ", ".join(f"{k} HQDs: {v}" for k, v in sorted(Counter(m[1] for m in maps).items()))
            mqd_hqd = (f"partly: {len(full)}/{len(maps)} queue-snapshots had {n_copies} active HQDs on {n_copies} XCCs "
                       f"({hist}; fewer means not resident then, e.g. oversubscribed or idle)")

    if stable_state == "yes":
        rec = {"ample": "B (Map/Unmap): queues are stable and there is time",
               "tight": "A (DBG_TRAP suspend/resume): queues are stable and time is tight"}.get(
            schedule, "B (Map/Unmap) if there is time, A (DBG_TRAP suspend/resume) if time is tight: queues are stable")
    elif stable_state == "no":
        rec = "A or B with dynamic queue identification: queues are not stable across runs"
    else:
        rec = "C (progressive: A first, then B): stability not established"
    return GroupVerdict(group, len(runs), queues, ids, stable, mqd_hqd, rec, stable_state, nums)


def exp01(traces: Sequence[str], group_by: Optional[str] = None, schedule: str = "unknown") -> Exp01Result:
    """The four answers per group of runs (runs grouped by the value of label `group_by`). group_by None:
    label "model" if runs have it, else all runs as one group; a label no run has is an error."""
    if schedule not in SCHEDULES:
        raise GptError(f"--schedule {schedule!r} is not one of {', '.join(SCHEDULES)}", "say whether the schedule is ample or tight")
    strict = group_by is not None
    group_by = DEFAULT_GROUP_BY if group_by is None else group_by
    facts, notes = _collect(traces, group_by, strict)
    groups: dict[str, list[RunFacts]] = {}
    for f in facts:
        groups.setdefault(f.group if f.group == "(all runs)" else f"{group_by}={f.group}", []).append(f)
    verdicts = [_verdict(g, rs, schedule) for g, rs in groups.items()]
    if not any(v.runs and v.numbers.get("runs_with_queues") for v in verdicts):
        raise GptError("no process had queues in any snapshot taken while a workload ran",
                       "take snapshots while the model runs: gpreempt-trace snapshot -o TRACE -- CMD")
    return Exp01Result(verdicts, facts, notes)
