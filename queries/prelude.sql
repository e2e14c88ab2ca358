-- Plain-DuckDB setup: the views `events`, `markers`, `snapshots`, `runs` over trace directories,
-- without the tool. One line (see docs/queries.md):
--   duckdb -cmd "SET VARIABLE traces = ['path/to/trace', 'runs/*']" -cmd ".read queries/prelude.sql"
-- Each entry of `traces` is a trace directory (or a glob of them, e.g. a hive-style runs/* folder).
-- Every table folder of a trace written by the tool holds `schema.parquet` (zero rows, full
-- schema), so the globs below always match.
CREATE VIEW events AS
SELECT * FROM read_parquet(list_transform(getvariable('traces'), lambda t: t || '/events/*.parquet'), union_by_name = true);
CREATE VIEW markers AS
SELECT * FROM read_parquet(list_transform(getvariable('traces'), lambda t: t || '/markers/*.parquet'), union_by_name = true);
CREATE VIEW snapshots AS
SELECT * FROM read_parquet(list_transform(getvariable('traces'), lambda t: t || '/snapshots/*.parquet'), union_by_name = true);
CREATE VIEW runs AS
SELECT run_id, host, kernel, start_ns, stop_ns, start_wall, stop_wall, labels, synthetic,
       counters.events_written AS events_written, counters.events_lost AS events_lost,
       tool_version, version AS format_version
FROM read_json(list_transform(getvariable('traces'), lambda t: t || '/meta.json'), union_by_name = true,
               columns = {run_id: 'VARCHAR', host: 'VARCHAR', kernel: 'VARCHAR', start_ns: 'BIGINT',
                          stop_ns: 'BIGINT', start_wall: 'VARCHAR', stop_wall: 'VARCHAR',
                          labels: 'MAP(VARCHAR, VARCHAR)', synthetic: 'BOOLEAN',
                          counters: 'STRUCT(events_written BIGINT, events_lost BIGINT)',
                          tool_version: 'VARCHAR', version: 'INTEGER'});
