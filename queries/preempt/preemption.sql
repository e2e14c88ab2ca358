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
-- Shaped by EXPLAIN ANALYZE on 10 M events: requests and done markers are read by two
-- scans of markers, each with its own filter, and carry no strings but the scheme (materializing one
-- shared scan with run_id and label cost more than the second scan); rows are keyed by `rk` =
-- hash(run_id) and `fam` (0 preempt, 1 resume), so sorts and joins compare integers (a string key
-- doubled each ASOF join); "next row of the same group" is an unpartitioned window over one sort with
-- the group checked on the neighbour, one scalar lead() per column over one named window (a struct
-- lead cost ~10 % more; a PARTITION BY window or a third ASOF join 2-3x more; one ASOF join over both
-- families 1.7x the two; lead(... IGNORE NULLS) over requests and kernel rows in one sort instead of
-- the ASOF joins 3.7x). Runs stay keys (`rk`) to the end: preempt_preemption_run_keys turns them back
-- into run ids where they are shown (joining it on 580 k rows cost 0.2 s of CPU).
CREATE VIEW preempt_preemption_timings AS
WITH done AS MATERIALIZED (  -- the first done marker of each call
  SELECT hash(run_id) AS rk, seq, CASE WHEN kind = 'preempt_done' THEN 0 ELSE 1 END AS fam, min(ts_ns) AS ts_ns, arg_min(label, ts_ns) AS label
  FROM markers WHERE kind IN ('preempt_done', 'resume_done') GROUP BY ALL
), rd AS MATERIALIZED (  -- requests, with the time of the target's next request of the same kind
  SELECT r.rk, r.seq, r.ts_ns, r.scheme, r.target_tgid, r.gpu_id, r.fam, r.gpu_key, d.ts_ns AS done_ts_ns, d.label AS result, r.next_same_kind_ts_ns
  FROM (SELECT rk, seq, ts_ns, scheme, target_tgid, gpu_id, fam, coalesce(gpu_id, 4294967295) AS gpu_key,
               CASE WHEN lead(rk) OVER w = rk AND lead(target_tgid) OVER w IS NOT DISTINCT FROM target_tgid AND lead(fam) OVER w = fam
                    THEN lead(ts_ns) OVER w END AS next_same_kind_ts_ns
        FROM (SELECT hash(run_id) AS rk, seq, ts_ns, scheme, target_tgid, gpu_id, CASE WHEN kind = 'preempt_request' THEN 0 ELSE 1 END AS fam
              FROM markers WHERE kind IN ('preempt_request', 'resume_request'))
        WINDOW w AS (ORDER BY rk, target_tgid, fam, ts_ns)) r
  LEFT JOIN done d ON d.rk = r.rk AND d.seq = r.seq AND d.fam = r.fam
), k AS MATERIALIZED (
  SELECT hash(run_id) AS rk, gpu_id, CASE WHEN event = 'queues_unmap' THEN 0 ELSE 1 END AS fam, ts_ns, ts_ns + dur_ns AS end_ns
  FROM events WHERE event IN ('queues_unmap', 'queues_map') AND gpu_id IS NOT NULL
), side AS MATERIALIZED (
  -- end of the first unmap (preempt) / map (resume) on the request's GPU starting at or after it,
  -- counted only when it starts before the call's done marker (without one: the next such request)
  SELECT r.*, CASE WHEN u.ts_ns <= coalesce(r.done_ts_ns, r.next_same_kind_ts_ns, 9223372036854775807) THEN u.end_ns END AS k_end_ns
  FROM (SELECT * FROM rd WHERE fam = 0) r
  ASOF LEFT JOIN (SELECT rk, gpu_id, ts_ns, end_ns FROM k WHERE fam = 0) u
    ON u.rk = r.rk AND u.gpu_id = r.gpu_id AND u.ts_ns >= r.ts_ns
  UNION ALL
  SELECT r.*, CASE WHEN m.ts_ns <= coalesce(r.done_ts_ns, r.next_same_kind_ts_ns, 9223372036854775807) THEN m.end_ns END
  FROM (SELECT * FROM rd WHERE fam = 1) r
  ASOF LEFT JOIN (SELECT rk, gpu_id, ts_ns, end_ns FROM k WHERE fam = 1) m
    ON m.rk = r.rk AND m.gpu_id = r.gpu_id AND m.ts_ns >= r.ts_ns
), pr AS (
  SELECT *, coalesce(lead(fam) OVER w = 1 AND lead(rk) OVER w = rk AND lead(target_tgid) OVER w IS NOT DISTINCT FROM target_tgid
                     AND lead(gpu_key) OVER w = gpu_key
                     AND lead(ts_ns) OVER w < coalesce(next_same_kind_ts_ns, 9223372036854775807), false) AS resumed,
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
