-- Rows per logical event and producing function in each run, with call durations.
-- The first thing to look at in a new trace: what fired, how often, how long it took.

CREATE VIEW events_overview AS
SELECT
  -- Trace run.
  run_id,
  -- Logical event name (queue_create, queues_unmap, kfd_ioctl, ...).
  event,
  -- Kernel function or tracepoint that produced the rows.
  func,
  -- Number of rows.
  count(*) AS rows,
  -- Rows whose return value is negative (an errno).
  count(*) FILTER (WHERE ret < 0) AS errors,
  -- Distinct calling processes.
  count(DISTINCT tgid) AS tgids,
  -- Median call duration (quantile_disc: an observed call's); NULL for instant events.
  quantile_disc(dur_ns, 0.5) AS p50_dur_ns,
  -- Longest call duration.
  max(dur_ns) AS max_dur_ns
FROM events
GROUP BY run_id, event, func
ORDER BY run_id, rows DESC, event, func;
