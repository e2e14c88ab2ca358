"""A trace directory and its format: the schema, the segment writer, the reader, markers, processes."""
