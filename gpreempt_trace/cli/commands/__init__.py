"""One module per CLI command, each defining `command` (see cli.py)."""
