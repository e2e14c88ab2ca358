-- Collateral preemption: on HWS GPUs every unmap (queue create/destroy/update, debugger suspend/resume,
-- batch preempt, eviction) takes ALL active queues of ALL processes on the device off the hardware.
-- One row per (queues_unmap, process that had active queues on that GPU when it started): the process
-- that caused the unmap (owner of the innermost KFD call around it, else the unmap's caller) is not
-- collateral; every other one is, and `off_ns` says how long its queues were off the hardware (unmap
-- start -> end of the next queues_map on that GPU). Queue liveness and suspended/preempted/evicted
-- intervals come from queues.lifecycle. `preempt_collateral_per_process` sums it per process.
-- @include queues.lifecycle

CREATE VIEW _preempt_collateral_unmaps AS
SELECT run_id, ts_ns, dur_ns, gpu_id, tgid FROM events WHERE event = 'queues_unmap' AND gpu_id IS NOT NULL;

CREATE VIEW _preempt_collateral_causes AS
SELECT run_id, ts_ns, ts_ns + dur_ns AS end_ns, event, gpu_id,
       coalesce(owner_tgid, CASE WHEN event IN ('queues_suspend', 'queues_resume', 'queues_preempt', 'queues_unpreempt') THEN target_pid END, tgid) AS owner
FROM events
WHERE event IN ('queue_create', 'queue_destroy', 'queue_update', 'queues_suspend', 'queues_resume', 'queues_preempt',
                'queues_unpreempt', 'process_evict', 'process_restore') AND dur_ns IS NOT NULL;

CREATE VIEW _preempt_collateral_u AS
SELECT u.*, CASE WHEN c.end_ns >= u.ts_ns + u.dur_ns AND (c.gpu_id IS NULL OR c.gpu_id = u.gpu_id) THEN c.event END AS cause,
       CASE WHEN c.end_ns >= u.ts_ns + u.dur_ns AND (c.gpu_id IS NULL OR c.gpu_id = u.gpu_id) THEN c.owner END AS cause_owner,
       m.ts_ns + m.dur_ns AS remap_end_ns
FROM _preempt_collateral_unmaps u
ASOF LEFT JOIN _preempt_collateral_causes c ON c.run_id = u.run_id AND c.ts_ns <= u.ts_ns
ASOF LEFT JOIN (SELECT run_id, gpu_id, ts_ns, dur_ns FROM events WHERE event = 'queues_map' AND gpu_id IS NOT NULL) m
  ON m.run_id = u.run_id AND m.gpu_id = u.gpu_id AND m.ts_ns >= u.ts_ns + coalesce(u.dur_ns, 0);

-- (unmap, live queue) pairs; a queue inside a suspended/preempted/evicted interval is not on the
-- hardware: one ASOF lookup per state kind (intervals of one kind never overlap)
CREATE VIEW _preempt_collateral_live AS
SELECT u.run_id, u.ts_ns, u.dur_ns, u.gpu_id, u.tgid AS caller, u.cause, coalesce(u.cause_owner, u.tgid) AS cause_tgid,
       u.remap_end_ns, s.tgid, s.queue_id, s.created_ts_ns
FROM _preempt_collateral_u u
JOIN _queues_spans s
  ON s.run_id = u.run_id AND s.gpu_id = u.gpu_id AND s.created_ts_ns < u.ts_ns
 AND (s.destroyed_ts_ns IS NULL OR s.destroyed_ts_ns > u.ts_ns);

CREATE VIEW _preempt_collateral_hits AS
WITH h AS MATERIALIZED (SELECT * FROM _preempt_collateral_live),
st AS MATERIALIZED (SELECT * FROM queues_lifecycle_states),
probe AS (
  SELECT h.run_id, h.ts_ns, h.tgid, h.gpu_id, h.queue_id, h.created_ts_ns, k.state
  FROM h CROSS JOIN (SELECT DISTINCT state FROM st) k
), off AS (
  SELECT DISTINCT p.run_id, p.ts_ns, p.tgid, p.gpu_id, p.queue_id, p.created_ts_ns
  FROM probe p
  ASOF JOIN st o
    ON o.run_id = p.run_id AND o.tgid = p.tgid AND o.gpu_id = p.gpu_id AND o.queue_id = p.queue_id
   AND o.created_ts_ns = p.created_ts_ns AND o.state = p.state AND o.start_ts_ns <= p.ts_ns
  WHERE o.end_ts_ns IS NULL OR o.end_ts_ns > p.ts_ns
)
SELECT h.* FROM h
ANTI JOIN off ON off.run_id = h.run_id AND off.ts_ns = h.ts_ns AND off.tgid = h.tgid AND off.gpu_id = h.gpu_id
 AND off.queue_id = h.queue_id AND off.created_ts_ns = h.created_ts_ns;

CREATE VIEW preempt_collateral AS
SELECT
  -- Trace run.
  h.run_id,
  -- Start of the unmap (queues_unmap entry).
  h.ts_ns AS unmap_ts_ns,
  -- Duration of the unmap call.
  h.dur_ns AS unmap_dur_ns,
  -- Device unmapped.
  h.gpu_id,
  -- Process in whose context the unmap ran.
  h.caller AS caller_tgid,
  -- KFD call that caused it (queue_create, queues_suspend, ...); NULL when no enclosing call was recorded.
  h.cause,
  -- Process the change was for (owner of that call, else the caller).
  h.cause_tgid,
  -- A process with active queues on the device at the unmap.
  h.tgid,
  -- Its model (workload_start label), NULL when unknown.
  l.label,
  -- Its active queues taken off the hardware.
  count(*) AS queues,
  -- True when the process is not the one the change was for: collateral preemption.
  h.tgid <> h.cause_tgid AS collateral,
  -- Unmap start -> end of the next queues_map on the device (NULL when no remap was recorded).
  h.remap_end_ns - h.ts_ns AS off_ns
FROM _preempt_collateral_hits h
LEFT JOIN _queues_labels l ON l.run_id = h.run_id AND l.tgid = h.tgid
GROUP BY h.run_id, h.ts_ns, h.dur_ns, h.gpu_id, h.caller, h.cause, h.cause_tgid, h.tgid, l.label, h.remap_end_ns
ORDER BY h.run_id, h.ts_ns, h.tgid;

CREATE VIEW preempt_collateral_per_process AS
SELECT
  -- Trace run.
  c.run_id,
  -- Process that had queues on the hardware.
  c.tgid,
  -- Its model, NULL when unknown.
  c.label,
  -- Unmaps that hit its active queues.
  count(*) AS unmaps,
  -- Of those, caused by another process: collateral preemptions.
  count(*) FILTER (WHERE c.collateral) AS collateral_unmaps,
  -- Total time off the hardware through collateral unmaps.
  CAST(sum(c.off_ns) FILTER (WHERE c.collateral) AS BIGINT) AS collateral_off_ns,
  -- Median time off per collateral unmap.
  CAST(quantile_cont(c.off_ns, 0.5) FILTER (WHERE c.collateral) AS BIGINT) AS collateral_p50_off_ns,
  -- Longest time off through one collateral unmap.
  max(c.off_ns) FILTER (WHERE c.collateral) AS collateral_max_off_ns,
  -- Events the recorder lost in this run (NULL = unknown): unmaps may be missing from these counts.
  any_value(runs.events_lost) AS events_lost
FROM preempt_collateral c
LEFT JOIN runs ON runs.run_id = c.run_id
GROUP BY c.run_id, c.tgid, c.label
ORDER BY c.run_id, c.tgid;
