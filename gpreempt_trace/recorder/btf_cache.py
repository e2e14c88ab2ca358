"""Where built amdgpu BTF files live (`btf build` writes them, the planner looks for them): a cache keyed by
kernel release and module version, each BTF with a JSON sidecar naming what it was built for; and
`Located`, the answer to "where do this run's struct offsets come from" (meta.json recorder.btf_source)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import dkms

MODULE = "amdgpu"
FORMAT = "gpreempt-trace module btf 1"
SYS_VMLINUX = Path("/sys/kernel/btf/vmlinux")
CACHE_ENV = "GPT_BTF_CACHE"
# ordered: the system-wide cache (the recorder runs as root) first, the user's second
CACHE_DIRS = (Path("/var/cache/gpreempt-trace/btf"), Path("~/.cache/gpreempt-trace/btf"))


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    for d in CACHE_DIRS:
        d = d.expanduser()
        probe = d if d.exists() else next((p for p in d.parents if p.exists()), d)
        if os.access(probe, os.W_OK):
            return d
    return CACHE_DIRS[-1].expanduser()


def cache_roots() -> list[Path]:
    env = os.environ.get(CACHE_ENV)
    return [Path(env)] if env else [d.expanduser() for d in CACHE_DIRS]


def module_key(version: str | None) -> str:
    return f"{MODULE}-{version}" if version else f"{MODULE}-in-tree"


def cache_path(release: str, version: str | None, root: Path | None = None) -> Path:
    return (root or cache_root()) / release / f"{module_key(version)}.btf"


def sidecar(btf_file: Path) -> Path:
    return btf_file.with_name(btf_file.name + ".json")


def read_sidecar(btf_file: Path) -> dict | None:
    p = sidecar(btf_file)
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def build_command(info=None, root: str | Path = "/") -> str:
    """The exact `btf build` command for this host (what doctor and the recorder print); `root` is where
    the host's files are read from (a fixture tree in tests); the command names the host's own paths."""
    info = info or dkms.module_info(MODULE, root=root)
    release = info.kernel_release or os.uname().release
    r = Path(root)
    parts = ["gpreempt-trace btf build"]
    src = dkms.source_for(info, root=root) if info.loaded else None
    if src is None:
        cand = r / f"lib/modules/{release}/source"
        if (cand / "drivers/gpu/drm/amd/amdkfd").is_dir():
            src = cand
    if src is not None:
        src = Path("/") / Path(src).relative_to(r) if Path(src).is_relative_to(r) else src
    parts.append(f"--source {src}" if src else "--source <the amdgpu source: kernel tree or /usr/src/amdgpu-<version>>")
    parts.append(f"--kernel-build /lib/modules/{release}/build")
    parts.append(f"--base-btf {SYS_VMLINUX}")
    return " ".join(parts)


@dataclass
class Located:
    """Where the module's struct layouts come from (meta.json attach_plan's btf_source, doctor)."""

    kind: str  # module (its own /sys/kernel/btf/amdgpu) | dir (--btf DIR) | cache (built) | none
    path: str | None
    detail: str
    built: dict | None = None  # the sidecar of a built BTF
    fix: str | None = None  # kind none: what brings the offsets back (the exact build command)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "detail": self.detail, "fix": self.fix,
                "built_for": ({k: self.built.get(k) for k in ("kernel_release", "module", "source", "from_dwarf", "built_at")}
                              if self.built else None)}


def find_cached(release: str, info) -> tuple[Path | None, str | None]:
    """(built BTF for this release and module, None) or (None, why none fits)."""
    want = module_key(info.version)
    others = []
    for root in cache_roots():
        d = root / release
        p = d / f"{want}.btf"
        if p.is_file():
            meta = read_sidecar(p) or {}
            m = meta.get("module") or {}
            for k in ("srcversion", "build_id"):
                if m.get(k) and getattr(info, k, None) and m[k] != getattr(info, k):
                    return None, f"the built BTF {p} is for another build of {MODULE} ({k} {m[k]}, loaded: {getattr(info, k)})"
            return p, None
        if d.is_dir():
            others += [q.name for q in sorted(d.glob(f"{MODULE}-*.btf"))]
    if others:
        return None, (f"the cache has {', '.join(others)} for {release}, not {want}.btf (the loaded {MODULE} "
                      f"{'version ' + info.version if info.version else 'is in-tree'})")
    return None, None
