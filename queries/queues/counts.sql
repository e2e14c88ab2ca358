-- Queues per model (label of the process's workload_start marker, else comm) and run: how many
-- processes of the model ran, the queues they created by type, the queue ids, and whether every run
-- of the same model created the same set (same types and ids per process), as experiment 1 asks.
-- @include queues.created

-- from the creations alone (queues.created): counting needs no lifetimes
CREATE VIEW _queues_counts_per_process AS
SELECT c.run_id, coalesce(l.label, any_value(c.comm)) AS label, c.tgid,
       count(*) AS queues,
       count(*) FILTER (WHERE c.queue_type IN ('compute', 'compute_aql')) AS compute,
       count(*) FILTER (WHERE c.queue_type LIKE 'sdma%') AS sdma,
       list_sort(list(DISTINCT c.queue_id)) AS ids,
       -- the per-process signature: sorted (type, id) pairs
       list_sort(list(c.queue_type || ':' || c.queue_id)) AS signature,
       any_value(p.container) AS container,
       bool_or(p.cgroup IS NOT NULL) AS cgroup_known
FROM queues_created_unlabelled c
LEFT JOIN workload_labels l ON l.run_id = c.run_id AND l.tgid = c.tgid
LEFT JOIN processes p ON p.run_id = c.run_id AND p.tgid = c.tgid
GROUP BY c.run_id, l.label, c.tgid;

CREATE VIEW queues_counts AS
WITH per_run AS (
  SELECT run_id, label,
         count(*) AS processes,
         sum(queues) AS queues,
         sum(compute) AS compute,
         sum(sdma) AS sdma,
         min(queues) AS min_per_process,
         max(queues) AS max_per_process,
         list_sort(list_distinct(flatten(list(ids)))) AS ids,
         list_sort(list_distinct(list(array_to_string(signature, ',')))) AS signatures,
         CASE WHEN bool_or(cgroup_known) THEN list_sort(coalesce(list(DISTINCT container) FILTER (WHERE container IS NOT NULL), [])) END AS containers
  FROM _queues_counts_per_process
  GROUP BY run_id, label
)
SELECT
  -- Trace run.
  run_id,
  -- Model: workload_start label, else the process's command name.
  label,
  -- Containers (short ids, 12 hex) its processes ran in, sorted; [] when they ran on the host; NULL when
  -- no process of it was read from /proc (view processes).
  containers,
  -- Processes of this model that created queues in the run.
  processes,
  -- Queues they created (all types).
  CAST(queues AS BIGINT) AS queues,
  -- Compute (incl. AQL) queues.
  CAST(compute AS BIGINT) AS compute_queues,
  -- SDMA queues (all SDMA kinds).
  CAST(sdma AS BIGINT) AS sdma_queues,
  -- Fewest queues one process of the model created.
  min_per_process,
  -- Most queues one process of the model created.
  max_per_process,
  -- Distinct queue ids used, sorted.
  ids AS queue_ids,
  -- True when every process of the model, in every run, created the same (type, id) set.
  count(DISTINCT signatures) OVER (PARTITION BY label) = 1 AND len(signatures) = 1 AS identical_across_runs
FROM per_run
ORDER BY label, run_id;
