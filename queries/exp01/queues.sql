-- Experiment 1, one row per user queue per snapshot: a queue is one process block entry of debugfs
-- mqds (tgid, gpu_id, queue_index); its MQD copies (one per XCC on MI300), the HQD slots that hold it
-- (joined by MQD address or doorbell), and the recorder's queue id when the trace has events.

CREATE VIEW exp01_queues AS
WITH mqd AS (
  SELECT run_id, snapshot_seq, any_value(phase) AS phase, min(ts_ns) AS ts_ns, gpu_id, tgid, queue_index,
         any_value(queue_type) AS queue_type, count(*) AS mqd_copies,
         arg_min(doorbell_off, coalesce(xcc, 0)) AS doorbell_off, arg_min(ring_base, coalesce(xcc, 0)) AS ring_base,
         arg_min(mqd_addr, coalesce(xcc, 0)) AS mqd_addr, arg_min(priority, coalesce(xcc, 0)) AS priority
  FROM snapshots
  WHERE kind = 'mqd' AND queue_type IN ('compute', 'sdma') AND tgid IS NOT NULL
  GROUP BY run_id, snapshot_seq, gpu_id, tgid, queue_index
),
hqd AS (
  SELECT run_id, snapshot_seq, gpu_id, tgid, queue_index,
         count(*) FILTER (WHERE active) AS active_hqds,
         count(DISTINCT xcc) FILTER (WHERE active) AS xccs,
         list(DISTINCT xcc ORDER BY xcc) FILTER (WHERE active AND xcc IS NOT NULL) AS xcc_list,
         list(DISTINCT pipe * 100 + queue ORDER BY pipe * 100 + queue) FILTER (WHERE active) AS slots
  FROM snapshots
  WHERE kind IN ('hqd_cp', 'hqd_sdma') AND tgid IS NOT NULL
  GROUP BY run_id, snapshot_seq, gpu_id, tgid, queue_index
),
ev AS (
  SELECT run_id, ts_ns, gpu_id, coalesce(owner_tgid, tgid) AS tgid, doorbell_off, ring_base, queue_id
  FROM events
  WHERE queue_id IS NOT NULL
)
SELECT
  -- Trace run.
  m.run_id,
  -- Snapshot sequence number within the run.
  m.snapshot_seq,
  -- baseline, during or after.
  m.phase,
  -- CLOCK_MONOTONIC time of the snapshot.
  m.ts_ns,
  -- Process owning the queue (mqds 'Process %d').
  m.tgid,
  -- Its container (short id, 12 hex; view processes); NULL on the host or when unknown.
  p.container,
  -- KFD gpu_id of the queue's device.
  m.gpu_id,
  -- Position in the process block of mqds (0 = printed first).
  m.queue_index,
  -- compute or sdma.
  m.queue_type,
  -- MQD dumps printed for the queue (NUM_XCC for compute queues on MI300, else 1).
  m.mqd_copies,
  -- Active HQD slots holding this queue (CP_HQD_ACTIVE, or SDMA RB_ENABLE).
  coalesce(h.active_hqds, 0) AS active_hqds,
  -- Distinct XCCs among those HQDs.
  coalesce(h.xccs, 0) AS xccs,
  -- The XCCs, sorted.
  h.xcc_list,
  -- The HQD slots as pipe*100+queue (CP) or engine*100+rlc (SDMA), sorted.
  h.slots,
  -- Doorbell offset from the MQD (XCC0 copy).
  m.doorbell_off,
  -- Ring byte address from the MQD (XCC0 copy).
  m.ring_base,
  -- GPU address of XCC0's MQD (what MAP_QUEUES carries).
  m.mqd_addr,
  -- CP_HQD_QUEUE_PRIORITY from the MQD.
  m.priority,
  -- KFD queue id from the recorder's events with the same doorbell (else ring address), latest before the snapshot.
  coalesce(e1.queue_id, e2.queue_id) AS queue_id
FROM mqd m
LEFT JOIN hqd h USING (run_id, snapshot_seq, gpu_id, tgid, queue_index)
LEFT JOIN processes p ON p.run_id = m.run_id AND p.tgid = m.tgid
ASOF LEFT JOIN ev e1 ON m.run_id = e1.run_id AND m.gpu_id = e1.gpu_id AND m.tgid = e1.tgid AND m.doorbell_off = e1.doorbell_off AND m.ts_ns >= e1.ts_ns
ASOF LEFT JOIN ev e2 ON m.run_id = e2.run_id AND m.gpu_id = e2.gpu_id AND m.tgid = e2.tgid AND m.ring_base = e2.ring_base AND m.ts_ns >= e2.ts_ns
ORDER BY m.run_id, m.snapshot_seq, m.tgid, m.gpu_id, m.queue_type, m.queue_index;
