-- One row per run with the numbers to put side by side: labels, events, queues created per
-- process, ioctl failures and the controller's call times (preempt.calls: request -> done marker; the
-- kernel-measured preemption latency is preempt.preemption's). `gpreempt-trace compare --by KEY`
-- groups on a label.
-- @include queues.per_tgid
-- @include preempt.calls

CREATE VIEW compare_runs AS
WITH q AS (
  SELECT run_id, count(*) AS processes, sum(created) AS queues_created,
         min(created) AS min_per_process, max(created) AS max_per_process
  FROM queues_per_tgid GROUP BY run_id
), e AS (
  SELECT run_id, count(*) AS events, count(*) FILTER (WHERE event = 'kfd_ioctl' AND ret < 0) AS ioctl_errors
  FROM events GROUP BY run_id
), p AS (
  SELECT run_id,
         quantile_disc(call_ns, 0.5) FILTER (WHERE op = 'preempt') AS preempt_call_p50_ns,
         quantile_disc(call_ns, 0.99) FILTER (WHERE op = 'preempt') AS preempt_call_p99_ns,
         quantile_disc(call_ns, 0.5) FILTER (WHERE op = 'resume') AS resume_call_p50_ns
  FROM preempt_calls GROUP BY run_id
)
SELECT
  -- Trace run.
  runs.run_id,
  -- Labels of the run.
  runs.labels,
  -- Kernel events recorded.
  coalesce(e.events, 0) AS events,
  -- Events lost (counted in the kernel).
  runs.events_lost,
  -- Processes that created queues.
  coalesce(q.processes, 0) AS processes,
  -- Queues created in the run (successful creations).
  coalesce(q.queues_created, 0) AS queues_created,
  -- Fewest queues created by one process.
  q.min_per_process,
  -- Most queues created by one process.
  q.max_per_process,
  -- KFD ioctls that returned an errno.
  coalesce(e.ioctl_errors, 0) AS ioctl_errors,
  -- Median preempt call time (preempt_request -> preempt_done marker; quantile_disc).
  p.preempt_call_p50_ns,
  -- 99th percentile preempt call time (quantile_disc).
  p.preempt_call_p99_ns,
  -- Median resume call time (resume_request -> resume_done marker; quantile_disc).
  p.resume_call_p50_ns
FROM runs
LEFT JOIN e ON e.run_id = runs.run_id
LEFT JOIN q ON q.run_id = runs.run_id
LEFT JOIN p ON p.run_id = runs.run_id
ORDER BY runs.start_ns, runs.run_id;
