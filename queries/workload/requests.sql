-- Online request response time (end - due) next to the preemptions that overlapped each request, and
-- per scheme: response time p50/p99/max and the offline job's steps/s (what preemption cost it). Reads the markers
-- of `gpreempt-trace workload` (request_start at the scheduled time, request_end, step_done) and
-- of the controller (preempt_request, resume_done). A run's scheme is its label `scheme`
-- ('none' when unlabelled); `environment` is its label `environment` (e.g. qemu-tcg: software-path
-- times, not hardware numbers). Offline steps/s counts the steps that ended while the online stream
-- ran (its first due time to its last end), so schemes compare like with like. A preemption lasts from preempt_request to the first resume_done
-- for the same target at or after it; with no resume_done it is open (NULL end) and overlaps every
-- later request of the run up to that request's end.

CREATE VIEW _workload_requests_preemptions AS
WITH p AS (
  SELECT run_id, ts_ns, target_tgid FROM markers WHERE kind = 'preempt_request'
), r AS (
  SELECT run_id, ts_ns, target_tgid FROM markers WHERE kind = 'resume_done'
)
SELECT p.run_id, p.target_tgid, p.ts_ns AS start_ns, r.ts_ns AS end_ns
FROM p ASOF LEFT JOIN r
  ON r.run_id = p.run_id AND r.target_tgid = p.target_tgid AND r.ts_ns >= p.ts_ns;

CREATE VIEW _workload_requests_runs AS
SELECT run_id, coalesce(labels['scheme'], 'none') AS scheme, labels['environment'] AS environment,
       coalesce(synthetic, false) AS synthetic
FROM runs;

CREATE VIEW workload_requests AS
WITH s AS (
  SELECT run_id, tgid, seq, ts_ns, value_ns, label FROM markers WHERE kind = 'request_start'
), e AS (
  SELECT run_id, tgid, seq, ts_ns FROM markers WHERE kind = 'request_end'
), req AS (
  SELECT s.run_id, s.tgid, s.seq, s.label, s.ts_ns AS due_ns, e.ts_ns AS end_ns, s.value_ns AS queue_delay_ns
  FROM s LEFT JOIN e ON e.run_id = s.run_id AND e.tgid = s.tgid AND e.seq = s.seq
), ov AS (
  SELECT req.run_id, req.tgid, req.seq, count(p.start_ns) AS preemptions,
         CAST(sum(least(req.end_ns, coalesce(p.end_ns, req.end_ns)) - greatest(req.due_ns, p.start_ns))
              FILTER (WHERE p.start_ns IS NOT NULL) AS BIGINT) AS preempted_ns
  FROM req LEFT JOIN _workload_requests_preemptions p
    ON p.run_id = req.run_id AND p.start_ns < req.end_ns AND coalesce(p.end_ns, req.end_ns) > req.due_ns
  GROUP BY ALL
)
SELECT
  -- Trace run.
  req.run_id,
  -- The run's label `scheme` ('none' when unlabelled).
  ru.scheme,
  -- The run's label `environment` (e.g. qemu-tcg), NULL when unlabelled.
  ru.environment,
  -- Online workload process.
  req.tgid,
  -- Request number.
  req.seq,
  -- Model that served the request (the marker's label).
  req.label AS model,
  -- Scheduled (due) time of the request; the open-loop stream's clock.
  req.due_ns,
  -- End of the request; NULL when no request_end was written (killed mid-request).
  req.end_ns,
  -- end - due: the response time the client sees, queueing included; NULL without an end.
  req.end_ns - req.due_ns AS response_ns,
  -- Time the request waited after its due time before it started (queueing + any preempt call).
  req.queue_delay_ns,
  -- Preemptions of any target in this run that overlapped [due, end] of the request.
  ov.preemptions,
  -- Total time of the request during which a preemption was in effect (0 when none).
  coalesce(ov.preempted_ns, 0) AS preempted_ns
FROM req
JOIN ov USING (run_id, tgid, seq)
LEFT JOIN _workload_requests_runs ru USING (run_id)
ORDER BY req.run_id, req.tgid, req.seq;

CREATE VIEW workload_requests_summary AS
WITH lat AS (
  SELECT scheme, count(DISTINCT run_id) AS runs, count(*) AS requests, count(response_ns) AS completed,
         quantile_disc(response_ns, 0.5) AS p50_ns, quantile_disc(response_ns, 0.99) AS p99_ns,
         max(response_ns) AS max_ns, count(*) FILTER (WHERE preemptions > 0) AS overlapped,
  FROM workload_requests GROUP BY scheme
), win AS (  -- the online stream's span per run: offline throughput is counted while it runs
  SELECT run_id, min(due_ns) AS lo, max(end_ns) AS hi FROM workload_requests GROUP BY run_id
), steps AS (
  SELECT m.run_id,
         count(*) FILTER (WHERE win.lo IS NULL OR m.ts_ns BETWEEN win.lo AND win.hi) AS n,
         CASE WHEN any_value(win.lo) IS NULL THEN max(m.ts_ns) - min(m.ts_ns - m.value_ns)
              ELSE any_value(win.hi) - any_value(win.lo) END AS window_ns
  FROM markers m LEFT JOIN win USING (run_id)
  WHERE m.kind = 'step_done' AND m.value_ns IS NOT NULL GROUP BY m.run_id
), off AS (
  SELECT ru.scheme, CAST(sum(steps.n) AS BIGINT) AS steps, CAST(sum(steps.window_ns) AS BIGINT) AS window_ns
  FROM steps JOIN _workload_requests_runs ru USING (run_id) GROUP BY ru.scheme
), pre AS (
  SELECT ru.scheme, count(*) AS preemptions FROM _workload_requests_preemptions p
  JOIN _workload_requests_runs ru USING (run_id) GROUP BY ru.scheme
), env AS (
  SELECT scheme, string_agg(DISTINCT environment, ',' ORDER BY environment) AS environment, bool_or(synthetic) AS synthetic
  FROM _workload_requests_runs GROUP BY scheme
)
SELECT
  -- The runs' label `scheme` ('none' when unlabelled).
  coalesce(lat.scheme, off.scheme) AS scheme,
  -- Environments of these runs (label `environment`), NULL when none is labelled.
  env.environment,
  -- True when any of these runs is synthetic (generated, not measured).
  env.synthetic,
  -- Runs with online requests.
  coalesce(lat.runs, 0) AS runs,
  -- Online requests (due).
  coalesce(lat.requests, 0) AS requests,
  -- Requests with an end marker.
  coalesce(lat.completed, 0) AS completed,
  -- Median response time (end - due), a real sample (quantile_disc).
  lat.p50_ns,
  -- 99th percentile response time, a real sample (quantile_disc).
  lat.p99_ns,
  -- Largest response time.
  lat.max_ns,
  -- Requests that overlapped at least one preemption.
  coalesce(lat.overlapped, 0) AS overlapped_requests,
  -- Preemptions issued in these runs.
  coalesce(pre.preemptions, 0) AS preemptions,
  -- Offline steps that ended while the online stream ran (first due to last end; the whole step span in a run without requests).
  coalesce(off.steps, 0) AS offline_steps,
  -- offline_steps per second of those windows, summed over runs; NULL without a window.
  off.steps * 1e9 / nullif(off.window_ns, 0) AS offline_steps_per_s
FROM lat
FULL JOIN off ON off.scheme = lat.scheme
LEFT JOIN pre ON pre.scheme = coalesce(lat.scheme, off.scheme)
LEFT JOIN env ON env.scheme = coalesce(lat.scheme, off.scheme)
ORDER BY 1;
