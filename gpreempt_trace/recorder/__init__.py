"""The eBPF recorder: KFD function probes (plan.py, tracers/kfd.bpf.c), the portable ioctl tracepoint
path (ioctls.py, tracers/ioctl.bpf.c) and the runtime that streams both into a trace (runtime.py).

    from gpreempt_trace.recorder import record
    res = record("trace_dir", kfd_path="/dev/null", cmd=["python", "w.py"])
"""
from __future__ import annotations


def record(output: str, **options):
    """Record into OUTPUT; keyword options are the fields of runtime.RecordOptions. Returns a RecordResult."""
    from .runtime import RecordOptions, Recorder

    return Recorder(RecordOptions(output=output, **options)).run()
