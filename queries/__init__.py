"""DuckDB SQL modules (file path = module name), shipped inside the wheel as gpreempt_trace.queries."""
