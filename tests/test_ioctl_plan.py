"""The ioctl path's two variants (tracers/ioctl.bpf.c): the kprobe on kfd_ioctl planned from the kfd plan
(Debian's 6.1 and 6.12 fixtures), tried first, the syscall tracepoints after it; the attach plan's rows
say which one attached; both variants pass this kernel's verifier."""
from __future__ import annotations

import os

import pytest

from gpreempt_trace.contracts import resources
from gpreempt_trace.recorder.plan import (IOCTL_COST, IOCTL_KRETPROBE_MAXACTIVE, IOCTL_PROBE, IOCTL_TP_TARGET, KFD_IOCTL,
                                          KFD_IOCTL_DECODED, plan_ioctl, plan_kfd)

K612 = "6.12.117+deb12-amd64"
OFFS = {"task_struct__files": 1, "files_struct__fdt": 2, "fdtable__max_fds": 3, "fdtable__fd": 4, "file__f_inode": 5,
        "inode__i_rdev": 6}


class FakeBpf:
    """Records the BCC attach calls; `fail` names the calls that raise."""

    def __init__(self, *fail: str):
        self.fail, self.calls = set(fail), []

    def _call(self, what: str, **kw):
        self.calls.append((what, kw))
        if what in self.fail or f"{what}:{kw.get('event') or kw.get('tp')}" in self.fail:
            raise Exception(f"Failed to attach BPF program {kw.get('fn_name')}: no such thing")  # like BCC: bare

    def attach_kprobe(self, **kw):
        self._call("kprobe", **kw)

    def attach_kretprobe(self, **kw):
        self._call("kretprobe", **kw)

    def detach_kprobe(self, **kw):
        self._call("detach_kprobe", **kw)

    def attach_tracepoint(self, **kw):
        self._call("tracepoint", **kw)

    def detach_tracepoint(self, **kw):
        self._call("detach_tracepoint", **kw)


def _plans(k, kallsyms=None):
    kfd = plan_kfd(kallsyms or k / "kallsyms", k / "btf", func_id_base=1)
    io = plan_ioctl(0x1230004, OFFS, None, func_id=0)
    extra = io.use_kprobe(kfd)
    return kfd, io, extra


def _kfd_row(kfd):
    return next(p for p in kfd.probes if p.probe == KFD_IOCTL)


@pytest.mark.parametrize("abi", ["6.1.0-56-amd64", K612])
def test_kprobe_variant_planned_on_kfd_ioctl(kernel_fixture, abi):
    kfd, io, extra = _plans(kernel_fixture(abi))
    row = _kfd_row(kfd)
    assert extra == [f"-DGPT_IOCTL_KPROBE_FUNC_ID={row.func_id}"]
    assert io.kprobe[0] == ("kfd_ioctl", "kfd_ioctl")
    # the bare kfd_ioctl probe is not attached by the kfd plan: its rows come decoded from the ioctl path
    assert (row.status, row.reason) == ("unavailable", KFD_IOCTL_DECODED)
    assert io.row == {"probe": IOCTL_PROBE, "event": "kfd_ioctl", "target": f"kfd_ioctl | {IOCTL_TP_TARGET}",
                      "mechanism": "kprobe+kretprobe | tracepoint", "status": "planned",
                      "reason": "tried in this order: kprobe on kfd_ioctl, then the syscall tracepoints", "func_id": 0}
    assert io.filter == "device" and "-DGPT_KFD_RDEV=19070980" in io.cflags and "-DGPT_IOCTL_FUNC_ID=0" in io.cflags


def test_kprobe_attached_no_tracepoint(kernel_fixture):
    kfd, io, _ = _plans(kernel_fixture(K612))
    bpf = FakeBpf()
    io.attach(bpf)
    assert bpf.calls == [("kprobe", {"event": "kfd_ioctl", "fn_name": "gpt_ioctl_kp_enter"}),
                         ("kretprobe", {"event": "kfd_ioctl", "fn_name": "gpt_ioctl_kp_exit", "maxactive": IOCTL_KRETPROBE_MAXACTIVE})]
    row = _kfd_row(kfd)
    assert io.row == {"probe": IOCTL_PROBE, "event": "kfd_ioctl", "target": "kfd_ioctl", "mechanism": "kprobe+kretprobe",
                      "status": "attached", "reason": IOCTL_COST["kprobe"], "func_id": row.func_id}
    assert (row.status, row.target, row.reason) == ("attached", "kfd_ioctl", KFD_IOCTL_DECODED)
    kfd.attach(FakeBpf())  # the kfd plan leaves kfd_ioctl alone
    assert row.status == "attached" and row.target == "kfd_ioctl"


def test_kprobe_fails_then_tracepoints(kernel_fixture):
    kfd, io, _ = _plans(kernel_fixture(K612))
    bpf = FakeBpf("kprobe")
    io.attach(bpf)
    # kfd_ioctl, then its module-qualified fallback, then the two syscall tracepoints
    assert [(w, kw.get("event") or kw.get("tp")) for w, kw in bpf.calls] == [
        ("kprobe", "kfd_ioctl"), ("kprobe", "amdgpu:kfd_ioctl"),
        ("tracepoint", "syscalls:sys_enter_ioctl"), ("tracepoint", "syscalls:sys_exit_ioctl")]
    why = ("kprobe on kfd_ioctl failed (kfd_ioctl: Failed to attach BPF program gpt_ioctl_kp_enter: no such thing; "
           "amdgpu:kfd_ioctl: Failed to attach BPF program gpt_ioctl_kp_enter: no such thing)")
    assert io.row == {"probe": IOCTL_PROBE, "event": "kfd_ioctl", "target": IOCTL_TP_TARGET, "mechanism": "tracepoint",
                      "status": "attached", "reason": f"{why}; {IOCTL_COST['tracepoint']}", "func_id": 0}
    row = _kfd_row(kfd)
    assert (row.status, row.reason) == ("failed", f"{why}; the ioctl path uses the syscall tracepoints")


def test_kretprobe_fails_entry_detached(kernel_fixture):
    _, io, _ = _plans(kernel_fixture(K612))
    bpf = FakeBpf("kretprobe")
    io.attach(bpf)
    assert [w for w, _ in bpf.calls] == ["kprobe", "kretprobe", "detach_kprobe", "kprobe", "kretprobe", "detach_kprobe",
                                         "tracepoint", "tracepoint"]
    assert (io.row["status"], io.row["mechanism"]) == ("attached", "tracepoint")


def test_nothing_attaches(kernel_fixture):
    _, io, _ = _plans(kernel_fixture(K612))
    bpf = FakeBpf("kprobe", "tracepoint:syscalls:sys_exit_ioctl")
    io.attach(bpf)
    assert [w for w, _ in bpf.calls][-3:] == ["tracepoint", "tracepoint", "detach_tracepoint"]
    assert io.row["status"] == "failed" and io.row["reason"].endswith(
        "syscall tracepoints: Failed to attach BPF program gpt_ioctl_tp_exit: no such thing")


def test_probes_ioctl_only_uses_the_tracepoints():
    io = plan_ioctl(5, None, "no BTF", func_id=0)
    assert io.use_kprobe(None) == [] and io.kprobe == ()
    assert io.row["reason"] == ("the kfd probe group is off (--probes ioctl): the syscall tracepoints are used; "
                                f"{IOCTL_COST['tracepoint']}; filtering on known AMDKFD_IOC_* numbers: no BTF")
    bpf = FakeBpf()
    io.attach(bpf)
    assert [w for w, _ in bpf.calls] == ["tracepoint", "tracepoint"] and io.row["status"] == "attached"


def test_probes_kfd_only_decodes_kfd_ioctl_without_tracepoints(kernel_fixture):
    """--probes kfd: the kfd_ioctl probe's rows come decoded from the kprobe variant; no tracepoint, ever."""
    kfd = plan_kfd(kernel_fixture(K612) / "kallsyms", kernel_fixture(K612) / "btf")
    row = _kfd_row(kfd)
    io = plan_ioctl(None, None, None, func_id=0, tracepoint=False)
    assert io.use_kprobe(kfd) == [f"-DGPT_IOCTL_KPROBE_FUNC_ID={row.func_id}"]
    assert "-DGPT_IOCTL_NO_TRACEPOINT" in io.cflags and not any(f.startswith("-DGPT_KFD_RDEV") for f in io.cflags)
    bpf = FakeBpf()
    io.attach(bpf)
    assert [w for w, _ in bpf.calls] == ["kprobe", "kretprobe"] and (row.status, row.reason) == ("attached", KFD_IOCTL_DECODED)
    io = plan_ioctl(None, None, None, func_id=0, tracepoint=False)
    io.use_kprobe(kfd)
    bpf = FakeBpf("kprobe")
    io.attach(bpf)
    assert [w for w, _ in bpf.calls] == ["kprobe", "kprobe"]  # kfd_ioctl, amdgpu:kfd_ioctl; no tracepoint
    assert row.status == "failed" and row.reason.startswith("kprobe on kfd_ioctl failed (kfd_ioctl: Failed to attach")
    assert not row.reason.endswith("syscall tracepoints")


def test_clone_of_kfd_ioctl_is_not_decoded(kernel_fixture, tmp_path):
    """Only a GCC clone of kfd_ioctl (arguments may differ): the tracepoints, and the plan says why."""
    k = kernel_fixture(K612)
    text = (k / "kallsyms").read_text().replace(" kfd_ioctl\t", " kfd_ioctl.constprop.0\t")
    (tmp_path / "kallsyms").write_text(text)
    kfd, io, extra = _plans(k, tmp_path / "kallsyms")
    assert extra == [] and io.kprobe == ()
    assert io.row["reason"].startswith("kfd_ioctl: its arguments are not (filep, cmd, arg) in this build (only the GCC clone")
    assert _kfd_row(kfd).status == "planned"  # the bare probe stays (ioctl_nr and ret only)


@pytest.mark.bpf
@pytest.mark.parametrize("tracepoint", [True, False])
def test_both_variants_pass_the_verifier(kernel_fixture, tracepoint):
    """common.h + ioctl.bpf.c + kfd.bpf.c with the 6.12 plan: each ioctl handler loads (not attached);
    without the tracepoint variant (--probes kfd) its handlers are not in the program."""
    if os.geteuid() != 0:
        pytest.skip("loading BPF programs needs root")
    bcc = pytest.importorskip("bcc")
    kfd = plan_kfd(kernel_fixture(K612) / "kallsyms", kernel_fixture(K612) / "btf", func_id_base=1)
    io = plan_ioctl(0x1230004, OFFS, None, func_id=0) if tracepoint else plan_ioctl(None, None, None, 0, tracepoint=False)
    extra = io.use_kprobe(kfd)
    os.environ["BCC_KERNEL_SOURCE"] = str(resources.tracers() / "stub")
    text = "\n".join([(resources.tracers() / "common.h").read_text(), io.source(), kfd.source()])
    b = bcc.BPF(text=text.encode(), cflags=[f"-I{resources.tracers()}", *io.cflags, *kfd.cflags, *extra])
    try:
        handlers = [("gpt_ioctl_kp_enter", bcc.BPF.KPROBE), ("gpt_ioctl_kp_exit", bcc.BPF.KPROBE)]
        tps = [("gpt_ioctl_tp_enter", bcc.BPF.TRACEPOINT), ("gpt_ioctl_tp_exit", bcc.BPF.TRACEPOINT)]
        for name, kind in handlers + (tps if tracepoint else []):
            assert b.load_func(name.encode(), kind).fd >= 0
        if not tracepoint:
            with pytest.raises(Exception, match="Unknown program b'gpt_ioctl_tp_enter'"):
                b.load_func(b"gpt_ioctl_tp_enter", bcc.BPF.TRACEPOINT)
        # loading attached nothing but the auto-attached sched_process_exit handler
        assert list(b.tracepoint_fds) == [b"sched:sched_process_exit"] and not b.kprobe_fds
    finally:
        b.cleanup()


def test_doctor_says_which_variant_and_its_cost(kernel_fixture, tmp_path):
    from gpreempt_trace.doctor.checks import ioctl_path_check

    kfd = plan_kfd(kernel_fixture(K612) / "kallsyms", kernel_fixture(K612) / "btf")
    c = ioctl_path_check(kfd, True)
    assert (c.ok, c.detail) == (True, f"kprobe on kfd_ioctl: {IOCTL_COST['kprobe']}")
    c = ioctl_path_check(kfd, False)
    assert (c.ok, c.detail) == (None, f"syscall tracepoints sys_enter/exit_ioctl (this kernel has no kprobes): {IOCTL_COST['tracepoint']}")
    assert c.hint.endswith("(`python -m bench tax` measures both)")
    (tmp_path / "kallsyms").write_text("ffffffff81000000 T _stext\n")  # amdgpu not loaded
    c = ioctl_path_check(plan_kfd(tmp_path / "kallsyms", kernel_fixture(K612) / "btf"), True)
    assert c.detail == ("syscall tracepoints sys_enter/exit_ioctl (kfd_ioctl: module amdgpu is not loaded): "
                        f"{IOCTL_COST['tracepoint']}")


def test_offset_guard_leaves_decoded_ioctl_rows_alone(kernel_fixture):
    """The BTF plausibility guard blanks struct-offset columns of KFD probe rows when the offsets look wrong:
    kfd_ioctl's decoded rows (read from user memory) are not among them."""
    from gpreempt_trace.recorder.runtime import Program, _offset_guard

    kfd, io, extra = _plans(kernel_fixture(K612))
    io.attach(FakeBpf())
    kfd.attach(FakeBpf())
    prog = Program("", extra, kfd, io.filter, None, 0, [], [io.row, *kfd.probes], io)
    g = _offset_guard(prog)
    assert g.state == "checking"  # offsets from --btf: checked
    row = _kfd_row(kfd)
    assert row.status == "attached" and row.func_id not in g.kfd_func_ids
    assert set(g.kfd_func_ids) == {p.func_id for p in kfd.probes if p.status == "attached"} - {row.func_id}
