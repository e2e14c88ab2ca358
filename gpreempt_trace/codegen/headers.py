"""The generated C headers in tracers/, each rendered from its one Python source:

- gpt_event.h        the ring-buffer record (record_layout.py, from schema.py)
- kfd_uapi.h         KFD ioctl argument offsets and request numbers (uapi.py)
- kfd_tracepoints.h  the kfd:* tracepoint handlers (recorder/tracepoints.py, from kernel/patches)

`python -m gpreempt_trace.codegen.headers` (make codegen) rewrites them; `--check` exits 1 naming any that is
stale. tests/test_generated.py fails when a checked-in header differs from its source.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


def headers() -> dict[Path, Callable[[], str]]:
    """{checked-in path: function rendering its text}."""
    from ..recorder import record_layout
    from ..contracts import resources, uapi
    from ..recorder import tracepoints

    return {record_layout.HEADER_PATH: record_layout.c_header,
            resources.tracers() / uapi.HEADER_NAME: uapi.c_header,
            tracepoints.header_path(): tracepoints.render}


def stale() -> list[Path]:
    return [p for p, render in headers().items() if not p.is_file() or p.read_text() != render()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--check"]:
        for p in stale():
            print(f"{p} is stale: run `make codegen` (python -m gpreempt_trace.codegen.headers)", file=sys.stderr)
        return 1 if stale() else 0
    for p, render in headers().items():
        p.write_text(render())
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
