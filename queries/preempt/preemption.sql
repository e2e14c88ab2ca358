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
-- `preempt_preemption_timings` holds the same numbers keyed by run hash (`rk`) for aggregates such as
-- preempt.summary; `preempt_preemption_run_keys` maps `rk` back to the run id and
-- `preempt_preemption_labels` gives the target's model label by `rk`.
-- @param scheme % LIKE pattern on the scheme column ('A', 'B' or '%' for all)
-- @include workload.labels

-- The model label of each process (workload.labels), keyed by run hash as the timings are.
CREATE VIEW preempt_preemption_labels AS
SELECT
  -- Trace run.
  run_id,
  -- hash(run_id): the run key of preempt_preemption_timings.
  hash(run_id) AS rk,
  -- Process the label belongs to.
  tgid,
  -- Its model label (first workload_start marker).
  label
FROM workload_labels;

CREATE VIEW _preempt_preemption_results AS
SELECT run_id, seq, map_from_entries(list_sort(list({'k': queue_ids[1], 'v': label}))) AS results,  -- list_sort: an ordered aggregate cost 4x
       count(*) FILTER (WHERE label = 'ok') AS ok, count(*) AS n
FROM markers WHERE kind = 'queue_result' AND len(queue_ids) = 1 GROUP BY run_id, seq;

-- rk -> run_id of the runs with preemption markers; two run ids with one hash stop every query that
-- joins it (never a silent mix)
CREATE VIEW preempt_preemption_run_keys AS
SELECT
  -- hash(run_id): the run key of preempt_preemption_timings.
  hash(run_id) AS rk,
  -- Trace run (the query stops with an error when two run ids share one key).
  CASE WHEN count(*) = 1 THEN any_value(run_id)
       ELSE error('preempt.preemption: two run ids hash alike: ' || string_agg(run_id, ', ' ORDER BY run_id) || ' (query these traces separately)') END AS run_id
FROM (SELECT DISTINCT run_id FROM markers WHERE kind IN ('preempt_request', 'resume_request', 'preempt_done', 'resume_done'))
GROUP BY hash(run_id);

-- One row per preemption with its timing columns alone, runs as keys (`rk`): preempt.summary and the
-- report read this; preempt_preemption adds run ids, queue ids, results, labels, loss.
-- Shaped by EXPLAIN ANALYZE and CPU time on 10 M events (bench/bench_query.py): each side (preempt:
-- request, done marker, unmap; resume: request, done marker, map) is its own pipeline with nothing
-- materialized: its requests' window sorts one family (the target's next request of that kind), its
-- done markers are grouped and joined per family, and its ASOF join reads the kernel rows straight
-- from `events` (their own row groups: trace/writer.py). Materialized CTEs holding both families'
-- requests, done markers and kernel rows at once cost 10-20 % more CPU and ~250 MB more memory. Rows
-- are keyed by `rk` = hash(run_id) (a string key doubled each ASOF join) and stay keys to the end:
-- preempt_preemption_run_keys turns them back into run ids where they are shown. Measured and
-- dropped: the next unmap/map by a window instead of the ASOF join (15x slower), a PARTITION BY
-- window or a third ASOF join (2-3x), one ASOF join over both families (1.7x), one group over
-- requests and done markers instead of group + join (no gain).
CREATE VIEW preempt_preemption_timings AS
WITH side AS (
  SELECT r.*, 0 AS fam, CASE WHEN k.ts_ns <= coalesce(r.done_ts_ns, r.next_ts_ns, 9223372036854775807) THEN k.end_ns END AS k_end_ns
  FROM (SELECT q.rk, q.seq, q.ts_ns, q.scheme, q.target_tgid, q.gpu_id, coalesce(q.gpu_id, 4294967295) AS gpu_key, d.ts_ns AS done_ts_ns, d.label AS result, q.next_ts_ns
        FROM (SELECT *, CASE WHEN lead(rk) OVER w = rk AND lead(target_tgid) OVER w IS NOT DISTINCT FROM target_tgid THEN lead(ts_ns) OVER w END AS next_ts_ns
              FROM (SELECT hash(run_id) AS rk, seq, ts_ns, scheme, target_tgid, gpu_id FROM markers WHERE kind = 'preempt_request')
              WINDOW w AS (ORDER BY rk, target_tgid, ts_ns)) q
        LEFT JOIN (SELECT hash(run_id) AS rk, seq, min(ts_ns) AS ts_ns, arg_min(label, ts_ns) AS label FROM markers WHERE kind = 'preempt_done' GROUP BY ALL) d
          ON d.rk = q.rk AND d.seq = q.seq) r
  -- end of the first unmap on the request's GPU starting at or after it, counted only when it starts
  -- before the call's done marker (without one: the target's next preempt request)
  ASOF LEFT JOIN (SELECT hash(run_id) AS rk, gpu_id, ts_ns, ts_ns + dur_ns AS end_ns FROM events WHERE event = 'queues_unmap' AND gpu_id IS NOT NULL) k
    ON k.rk = r.rk AND k.gpu_id = r.gpu_id AND k.ts_ns >= r.ts_ns
  UNION ALL
  SELECT r.*, 1 AS fam, CASE WHEN k.ts_ns <= coalesce(r.done_ts_ns, r.next_ts_ns, 9223372036854775807) THEN k.end_ns END AS k_end_ns
  FROM (SELECT q.rk, q.seq, q.ts_ns, q.scheme, q.target_tgid, q.gpu_id, coalesce(q.gpu_id, 4294967295) AS gpu_key, d.ts_ns AS done_ts_ns, d.label AS result, q.next_ts_ns
        FROM (SELECT *, CASE WHEN lead(rk) OVER w = rk AND lead(target_tgid) OVER w IS NOT DISTINCT FROM target_tgid THEN lead(ts_ns) OVER w END AS next_ts_ns
              FROM (SELECT hash(run_id) AS rk, seq, ts_ns, scheme, target_tgid, gpu_id FROM markers WHERE kind = 'resume_request')
              WINDOW w AS (ORDER BY rk, target_tgid, ts_ns)) q
        LEFT JOIN (SELECT hash(run_id) AS rk, seq, min(ts_ns) AS ts_ns, arg_min(label, ts_ns) AS label FROM markers WHERE kind = 'resume_done' GROUP BY ALL) d
          ON d.rk = q.rk AND d.seq = q.seq) r
  -- the same for the resume side: the first map on the GPU
  ASOF LEFT JOIN (SELECT hash(run_id) AS rk, gpu_id, ts_ns, ts_ns + dur_ns AS end_ns FROM events WHERE event = 'queues_map' AND gpu_id IS NOT NULL) k
    ON k.rk = r.rk AND k.gpu_id = r.gpu_id AND k.ts_ns >= r.ts_ns
), pr AS (  -- a preemption's resume: the next row of the same run, target and GPU, before the target's next preempt
  SELECT *, coalesce(lead(fam) OVER w = 1 AND lead(rk) OVER w = rk AND lead(target_tgid) OVER w IS NOT DISTINCT FROM target_tgid
                     AND lead(gpu_key) OVER w = gpu_key
                     AND lead(ts_ns) OVER w < coalesce(next_ts_ns, 9223372036854775807), false) AS resumed,
         lead(k_end_ns) OVER w - lead(ts_ns) OVER w AS nx_lat, lead(done_ts_ns) OVER w AS nx_done
  FROM side WINDOW w AS (ORDER BY rk, target_tgid, gpu_key, ts_ns, fam)
)
SELECT
  -- hash(run_id): the run key (preempt_preemption_run_keys maps it back).
  pr.rk,
  -- Sequence number of the preempt request.
  pr.seq,
  -- 'A' or 'B'.
  pr.scheme,
  -- Process whose queues were preempted.
  pr.target_tgid,
  -- gpu_id named by the request (NULL = all the process's GPUs).
  pr.gpu_id,
  -- Request time (CLOCK_MONOTONIC).
  pr.ts_ns AS request_ts_ns,
  -- Result of the preempt call (done marker label); NULL without a done marker.
  pr.result,
  -- Request -> end of the first queues_unmap on that GPU starting at or after it (kernel-measured).
  pr.k_end_ns - pr.ts_ns AS preempt_latency_ns,
  -- Request -> preempt_done (the controller's call).
  pr.done_ts_ns - pr.ts_ns AS preempt_call_ns,
  -- Matching resume_request -> end of the first queues_map on that GPU at or after it (kernel-measured).
  CASE WHEN pr.resumed THEN pr.nx_lat END AS resume_latency_ns,
  -- preempt_done -> resume_done: how long the queues stayed off.
  CASE WHEN pr.resumed THEN pr.nx_done - pr.done_ts_ns END AS suspended_ns
FROM pr
WHERE pr.fam = 0 AND coalesce(pr.scheme, '') LIKE getvariable('scheme');

-- the queue ids a request named (kept out of the core: a list per row slows its sorts)
CREATE VIEW _preempt_preemption_queue_ids AS
SELECT run_id, seq, ts_ns, target_tgid, any_value(queue_ids) AS queue_ids
FROM markers WHERE kind = 'preempt_request' GROUP BY run_id, seq, ts_ns, target_tgid;

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
  i.queue_ids,
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
FROM (SELECT r.run_id, c.* FROM preempt_preemption_timings c JOIN preempt_preemption_run_keys r USING (rk)) p
LEFT JOIN preempt_preemption_labels l ON l.rk = p.rk AND l.tgid = p.target_tgid
LEFT JOIN _preempt_preemption_results q ON q.run_id = p.run_id AND q.seq = p.seq
LEFT JOIN _preempt_preemption_queue_ids i
  ON i.run_id = p.run_id AND i.seq = p.seq AND i.ts_ns = p.request_ts_ns AND i.target_tgid IS NOT DISTINCT FROM p.target_tgid
LEFT JOIN runs ON runs.run_id = p.run_id
ORDER BY p.run_id, p.request_ts_ns, p.seq;
