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
