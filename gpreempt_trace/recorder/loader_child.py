"""The loader child (recorder/loader.py): `python -m gpreempt_trace.recorder.loader_child FD`. It reads the
RecordOptions from the socket FD, builds the Program (BTF offsets, attach plan) and sends it; on "load" it
compiles and loads it with BCC, attaches by trying (runtime.attach_probes), sends the attach outcome and
the fds of the recorder's maps, every program and every attachment, and exits without BCC's clean-up
(which would detach them: the recorder's fds keep them alive)."""
from __future__ import annotations

import os
import signal
import socket
import sys
import warnings

from ..errors import GptError
from .loader import PR_SET_PDEATHSIG, RECORDER_MAPS, LIBC, recv, send, send_fds
from .runtime import Recorder, attach_probes


def _caught(fn):
    """Run fn with warnings recorded; the reply dict carries its result or its GptError."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            out = fn()
        except GptError as e:
            out = {"error": e}
    return dict(out, warnings=[(w.category, str(w.message)) for w in seen])


def _fds_of(bpf) -> dict:
    """The fds to hand over: the recorder's maps, every loaded program, every attachment."""
    maps = {}
    for name in RECORDER_MAPS:
        try:
            maps[name] = bpf[name.encode()].map_fd
        except KeyError:  # not in this build of the program (e.g. gpt_pidns without GPT_FOLLOW_PIDNS)
            pass
    progs = {name.decode(): fn.fd for name, fn in bpf.funcs.items()}
    links = [("tracepoint", tp.decode(), fd) for tp, fd in bpf.tracepoint_fds.items()]
    links += [("raw_tracepoint", tp.decode(), fd) for tp, fd in bpf.raw_tracepoint_fds.items()]
    links += [("kprobe", f"{ev.decode()}:{fn.decode()}", fd) for ev, by_fn in bpf.kprobe_fds.items() for fn, fd in by_fn.items()]
    return {"maps": list(maps), "progs": list(progs), "links": [(k, t) for k, t, _ in links],
            "fds": list(maps.values()) + list(progs.values()) + [fd for _k, _t, fd in links]}


def child_main(fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the recorder handles Ctrl-C and SIGTERM, and ends this child
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    sock = socket.socket(fileno=fd)
    opts = recv(sock)
    if opts is None:
        return 1
    rec = Recorder(opts)
    msg = _caught(lambda: {"program": rec.build()})
    send(sock, msg)
    if "error" in msg or recv(sock) != "load":
        return 0
    prog = msg["program"]
    held = {}

    def load():
        bpf = rec._compile(prog)
        attach_probes(bpf, prog)
        held["bpf"] = bpf  # its fds stay open until they are handed over
        out = _fds_of(bpf)
        held["fds"] = out.pop("fds")
        return dict(out, nfds=len(held["fds"]), program=prog)

    msg = _caught(load)
    send(sock, msg)
    if "fds" in held:
        send_fds(sock, held["fds"])
    return 0


if __name__ == "__main__":
    sys.stdout.flush()
    # os._exit: no BCC clean-up at exit (it would detach what was handed over; the recorder's fds keep it anyway)
    os._exit(child_main(int(sys.argv[1])))
