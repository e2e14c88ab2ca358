-- One row per queue: who owned it (tgid, model label from the workload_start marker, else comm), on
-- which GPU, its type, when it was created and destroyed, and how often it was updated, taken off the
-- hardware by a device-wide unmap, evicted, suspended (scheme A), preempted (scheme B) or reset while
-- it lived. A queue is a successful queue_create row (ret >= 0) with a queue id; it ends at the first
-- successful queue_destroy of the same (run, gpu, owner, id) before the id is created again (NULL:
-- never destroyed in the trace). `queues_lifecycle_states` lists the intervals a queue was off:
-- suspended, preempted (from the call that named it to the call that put it back) or evicted.
-- @include queues.created

CREATE VIEW _queues_destroyed AS
SELECT run_id, gpu_id, coalesce(owner_tgid, tgid) AS tgid, queue_id, ts_ns
FROM events
WHERE event = 'queue_destroy' AND coalesce(ret, 0) >= 0 AND queue_id IS NOT NULL;

-- One row per queue life, before the counts and labels of queues_lifecycle (what preempt.collateral,
-- the report and the Perfetto export read).
CREATE VIEW queues_lifecycle_spans AS
SELECT
  -- Trace run.
  c.run_id,
  -- KFD gpu_id of the queue's device.
  c.gpu_id,
  -- Process owning the queue (owner_tgid where known, else the caller).
  c.tgid,
  -- KFD queue id within the process.
  c.queue_id,
  -- compute, compute_aql, sdma, ...
  c.queue_type,
  -- Command name of the creating call.
  c.comm,
  -- Entry time of the successful queue_create.
  c.created_ts_ns,
  -- Entry time of its queue_destroy (before the id is created again); NULL when not destroyed in the trace.
  CASE WHEN d.ts_ns < coalesce(c.next_create_ts_ns, 9223372036854775807) THEN d.ts_ns END AS destroyed_ts_ns
FROM queues_created_unlabelled c
ASOF LEFT JOIN _queues_destroyed d
  ON d.run_id = c.run_id AND d.gpu_id = c.gpu_id AND d.tgid = c.tgid AND d.queue_id = c.queue_id AND d.ts_ns >= c.created_ts_ns;

-- running count of device-wide unmaps (and resets) per gpu: a queue's count is the difference at its ends
CREATE VIEW _queues_gpu_marks AS
SELECT run_id, gpu_id, ts_ns,
       sum(CASE WHEN event = 'queues_unmap' THEN 1 ELSE 0 END) OVER w AS unmaps_so_far,
       sum(CASE WHEN event IN ('queue_reset', 'hws_hang') THEN 1 ELSE 0 END) OVER w AS resets_so_far
FROM events
WHERE event IN ('queues_unmap', 'queue_reset', 'hws_hang') AND gpu_id IS NOT NULL
WINDOW w AS (PARTITION BY run_id, gpu_id ORDER BY ts_ns ROWS UNBOUNDED PRECEDING);

-- calls that name queues of a process: suspend/resume (A), preempt/unpreempt (B); empty list = all
CREATE VIEW _queues_calls AS
SELECT run_id, ts_ns, dur_ns, event, gpu_id, coalesce(owner_tgid, target_pid) AS tgid, queue_ids, queue_id_status
FROM events
WHERE event IN ('queues_suspend', 'queues_resume', 'queues_preempt', 'queues_unpreempt') AND coalesce(ret, 0) >= 0
  AND coalesce(owner_tgid, target_pid) IS NOT NULL;

-- the spans numbered: `span` (one per distinct (run, gpu, owner, id, created)) keys the window over the
-- marks with one integer instead of five columns and a string
CREATE VIEW _queues_spans AS
SELECT *, dense_rank() OVER (ORDER BY run_id, gpu_id, tgid, queue_id, created_ts_ns) AS span FROM queues_lifecycle_spans;

CREATE VIEW _queues_off_marks AS
WITH spans AS MATERIALIZED (SELECT * FROM _queues_spans), named AS (  -- calls naming ids: one row per id (equality join), less the ids the KFD answered
  -- invalid (no such queue, or a new one: not acted on); calls naming none apply to all
  SELECT run_id, ts_ns, event, gpu_id, tgid, queue_id FROM (
    SELECT run_id, ts_ns, event, gpu_id, tgid, unnest(queue_ids) AS queue_id, unnest(queue_id_status) AS status
    FROM _queues_calls WHERE len(coalesce(queue_ids, [])) > 0)
  WHERE status IS DISTINCT FROM 'invalid'
), calls AS (
  SELECT s.span, s.run_id, s.gpu_id, s.tgid, s.queue_id, s.created_ts_ns, c.ts_ns, c.event
  FROM spans s
  JOIN named c ON c.run_id = s.run_id AND c.tgid = s.tgid AND c.queue_id = s.queue_id AND (c.gpu_id IS NULL OR c.gpu_id = s.gpu_id)
   AND c.ts_ns >= s.created_ts_ns AND (s.destroyed_ts_ns IS NULL OR c.ts_ns < s.destroyed_ts_ns)
  UNION ALL
  SELECT s.span, s.run_id, s.gpu_id, s.tgid, s.queue_id, s.created_ts_ns, c.ts_ns, c.event
  FROM spans s
  JOIN (SELECT * FROM _queues_calls WHERE len(coalesce(queue_ids, [])) = 0) c
    ON c.run_id = s.run_id AND c.tgid = s.tgid AND (c.gpu_id IS NULL OR c.gpu_id = s.gpu_id)
   AND c.ts_ns >= s.created_ts_ns AND (s.destroyed_ts_ns IS NULL OR c.ts_ns < s.destroyed_ts_ns)
)
SELECT span, run_id, gpu_id, tgid, queue_id, created_ts_ns, ts_ns,
       CASE WHEN event IN ('queues_suspend', 'queues_resume') THEN 'suspended' ELSE 'preempted' END AS state,
       event IN ('queues_suspend', 'queues_preempt') AS goes_off
FROM calls
UNION ALL
SELECT s.span, s.run_id, s.gpu_id, s.tgid, s.queue_id, s.created_ts_ns, e.ts_ns, 'evicted' AS state, e.event = 'process_evict' AS goes_off
FROM spans s
JOIN events e
  ON e.run_id = s.run_id AND e.event IN ('process_evict', 'process_restore') AND coalesce(e.owner_tgid, e.tgid) = s.tgid
 AND (e.gpu_id IS NULL OR e.gpu_id = s.gpu_id)
 AND e.ts_ns >= s.created_ts_ns AND (s.destroyed_ts_ns IS NULL OR e.ts_ns < s.destroyed_ts_ns);

-- queues_lifecycle_states in no order: what report and export compute once (sorting its 2.9 M rows on a
-- 10 M-event trace cost 0.5 s of CPU, and neither needs the order)
CREATE VIEW queues_lifecycle_states_unsorted AS
WITH ordered AS (
  SELECT span, state, ts_ns, goes_off, lead(ts_ns) OVER (PARTITION BY span, state ORDER BY ts_ns) AS next_ts_ns,
         lead(goes_off) OVER (PARTITION BY span, state ORDER BY ts_ns) AS next_goes_off
  FROM _queues_off_marks
)
SELECT
  -- Trace run.
  o.run_id,
  -- Process owning the queue.
  o.tgid,
  -- KFD gpu_id.
  o.gpu_id,
  -- KFD queue id within the process.
  o.queue_id,
  -- Creation time of the queue (tells apart two queues that reused one id).
  o.created_ts_ns,
  -- suspended (scheme A, debugger), preempted (scheme B) or evicted (process eviction).
  w.state,
  -- Start of the call that took the queue off.
  w.ts_ns AS start_ts_ns,
  -- Start of the call that put it back; NULL when none followed before the queue ended.
  CASE WHEN NOT w.next_goes_off THEN w.next_ts_ns END AS end_ts_ns,
  -- Where the interval stops for a lookup at time t: end_ts_ns, or the next call taking it off in the same
  -- state (which supersedes this one); NULL when neither followed.
  w.next_ts_ns AS until_ts_ns
FROM ordered w JOIN (SELECT DISTINCT span, run_id, gpu_id, tgid, queue_id, created_ts_ns FROM _queues_spans) o USING (span)
WHERE w.goes_off;

-- The same rows sorted by queue and start.
CREATE VIEW queues_lifecycle_states AS
SELECT
  -- Every column of queues_lifecycle_states_unsorted, documented there.
  *
FROM queues_lifecycle_states_unsorted
ORDER BY run_id, tgid, gpu_id, queue_id, created_ts_ns, start_ts_ns;

CREATE VIEW queues_lifecycle AS
WITH states AS (
  SELECT run_id, tgid, gpu_id, queue_id, created_ts_ns,
         count(*) FILTER (WHERE state = 'suspended') AS suspended,
         count(*) FILTER (WHERE state = 'preempted') AS preempted,
         count(*) FILTER (WHERE state = 'evicted') AS evicted
  FROM queues_lifecycle_states GROUP BY ALL
), updates AS (
  SELECT s.run_id, s.tgid, s.gpu_id, s.queue_id, s.created_ts_ns, count(*) AS n
  FROM queues_lifecycle_spans s
  JOIN events e ON e.run_id = s.run_id AND e.event = 'queue_update' AND e.gpu_id = s.gpu_id AND coalesce(e.owner_tgid, e.tgid) = s.tgid
   AND e.queue_id = s.queue_id AND e.ts_ns >= s.created_ts_ns AND (s.destroyed_ts_ns IS NULL OR e.ts_ns < s.destroyed_ts_ns)
  GROUP BY ALL
), at_start AS (
  SELECT s.run_id, s.tgid, s.gpu_id, s.queue_id, s.created_ts_ns, m.unmaps_so_far, m.resets_so_far
  FROM queues_lifecycle_spans s ASOF LEFT JOIN _queues_gpu_marks m ON m.run_id = s.run_id AND m.gpu_id = s.gpu_id AND m.ts_ns < s.created_ts_ns
), at_end AS (
  SELECT s.run_id, s.tgid, s.gpu_id, s.queue_id, s.created_ts_ns, m.unmaps_so_far, m.resets_so_far
  FROM queues_lifecycle_spans s ASOF LEFT JOIN _queues_gpu_marks m ON m.run_id = s.run_id AND m.gpu_id = s.gpu_id
   AND m.ts_ns < coalesce(s.destroyed_ts_ns, 9223372036854775807)
)
SELECT
  -- Trace run.
  s.run_id,
  -- Process owning the queue (owner_tgid where known, else the caller).
  s.tgid,
  -- Model: label of the process's workload_start marker, else its command name.
  coalesce(l.label, s.comm) AS label,
  -- Container of the owner (short id, 12 hex; view processes); NULL on the host or when unknown.
  p.container,
  -- KFD gpu_id of the queue's device.
  s.gpu_id,
  -- KFD queue id within the process.
  s.queue_id,
  -- compute, compute_aql, sdma, ...
  s.queue_type AS type,
  -- Entry time of the successful queue_create.
  s.created_ts_ns,
  -- Entry time of its queue_destroy; NULL when not destroyed in the trace.
  s.destroyed_ts_ns,
  -- destroyed - created; NULL when not destroyed.
  s.destroyed_ts_ns - s.created_ts_ns AS lifetime_ns,
  -- queue_update rows for the queue while it lived.
  coalesce(u.n, 0) AS updates,
  -- Device-wide unmaps (queues_unmap on its GPU) after its creation and before its end: each took it off the hardware.
  CAST(coalesce(e.unmaps_so_far, 0) - coalesce(b.unmaps_so_far, 0) AS BIGINT) AS unmapped,
  -- Process evictions while it lived.
  coalesce(st.evicted, 0) AS evicted,
  -- Debugger suspends naming it (scheme A).
  coalesce(st.suspended, 0) AS suspended,
  -- Batch preempts naming it (scheme B).
  coalesce(st.preempted, 0) AS preempted,
  -- queue_reset / hws_hang rows on its GPU while it lived.
  CAST(coalesce(e.resets_so_far, 0) - coalesce(b.resets_so_far, 0) AS BIGINT) AS reset
FROM queues_lifecycle_spans s
LEFT JOIN workload_labels l ON l.run_id = s.run_id AND l.tgid = s.tgid
LEFT JOIN processes p ON p.run_id = s.run_id AND p.tgid = s.tgid
LEFT JOIN updates u ON u.run_id = s.run_id AND u.tgid = s.tgid AND u.gpu_id = s.gpu_id AND u.queue_id = s.queue_id AND u.created_ts_ns = s.created_ts_ns
LEFT JOIN states st ON st.run_id = s.run_id AND st.tgid = s.tgid AND st.gpu_id = s.gpu_id AND st.queue_id = s.queue_id AND st.created_ts_ns = s.created_ts_ns
LEFT JOIN at_start b ON b.run_id = s.run_id AND b.tgid = s.tgid AND b.gpu_id = s.gpu_id AND b.queue_id = s.queue_id AND b.created_ts_ns = s.created_ts_ns
LEFT JOIN at_end e ON e.run_id = s.run_id AND e.tgid = s.tgid AND e.gpu_id = s.gpu_id AND e.queue_id = s.queue_id AND e.created_ts_ns = s.created_ts_ns
ORDER BY s.run_id, s.tgid, s.gpu_id, s.queue_id, s.created_ts_ns;
