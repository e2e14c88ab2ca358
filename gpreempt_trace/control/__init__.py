"""The preemption controller: take an offline process's GPU queues off and put them back, on request.

- `Client(socket)`: preempt() / resume() / status() / `with client.preempted(): ...` (client.py)
- `serve(PreemptOptions)`: the service behind `gpreempt-trace preempt serve` (service.py)
- `run(RunOptions)`: one-shot cycles (`preempt run`)
- schemes.SchemeA (KFD debugger) / SchemeB (kernel/ series ioctls) over an injectable io.Io
See docs/controller.md.
"""
from .client import Client, ControlError
from .service import PreemptOptions, RunOptions, RunResult, default_socket, run, serve

__all__ = ["Client", "ControlError", "PreemptOptions", "RunOptions", "RunResult", "default_socket", "run", "serve"]
