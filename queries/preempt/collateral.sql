-- Collateral preemption: on HWS GPUs every unmap (queue create/destroy/update, debugger suspend/resume,
-- batch preempt, eviction) takes ALL active queues of ALL processes on the device off the hardware.
-- One row per (queues_unmap, process that had active queues on that GPU when it started): the process
-- that caused the unmap (owner of the innermost KFD call around it, else the unmap's caller) is not
-- collateral; every other one is, and `off_ns` says how long its queues were off the hardware (unmap
-- start -> end of the next queues_map on that GPU). Queue liveness and suspended/preempted/evicted
-- intervals come from queues.lifecycle. `preempt_collateral_per_process` sums it per process.
-- Shaped by EXPLAIN ANALYZE on 10 M events: runs are keys (`rk` = hash(run_id)) in every join, window
-- and group (a string key cost most of the ASOF joins' time) and become run ids again only on the
-- grouped rows; the per-process sums read the grouped rows, not the labelled, ordered view.
-- @include queues.lifecycle

-- rk -> run_id of the runs with queues; two run ids with one hash stop the query (never a silent mix)
CREATE VIEW _preempt_collateral_runs AS
SELECT hash(run_id) AS rk,
       CASE WHEN count(*) = 1 THEN any_value(run_id)
            ELSE error('preempt.collateral: two run ids hash alike: ' || string_agg(run_id, ', ' ORDER BY run_id) || ' (query these traces separately)') END AS run_id
FROM (SELECT DISTINCT run_id FROM queues_lifecycle_spans)
GROUP BY hash(run_id);

CREATE VIEW _preempt_collateral_spans AS
SELECT hash(run_id) AS rk, gpu_id, tgid, queue_id, created_ts_ns, destroyed_ts_ns FROM queues_lifecycle_spans;

CREATE VIEW _preempt_collateral_unmaps AS
SELECT hash(run_id) AS rk, ts_ns, dur_ns, gpu_id, tgid FROM events WHERE event = 'queues_unmap' AND gpu_id IS NOT NULL;

-- the calls that cause unmaps; joins and groups carry a call's position in this list (`ev`), not its name
CREATE VIEW _preempt_collateral_calls AS
SELECT ['queue_create', 'queue_destroy', 'queue_update', 'queues_suspend', 'queues_resume', 'queues_preempt',
        'queues_unpreempt', 'process_evict', 'process_restore'] AS names;

CREATE VIEW _preempt_collateral_causes AS
SELECT hash(run_id) AS rk, ts_ns, ts_ns + dur_ns AS end_ns, list_position(k.names, event) AS ev, gpu_id,
       coalesce(owner_tgid, CASE WHEN event IN ('queues_suspend', 'queues_resume', 'queues_preempt', 'queues_unpreempt') THEN target_pid END, tgid) AS owner
FROM events, _preempt_collateral_calls k
WHERE event IN ('queue_create', 'queue_destroy', 'queue_update', 'queues_suspend', 'queues_resume', 'queues_preempt',
                'queues_unpreempt', 'process_evict', 'process_restore') AND dur_ns IS NOT NULL;

CREATE VIEW _preempt_collateral_u AS
SELECT u.*, CASE WHEN c.end_ns >= u.ts_ns + u.dur_ns AND (c.gpu_id IS NULL OR c.gpu_id = u.gpu_id) THEN c.ev END AS cause_ev,
       CASE WHEN c.end_ns >= u.ts_ns + u.dur_ns AND (c.gpu_id IS NULL OR c.gpu_id = u.gpu_id) THEN c.owner END AS cause_owner,
       m.ts_ns + m.dur_ns AS remap_end_ns
FROM _preempt_collateral_unmaps u
ASOF LEFT JOIN _preempt_collateral_causes c ON c.rk = u.rk AND c.ts_ns <= u.ts_ns
ASOF LEFT JOIN (SELECT hash(run_id) AS rk, gpu_id, ts_ns, dur_ns FROM events WHERE event = 'queues_map' AND gpu_id IS NOT NULL) m
  ON m.rk = u.rk AND m.gpu_id = u.gpu_id AND m.ts_ns >= u.ts_ns + coalesce(u.dur_ns, 0);

-- When each queue was off the hardware by a call: suspended / preempted / evicted from start_ts_ns until
-- until_ts_ns (end_ts_ns, or the next interval of the same state: an interval with no end stops at the
-- next one of its kind), merged across states (a queue both suspended and evicted is off
-- once) and clipped to the queue's life [created + 1, destroyed): one row per disjoint interval [a, b).
CREATE VIEW _preempt_collateral_off AS
WITH eff AS MATERIALIZED (
  SELECT hash(run_id) AS rk, gpu_id, tgid, queue_id, created_ts_ns, state, start_ts_ns, coalesce(until_ts_ns, 9223372036854775807) AS end_ts_ns
  FROM queues_lifecycle_states WHERE start_ts_ns < coalesce(until_ts_ns, 9223372036854775807)
), mixed AS MATERIALIZED (  -- queues off in more than one state: only their intervals can overlap
  SELECT rk, gpu_id, tgid, queue_id, created_ts_ns FROM eff GROUP BY ALL HAVING min(state) <> max(state)
), prev AS (
  SELECT e.*, max(e.end_ts_ns) OVER (PARTITION BY e.rk, e.gpu_id, e.tgid, e.queue_id, e.created_ts_ns ORDER BY e.start_ts_ns, e.end_ts_ns
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end_ns
  FROM eff e SEMI JOIN mixed m USING (rk, gpu_id, tgid, queue_id, created_ts_ns)
), islands AS (
  SELECT rk, gpu_id, tgid, queue_id, created_ts_ns, min(start_ts_ns) AS start_ts_ns, max(end_ts_ns) AS end_ts_ns
  FROM (SELECT *, count(*) FILTER (WHERE prev_end_ns IS NULL OR start_ts_ns >= prev_end_ns)
                    OVER (PARTITION BY rk, gpu_id, tgid, queue_id, created_ts_ns ORDER BY start_ts_ns, end_ts_ns
                          ROWS UNBOUNDED PRECEDING) AS island
        FROM prev)
  GROUP BY rk, gpu_id, tgid, queue_id, created_ts_ns, island
  UNION ALL  -- one state: its intervals, cut at the next one, are disjoint already
  SELECT e.rk, e.gpu_id, e.tgid, e.queue_id, e.created_ts_ns, e.start_ts_ns, e.end_ts_ns
  FROM eff e ANTI JOIN mixed m USING (rk, gpu_id, tgid, queue_id, created_ts_ns)
)
SELECT * FROM (
  SELECT o.rk, o.gpu_id, o.tgid, o.queue_id, o.created_ts_ns, greatest(o.start_ts_ns, s.created_ts_ns + 1) AS a,
         least(o.end_ts_ns, coalesce(s.destroyed_ts_ns, 9223372036854775807)) AS b
  FROM islands o
  JOIN _preempt_collateral_spans s ON s.rk = o.rk AND s.gpu_id = o.gpu_id AND s.tgid = o.tgid AND s.queue_id = o.queue_id
   AND s.created_ts_ns = o.created_ts_ns
) WHERE a < b;

-- How many queues of a process are on the hardware, as a step function per (run, gpu, process): a
-- queue counts while it lives (created < t < destroyed) and is not off (_preempt_collateral_off).
-- `active` holds from `x` until the process's next row.
CREATE VIEW _preempt_collateral_active AS
WITH off AS MATERIALIZED (SELECT rk, gpu_id, tgid, a, b FROM _preempt_collateral_off), steps AS (
  SELECT rk, gpu_id, tgid, created_ts_ns + 1 AS x, 1 AS d FROM _preempt_collateral_spans
  UNION ALL SELECT rk, gpu_id, tgid, destroyed_ts_ns, -1 FROM _preempt_collateral_spans WHERE destroyed_ts_ns > created_ts_ns + 1
  UNION ALL SELECT rk, gpu_id, tgid, a, -1 FROM off
  UNION ALL SELECT rk, gpu_id, tgid, b, 1 FROM off WHERE b < 9223372036854775807
)
SELECT rk, gpu_id, tgid, x,
       CAST(sum(sum(d)) OVER (PARTITION BY rk, gpu_id, tgid ORDER BY x ROWS UNBOUNDED PRECEDING) AS BIGINT) AS active
FROM steps GROUP BY rk, gpu_id, tgid, x;

-- (unmap, process with queues on the hardware at its start) pairs. The processes that may have queues
-- at t are found first through epochs (the times any process's first creation or last destruction on
-- the GPU changes who may be there), an equality join instead of one range test per (unmap, queue);
-- their count is then read from the step function at t.
CREATE VIEW _preempt_collateral_hits AS
WITH cand AS (  -- a process may have live queues on the GPU within [a, b)
  SELECT rk, gpu_id, tgid, min(created_ts_ns) + 1 AS a, max(coalesce(destroyed_ts_ns, 9223372036854775807)) AS b
  FROM _preempt_collateral_spans GROUP BY rk, gpu_id, tgid
), pts AS (
  SELECT DISTINCT rk, gpu_id, x FROM (SELECT rk, gpu_id, a AS x FROM cand UNION ALL SELECT rk, gpu_id, b FROM cand)
), ep AS MATERIALIZED (  -- epoch starting at x: processes that may be there (materialized: inlined, the planner joined each unmap to every process)
  SELECT p.rk, p.gpu_id, p.x, c.tgid FROM pts p
  JOIN cand c ON c.rk = p.rk AND c.gpu_id = p.gpu_id AND c.a <= p.x AND p.x < c.b
), pairs AS (
  SELECT u.rk, u.ts_ns, u.dur_ns, u.gpu_id, u.tgid AS caller, u.cause_ev, coalesce(u.cause_owner, u.tgid) AS cause_tgid,
         u.remap_end_ns, ep.tgid
  FROM _preempt_collateral_u u
  ASOF JOIN pts ON pts.rk = u.rk AND pts.gpu_id = u.gpu_id AND pts.x <= u.ts_ns
  JOIN ep ON ep.rk = pts.rk AND ep.gpu_id = pts.gpu_id AND ep.x = pts.x
)
SELECT p.*, s.active AS queues
FROM pairs p
ASOF JOIN _preempt_collateral_active s ON s.rk = p.rk AND s.gpu_id = p.gpu_id AND s.tgid = p.tgid AND s.x <= p.ts_ns
WHERE s.active > 0;

-- One row per (unmap, queue it took off the hardware): the queues behind each preempt_collateral row
-- (what `export --perfetto` draws as "unmapped" on a queue's track): the process's queues alive at the
-- unmap and not off; off intervals of one queue are disjoint, so one ASOF lookup finds the one that
-- could cover t
CREATE VIEW preempt_collateral_queue_hits AS
SELECT
  -- Trace run.
  r.run_id,
  -- Start of the unmap (queues_unmap entry).
  q.ts_ns,
  -- End of the next queues_map on the device (NULL when no remap was recorded).
  q.remap_end_ns,
  -- Process owning the queue.
  q.tgid,
  -- Device unmapped.
  q.gpu_id,
  -- KFD queue id within the process.
  q.queue_id,
  -- Creation time of the queue (tells apart two queues that reused one id).
  q.created_ts_ns
FROM (
  SELECT h.rk, h.ts_ns, h.remap_end_ns, s.tgid, s.gpu_id, s.queue_id, s.created_ts_ns
  FROM _preempt_collateral_hits h
  JOIN _preempt_collateral_spans s ON s.rk = h.rk AND s.gpu_id = h.gpu_id AND s.tgid = h.tgid
   AND s.created_ts_ns < h.ts_ns AND (s.destroyed_ts_ns IS NULL OR s.destroyed_ts_ns > h.ts_ns)
) q
ASOF LEFT JOIN _preempt_collateral_off o
  ON o.rk = q.rk AND o.gpu_id = q.gpu_id AND o.tgid = q.tgid AND o.queue_id = q.queue_id
 AND o.created_ts_ns = q.created_ts_ns AND o.a <= q.ts_ns
JOIN _preempt_collateral_runs r ON r.rk = q.rk
WHERE o.b IS NULL OR o.b <= q.ts_ns;

-- the hits as preempt_collateral rows, runs still keys: one row per (unmap, process)
CREATE VIEW _preempt_collateral_rows AS
SELECT g.rk, g.ts_ns, g.dur_ns, g.gpu_id, g.caller, k.names[g.cause_ev] AS cause, g.cause_tgid, g.tgid, g.remap_end_ns, g.queues
FROM (SELECT rk, ts_ns, dur_ns, gpu_id, caller, cause_ev, cause_tgid, tgid, remap_end_ns, CAST(sum(queues) AS BIGINT) AS queues
      FROM _preempt_collateral_hits
      GROUP BY rk, ts_ns, dur_ns, gpu_id, caller, cause_ev, cause_tgid, tgid, remap_end_ns) g, _preempt_collateral_calls k;

CREATE VIEW preempt_collateral AS
SELECT
  -- Trace run.
  r.run_id,
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
  h.queues,
  -- True when the process is not the one the change was for: collateral preemption.
  h.tgid <> h.cause_tgid AS collateral,
  -- Unmap start -> end of the next queues_map on the device (NULL when no remap was recorded).
  h.remap_end_ns - h.ts_ns AS off_ns
FROM _preempt_collateral_rows h
JOIN _preempt_collateral_runs r ON r.rk = h.rk
LEFT JOIN workload_labels l ON l.run_id = r.run_id AND l.tgid = h.tgid
ORDER BY r.run_id, h.ts_ns, h.tgid;

CREATE VIEW preempt_collateral_per_process AS
WITH rl AS MATERIALIZED (  -- (materialized: inlined, the planner joined every row to runs by its run id string)
  SELECT k.rk, runs.events_lost FROM _preempt_collateral_runs k LEFT JOIN runs ON runs.run_id = k.run_id
), p AS (  -- runs joined before the sums, as a LEFT JOIN runs over the rows would (a run id listed twice counts twice)
  SELECT h.rk, h.tgid, count(*) AS unmaps, count(*) FILTER (WHERE h.tgid <> h.cause_tgid) AS collateral_unmaps,
         CAST(sum(h.remap_end_ns - h.ts_ns) FILTER (WHERE h.tgid <> h.cause_tgid) AS BIGINT) AS collateral_off_ns,
         quantile_disc(h.remap_end_ns - h.ts_ns, 0.5) FILTER (WHERE h.tgid <> h.cause_tgid) AS collateral_p50_off_ns,
         max(h.remap_end_ns - h.ts_ns) FILTER (WHERE h.tgid <> h.cause_tgid) AS collateral_max_off_ns,
         any_value(r.events_lost) AS events_lost
  FROM _preempt_collateral_rows h
  JOIN rl r ON r.rk = h.rk
  GROUP BY h.rk, h.tgid
)
SELECT
  -- Trace run.
  r.run_id,
  -- Process that had queues on the hardware.
  p.tgid,
  -- Its model, NULL when unknown.
  l.label,
  -- Unmaps that hit its active queues.
  p.unmaps,
  -- Of those, caused by another process: collateral preemptions.
  p.collateral_unmaps,
  -- Total time off the hardware through collateral unmaps.
  p.collateral_off_ns,
  -- Median time off per collateral unmap (quantile_disc: an observed unmap's).
  p.collateral_p50_off_ns,
  -- Longest time off through one collateral unmap.
  p.collateral_max_off_ns,
  -- Events the recorder lost in this run (NULL = unknown): unmaps may be missing from these counts.
  p.events_lost
FROM p
JOIN _preempt_collateral_runs r ON r.rk = p.rk
LEFT JOIN workload_labels l ON l.run_id = r.run_id AND l.tgid = p.tgid
ORDER BY r.run_id, p.tgid;
