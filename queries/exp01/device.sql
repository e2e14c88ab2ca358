-- Experiment 1 device view: one row per (run, snapshot, gpu_id) with active HQDs, HIQs, free CP
-- slots and the runlist, and the change against the run's baseline snapshot (the first one of phase
-- baseline).

CREATE VIEW exp01_device AS
WITH per AS (
  SELECT run_id, snapshot_seq, any_value(phase) AS phase, min(ts_ns) AS ts_ns, gpu_id,
         any_value(node_id) AS node_id,
         bool_or(kind = 'device' AND status = 'stopped') AS stopped,
         count(*) FILTER (WHERE kind = 'hqd_cp') AS cp_slots,
         count(*) FILTER (WHERE kind = 'hqd_cp' AND active) AS active_cp_hqds,
         count(*) FILTER (WHERE kind = 'hqd_cp' AND active AND tgid IS NOT NULL) AS attributed_cp_hqds,
         count(*) FILTER (WHERE kind = 'hqd_hiq') AS hiqs,
         count(*) FILTER (WHERE kind = 'hqd_hiq' AND active) AS active_hiqs,
         count(*) FILTER (WHERE kind = 'hqd_sdma' AND active) AS active_sdma_hqds,
         count(DISTINCT xcc) FILTER (WHERE kind IN ('hqd_cp', 'hqd_hiq')) AS xccs,
         count(*) FILTER (WHERE kind = 'rl_packet' AND opcode = 'MAP_PROCESS') AS rl_processes,
         count(*) FILTER (WHERE kind = 'rl_packet' AND opcode = 'MAP_QUEUES') AS rl_queues,
         count(DISTINCT tgid) FILTER (WHERE kind = 'mqd') AS processes_with_queues
  FROM snapshots
  WHERE gpu_id IS NOT NULL
  GROUP BY run_id, snapshot_seq, gpu_id
),
base AS (
  SELECT run_id, gpu_id, arg_min(active_cp_hqds, snapshot_seq) AS active_cp_hqds, arg_min(active_sdma_hqds, snapshot_seq) AS active_sdma_hqds
  FROM per
  WHERE phase = 'baseline'
  GROUP BY run_id, gpu_id
)
SELECT
  -- Trace run.
  p.run_id,
  -- Snapshot sequence number within the run.
  p.snapshot_seq,
  -- baseline, during or after.
  p.phase,
  -- CLOCK_MONOTONIC time of the snapshot.
  p.ts_ns,
  -- KFD gpu_id.
  p.gpu_id,
  -- KFD topology node index.
  p.node_id,
  -- hqds printed ' Device is stopped' (scheduler not running; no HQD rows).
  p.stopped,
  -- CP HQD slots KFD owns and printed (cp_queue_bitmap x XCCs).
  p.cp_slots,
  -- Of those, active (CP_HQD_ACTIVE bit 0).
  p.active_cp_hqds,
  -- Active CP slots whose queue was found in mqds (the rest belong to no listed process).
  p.attributed_cp_hqds,
  -- Inactive CP slots.
  p.cp_slots - p.active_cp_hqds AS free_cp_slots,
  -- HIQ blocks printed (one per XCC).
  p.hiqs,
  -- Active HIQs.
  p.active_hiqs,
  -- Active SDMA RLC queues (RB_ENABLE).
  p.active_sdma_hqds,
  -- XCCs seen in the hqds headers.
  p.xccs,
  -- MAP_PROCESS packets in the runlist.
  p.rl_processes,
  -- MAP_QUEUES packets in the runlist.
  p.rl_queues,
  -- Processes with an MQD on this GPU.
  p.processes_with_queues,
  -- Active CP HQDs in the run's baseline snapshot (NULL without one).
  b.active_cp_hqds AS baseline_active_cp_hqds,
  -- active_cp_hqds minus the baseline.
  p.active_cp_hqds - b.active_cp_hqds AS active_cp_hqds_over_baseline,
  -- active_sdma_hqds minus the baseline.
  p.active_sdma_hqds - b.active_sdma_hqds AS active_sdma_hqds_over_baseline
FROM per p
LEFT JOIN base b USING (run_id, gpu_id)
ORDER BY p.run_id, p.snapshot_seq, p.gpu_id;
