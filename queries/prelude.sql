-- Plain-DuckDB setup: the views `events`, `markers`, `snapshots`, `process_reads`, `processes`, `runs`
-- and the lookups `dbg_trap_ops`, `unmap_filters`
-- over trace directories, without the tool. One line (see docs/queries.md):
--   duckdb -cmd "SET VARIABLE traces = ['path/to/trace', 'runs/*']" -cmd ".read queries/prelude.sql"
-- Each entry of `traces` is a trace directory (or a glob of them, e.g. a hive-style runs/* folder).
-- Every table folder of a trace written by the tool holds `schema.parquet` (zero rows, full
-- schema), so the globs below always match. The tool (query.py) builds events/markers/snapshots
-- itself (it skips corrupt or mistyped segments with a warning; process_reads too) and runs the rest of
-- this file as is: `processes`, `runs`, `dbg_trap_ops` and `unmap_filters` are defined here and nowhere else.
-- Percentiles: every module reports them with quantile_disc (nearest rank: the ceil(q*n)-th smallest
-- value), never quantile_cont/median. A reported p50/p99 is then a time that was observed (a real call,
-- unmap or request), of the column's own integer type with no rounding CAST, and the same number
-- numpy's method="inverted_cdf" gives (compare). An interpolated value between two samples is a time
-- nothing took, and with few samples (a p99 of 10 calls) it moves with the gap between them.
-- gpreempt_trace/sql/lint.py enforces it.
CREATE VIEW events AS
SELECT * FROM read_parquet(list_transform(getvariable('traces'), lambda t: t || '/events/*.parquet'), union_by_name = true);
CREATE VIEW markers AS
SELECT * FROM read_parquet(list_transform(getvariable('traces'), lambda t: t || '/markers/*.parquet'), union_by_name = true);
CREATE VIEW snapshots AS
SELECT * FROM read_parquet(list_transform(getvariable('traces'), lambda t: t || '/snapshots/*.parquet'), union_by_name = true);
CREATE VIEW process_reads AS
SELECT * FROM read_parquet(list_transform(getvariable('traces'), lambda t: t || '/process_reads/*.parquet'), union_by_name = true);
-- One row per process seen in a run (by the recorder, a snapshot or a marker writer): each fact from
-- the first /proc read that knew it, the recorder's first-seen reads (at the process's first event)
-- before any other writer's, then by time; NULL when no read did (the process was gone: never a guess).
-- first/last seen over every writer. `container` is the short id (12 hex) shown next to a process.
CREATE VIEW processes AS
WITH r AS (
  SELECT *, (CASE WHEN source = 'recorder' AND first_seen_ts_ns IS NOT NULL THEN 0 ELSE 1 END, ts_ns) AS pref
  FROM process_reads WHERE tgid IS NOT NULL
)
SELECT run_id, tgid,
       arg_min(ns_tgid, pref) FILTER (WHERE ns_tgid IS NOT NULL) AS ns_tgid,
       arg_min(pidns, pref) FILTER (WHERE pidns IS NOT NULL) AS pidns,
       arg_min(cgroup, pref) FILTER (WHERE cgroup IS NOT NULL) AS cgroup,
       arg_min(container_id, pref) FILTER (WHERE cgroup IS NOT NULL) AS container_id,
       arg_min(container_runtime, pref) FILTER (WHERE cgroup IS NOT NULL) AS container_runtime,
       left(arg_min(container_id, pref) FILTER (WHERE cgroup IS NOT NULL), 12) AS container,
       arg_min(comm, pref) FILTER (WHERE comm IS NOT NULL) AS comm,
       min(first_seen_ts_ns) AS first_seen_ts_ns,
       max(last_seen_ts_ns) AS last_seen_ts_ns
FROM r
GROUP BY run_id, tgid;
-- DBG_TRAP queue operations by (_IOC_NR of the request, op): upstream AMDKFD_IOC_DBG_TRAP (nr 0x26,
-- KFD_IOC_DBG_TRAP_SUSPEND_QUEUES 6 / RESUME_QUEUES 7) and ROCm's pre-upstream 0xC0284B82 (nr 0x82,
-- node suspend 3 / resume 4). tests/test_queries_prelude.py checks it against gpreempt_trace.recorder.ioctls.
CREATE VIEW dbg_trap_ops AS
SELECT * FROM (VALUES (38, 6, 'suspend_queues'), (38, 7, 'resume_queues'), (130, 3, 'suspend_queues'), (130, 4, 'resume_queues'))
  AS t(ioctl_nr_low, dbg_op, op_name);
-- KFD unmap filters (enum kfd_unmap_queues_filter, the `unmap_filter` column of queues_unmap and
-- hw_unmap_wait rows): the same values in Debian's 6.1 and 6.12 amdgpu BTF; tests/test_queries_prelude.py
-- checks them against both kernels' BTF.
CREATE VIEW unmap_filters AS
SELECT * FROM (VALUES (1, 'all_queues'), (2, 'dynamic_queues'), (3, 'by_pasid')) AS t(unmap_filter, filter_name);
-- One row per trace. Counters that meta.json does not know (NULL: a killed recorder's run) stay
-- NULL ("unknown"), except events_written, which is then counted from the event segments.
CREATE VIEW runs AS
WITH m AS (
  SELECT regexp_replace(filename, '/meta\.json$', '') AS path, *
  FROM read_json(list_transform(getvariable('traces'), lambda t: t || '/meta.json'), union_by_name = true, filename = true,
                 columns = {run_id: 'VARCHAR', host: 'VARCHAR', kernel: 'VARCHAR', start_ns: 'BIGINT',
                            stop_ns: 'BIGINT', start_wall: 'VARCHAR', stop_wall: 'VARCHAR',
                            labels: 'MAP(VARCHAR, VARCHAR)', synthetic: 'BOOLEAN',
                            counters: 'STRUCT(events_written BIGINT, events_lost BIGINT)',
                            tool_version: 'VARCHAR', version: 'INTEGER'})
), rows AS (
  SELECT run_id, count(*) AS n FROM events GROUP BY run_id
)
SELECT
  -- Trace run (meta.json run_id; every row of the trace carries it).
  m.run_id,
  -- The trace directory (as given in `traces`, without a trailing /meta.json).
  m.path,
  -- Hostname of the recording machine.
  m.host,
  -- `uname -r` of the recording machine.
  m.kernel,
  -- Start of the run, CLOCK_MONOTONIC ns (the clock of every ts_ns).
  m.start_ns,
  -- Stop of the run, CLOCK_MONOTONIC ns; NULL for a run that was killed.
  m.stop_ns,
  -- Start as UTC wall-clock time (ISO 8601, ns).
  m.start_wall,
  -- Stop as UTC wall-clock time (ISO 8601, ns); NULL for a run that was killed.
  m.stop_wall,
  -- --label k=v pairs of the run (e.g. labels['model']).
  m.labels,
  -- True when the rows were generated (demo, benchmarks, fixtures), not traced.
  m.synthetic,
  -- Kernel events written: meta.json's counter, else counted from the event segments.
  coalesce(m.counters.events_written, coalesce(rows.n, 0)) AS events_written,
  -- True when events_written was counted from the segments (meta.json did not know it).
  m.counters.events_written IS NULL AS events_written_derived,
  -- Events the ring could not take (counted in the kernel); NULL = unknown, never 0.
  m.counters.events_lost AS events_lost,
  -- gpreempt-trace version that wrote the trace.
  m.tool_version,
  -- Trace format version (meta.json `version`).
  m.version AS format_version
FROM m LEFT JOIN rows ON rows.run_id = m.run_id;
