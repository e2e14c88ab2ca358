"""The ioctl path keeps one in-flight slot per thread (made by its first KFD ioctl, freed when the thread
exits): with the slot table full, a call is counted as lost, to the call; a slot freed by an exiting
thread is reused. Exact: recorded + lost = issued."""
from __future__ import annotations

import json
import os
import sys

import pytest
from click.testing import CliRunner

from gpreempt_trace.cli.main import main
from testing.recording import patch_loader_child

# thread A: 5 calls, then stays alive (holding the only slot) while the main thread makes 5 calls (lost);
# A exits; thread C makes 5 calls in the slot A freed
THREADS = """
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open('/dev/null', os.O_RDWR)
buf = (ctypes.c_uint8 * 8)()
def calls(n):
    for _ in range(n):
        libc.ioctl(fd, ctypes.c_ulong(0x80084B01), buf)
held, done = threading.Event(), threading.Event()
def a():
    calls(5)
    held.set()
    done.wait()
t = threading.Thread(target=a); t.start(); held.wait()
calls(5)
done.set(); t.join()
c = threading.Thread(target=calls, args=(5,)); c.start(); c.join()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="recording needs root")
def test_full_slot_table_counts_each_call_lost_and_an_exited_thread_frees_its_slot(tmp_path, monkeypatch):
    patch_loader_child(monkeypatch, tmp_path, "from gpreempt_trace.recorder import ioctls\nbase = ioctls.bpf_cflags\n"
                       "ioctls.bpf_cflags = lambda: [*base(), '-DGPT_IOCTL_INFLIGHT=1']")  # the child builds the program
    trace = tmp_path / "t"
    res = CliRunner().invoke(main, ["record", "-o", str(trace), "--probes", "ioctl", "--kfd-path", "/dev/null", "--",
                                    sys.executable, "-c", THREADS])
    assert res.exit_code == 0, res.output
    assert "-DGPT_IOCTL_INFLIGHT=1" in json.loads((trace / "meta.json").read_text())["recorder"]["cflags"]
    c = json.loads((trace / "meta.json").read_text())["counters"]
    assert c["events_missed"] == 0
    assert (c["events_written"], c["events_lost"]) == (10, 5)
