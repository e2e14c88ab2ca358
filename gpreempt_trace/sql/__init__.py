"""DuckDB over traces: the prelude's views, the query modules of queries/, and their linter."""
