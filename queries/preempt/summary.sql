-- Preemption latency distribution per scheme and target model, for each latency column of
-- preempt.preemption: samples, missing sides, p50/p90/p99 (quantile_disc: an observed value) and max,
-- with the events lost in the runs they come from (NULL = unknown in at least one run).
-- @include preempt.preemption

CREATE VIEW preempt_summary AS
WITH long AS (
  SELECT run_id, scheme, label, metric, v
  FROM preempt_preemption
  UNPIVOT INCLUDE NULLS (v FOR metric IN (preempt_latency_ns, preempt_call_ns, resume_latency_ns, suspended_ns))
), lost AS (
  SELECT p.scheme, p.label, CASE WHEN bool_or(r.events_lost IS NULL) THEN NULL ELSE sum(r.events_lost) END AS events_lost
  FROM (SELECT DISTINCT run_id, scheme, label FROM preempt_preemption) p LEFT JOIN runs r USING (run_id)
  GROUP BY p.scheme, p.label
)
SELECT
  -- 'A' or 'B'.
  l.scheme,
  -- Target model (workload_start label), NULL when unknown.
  l.label,
  -- preempt_latency_ns, preempt_call_ns, resume_latency_ns or suspended_ns.
  l.metric,
  -- Runs contributing.
  count(DISTINCT l.run_id) AS runs,
  -- Preemptions with a value.
  count(l.v) AS samples,
  -- Preemptions whose value is NULL (a side missing).
  count(*) - count(l.v) AS missing,
  -- Median.
  quantile_disc(l.v, 0.5) AS p50_ns,
  -- 90th percentile.
  quantile_disc(l.v, 0.9) AS p90_ns,
  -- 99th percentile.
  quantile_disc(l.v, 0.99) AS p99_ns,
  -- Largest.
  max(l.v) AS max_ns,
  -- Events lost in those runs (NULL = unknown).
  any_value(x.events_lost) AS events_lost
FROM long l
LEFT JOIN lost x ON x.scheme IS NOT DISTINCT FROM l.scheme AND x.label IS NOT DISTINCT FROM l.label
GROUP BY l.scheme, l.label, l.metric
ORDER BY l.scheme, l.label, l.metric;
