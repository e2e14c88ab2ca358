"""Where debugfs text comes from: the live /sys/kernel/debug/kfd, a saved capture folder (files
mqds, hqds, rls, optionally .gz; any may be missing), or a pile of timestamped captures such as the
PoC saved (baseline_hqd.txt, snapshot_mqd_3_1706600000.txt, final_hqd.txt, active_mqds_*.txt, ...).
"""
from __future__ import annotations

import gzip
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from ..errors import GptError, PermissionProblem
from .parse import KINDS, sniff

LIVE_DIR = Path("/sys/kernel/debug/kfd")
DEBUGFS_MOUNT = Path("/sys/kernel/debug")


@dataclass
class Capture:
    """The texts of one snapshot: kind -> (text, display name)."""

    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    phase: Optional[str] = None
    ts_ns: Optional[int] = None
    label: str = ""


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise GptError(f"{path} is not a readable gzip file ({e})", "give the plain text file or a complete .gz") from None
    return data.decode("utf-8", errors="replace")


def _file_in(d: Path, kind: str) -> Optional[Path]:
    for name in (kind, kind + ".gz", kind + ".txt"):
        if (d / name).is_file():
            return d / name
    return None


def is_capture_dir(d: Path) -> bool:
    return d.is_dir() and any(_file_in(d, k) for k in KINDS)


def read_capture_dir(d: Path) -> Capture:
    """A folder holding files named mqds, hqds, rls (plain, .gz or .txt); missing ones are skipped."""
    if not d.is_dir():
        raise GptError(f"{d} is not a directory", "give --debugfs a folder holding files named mqds, hqds, rls")
    cap = Capture(label=str(d))
    for kind in KINDS:
        f = _file_in(d, kind)
        if f is not None:
            cap.files[kind] = (_read_text(f), str(f))
    if not cap.files:
        raise GptError(f"{d} holds none of the files mqds, hqds, rls", "give a saved capture of /sys/kernel/debug/kfd")
    return cap


def ensure_live(d: Path = LIVE_DIR) -> Path:
    """The live KFD debugfs folder; mounts debugfs first when it is not mounted (needs root)."""
    if d.is_dir():
        return d
    if d == LIVE_DIR and DEBUGFS_MOUNT.is_dir() and not os.path.ismount(DEBUGFS_MOUNT):
        subprocess.run(["mount", "-t", "debugfs", "none", str(DEBUGFS_MOUNT)], capture_output=True, check=False)
        if d.is_dir():
            return d
    raise GptError(
        f"{d} does not exist (no amdgpu/KFD driver with debugfs on this machine)",
        "run on the GPU host as root, or read a saved capture with --debugfs DIR",
    )


def read_live(d: Path) -> Capture:
    cap = Capture(label=str(d))
    for kind in KINDS:
        f = d / kind
        try:
            cap.files[kind] = (f.read_text(errors="replace"), str(f))
        except FileNotFoundError:
            continue
        except PermissionError:
            raise PermissionProblem(f"cannot read {f} (permission denied)", "run as root (debugfs is root-only)") from None
    return cap


# -- importing a pile of timestamped captures ---------------------------------------------------------
_KIND_WORD = re.compile(r"(mqds?|hqds?|rls|runlist)", re.I)
_EPOCH = re.compile(r"(?<!\d)(1\d{9})(?:\.(\d{1,9}))?(?!\d)")  # epoch seconds 2001..2286
_NOT_DUMPS = re.compile(r"(^|[_.-])(ps|queue_info|summary|output|model_output)([_.-]|$)", re.I)


def _phase_of(name: str) -> str:
    low = name.lower()
    if "baseline" in low or low.startswith("base") or "before" in low:
        return "baseline"
    if any(w in low for w in ("final", "after", "post")):
        return "after"
    return "during"


def _kind_of(path: Path, text: str) -> Optional[str]:
    m = _KIND_WORD.search(path.name)
    if m:
        w = m.group(1).lower()
        return "rls" if w in ("rls", "runlist") else ("mqds" if w.startswith("mqd") else "hqds")
    return sniff(text)


def _ts_of(path: Path) -> int:
    m = _EPOCH.search(path.name)
    if m:
        frac = (m.group(2) or "").ljust(9, "0")
        return int(m.group(1)) * 10**9 + int(frac)
    return path.stat().st_mtime_ns


_PHASE_ORDER = {"baseline": 0, "during": 1, "after": 2}


def collect_imports(paths: Iterable[str | os.PathLike]) -> tuple[list[Capture], list[str]]:
    """Group files into snapshots. A path is a capture folder (files mqds/hqds/rls), a folder of
    capture folders (each a snapshot; phase from its name), a folder of timestamped files, or a file.
    Files whose name differs only in the kind word (mqd/hqd/rls) form one snapshot. Returns the
    snapshots in order (baseline, during by time, after) and notes about skipped files."""
    notes: list[str] = []
    groups: dict[tuple, Capture] = {}
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise GptError(f"{p} does not exist", "give capture files or folders")
        if is_capture_dir(p):
            _add_dir(groups, p)
            continue
        if p.is_dir():
            subdirs = sorted(x for x in p.iterdir() if is_capture_dir(x))
            for s in subdirs:
                _add_dir(groups, s)
            files = sorted(x for x in p.iterdir() if x.is_file())
            for f in files:
                if _NOT_DUMPS.search(f.stem) or not (_KIND_WORD.search(f.name) or f.suffix in (".txt", ".gz", "")):
                    notes.append(f"skipped {f} (not a debugfs capture by its name)")
                    continue
                text = _read_text(f)
                kind = _kind_of(f, text)
                if kind is None:
                    notes.append(f"skipped {f} (not a KFD debugfs dump)")
                    continue
                _add_file(groups, f, kind, text)
            continue
        text = _read_text(p)
        kind = _kind_of(p, text)
        if kind is None:
            raise GptError(f"{p} is not a KFD debugfs dump (mqds, hqds or rls)", "name the file after its kind, e.g. baseline_hqds.txt, or give a capture folder")
        _add_file(groups, p, kind, text)
    if not groups:
        raise GptError("no debugfs captures found in " + ", ".join(map(str, paths)), "give files like baseline_hqds_*.txt or folders holding mqds/hqds/rls")
    caps = sorted(groups.values(), key=lambda c: (_PHASE_ORDER.get(c.phase or "during", 1), c.ts_ns or 0, c.label))
    return caps, notes


def _add_dir(groups: dict, d: Path) -> None:
    cap = read_capture_dir(d)
    cap.phase = _phase_of(d.name)
    cap.ts_ns = min(Path(name).stat().st_mtime_ns for _, name in cap.files.values())
    key = ("dir", str(d))
    groups[key] = cap


def _add_file(groups: dict, f: Path, kind: str, text: str) -> None:
    stem = re.sub(r"\.(txt|gz|log)$", "", f.name, flags=re.I)
    key = ("file", str(f.parent), _KIND_WORD.sub("", stem).lower())
    cap = groups.setdefault(key, Capture(label=str(f.parent / key[2]), phase=_phase_of(f.name)))
    if kind in cap.files:
        raise GptError(f"{f} and {cap.files[kind][1]} are both {kind} of one capture", "keep one file per kind and timestamp")
    cap.files[kind] = (text, str(f))
    ts = _ts_of(f)
    cap.ts_ns = ts if cap.ts_ns is None else min(cap.ts_ns, ts)
