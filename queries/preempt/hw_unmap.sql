-- The hardware side of each unmap: one row per hw_unmap_wait (pm_send_unmap_queue entry -> return of
-- the fence wait, i.e. the CP acknowledged the UNMAP_QUEUES packet), the queues_unmap call around it,
-- and, when the unmap failed (fence wait returned an error), the first queue_reset / hws_hang row on
-- the same GPU after it and before the next hardware unmap there.

CREATE VIEW _preempt_hw_unmap_w AS
SELECT run_id, ts_ns, dur_ns, gpu_id, tgid, unmap_filter, ret,
       lead(ts_ns) OVER (PARTITION BY run_id, gpu_id ORDER BY ts_ns) AS next_ts_ns
FROM events WHERE event = 'hw_unmap_wait';

CREATE VIEW preempt_hw_unmap AS
SELECT
  -- Trace run.
  w.run_id,
  -- Device.
  w.gpu_id,
  -- pm_send_unmap_queue entry (the UNMAP_QUEUES packet goes to the HIQ).
  w.ts_ns,
  -- Packet -> fence wait return: the hardware unmap time.
  w.dur_ns AS hw_ns,
  -- Unmap filter as the kernel passed it.
  w.unmap_filter,
  -- Return value of the fence wait (negative errno: the CP did not acknowledge in time).
  w.ret,
  -- True when the fence wait failed.
  coalesce(w.ret < 0, false) AS failed,
  -- Entry of the queues_unmap call around it; NULL when not recorded.
  u.ts_ns AS unmap_ts_ns,
  -- Duration of that queues_unmap call (software + hardware).
  u.dur_ns AS unmap_dur_ns,
  -- queue_reset or hws_hang after a failed unmap; NULL when none was recorded.
  CASE WHEN w.ret < 0 AND r.ts_ns < coalesce(w.next_ts_ns, 9223372036854775807) THEN r.event END AS reset_event,
  -- Time of that reset row.
  CASE WHEN w.ret < 0 AND r.ts_ns < coalesce(w.next_ts_ns, 9223372036854775807) THEN r.ts_ns END AS reset_ts_ns
FROM _preempt_hw_unmap_w w
ASOF LEFT JOIN (SELECT run_id, gpu_id, ts_ns, dur_ns FROM events WHERE event = 'queues_unmap' AND gpu_id IS NOT NULL) u
  ON u.run_id = w.run_id AND u.gpu_id = w.gpu_id AND u.ts_ns <= w.ts_ns
ASOF LEFT JOIN (SELECT run_id, gpu_id, ts_ns, event FROM events WHERE event IN ('queue_reset', 'hws_hang') AND gpu_id IS NOT NULL) r
  ON r.run_id = w.run_id AND r.gpu_id = w.gpu_id AND r.ts_ns >= w.ts_ns
ORDER BY w.run_id, w.gpu_id, w.ts_ns;
