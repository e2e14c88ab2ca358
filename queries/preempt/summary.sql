-- Preemption latency distribution per scheme and target model, for each latency column of
-- preempt.preemption: samples, missing sides, p50/p90/p99 (quantile_disc: an observed value) and max,
-- with the events lost in the runs they come from (NULL = unknown in at least one run).
-- @include preempt.preemption

CREATE VIEW preempt_summary AS
WITH wide AS MATERIALIZED (  -- one pass per group, straight from the timings (no materialized copy of them); each metric's
  -- quantiles from one sort (UNPIVOT first cost 3 sorts per metric); the group's runs as keys (`rk`) for `lost`
  SELECT c.scheme, l.label, list(DISTINCT c.rk) AS rks, count(*) AS n,
         {'samples': count(preempt_latency_ns), 'q': quantile_disc(preempt_latency_ns, [0.5, 0.9, 0.99]), 'max_ns': max(preempt_latency_ns)} AS preempt_latency_ns,
         {'samples': count(preempt_call_ns), 'q': quantile_disc(preempt_call_ns, [0.5, 0.9, 0.99]), 'max_ns': max(preempt_call_ns)} AS preempt_call_ns,
         {'samples': count(resume_latency_ns), 'q': quantile_disc(resume_latency_ns, [0.5, 0.9, 0.99]), 'max_ns': max(resume_latency_ns)} AS resume_latency_ns,
         {'samples': count(suspended_ns), 'q': quantile_disc(suspended_ns, [0.5, 0.9, 0.99]), 'max_ns': max(suspended_ns)} AS suspended_ns
  FROM preempt_preemption_timings c
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
