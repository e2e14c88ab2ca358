"""The preemption controller: take an offline process's GPU queues off and put them back, on request.

- `Client(socket)`: preempt() / resume() / status() / `with client.preempted(): ...` (client.py)
- `serve(PreemptOptions)`: the service behind `gpreempt-trace preempt serve` (service.py)
- `run(RunOptions)`: one-shot cycles (`preempt run`)
- schemes.SchemeA (KFD debugger) / SchemeB (kernel/ series ioctls) over an injectable io.Io
See docs/controller.md.
"""
from __future__ import annotations

import importlib

# names -> the module holding them, imported on first use (PEP 562): the watchdog process
# (`python -m gpreempt_trace.control.watchdog`, started by every controller) then imports only its own
# few modules, not the client and the service (60 ms here, seconds under QEMU TCG, per controller start)
_WHERE = {"Client": "client", "ControlError": "client", "PreemptOptions": "service", "RunOptions": "service",
          "RunResult": "service", "default_socket": "service", "run": "service", "serve": "service"}
__all__ = list(_WHERE)


def __getattr__(name: str):
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value
