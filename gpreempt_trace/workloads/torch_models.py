"""Online inference and offline training loops on small torch models.

On a ROCm build of torch the GPU is `cuda`; each process then creates its own KFD queues (the
thing experiment 1 counts). A `stream_priority` maps to a HIP/CUDA stream priority, which ROCm
turns into the KFD queue priority of that stream's hardware queue.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional

from ..errors import GptError
from ..trace import TraceWriter

MODELS = ("cnn", "mlp", "transformer")


def _torch():
    try:
        import torch
    except ImportError:
        raise GptError("torch is not installed", "run `make setup` (installs the CPU wheel) or install a ROCm build of torch") from None
    return torch


def build_model(name: str, torch):
    nn = torch.nn
    if name == "cnn":  # a small ResNet-like block stack, 3x64x64 input
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        ), (3, 64, 64)
    if name == "mlp":
        return nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 1024)), (1024,)
    if name == "transformer":
        layer = nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, batch_first=True)
        return nn.TransformerEncoder(layer, num_layers=2), (64, 256)
    raise GptError(f"unknown model {name!r}", "choose one of " + ", ".join(MODELS))


def pick_device(device: str, torch) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GptError("--device cuda: torch sees no GPU", "use --device cpu, or a ROCm/CUDA build of torch on a GPU machine")
    if device not in ("cpu", "cuda"):
        raise GptError(f"unknown device {device!r}", "choose auto, cpu or cuda")
    return device


@dataclass
class WorkloadResult:
    role: str
    model: str
    device: str
    iterations: int
    latencies_ns: list[int] = field(default_factory=list)

    def summary(self) -> str:
        lat = sorted(self.latencies_ns)
        if not lat:
            return f"{self.role} {self.model} on {self.device}: 0 iterations"
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6  # noqa: E731
        return (f"{self.role} {self.model} on {self.device}: {self.iterations} iterations, "
                f"p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, mean {statistics.fmean(lat) / 1e6:.2f} ms")


class _Markers:
    """Markers into a trace another process owns (the recorder), or nowhere."""

    def __init__(self, trace: Optional[str]):
        self.tw = TraceWriter.join(trace, prefix=f"wl{os.getpid()}") if trace else None

    def add(self, **row) -> None:
        if self.tw:
            self.tw.writer("markers").append_rows([dict(row, source="workload", tgid=os.getpid())])

    def close(self) -> None:
        if self.tw:
            self.tw.close()


def _stream(torch, device: str, priority: str):
    if device != "cuda" or priority == "normal":
        return None
    lo, hi = torch.cuda.Stream.priority_range()  # (least, greatest); greatest is numerically lowest
    return torch.cuda.Stream(priority=hi if priority == "high" else lo)


def run(role: str, model: str = "mlp", duration_s: float = 10.0, rate_hz: float = 20.0, batch: int = 8,
        device: str = "auto", stream_priority: str = "normal", trace: Optional[str] = None,
        max_iterations: Optional[int] = None) -> WorkloadResult:
    """role 'online': one request of `batch` samples every 1/rate_hz s, timed; role 'offline':
    back-to-back training steps. Stops after duration_s or max_iterations."""
    if role not in ("online", "offline"):
        raise GptError(f"unknown role {role!r}", "choose online or offline")
    torch = _torch()
    dev = pick_device(device, torch)
    net, shape = build_model(model, torch)
    net = net.to(dev)
    stream = _stream(torch, dev, stream_priority)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    x = torch.randn((batch, *shape), device=dev)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3) if role == "offline" else None
    if role == "online":
        net.eval()
    marks = _Markers(trace)
    res = WorkloadResult(role, model, dev, 0)
    marks.add(ts_ns=time.monotonic_ns(), kind="workload_start", label=f"{role} {model} {dev}")
    end = time.monotonic() + duration_s
    period = 1.0 / rate_hz if role == "online" and rate_hz > 0 else 0.0
    next_t = time.monotonic()
    try:
        while time.monotonic() < end and (max_iterations is None or res.iterations < max_iterations):
            if period:
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_t += period
            seq = res.iterations
            t0 = time.monotonic_ns()
            if role == "online":
                marks.add(ts_ns=t0, kind="request_start", seq=seq)
            ctx = torch.cuda.stream(stream) if stream is not None else _nullcontext()
            with ctx:
                if opt is None:
                    with torch.no_grad():
                        net(x)
                else:
                    opt.zero_grad()
                    net(x).float().pow(2).mean().backward()
                    opt.step()
            sync()
            t1 = time.monotonic_ns()
            res.latencies_ns.append(t1 - t0)
            res.iterations += 1
            marks.add(ts_ns=t1, kind="request_end" if role == "online" else "step_done", seq=seq, value_ns=t1 - t0)
    finally:
        marks.add(ts_ns=time.monotonic_ns(), kind="workload_exit", value_ns=res.iterations)
        marks.close()
    return res


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
