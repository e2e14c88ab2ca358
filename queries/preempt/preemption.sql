-- One row per controller preemption (preempt_request marker), with its latency measured against the
-- kernel: `preempt_latency_ns` runs from the request to the END of the first queues_unmap on the
-- request's GPU that STARTS at or after the request (the queues are then off the hardware), and
-- `resume_latency_ns` from the matching resume_request to the end of the first queues_map on that GPU
-- at or after it. A kernel row only counts when it starts before the call's done marker (or, without
-- one, before the next request for the same target): a side that is missing (lost event, failed call,
-- no marker, request without gpu_id) is NULL, never a neighbouring preemption's event. Unmaps on other
-- GPUs and unmaps that start before the request are never matches. The resume of a preemption is the
-- first resume_request for the same run, target and GPU after it and before the target's next
-- preempt_request. `events_lost` of the run stands next to the numbers it may touch.
-- @param scheme % LIKE pattern on the scheme column ('A', 'B' or '%' for all)

CREATE VIEW _preempt_preemption_labels AS
SELECT run_id, coalesce(target_tgid, tgid) AS tgid, arg_min(label, ts_ns) AS label
FROM markers WHERE kind = 'workload_start' AND label IS NOT NULL
GROUP BY run_id, coalesce(target_tgid, tgid);

CREATE VIEW _preempt_preemption_results AS
SELECT run_id, seq, map_from_entries(list({'k': queue_ids[1], 'v': label} ORDER BY queue_ids[1])) AS results,
       count(*) FILTER (WHERE label = 'ok') AS ok, count(*) AS n
FROM markers WHERE kind = 'queue_result' AND len(queue_ids) = 1 GROUP BY run_id, seq;

-- the latency columns alone (preempt.summary reads this; the public view adds results, labels, loss).
-- One view with materialized CTEs, so markers and events are each scanned once (EXPLAIN ANALYZE).
CREATE VIEW _preempt_preemption_core AS
WITH mk AS MATERIALIZED (
  SELECT run_id, seq, ts_ns, scheme, target_tgid, gpu_id, queue_ids, kind, label
  FROM markers WHERE kind IN ('preempt_request', 'resume_request', 'preempt_done', 'resume_done')
), req AS MATERIALIZED (
  SELECT run_id, seq, ts_ns, scheme, target_tgid, gpu_id, queue_ids, kind,
         coalesce(gpu_id, 4294967295) AS gpu_key,
         lead(ts_ns) OVER (PARTITION BY run_id, target_tgid, kind ORDER BY ts_ns) AS next_same_kind_ts_ns
  FROM mk WHERE kind IN ('preempt_request', 'resume_request')
), done AS MATERIALIZED (
  SELECT run_id, seq, kind, min(ts_ns) AS ts_ns, arg_min(label, ts_ns) AS label
  FROM mk WHERE kind IN ('preempt_done', 'resume_done') GROUP BY run_id, seq, kind
), k AS MATERIALIZED (
  SELECT run_id, gpu_id, event, ts_ns, ts_ns + dur_ns AS end_ns
  FROM events WHERE event IN ('queues_unmap', 'queues_map') AND gpu_id IS NOT NULL
), p AS (
  SELECT r.*, d.ts_ns AS done_ts_ns, d.label AS result,
         CASE WHEN u.ts_ns <= coalesce(d.ts_ns, r.next_same_kind_ts_ns, 9223372036854775807) THEN u.end_ns END AS unmap_end_ns
  FROM (SELECT * FROM req WHERE kind = 'preempt_request') r
  LEFT JOIN done d ON d.run_id = r.run_id AND d.seq = r.seq AND d.kind = 'preempt_done'
  ASOF LEFT JOIN (SELECT * FROM k WHERE event = 'queues_unmap') u
    ON u.run_id = r.run_id AND u.gpu_id = r.gpu_id AND u.ts_ns >= r.ts_ns
), rs AS MATERIALIZED (
  SELECT r.*, d.ts_ns AS done_ts_ns,
         CASE WHEN m.ts_ns <= coalesce(d.ts_ns, r.next_same_kind_ts_ns, 9223372036854775807) THEN m.end_ns END AS map_end_ns
  FROM (SELECT * FROM req WHERE kind = 'resume_request') r
  LEFT JOIN done d ON d.run_id = r.run_id AND d.seq = r.seq AND d.kind = 'resume_done'
  ASOF LEFT JOIN (SELECT * FROM k WHERE event = 'queues_map') m
    ON m.run_id = r.run_id AND m.gpu_id = r.gpu_id AND m.ts_ns >= r.ts_ns
), pr AS (
  SELECT p.*, CASE WHEN r.ts_ns < coalesce(p.next_same_kind_ts_ns, 9223372036854775807) THEN r.ts_ns END AS resume_ts_ns,
         r.seq AS resume_seq, r.map_end_ns AS resume_map_end_ns, r.done_ts_ns AS resume_done_ts_ns
  FROM p
  ASOF LEFT JOIN rs r
    ON r.run_id = p.run_id AND r.target_tgid = p.target_tgid AND r.gpu_key = p.gpu_key AND r.ts_ns >= p.ts_ns
)
SELECT run_id, seq, scheme, target_tgid, gpu_id, queue_ids, ts_ns AS request_ts_ns, result,
       unmap_end_ns - ts_ns AS preempt_latency_ns,
       done_ts_ns - ts_ns AS preempt_call_ns,
       CASE WHEN resume_ts_ns IS NOT NULL THEN resume_map_end_ns - resume_ts_ns END AS resume_latency_ns,
       CASE WHEN resume_ts_ns IS NOT NULL THEN resume_done_ts_ns - done_ts_ns END AS suspended_ns
FROM pr
WHERE coalesce(scheme, '') LIKE getvariable('scheme');

CREATE VIEW preempt_preemption AS
SELECT
  -- Trace run.
  p.run_id,
  -- Sequence number of the preempt request (pairs it with its done marker).
  p.seq,
  -- 'A' (debug-trap suspend) or 'B' (batch preempt ioctls).
  p.scheme,
  -- Process whose queues were preempted.
  p.target_tgid,
  -- Model of the target (workload_start label), NULL when unknown.
  l.label,
  -- gpu_id named by the request (NULL = all the process's GPUs: the kernel side is then not matched).
  p.gpu_id,
  -- Queue ids named by the request (NULL or [] = all).
  p.queue_ids,
  -- Request time (CLOCK_MONOTONIC).
  p.request_ts_ns,
  -- Request -> end of the first queues_unmap on that GPU starting at or after it (queues off the hardware).
  p.preempt_latency_ns,
  -- Request -> preempt_done (the controller's call).
  p.preempt_call_ns,
  -- Matching resume_request -> end of the first queues_map on that GPU at or after it.
  p.resume_latency_ns,
  -- preempt_done -> resume_done: how long the queues stayed off.
  p.suspended_ns,
  -- Result of the preempt call (done marker label: ok or an errno name); NULL without a done marker.
  p.result,
  -- Per-queue results {queue_id: ok|invalid|error} from queue_result markers; NULL without them.
  q.results AS queue_results,
  -- Queues reported ok.
  q.ok AS queues_ok,
  -- Events the recorder lost in this run (NULL = unknown): a non-zero value may have removed a kernel side.
  runs.events_lost
FROM _preempt_preemption_core p
LEFT JOIN _preempt_preemption_labels l ON l.run_id = p.run_id AND l.tgid = p.target_tgid
LEFT JOIN _preempt_preemption_results q ON q.run_id = p.run_id AND q.seq = p.seq
LEFT JOIN runs ON runs.run_id = p.run_id
ORDER BY p.run_id, p.request_ts_ns, p.seq;
