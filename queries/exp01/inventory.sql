-- Experiment 1 queue inventory: one row per (run, snapshot, tgid, gpu_id) with the queues the process
-- has in debugfs mqds, the active CP HQDs that hold them, and their ids.
-- @include exp01.queues

CREATE VIEW exp01_inventory AS
SELECT
  -- Trace run.
  run_id,
  -- Snapshot sequence number within the run.
  snapshot_seq,
  -- baseline, during or after.
  any_value(phase) AS phase,
  -- CLOCK_MONOTONIC time of the snapshot.
  min(ts_ns) AS ts_ns,
  -- Process (mqds 'Process %d').
  tgid,
  -- Its container (short id, 12 hex; view processes); NULL on the host or when unknown.
  any_value(container) AS container,
  -- KFD gpu_id.
  gpu_id,
  -- User compute queues ('Compute queue on device' entries).
  count(*) FILTER (WHERE queue_type = 'compute') AS compute_queues,
  -- User SDMA queues ('SDMA queue on device' entries).
  count(*) FILTER (WHERE queue_type = 'sdma') AS sdma_queues,
  -- Compute MQD dumps (one per XCC per compute queue on MI300).
  CAST(sum(mqd_copies) FILTER (WHERE queue_type = 'compute') AS BIGINT) AS compute_mqd_copies,
  -- Active CP HQD slots attributed to this process (by MQD address or doorbell).
  CAST(coalesce(sum(active_hqds) FILTER (WHERE queue_type = 'compute'), 0) AS BIGINT) AS active_cp_hqds,
  -- Active SDMA RLC slots attributed to this process (by doorbell).
  CAST(coalesce(sum(active_hqds) FILTER (WHERE queue_type = 'sdma'), 0) AS BIGINT) AS active_sdma_hqds,
  -- active_cp_hqds / compute_queues (4.0 when every compute queue sits on 4 XCCs).
  CAST(sum(active_hqds) FILTER (WHERE queue_type = 'compute') AS DOUBLE) / nullif(count(*) FILTER (WHERE queue_type = 'compute'), 0) AS hqds_per_queue,
  -- Distinct XCCs among the process's active CP HQDs.
  CAST(len(list_distinct(flatten(list(xcc_list) FILTER (WHERE queue_type = 'compute' AND xcc_list IS NOT NULL)))) AS BIGINT) AS xccs,
  -- Recorder queue ids (events joined by doorbell or ring), sorted; NULL when none joined.
  nullif(list_sort(list(queue_id) FILTER (WHERE queue_id IS NOT NULL)), []) AS queue_ids,
  -- events when every queue got a recorder id, partial when some, none without events.
  CASE WHEN count(queue_id) = count(*) THEN 'events' WHEN count(queue_id) > 0 THEN 'partial' ELSE 'none' END AS queue_id_source,
  -- Doorbell offsets of the queues (compute then SDMA, each sorted).
  list_sort(coalesce(list(doorbell_off) FILTER (WHERE queue_type = 'compute'), [])) || list_sort(coalesce(list(doorbell_off) FILTER (WHERE queue_type = 'sdma'), [])) AS doorbell_offs
FROM exp01_queues
GROUP BY run_id, snapshot_seq, tgid, gpu_id
ORDER BY run_id, snapshot_seq, tgid, gpu_id;
