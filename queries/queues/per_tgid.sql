-- Queues each process created and destroyed per run and GPU: how many hardware queues a model
-- uses and which ids. Built from queue_create/queue_destroy rows that succeeded (ret = 0 or NULL),
-- whichever probe produced them (KFD function or ioctl).

CREATE VIEW queues_per_tgid AS
SELECT
  -- run_id, tgid, gpu_id, created, destroyed, compute_created, sdma_created, queue_ids (below).
  q.*,
  -- Container of the process (short id, 12 hex; view processes); NULL on the host or when unknown.
  p.container
FROM (SELECT
  -- Trace run.
  run_id,
  -- Process owning the queues (owner_tgid where known, else the caller).
  coalesce(owner_tgid, tgid) AS tgid,
  -- KFD gpu_id of the device (NULL when the probe could not read it).
  gpu_id,
  -- Successful queue creations.
  count(*) FILTER (WHERE event = 'queue_create') AS created,
  -- Successful queue destructions.
  count(*) FILTER (WHERE event = 'queue_destroy') AS destroyed,
  -- Compute (incl. AQL) queues created.
  count(*) FILTER (WHERE event = 'queue_create' AND queue_type IN ('compute', 'compute_aql')) AS compute_created,
  -- SDMA queues created.
  count(*) FILTER (WHERE event = 'queue_create' AND queue_type LIKE 'sdma%') AS sdma_created,
  -- Sorted distinct queue ids created.
  list_sort(list_distinct(list(queue_id) FILTER (WHERE event = 'queue_create' AND queue_id IS NOT NULL))) AS queue_ids
FROM events
WHERE event IN ('queue_create', 'queue_destroy') AND coalesce(ret, 0) >= 0
GROUP BY run_id, coalesce(owner_tgid, tgid), gpu_id) q
LEFT JOIN processes p ON p.run_id = q.run_id AND p.tgid = q.tgid
ORDER BY q.run_id, q.tgid, q.gpu_id;
