-- The preemption latency CDF the HTML report draws, one line per scheme and latency column of
-- preempt.preemption (preempt_latency_ns, resume_latency_ns): the latency at 201 evenly spaced
-- fractions 0, 0.005, ..., 1 (quantile_disc: each an observed latency; fraction 0 is the smallest), so
-- a plot of any number of preemptions is drawn from 201 numbers per line.
-- @include preempt.preemption

CREATE VIEW report_preemption_cdf AS
WITH w AS (
  SELECT coalesce(scheme, '?') AS scheme,
         count(preempt_latency_ns) AS n_pre, quantile_disc(preempt_latency_ns, [i / 200 for i in range(0, 201)]) AS q_pre,
         count(resume_latency_ns) AS n_res, quantile_disc(resume_latency_ns, [i / 200 for i in range(0, 201)]) AS q_res
  FROM preempt_preemption_timings GROUP BY ALL
), long AS (
  SELECT scheme, 'preempt_latency_ns' AS metric, n_pre AS samples, q_pre AS q FROM w WHERE n_pre > 0
  UNION ALL
  SELECT scheme, 'resume_latency_ns', n_res, q_res FROM w WHERE n_res > 0
)
SELECT
  -- 'A' or 'B' ('?' when the request named none).
  scheme,
  -- preempt_latency_ns or resume_latency_ns.
  metric,
  -- Preemptions with a value of the metric.
  samples,
  -- Fraction of those preemptions at or below value_ns (0, 0.005, ..., 1).
  unnest(range(0, 201)) / 200 AS fraction,
  -- The latency at that fraction (quantile_disc: the ceil(fraction * samples)-th smallest; the smallest at 0).
  unnest(q) AS value_ns
FROM long
ORDER BY scheme, metric, fraction;
