"""Driving a live `record` from a test: wait until it records (its meta.json says since when)."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


def wait_recording(trace: Path, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    """Until the recorder's probes are attached and its filters set (meta.json recorder.recording_since_ns)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if "recording_since_ns" in json.loads((trace / "meta.json").read_text()).get("recorder", {}):
                return
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise AssertionError(f"recorder exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("recorder did not start")


def patch_loader_child(monkeypatch, tmp_path: Path, code: str) -> None:
    """Run `code` at the start of the recorder's loader child (recorder/loader.py), which plans and
    compiles the program: a monkeypatch of either must be made there. A sitecustomize.py on the
    PYTHONPATH the child inherits, acting only in the child."""
    import os

    site = tmp_path / "loader_child_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nif 'gpreempt_trace.recorder.loader_child' in sys.orig_argv:\n"
                                           + "".join(f"    {ln}\n" for ln in code.splitlines()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
