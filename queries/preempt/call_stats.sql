-- Controller call time (request -> done marker) per run, scheme and operation (from preempt.calls).
-- Requests without a done marker count as `missing`.
-- @include preempt.calls

CREATE VIEW preempt_call_stats AS
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
  -- Median call time (quantile_disc: an observed call).
  quantile_disc(call_ns, 0.5) AS p50_ns,
  -- 99th percentile call time (quantile_disc).
  quantile_disc(call_ns, 0.99) AS p99_ns,
  -- Longest call.
  max(call_ns) AS max_ns
FROM preempt_calls
GROUP BY run_id, scheme, op
ORDER BY run_id, scheme, op;
