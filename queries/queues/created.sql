-- One row per queue creation: a successful queue_create row (ret >= 0) with a queue id, its owner
-- (owner_tgid, else the caller), model label (the label of the owner's workload_start marker, else its
-- comm), GPU and type. The base of queues.lifecycle and queues.counts (counting needs no lifetimes,
-- so queues.counts loads only this).

CREATE VIEW _queues_created AS
SELECT run_id, gpu_id, coalesce(owner_tgid, tgid) AS tgid, queue_id, any_value(queue_type) AS queue_type,
       any_value(comm) AS comm, ts_ns AS created_ts_ns,
       lead(ts_ns) OVER (PARTITION BY run_id, gpu_id, coalesce(owner_tgid, tgid), queue_id ORDER BY ts_ns) AS next_create_ts_ns
FROM events
WHERE event = 'queue_create' AND coalesce(ret, 0) >= 0 AND queue_id IS NOT NULL
GROUP BY run_id, gpu_id, coalesce(owner_tgid, tgid), queue_id, ts_ns;

-- model label per process: the label of its workload_start marker
CREATE VIEW _queues_labels AS
SELECT run_id, coalesce(target_tgid, tgid) AS tgid, arg_min(label, ts_ns) AS label
FROM markers WHERE kind = 'workload_start' AND label IS NOT NULL
GROUP BY run_id, coalesce(target_tgid, tgid);

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
FROM _queues_created c
LEFT JOIN _queues_labels l ON l.run_id = c.run_id AND l.tgid = c.tgid
LEFT JOIN processes p ON p.run_id = c.run_id AND p.tgid = c.tgid
ORDER BY c.run_id, c.tgid, c.gpu_id, c.queue_id, c.created_ts_ns;
