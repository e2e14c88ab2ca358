-- Preemption latency distribution per scheme and target model, for each latency column of
-- preempt.preemption: samples, missing sides, p50/p90/p99 (quantile_disc: an observed value) and max,
-- with the events lost in the runs they come from (NULL = unknown in at least one run).
-- @include preempt.preemption

-- The numbers of preempt_preemption_timings (same definitions, same values: tests/test_queries_preempt.py),
-- computed with the plan that is cheapest for a whole-trace aggregate (EXPLAIN ANALYZE and CPU time on
-- 10 M events, bench/bench_query.py): each side (preempt: request, done marker, unmap; resume: request,
-- done marker, map) is its own pipeline with nothing materialized: its requests' window sorts one
-- family (the next request of the same target), its done markers are grouped and joined per family,
-- and its ASOF join reads the kernel rows straight from `events` (its own row groups). The shared
-- materialized CTEs of the timings view (requests, done markers and kernel rows of both families
-- kept at once) cost 10-20 % more CPU and ~250 MB more memory touched (page faults). Measured and
-- dropped: the next unmap/map by a window (min/arg_min over the following rows of each run and GPU)
-- instead of the ASOF join (15x slower), one group over requests and done markers instead of group +
-- join (no gain).
CREATE VIEW _preempt_summary_timings AS
WITH side AS (
  SELECT r.*, 0 AS fam, CASE WHEN k.ts_ns <= coalesce(r.done_ts_ns, r.next_ts_ns, 9223372036854775807) THEN k.end_ns END AS k_end_ns
  FROM (SELECT q.rk, q.ts_ns, q.scheme, q.target_tgid, q.gpu_id, coalesce(q.gpu_id, 4294967295) AS gpu_key, d.ts_ns AS done_ts_ns, q.next_ts_ns
        FROM (SELECT *, CASE WHEN lead(rk) OVER w = rk AND lead(target_tgid) OVER w IS NOT DISTINCT FROM target_tgid THEN lead(ts_ns) OVER w END AS next_ts_ns
              FROM (SELECT hash(run_id) AS rk, seq, ts_ns, scheme, target_tgid, gpu_id FROM markers WHERE kind = 'preempt_request')
              WINDOW w AS (ORDER BY rk, target_tgid, ts_ns)) q
        LEFT JOIN (SELECT hash(run_id) AS rk, seq, min(ts_ns) AS ts_ns FROM markers WHERE kind = 'preempt_done' GROUP BY ALL) d
          ON d.rk = q.rk AND d.seq = q.seq) r
  ASOF LEFT JOIN (SELECT hash(run_id) AS rk, gpu_id, ts_ns, ts_ns + dur_ns AS end_ns FROM events WHERE event = 'queues_unmap' AND gpu_id IS NOT NULL) k
    ON k.rk = r.rk AND k.gpu_id = r.gpu_id AND k.ts_ns >= r.ts_ns
  UNION ALL
  SELECT r.*, 1 AS fam, CASE WHEN k.ts_ns <= coalesce(r.done_ts_ns, r.next_ts_ns, 9223372036854775807) THEN k.end_ns END AS k_end_ns
  FROM (SELECT q.rk, q.ts_ns, q.scheme, q.target_tgid, q.gpu_id, coalesce(q.gpu_id, 4294967295) AS gpu_key, d.ts_ns AS done_ts_ns, q.next_ts_ns
        FROM (SELECT *, CASE WHEN lead(rk) OVER w = rk AND lead(target_tgid) OVER w IS NOT DISTINCT FROM target_tgid THEN lead(ts_ns) OVER w END AS next_ts_ns
              FROM (SELECT hash(run_id) AS rk, seq, ts_ns, scheme, target_tgid, gpu_id FROM markers WHERE kind = 'resume_request')
              WINDOW w AS (ORDER BY rk, target_tgid, ts_ns)) q
        LEFT JOIN (SELECT hash(run_id) AS rk, seq, min(ts_ns) AS ts_ns FROM markers WHERE kind = 'resume_done' GROUP BY ALL) d
          ON d.rk = q.rk AND d.seq = q.seq) r
  ASOF LEFT JOIN (SELECT hash(run_id) AS rk, gpu_id, ts_ns, ts_ns + dur_ns AS end_ns FROM events WHERE event = 'queues_map' AND gpu_id IS NOT NULL) k
    ON k.rk = r.rk AND k.gpu_id = r.gpu_id AND k.ts_ns >= r.ts_ns
), pr AS (  -- a preemption's resume: the next row of the same run, target and GPU, before the target's next preempt
  SELECT *, coalesce(lead(fam) OVER w = 1 AND lead(rk) OVER w = rk AND lead(target_tgid) OVER w IS NOT DISTINCT FROM target_tgid
                     AND lead(gpu_key) OVER w = gpu_key
                     AND lead(ts_ns) OVER w < coalesce(next_ts_ns, 9223372036854775807), false) AS resumed,
         lead(k_end_ns) OVER w - lead(ts_ns) OVER w AS nx_lat, lead(done_ts_ns) OVER w AS nx_done
  FROM side WINDOW w AS (ORDER BY rk, target_tgid, gpu_key, ts_ns, fam)
)
SELECT rk, scheme, target_tgid, k_end_ns - ts_ns AS preempt_latency_ns, done_ts_ns - ts_ns AS preempt_call_ns,
       CASE WHEN resumed THEN nx_lat END AS resume_latency_ns, CASE WHEN resumed THEN nx_done - done_ts_ns END AS suspended_ns
FROM pr WHERE fam = 0 AND coalesce(scheme, '') LIKE getvariable('scheme');

CREATE VIEW preempt_summary AS
WITH wide AS MATERIALIZED (  -- one pass per group, straight from the timings (no materialized copy of them); each metric's
  -- quantiles from one sort (UNPIVOT first cost 3 sorts per metric); the group's runs as keys (`rk`) for `lost`
  SELECT c.scheme, l.label, list(DISTINCT c.rk) AS rks, count(*) AS n,
         {'samples': count(preempt_latency_ns), 'q': quantile_disc(preempt_latency_ns, [0.5, 0.9, 0.99]), 'max_ns': max(preempt_latency_ns)} AS preempt_latency_ns,
         {'samples': count(preempt_call_ns), 'q': quantile_disc(preempt_call_ns, [0.5, 0.9, 0.99]), 'max_ns': max(preempt_call_ns)} AS preempt_call_ns,
         {'samples': count(resume_latency_ns), 'q': quantile_disc(resume_latency_ns, [0.5, 0.9, 0.99]), 'max_ns': max(resume_latency_ns)} AS resume_latency_ns,
         {'samples': count(suspended_ns), 'q': quantile_disc(suspended_ns, [0.5, 0.9, 0.99]), 'max_ns': max(suspended_ns)} AS suspended_ns
  FROM _preempt_summary_timings c
  LEFT JOIN preempt_preemption_labels l ON l.rk = c.rk AND l.tgid = c.target_tgid
  GROUP BY c.scheme, l.label
), agg AS (
  SELECT scheme, label, metric, len(rks) AS runs, m.samples, n - m.samples AS missing,
         m.q[1] AS p50_ns, m.q[2] AS p90_ns, m.q[3] AS p99_ns, m.max_ns
  FROM wide
  UNPIVOT (m FOR metric IN (preempt_latency_ns, preempt_call_ns, resume_latency_ns, suspended_ns))
), lost AS (
  SELECT p.scheme, p.label, CASE WHEN bool_or(r.events_lost IS NULL) THEN NULL ELSE sum(r.events_lost) END AS events_lost
  FROM (SELECT scheme, label, unnest(rks) AS rk FROM wide) p JOIN preempt_preemption_run_keys USING (rk) LEFT JOIN runs r USING (run_id)
  GROUP BY p.scheme, p.label
)
SELECT
  -- 'A' or 'B'.
  a.scheme,
  -- Target model (workload_start label), NULL when unknown.
  a.label,
  -- preempt_latency_ns, preempt_call_ns, resume_latency_ns or suspended_ns.
  a.metric,
  -- Runs contributing.
  a.runs,
  -- Preemptions with a value.
  a.samples,
  -- Preemptions whose value is NULL (a side missing).
  a.missing,
  -- Median (quantile_disc: an observed value).
  a.p50_ns,
  -- 90th percentile.
  a.p90_ns,
  -- 99th percentile.
  a.p99_ns,
  -- Largest.
  a.max_ns,
  -- Events lost in those runs (NULL = unknown).
  x.events_lost
FROM agg a
LEFT JOIN lost x ON x.scheme IS NOT DISTINCT FROM a.scheme AND x.label IS NOT DISTINCT FROM a.label
ORDER BY a.scheme, a.label, a.metric;
