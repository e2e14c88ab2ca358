"""A real controller process for the safety tests: `preempt serve` with REAL ptrace (SysIo) and a
scripted KFD (no /dev/kfd on this VM). Every ioctl is appended to LOG as `name hex-bytes` the moment
it is issued, so a test that kills this process at any step sees exactly what was issued.

    python tests/testing/control_child.py LOG '{"pid": ..., "socket": ..., "scheme": "A", ...}' [fail-spec]

fail-spec `raise-after-suspend`: the scripted KFD raises a Python exception on the first debugger
event after a SUSPEND (the service loop's exception path). `block-in-enable`: DBG_TRAP ENABLE (the
target is ptrace-seized by then) is logged and never returns: the process sits in the middle of attach
until it is killed.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpreempt_trace.control import io as P
from gpreempt_trace.control import service


def main() -> int:
    log = open(sys.argv[1], "a", buffering=1)
    opts = json.loads(sys.argv[2])
    fail = sys.argv[3] if len(sys.argv) > 3 else ""
    state = {"wr": None, "suspended": False}

    def kfd(name, arg, refs):
        log.write(f"{name} {bytes(arg).hex()}\n")
        op = name.partition(":")[2]
        if op == "ENABLE":
            state["wr"] = arg.enable.dbg_fd
            if fail == "block-in-enable":
                threading.Event().wait()  # until SIGKILL
        if op in ("SUSPEND_QUEUES", "RESUME_QUEUES") or name.endswith("PREEMPT_QUEUES"):
            if op == "SUSPEND_QUEUES" and fail == "raise-after-suspend":
                os.write(state["wr"], b".")  # "KFD raised an event"
                state["suspended"] = True
            return len(refs[0]) if refs else 0
        if op == "QUERY_DEBUG_EVENT" and state["suspended"]:
            raise RuntimeError("injected failure in the service loop")
        if name == "AMDKFD_IOC_RESUME_QUEUES" and arg.pid == 0:
            raise P.oserror(22)  # scheme B probe: the ioctls exist
        return P.default_answer(name, arg, 17)

    sio = P.ScriptedIo(kfd, ptrace_io=P.SysIo("/dev/null"))
    why = service.serve(service.PreemptOptions(**opts), io=sio, watchdog=opts.get("scheme") == "B",
                        on_ready=lambda st: print("READY", flush=True))
    print(f"STOPPED {why}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
