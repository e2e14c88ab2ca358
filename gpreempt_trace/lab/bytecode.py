"""Write Python bytecode on the host before a lab guest boots.

The guest mounts this host's / read-only and runs with PYTHONDONTWRITEBYTECODE=1 (lab/initramfs.py), so
a module with no .pyc on the host is compiled anew by every interpreter the guest starts: 2.3 s of a
guest start for this package's own modules, against 0.27 s with its bytecode at hand (docs/controller.md,
Soak: the cell cost). Only missing or stale .pyc files are written; one made stale by a later edit is seen
as such (source mtime and size) and compiled in memory, as without this.
"""
from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path


def precompile(*dirs: Path) -> str:
    """Compile what is missing or stale under `dirs` (default: this package). Returns a line for the log:
    the time taken, and what did not compile (a read-only install, a syntax error); never raises."""
    import compileall

    dirs = dirs or (Path(__file__).resolve().parents[1],)
    t = time.monotonic()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ok = all([compileall.compile_dir(str(d), quiet=1) for d in dirs])
    return f"{time.monotonic() - t:.1f} s" + ("" if ok else f" (some modules did not compile: {buf.getvalue().strip()[-300:]})")
