"""Every KFD program in tracers/kfd.bpf.c passes this kernel's verifier (loaded as KPROBE programs,
not attached: this VM has no kprobes), with the -D flags planned for Debian's 6.1.0-56 and 6.12.117 builds
and for the running kernel (no amdgpu: no field macros at all)."""
from __future__ import annotations

import os

import pytest

from gpreempt_trace.contracts import resources
from gpreempt_trace.recorder.plan import PROBES, TRACEPOINTS, plan_kfd

pytestmark = pytest.mark.bpf

bcc = pytest.importorskip("bcc")


def load_all(plan) -> dict[str, int]:
    """Compile common.h + kfd.bpf.c once and load every handler (the verifier rejects by raising);
    returns name -> BPF instructions of each loaded program."""
    os.environ["BCC_KERNEL_SOURCE"] = str(resources.tracers() / "stub")
    text = (resources.tracers() / "common.h").read_text() + "\n" + plan.source()
    b = bcc.BPF(text=text.encode(), cflags=plan.cflags + [f"-I{resources.tracers()}"])
    try:
        sizes = {}
        for spec in PROBES:
            for kind in ("entry", "return"):
                name = f"kfd_{kind}__{spec.name}".encode()
                fn = b.load_func(name, bcc.BPF.KPROBE)  # raises with the verifier log on rejection
                assert fn.fd >= 0
                sizes[name.decode()] = bcc.lib.bpf_function_size(b.module, name) // 8
        for t in TRACEPOINTS:  # kfd:* handlers (raw tracepoints), DKMS amdkfd:* ones (classic tracepoints)
            name = t.handler.encode()
            assert b.load_func(name, bcc.BPF.RAW_TRACEPOINT if t.mechanism == "raw_tracepoint" else bcc.BPF.TRACEPOINT).fd >= 0
            sizes[name.decode()] = bcc.lib.bpf_function_size(b.module, name) // 8
        return sizes
    finally:
        b.cleanup()


@pytest.fixture(autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.skip("loading BPF programs needs root")


def test_verifier_accepts_fixture_61_plan(kfd_fixture):
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf")
    sizes = load_all(plan)
    assert len(sizes) == 2 * len(PROBES) + len(TRACEPOINTS)


def test_verifier_accepts_fixture_612_plan(kernel_fixture):
    """Debian 6.12.117: every probe planned (execute clone, reset path, debugger ABI), kfd_node device id."""
    k = kernel_fixture("6.12.117+deb12-amd64")
    plan = plan_kfd(k / "kallsyms", k / "btf")
    assert "-DGPT_OFF_Q_IS_SUSPENDED=110" in plan.cflags and "-DGPT_ARG_reset_queues_cpsch_PASID=1" in plan.cflags
    sizes = load_all(plan)
    assert len(sizes) == 2 * len(PROBES) + len(TRACEPOINTS)


def test_verifier_accepts_running_kernel_plan():
    plan = plan_kfd()
    sizes = load_all(plan)
    assert len(sizes) == 2 * len(PROBES) + len(TRACEPOINTS)


def test_verifier_accepts_newer_kernel_macros(kfd_fixture):
    """The >=6.5/6.14 branches: per-device pasid through the qpd, is_suspended, a grace_period argument."""
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf")
    drop = ("-DGPT_OFF_PROC_PASID=", "-DGPT_ARG_unmap_queues_cpsch_GRACE=", "-DGPT_ARG_execute_queues_cpsch_GRACE=")
    plan.cflags = [f for f in plan.cflags if not f.startswith(drop)] + [
        "-DGPT_OFF_PDD_PASID=560", "-DGPT_OFF_Q_IS_SUSPENDED=112", "-DGPT_KQT_SDMA_BY_ENG_ID=5",
        "-DGPT_ARG_unmap_queues_cpsch_GRACE=3", "-DGPT_ARG_execute_queues_cpsch_GRACE=3"]
    sizes = load_all(plan)
    assert len(sizes) == 2 * len(PROBES) + len(TRACEPOINTS)
