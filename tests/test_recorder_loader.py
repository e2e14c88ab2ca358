"""The loader child (recorder/loader.py): the protocol that carries the Program and the program's file
descriptors, the bpf() map access, and a real load on this machine's ioctl tracepoint path whose
attachments outlive the child that made them, in a recorder that never maps BCC or LLVM."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from gpreempt_trace.errors import GptError
from gpreempt_trace.recorder import ioctls, loader, record_layout
from gpreempt_trace.recorder.ring import RingReader
from gpreempt_trace.recorder.runtime import RecordOptions
from testing.recording import wait_recording

REPO = Path(__file__).resolve().parent.parent
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF needs root")


def test_messages_and_more_fds_than_one_message_carries_cross_the_socket():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pipes = [os.pipe() for _ in range(300)]  # 600 fds: three SCM_RIGHTS messages
    def sender():  # a message larger than the socket's buffer: sent while the other end reads
        loader.send(a, {"nfds": 600, "text": "x" * 300000})
        loader.send_fds(a, [fd for p in pipes for fd in p])
        loader.send(a, "after")

    t = threading.Thread(target=sender)
    t.start()
    try:
        assert loader.recv(b) == {"nfds": 600, "text": "x" * 300000}
        got = loader._recv_fds(b, 600)
        assert loader.recv(b) == "after"
        t.join()
        assert len(got) == 600
        os.write(got[1], b"!")  # the received write end is the pipe's: its read end sees the byte
        assert os.read(pipes[0][0], 1) == b"!"
        for fd in got:
            os.close(fd)
        a.close()
        assert loader.recv(b) is None  # the peer is gone: no message, no exception
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
        b.close()


def test_missing_fds_are_one_line_and_the_received_ones_closed():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    loader.send_fds(a, [r])
    a.close()
    with pytest.raises(GptError) as e:
        loader._recv_fds(b, 2)
    assert str(e.value) == ("the BPF loader's file descriptors did not arrive (1 of 2): raise the open-file limit "
                            "(ulimit -n) and run record again")
    os.close(r)
    os.close(w)
    b.close()


@pytest.mark.parametrize("text, n", [("0-1\n", 2), ("0\n", 1), ("0,2-5\n", 6), ("0-3,8-11\n", 12)])
def test_possible_cpus(tmp_path, text, n):
    (tmp_path / "possible").write_text(text)
    assert loader.possible_cpus(str(tmp_path / "possible")) == n


@root_only
@pytest.mark.bpf
def test_a_loaded_program_outlives_its_loader_and_records_through_the_handed_fds(tmp_path):
    opts = RecordOptions(output=str(tmp_path / "unused"), probes="ioctl", kfd_path="/dev/null", tgids=(os.getpid(),))
    ld = loader.Loader(opts)
    prog = ld.plan()
    assert prog.rows[0]["status"] == "planned" and "-DGPT_FILTER_TGID" in prog.cflags
    bpf = ld.load(prog)
    try:
        assert ld.proc.returncode == 0  # the child exited; what it attached lives on through our fds
        assert prog.rows[0]["status"] == "attached"  # the child's attach outcome
        assert set(bpf.maps) == {"gpt_events", "gpt_lost", "gpt_tgids", "gpt_ioctl_known"}
        assert bpf.links and all(kind in ("tracepoint", "kprobe") for kind, _t, _fd in bpf.links)
        assert bpf.loader["pid"] == ld.proc.pid and bpf.loader["peak_rss_bytes"] > 0 and bpf.loader["seconds"] > 0
        bpf.map("gpt_tgids").set(os.getpid(), 1)  # the -p filter, through bpf(BPF_MAP_UPDATE_ELEM)
        ring = RingReader(bpf.map("gpt_events").fd, opts.ringbuf_mb << 20, record_layout.numpy_dtype())
        with open("/dev/null", "rb") as f:
            for _ in range(3):
                with pytest.raises(OSError):
                    fcntl.ioctl(f, ioctls.GET_VERSION, bytearray(8))
        out = np.zeros(16, record_layout.numpy_dtype())
        assert ring.read_into(out) == 3
        assert set(out["tgid"][:3]) == {os.getpid()}
        assert bpf.lost() == 0
        assert bpf.misses() is not None
        ring.close()
    finally:
        bpf.close()
    for fd in [m.fd for m in bpf.maps.values()] + list(bpf.progs.values()):
        with pytest.raises(OSError):
            os.fstat(fd)


@root_only
@pytest.mark.bpf
def test_the_recorder_never_maps_bcc_or_llvm_and_meta_names_its_loader(tmp_path):
    trace = tmp_path / "t"
    p = subprocess.Popen([sys.executable, "-m", "gpreempt_trace.cli.main", "record", "-o", str(trace), "--probes", "ioctl",
                          "--kfd-path", "/dev/null", "--", "sleep", "30"], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_recording(trace, p)
        libs = {Path(ln.split()[5]).name for ln in Path(f"/proc/{p.pid}/maps").read_text().splitlines() if len(ln.split()) > 5}
        assert not [lib for lib in libs if lib.startswith(("libbcc", "libLLVM", "libclang"))]
        meta = json.loads((trace / "meta.json").read_text())
        ld = meta["recorder"]["loader"]
        assert sorted(ld) == ["peak_rss_bytes", "pid", "seconds"] and ld["pid"] != p.pid
        assert not Path(f"/proc/{ld['pid']}").exists() or ld["pid"] not in _children(p.pid)  # exited, reaped
        assert [r["status"] for r in meta["attach_plan"]] == ["attached"]
    finally:
        p.send_signal(signal.SIGINT)
        _out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err  # record exits with its command's status: sleep, stopped by SIGTERM
    assert "recorded 0 events in 0 segments, 0 lost" in err


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
