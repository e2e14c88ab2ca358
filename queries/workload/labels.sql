-- The model label of each process: the label of its first workload_start marker (written by
-- `gpreempt-trace workload` or a marker writer for the process it names). The one definition that
-- queues.created, queues.lifecycle, queues.counts and preempt.collateral show as `label`.

CREATE VIEW workload_labels AS
SELECT
  -- Trace run.
  run_id,
  -- Process the marker names (target_tgid, else the writer's tgid).
  coalesce(target_tgid, tgid) AS tgid,
  -- Label of its earliest workload_start marker with a label.
  arg_min(label, ts_ns) AS label
FROM markers WHERE kind = 'workload_start' AND label IS NOT NULL
GROUP BY run_id, coalesce(target_tgid, tgid);
