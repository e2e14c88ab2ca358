-- Preemption latency distribution per scheme and target model, for each latency column of
-- preempt.preemption: samples, missing sides, p50/p90/p99 (quantile_disc: an observed value) and max,
-- with the events lost in the runs they come from (NULL = unknown in at least one run).
-- @include preempt.preemption

CREATE VIEW preempt_summary AS
WITH pp AS MATERIALIZED (
  SELECT c.run_id, c.scheme, l.label, c.preempt_latency_ns, c.preempt_call_ns, c.resume_latency_ns, c.suspended_ns
  FROM _preempt_preemption_core c
  LEFT JOIN _preempt_preemption_labels l ON l.run_id = c.run_id AND l.tgid = c.target_tgid
), long AS (
  SELECT run_id, scheme, label, metric, v
  FROM pp
  UNPIVOT INCLUDE NULLS (v FOR metric IN (preempt_latency_ns, preempt_call_ns, resume_latency_ns, suspended_ns))
), lost AS (
  SELECT p.scheme, p.label, CASE WHEN bool_or(r.events_lost IS NULL) THEN NULL ELSE sum(r.events_lost) END AS events_lost
  FROM (SELECT DISTINCT run_id, scheme, label FROM pp) p LEFT JOIN runs r USING (run_id)
  GROUP BY p.scheme, p.label
), agg AS (
  SELECT scheme, label, metric, count(DISTINCT run_id) AS runs, count(v) AS samples, count(*) - count(v) AS missing,
         quantile_disc(v, 0.5) AS p50_ns, quantile_disc(v, 0.9) AS p90_ns, quantile_disc(v, 0.99) AS p99_ns, max(v) AS max_ns
  FROM long GROUP BY scheme, label, metric
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
