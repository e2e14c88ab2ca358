"""The `gpreempt-trace` command line: a thin click layer over gpreempt_trace.api."""
