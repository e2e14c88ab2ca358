"""Documentation generated from the schema and the CLI stays current (`make docs` regenerates)."""
from gpreempt_trace.codegen import docgen


def test_trace_format_tables_current():
    assert docgen.FORMAT_DOC.read_text() == docgen.render_format_doc(), "run `make docs`"
