-- Preempt and resume latency distribution per run, scheme and operation (from preempt.latency).
-- Requests without a done marker count as `missing`.
-- @include preempt.latency

CREATE VIEW preempt_latency_stats AS
SELECT
  -- Trace run.
  run_id,
  -- 'A' or 'B'.
  scheme,
  -- preempt or resume.
  op,
  -- Requests made.
  count(*) AS requests,
  -- Requests that never got a done marker.
  count(*) FILTER (WHERE done_ts_ns IS NULL) AS missing,
  -- Median latency.
  CAST(quantile_cont(latency_ns, 0.5) AS BIGINT) AS p50_ns,
  -- 99th percentile latency.
  CAST(quantile_cont(latency_ns, 0.99) AS BIGINT) AS p99_ns,
  -- Worst latency.
  max(latency_ns) AS max_ns
FROM preempt_latency
GROUP BY run_id, scheme, op
ORDER BY run_id, scheme, op;
