-- The controller's preempt and resume calls: each *_request marker paired with its *_done marker by
-- (run_id, seq), and the call time between them (`call_ns`). This is not the preemption latency: that
-- is measured against the kernel's unmap/map in preempt.preemption. Scheme A is KFD debug-trap
-- suspend/resume, scheme B the batch preempt/resume ioctls of the kernel/ series.
-- @param scheme % LIKE pattern on the scheme column ('A', 'B' or '%' for all)

CREATE VIEW preempt_calls AS
WITH req AS (
  SELECT run_id, seq, ts_ns, scheme, target_tgid, gpu_id, queue_ids,
         replace(kind, '_request', '') AS op
  FROM markers WHERE kind IN ('preempt_request', 'resume_request')
), done AS (
  SELECT run_id, seq, ts_ns, replace(kind, '_done', '') AS op, label
  FROM markers WHERE kind IN ('preempt_done', 'resume_done')
)
SELECT
  -- Trace run.
  req.run_id,
  -- Sequence number pairing request and done.
  req.seq,
  -- preempt or resume.
  req.op,
  -- 'A' or 'B'.
  req.scheme,
  -- Process whose queues were acted on.
  req.target_tgid,
  -- gpu_id concerned (NULL = all of the process's GPUs).
  req.gpu_id,
  -- Number of queue ids named by the request (0 = all).
  coalesce(len(req.queue_ids), 0) AS num_queues,
  -- Request time (CLOCK_MONOTONIC).
  req.ts_ns AS request_ts_ns,
  -- Done time; NULL when no done marker was written (failure or crash).
  done.ts_ns AS done_ts_ns,
  -- done - request: the controller's call time; NULL without a done marker.
  done.ts_ns - req.ts_ns AS call_ns,
  -- Result text of the done marker (e.g. an errno name).
  done.label AS result
FROM req
LEFT JOIN done ON done.run_id = req.run_id AND done.seq = req.seq AND done.op = req.op
WHERE coalesce(req.scheme, '') LIKE getvariable('scheme')
ORDER BY req.run_id, req.ts_ns;
