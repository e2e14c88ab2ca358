-- One row per queue creation: a successful queue_create row (ret >= 0) with a queue id, its owner
-- (owner_tgid, else the caller), model label (the label of the owner's workload_start marker, else its
-- comm), GPU and type. The base of queues.lifecycle and queues.counts (counting needs no lifetimes,
-- so queues.counts loads only this): they read `queues_created_unlabelled`, the same rows before the
-- label and container joins.
-- @include workload.labels

CREATE VIEW queues_created_unlabelled AS
SELECT
  -- Trace run.
  run_id,
  -- GPU (KFD gpu_id).
  gpu_id,
  -- Owner process (owner_tgid, else the caller).
  coalesce(owner_tgid, tgid) AS tgid,
  -- Queue id (KFD queue_id).
  queue_id,
  -- Queue type (compute, compute_aql, sdma, ...).
  any_value(queue_type) AS queue_type,
  -- Command name of the creating call (the label when the owner has no workload_start label).
  any_value(comm) AS comm,
  -- Creation time (CLOCK_MONOTONIC).
  ts_ns AS created_ts_ns,
  -- Next creation of the same id by the same owner on the GPU (NULL: none).
  lead(ts_ns) OVER (PARTITION BY run_id, gpu_id, coalesce(owner_tgid, tgid), queue_id ORDER BY ts_ns) AS next_create_ts_ns
FROM events
WHERE event = 'queue_create' AND coalesce(ret, 0) >= 0 AND queue_id IS NOT NULL
GROUP BY run_id, gpu_id, coalesce(owner_tgid, tgid), queue_id, ts_ns;

CREATE VIEW queues_created AS
SELECT
  -- Trace run.
  c.run_id,
  -- GPU (KFD gpu_id).
  c.gpu_id,
  -- Owner process.
  c.tgid,
  -- Model: workload_start label of the owner, else its command name.
  coalesce(l.label, c.comm) AS label,
  -- Container of the owner (short id, 12 hex; view processes); NULL on the host or when unknown.
  p.container,
  -- Queue id (KFD queue_id).
  c.queue_id,
  -- Queue type (compute, compute_aql, sdma, ...).
  c.queue_type,
  -- Creation time (CLOCK_MONOTONIC).
  c.created_ts_ns,
  -- Next creation of the same id by the same owner on the GPU (NULL: none).
  c.next_create_ts_ns
FROM queues_created_unlabelled c
LEFT JOIN workload_labels l ON l.run_id = c.run_id AND l.tgid = c.tgid
LEFT JOIN processes p ON p.run_id = c.run_id AND p.tgid = c.tgid
ORDER BY c.run_id, c.tgid, c.gpu_id, c.queue_id, c.created_ts_ns;
