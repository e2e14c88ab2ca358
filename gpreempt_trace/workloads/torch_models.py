"""Built-in torch workloads (random weights, nothing downloaded) in two roles.

- online: an open-loop request stream at `rate_hz`: request k is due at t0 + k/rate_hz whether or not
  request k-1 has finished, so queueing delay is part of the response time. Markers: request_start at the
  due time (value_ns = queueing delay), request_end (value_ns = end - due time = response time).
- offline: a saturating training loop; markers step_start / step_done (value_ns = step duration).

Models: mlp, resnet (ResNet-style CNN), transformer-prefill / transformer-decode (one pre-norm
transformer block over a prompt, or one token against a KV cache), gemm (a matmul loop).

On a ROCm build of torch the GPU is `cuda`; each process then creates its own KFD queues. An online
workload can drive the preemption controller (`--preempt-policy`, policy.py) so the latency and what
the offline job lost come from the same run.
"""
from __future__ import annotations

import math
import os
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from ..errors import GptError
from ..trace.markers import MarkerWriter

MODELS = ("mlp", "resnet", "transformer-prefill", "transformer-decode", "gemm")
ALIASES = {"cnn": "resnet", "transformer": "transformer-prefill"}
ROLES = ("online", "offline")


def _torch():
    try:
        import torch
    except ImportError:
        raise GptError("torch is not installed", "run `make setup` (installs the CPU wheel) or install a ROCm build of torch") from None
    return torch


def canonical_model(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in MODELS:
        raise GptError(f"unknown model {name!r}", "choose one of " + ", ".join(MODELS))
    return name


def build_model(name: str, torch, batch: int, device: str):
    """(module, example input) for model `name`; weights are random (torch's default init)."""
    nn = torch.nn
    name = canonical_model(name)

    if name == "mlp":
        net = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 1024))
        return net.to(device), torch.randn(batch, 1024, device=device)

    if name == "resnet":
        class Block(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
                self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

            def forward(self, x):
                y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
                return torch.relu(x + y)  # the residual connection

        net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                            Block(32), nn.Conv2d(32, 64, 3, stride=2, padding=1), Block(64),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
        return net.to(device), torch.randn(batch, 3, 64, 64, device=device)

    if name.startswith("transformer"):
        d, heads, ctx = 256, 4, 128

        class TBlock(nn.Module):
            """Pre-norm block; with a KV cache (decode) one new token attends to `ctx` cached ones."""

            def __init__(self):
                super().__init__()
                self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
                self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
                self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
                self.register_buffer("k_cache", torch.randn(batch, heads, ctx, d // heads))
                self.register_buffer("v_cache", torch.randn(batch, heads, ctx, d // heads))

            def forward(self, x):
                b, t, _ = x.shape
                q, k, v = self.qkv(self.n1(x)).view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
                if name == "transformer-decode":  # one step: t == 1, attend to the cache and itself
                    k = torch.cat([self.k_cache, k], dim=2)
                    v = torch.cat([self.v_cache, v], dim=2)
                    a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                else:  # prefill: causal attention over the whole prompt
                    a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
                return x + self.ff(self.n2(x))

        tokens = 1 if name == "transformer-decode" else ctx
        return TBlock().to(device), torch.randn(batch, tokens, d, device=device)

    # gemm: a loop of square matmuls (one learnable weight so the offline role can train it too)
    class Gemm(nn.Module):
        def __init__(self, n=512, loops=4):
            super().__init__()
            self.w, self.loops = nn.Parameter(torch.randn(n, n) / n ** 0.5), loops

        def forward(self, x):
            for _ in range(self.loops):
                x = x @ self.w
            return x

    return Gemm().to(device), torch.randn(batch, 512, device=device)


def pick_device(device: str, torch) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GptError("--device cuda: torch sees no GPU", "use --device cpu, or a ROCm/CUDA build of torch on a GPU machine")
    if device not in ("cpu", "cuda"):
        raise GptError(f"unknown device {device!r}", "choose auto, cpu or cuda")
    return device


MAX_BATCH = 1024  # samples per request or step: 1024 resnet images are ~0.5 GB per activation already
MAX_THREADS = 1024


@dataclass
class WorkloadOptions:
    """Options of `gpreempt-trace workload` (fields named like the flags)."""

    role: str
    model: str = "mlp"
    duration_s: float = 10.0
    rate_hz: float = 20.0  # online requests per second; 0 = back to back (closed loop)
    batch: int = 8
    device: str = "auto"
    stream_priority: str = "normal"
    trace: Optional[str] = None
    max_iterations: Optional[int] = None
    preempt_policy: str = "none"  # none | per-request | burst (online role only)
    controller_socket: Optional[str] = None
    controller_timeout_s: float = 5.0  # how long a controller call may go unanswered (control.client.TIMEOUT_S)
    burst_gap_ms: float = 20.0
    open_kfd: bool = False  # open /dev/kfd and RUNTIME_ENABLE first (so scheme A can attach in the lab)
    threads: Optional[int] = None  # torch intra-op threads (CPU); None = torch's default
    ready_file: Optional[str] = None  # written once warmed up (an experiment waits for it)
    backend: str = "torch"  # torch | numpy (mlp and gemm only; the lab guest, where torch imports take minutes)

    def check(self) -> None:
        """The API's own checks (the CLI checks ranges with click types before this)."""
        if self.role not in ROLES:
            raise GptError(f"unknown role {self.role!r}", "choose online or offline")
        self.model = canonical_model(self.model)
        if not self.duration_s > 0:
            raise GptError(f"--duration {self.duration_s}: must be > 0", "give the run time in seconds")
        if not self.rate_hz >= 0:
            raise GptError(f"--rate {self.rate_hz}: must be >= 0", "give requests per second (0 = back to back)")
        if not 1 <= self.batch <= MAX_BATCH:
            raise GptError(f"--batch {self.batch}: must be 1 to {MAX_BATCH}", "give the samples per request or step")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise GptError(f"--iterations {self.max_iterations}: must be >= 1", "give a positive number")
        if self.burst_gap_ms < 0:
            raise GptError(f"--burst-gap-ms {self.burst_gap_ms}: must be >= 0", "give a gap in milliseconds")
        if self.backend not in ("torch", "numpy"):
            raise GptError(f"unknown --backend {self.backend!r}", "choose torch or numpy")
        if self.preempt_policy not in ("none", "per-request", "burst"):
            raise GptError(f"unknown --preempt-policy {self.preempt_policy!r}", "choose none, per-request or burst")
        if self.preempt_policy != "none":
            if self.role != "online":
                raise GptError("--preempt-policy applies to the online role", "run the offline job without it")
            if not self.controller_socket:
                raise GptError(f"--preempt-policy {self.preempt_policy} needs --controller-socket",
                               "start `gpreempt-trace preempt serve --pid OFFLINE_PID --socket PATH` and pass its socket")


@dataclass
class WorkloadResult:
    role: str
    model: str
    device: str
    iterations: int
    times_ns: list[int] = field(default_factory=list)  # online: response time (end - due time); offline: step time
    queue_delays_ns: list[int] = field(default_factory=list)  # online: start - due time
    preempts: int = 0
    resumes: int = 0
    stopped_by: Optional[str] = None  # signal name when stopped early (SIGTERM/SIGINT)

    def summary(self) -> str:
        lat = sorted(self.times_ns)
        if not lat:
            return f"{self.role} {self.model} on {self.device}: 0 iterations"
        p = lambda q: lat[max(0, math.ceil(q * len(lat)) - 1)] / 1e6  # noqa: E731  nearest rank, as SQL's quantile_disc
        what = "requests" if self.role == "online" else "steps"
        line = (f"{self.role} {self.model} on {self.device}: {self.iterations} {what}, "
                f"p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {lat[-1] / 1e6:.2f} ms, mean {statistics.fmean(lat) / 1e6:.2f} ms")
        if self.preempts or self.resumes:
            line += f"; {self.preempts} preempt / {self.resumes} resume calls"
        if self.stopped_by:
            line += f"; stopped by {self.stopped_by}"
        return line


class _Stopped(Exception):
    pass


def _stream(torch, device: str, priority: str):
    if device != "cuda" or priority == "normal":
        return None
    lo, hi = torch.cuda.Stream.priority_range()  # (least, greatest); greatest is numerically lowest
    return torch.cuda.Stream(priority=hi if priority == "high" else lo)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def open_kfd_runtime() -> int:
    """Open /dev/kfd and RUNTIME_ENABLE (what a ROCm process does at start), so a scheme-A controller
    can suspend/resume this process. Returns the fd (kept open for the process's life). With a
    debugger already enabled on us, this call blocks until the controller answers (KFD's handshake)."""
    import fcntl

    from ..contracts import uapi

    fd = os.open("/dev/kfd", os.O_RDWR | os.O_CLOEXEC)
    args = uapi.RuntimeEnableArgs(r_debug=0, mode_mask=uapi.KFD_RUNTIME_ENABLE_MODE_ENABLE_MASK, capabilities_mask=0)
    buf = bytearray(bytes(args))
    try:
        fcntl.ioctl(fd, uapi.RUNTIME_ENABLE, buf)
    except OSError as e:
        os.close(fd)
        raise GptError(f"RUNTIME_ENABLE on /dev/kfd failed: {e.strerror}", "needs KFD ioctl >= 1.13 (kernel 6.5+ or ROCm DKMS)") from None
    return fd


def _torch_step(o: WorkloadOptions):
    """(device, one request/step as a function) on torch."""
    torch = _torch()
    if o.threads:
        torch.set_num_threads(o.threads)
    dev = pick_device(o.device, torch)
    net, x = build_model(o.model, torch, o.batch, dev)
    stream = _stream(torch, dev, o.stream_priority)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4) if o.role == "offline" else None
    if o.role == "online":
        net.eval()

    def step():
        with (torch.cuda.stream(stream) if stream is not None else _nullcontext()):
            if opt is None:
                with torch.no_grad():
                    net(x)
            else:
                opt.zero_grad()
                net(x).float().pow(2).mean().backward()
                opt.step()
        sync()

    return dev, step


NUMPY_MODELS = ("mlp", "gemm")


def _numpy_step(o: WorkloadOptions):
    """The same mlp/gemm shapes on numpy (CPU; seconds to import where torch takes minutes, e.g. the
    TCG lab guest). Offline adds the backward matmuls of a training step."""
    import numpy as np

    if o.model not in NUMPY_MODELS:
        raise GptError(f"--backend numpy runs {', '.join(NUMPY_MODELS)}, not {o.model}", "use --backend torch for this model")
    if o.device == "cuda":
        raise GptError("--backend numpy runs on the CPU", "use --backend torch for --device cuda")
    rng = np.random.default_rng(0)
    dims = (1024, 2048, 2048, 1024) if o.model == "mlp" else (512,) * 5
    ws = [rng.standard_normal((a, b), dtype=np.float32) / a ** 0.5 for a, b in zip(dims, dims[1:])]
    x = rng.standard_normal((o.batch, dims[0]), dtype=np.float32)

    def step():
        acts = [x]
        for w in ws:
            acts.append(np.maximum(acts[-1] @ w, 0) if o.model == "mlp" else acts[-1] @ w)
        if o.role == "offline":
            g = acts[-1]
            for w, a in zip(reversed(ws), reversed(acts[:-1])):
                _ = a.T @ g
                g = g @ w.T

    return "cpu-numpy", step


def run(role: str | WorkloadOptions, client=None, clock=time.monotonic_ns, **kw) -> WorkloadResult:
    """Run a workload. `role` is a WorkloadOptions, or the role with the options as keywords.
    `client` (tests) replaces the controller Client the policy would open on controller_socket."""
    o = role if isinstance(role, WorkloadOptions) else WorkloadOptions(role, **kw)
    o.check()
    kfd_fd, dev, step = _open(o)

    from .policy import Policy

    stop = _StopSignals()
    pol = Policy.make(o.preempt_policy, o.controller_socket, o.burst_gap_ms, client=client, clock=clock,
                      sleep=stop.sleep, timeout_s=o.controller_timeout_s)
    marks = MarkerWriter(o.trace, "workload")
    res = WorkloadResult(o.role, o.model, dev, 0)

    pid = os.getpid()
    try:
        _warm_up(o, step, marks, dev, pid)
        _iterate(o, step, pol, marks, stop, res, clock)
    except _Stopped as e:
        res.stopped_by = str(e)
    finally:
        _wind_down(o, pol, marks, stop, res, kfd_fd, pid)
    return res


def _open(o: WorkloadOptions):
    """(the /dev/kfd fd or None, device, one request/step as a function); the fd is closed on an error."""
    kfd_fd = open_kfd_runtime() if o.open_kfd else None
    try:
        dev, step = (_numpy_step if o.backend == "numpy" else _torch_step)(o)
    except BaseException:
        if kfd_fd is not None:
            os.close(kfd_fd)
        raise
    return kfd_fd, dev, step


def _warm_up(o: WorkloadOptions, step, marks, dev: str, pid: int) -> None:
    """One step before the clock starts (allocations, first-call kernel selection), the ready file, the
    workload_start marker."""
    step()
    if o.ready_file:
        with open(o.ready_file, "w") as f:
            f.write(f"{pid}\n")
    marks.add("workload_start", target_tgid=pid,
              label=f"role={o.role} model={o.model} device={dev} policy={o.preempt_policy}"
                    + (f" rate_hz={o.rate_hz:g}" if o.role == "online" else ""))


def _iterate(o: WorkloadOptions, step, pol, marks, stop, res: WorkloadResult, clock) -> None:
    """Steps (offline) or requests (online, open loop at rate_hz) until the duration or max_iterations."""
    t_start = clock()
    end_ns = t_start + int(o.duration_s * 1e9)
    period_ns = int(1e9 / o.rate_hz) if o.role == "online" and o.rate_hz > 0 else 0
    seq = 0
    while clock() < end_ns and (o.max_iterations is None or seq < o.max_iterations):
        if o.role == "offline":
            res.times_ns.append(_offline_step(step, marks, stop, clock, seq))
        elif not _online_request(o, step, pol, marks, stop, res, clock, seq, t_start, period_ns, end_ns):
            break
        seq += 1
        res.iterations = seq
        marks.tick()
        stop.check()


def _offline_step(step, marks, stop, clock, seq: int) -> int:
    """One training step between step_start/step_done markers; returns its time."""
    t0 = clock()
    marks.add("step_start", ts_ns=t0, seq=seq)
    stop.run(step)
    t1 = clock()
    marks.add("step_done", ts_ns=t1, seq=seq, value_ns=t1 - t0)
    return t1 - t0


def _online_request(o: WorkloadOptions, step, pol, marks, stop, res: WorkloadResult, clock, seq: int,
                    t_start: int, period_ns: int, end_ns: int) -> bool:
    """Request seq at its due time, with the policy's calls around it; False when it would be due after the end."""
    due = t_start + seq * period_ns if period_ns else clock()
    if due >= end_ns:
        return False
    pol.wait_until(due)  # idle: sleeps; burst policy resumes when its gap expires
    t0 = clock()
    pol.request_start(due)
    marks.add("request_start", ts_ns=due, seq=seq, value_ns=t0 - due, label=o.model)
    stop.run(step)
    t1 = clock()
    marks.add("request_end", ts_ns=t1, seq=seq, value_ns=t1 - due, label=o.model)
    next_due = t_start + (seq + 1) * period_ns if period_ns else None
    # another request is in flight when the next one is already due (open loop)
    pol.request_end(t1, next_due=next_due if next_due is not None and next_due < end_ns else None)
    res.times_ns.append(t1 - due)
    res.queue_delays_ns.append(t0 - due)
    return True


def _wind_down(o: WorkloadOptions, pol, marks, stop, res: WorkloadResult, kfd_fd, pid: int) -> None:
    """After the loop, a signal or an error: resume the offline job, write workload_exit, close the
    markers and /dev/kfd, then give the caller's signal handlers back."""
    stop.hold()  # a second signal now is noted, not raised: the resume and the last markers below must run
    try:
        pol.close()  # never leave the offline job preempted
    finally:
        try:
            res.preempts, res.resumes = pol.preempts, pol.resumes
            marks.add("workload_exit", target_tgid=pid, value_ns=res.iterations,
                      label=f"role={o.role} model={o.model}" + (f" stopped_by={res.stopped_by}" if res.stopped_by else ""))
            marks.close()
            if kfd_fd is not None:
                os.close(kfd_fd)
        finally:
            # the caller's handlers only now: restored before the exit marker, the SIGTERM that
            # `experiment` sends right after a Ctrl-C killed the job before it wrote workload_exit
            stop.restore()


class _StopSignals:
    """SIGTERM/SIGINT end the loop through `finally` (resume, last markers) instead of killing the
    process mid-call. The signal raises only inside a step or a policy sleep (`run`, `sleep`); one
    that arrives while a marker is written or the controller is called is kept and raised at the
    next `check`, so the trace writer and the controller connection are never cut half-way. Once the
    loop is winding down (`hold`), further signals are only noted."""

    def __init__(self):
        self.old: dict = {}
        self.raising = True
        self.interruptible = False
        self.pending: Optional[str] = None
        if threading.current_thread() is threading.main_thread():
            self.old = {s: signal.signal(s, self._on) for s in (signal.SIGTERM, signal.SIGINT)}

    def _on(self, signum, _frame):
        if self.raising and self.pending is None:
            self.pending = signal.Signals(signum).name
            if self.interruptible:
                self.check()

    def check(self) -> None:
        if self.raising and self.pending is not None:
            self.raising = False
            raise _Stopped(self.pending)

    def run(self, fn):
        self.check()
        self.interruptible = True
        try:
            return fn()
        finally:
            self.interruptible = False

    def sleep(self, seconds: float) -> None:
        self.run(lambda: time.sleep(seconds))

    def hold(self) -> None:
        self.raising = False

    def restore(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)
