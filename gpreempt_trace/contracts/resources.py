"""Where the package's data files live, installed or not.

The repo keeps them in top-level folders (tracers/: BPF C, queries/: SQL modules, kernel/: the scheme-B
uapi file); pyproject.toml maps those folders into the package (`package-dir`), so a wheel carries them
as `gpreempt_trace.tracers`, `gpreempt_trace.queries`, `gpreempt_trace.kernel`, and an editable install
resolves the same names to the repo folders. Code finds them only through this module.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _folder(package: str) -> Path:
    # a regular package on disk gives a Path; a namespace package a MultiplexedPath (one entry here)
    root = files(package)
    return Path(str(root._paths[0])) if hasattr(root, "_paths") else Path(str(root))


def tracers() -> Path:
    """The BPF C sources and headers (tracers/ in the repo)."""
    return _folder("gpreempt_trace.tracers")


def queries() -> Path:
    """The DuckDB SQL modules (queries/ in the repo)."""
    return _folder("gpreempt_trace.queries")


def scheme_b_uapi() -> Path:
    """kernel/uapi_scheme_b.json: the scheme-B ioctl layouts of the kernel/ patch series."""
    return _folder("gpreempt_trace.kernel") / "uapi_scheme_b.json"
