"""Generated code and docs: the C headers in tracers/, the CLI and schema reference pages."""
