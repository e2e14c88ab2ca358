"""KFD debugfs (mqds, hqds, rls): parsers, register/MQD decoders, capture reading and import.

    from gpreempt_trace.debugfs import parse_capture
    rows, problems = parse_capture(capture)      # one snapshot's rows, joined (tgid on HQDs)
"""
from __future__ import annotations

from pathlib import Path

from .attribute import attribute
from .capture import Capture, collect_imports, ensure_live, read_capture_dir, read_live
from .parse import KINDS, NotAKfdDump, Parsed, parse, parse_hqds, parse_mqds, parse_rls, sniff

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
MI308X_SAMPLE = SAMPLES_DIR / "mi308x"  # 00-baseline, 01-during, 02-during, 03-after (mqds/hqds/rls .gz)


def parse_capture(cap: Capture) -> tuple[list[dict], list[str]]:
    """Parse every file of one capture; rows carry source_file; HQDs/packets get their tgid joined."""
    rows: list[dict] = []
    problems: list[str] = []
    for kind in KINDS:
        if kind not in cap.files:
            continue
        text, name = cap.files[kind]
        res = parse(kind, text, name)
        for r in res.rows:
            r["source_file"] = kind
        rows.extend(res.rows)
        problems.extend(res.warning_lines())
    return attribute(rows), problems


__all__ = [
    "Capture", "KINDS", "MI308X_SAMPLE", "NotAKfdDump", "Parsed", "SAMPLES_DIR", "attribute", "collect_imports",
    "ensure_live", "parse", "parse_capture", "parse_hqds", "parse_mqds", "parse_rls", "read_capture_dir", "read_live", "sniff",
]
