-- Collateral preemption: on HWS GPUs every unmap of the runlist (queue create/destroy/update,
-- debugger suspend/resume, eviction) takes ALL queues of ALL processes on the device off the
-- hardware. For each queues_unmap row this lists how many processes had live queues on that GPU
-- at that moment, and how many of them were not the caller.
-- A queue is live from its successful queue_create row until its queue_destroy row.

CREATE VIEW preempt_collateral AS
WITH creates AS (
  SELECT run_id, gpu_id, coalesce(owner_tgid, tgid) AS owner, queue_id, ts_ns
  FROM events WHERE event = 'queue_create' AND coalesce(ret, 0) >= 0
), destroys AS (
  SELECT run_id, gpu_id, coalesce(owner_tgid, tgid) AS owner, queue_id, ts_ns
  FROM events WHERE event = 'queue_destroy' AND coalesce(ret, 0) >= 0
), lifetimes AS (
  SELECT c.run_id, c.gpu_id, c.owner, c.queue_id, c.ts_ns AS born_ns,
         (SELECT min(d.ts_ns) FROM destroys d
           WHERE d.run_id = c.run_id AND d.gpu_id IS NOT DISTINCT FROM c.gpu_id
             AND d.owner = c.owner AND d.queue_id IS NOT DISTINCT FROM c.queue_id AND d.ts_ns >= c.ts_ns) AS died_ns
  FROM creates c
), unmaps AS (
  SELECT run_id, ts_ns, dur_ns, gpu_id, tgid, unmap_filter FROM events WHERE event = 'queues_unmap'
)
SELECT
  -- Trace run.
  u.run_id,
  -- Time of the unmap (entry).
  u.ts_ns,
  -- Duration of the unmap call.
  u.dur_ns,
  -- Device unmapped.
  u.gpu_id,
  -- Process that caused the unmap.
  u.tgid,
  -- Unmap filter (2 all, 3 dynamic: every process; 1 by pasid: one process).
  u.unmap_filter,
  -- Processes with live queues on the device at that time.
  count(DISTINCT l.owner) AS processes_live,
  -- Of those, processes other than the caller: the collateral.
  count(DISTINCT l.owner) FILTER (WHERE l.owner <> u.tgid) AS processes_collateral,
  -- Live queues taken off the hardware.
  count(l.queue_id) AS queues_live
FROM unmaps u
LEFT JOIN lifetimes l
  ON l.run_id = u.run_id AND l.gpu_id IS NOT DISTINCT FROM u.gpu_id
 AND l.born_ns <= u.ts_ns AND (l.died_ns IS NULL OR l.died_ns > u.ts_ns)
GROUP BY u.run_id, u.ts_ns, u.dur_ns, u.gpu_id, u.tgid, u.unmap_filter
ORDER BY u.run_id, u.ts_ns;
