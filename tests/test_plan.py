"""The KFD attach planner: kallsyms resolution rules, the plan for Debian's 6.1.0-56 build (fixture),
the -D flags it hands to kfd.bpf.c, kfd:* tracepoint preference, and the order attach() tries."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from gpreempt_trace.contracts import resources
from gpreempt_trace.errors import GptError
from gpreempt_trace.recorder.kallsyms import Kallsyms, split_clone
from gpreempt_trace.recorder.plan import PROBES, plan_kfd

KALLSYMS_TINY = """\
ffffffff81000000 T _stext
ffffffff8142e620 t update_queue
ffffffff81500000 T shared_name
ffffffffc0001000 t update_queue\t[amdgpu]
ffffffffc0002000 t create_queue_cpsch\t[amdgpu]
ffffffffc0002100 t create_queue_cpsch.cold\t[amdgpu]
ffffffffc0003000 t remove_queue_mes.constprop.0\t[amdgpu]
ffffffffc0003100 t remove_queue_mes.constprop.0.cold\t[amdgpu]
ffffffffc0004000 t only_cold.cold\t[amdgpu]
ffffffffc0005000 t twice.isra.0\t[amdgpu]
ffffffffc0005100 t twice.part.1\t[amdgpu]
ffffffffc0006000 t dup_in_module\t[amdgpu]
ffffffffc0006100 t dup_in_module\t[amdgpu]
ffffffffc0007000 d some_data\t[amdgpu]
ffffffffc0008000 t shared_name\t[other]
"""


def test_split_clone():
    assert split_clone("remove_queue_mes.constprop.0") == ("remove_queue_mes", ".constprop.0")
    assert split_clone("kgd_hqd_destroy.cold") == ("kgd_hqd_destroy", ".cold")
    assert split_clone("a.isra.0.part.1") == ("a", ".isra.0.part.1")
    assert split_clone("plain") == ("plain", "")


def test_kallsyms_resolution_rules():
    ks = Kallsyms(KALLSYMS_TINY, "tiny")
    r = ks.resolve("create_queue_cpsch")  # unique (its .cold fragment is not an entry point)
    assert (r.symbol, r.kprobe_target, r.fentry_safe, r.args_reliable, r.reason) == ("create_queue_cpsch", "create_queue_cpsch", True, True, None)
    r = ks.resolve("update_queue")  # also in vmlinux: module-qualified, fentry unsafe
    assert (r.symbol, r.kprobe_target, r.fentry_safe, r.args_reliable) == ("update_queue", "amdgpu:update_queue", False, True)
    assert "also in vmlinux" in r.reason
    r = ks.resolve("remove_queue_mes")  # only a GCC clone
    assert (r.symbol, r.kprobe_target, r.args_reliable) == ("remove_queue_mes.constprop.0", "remove_queue_mes.constprop.0", False)
    assert "GCC clone" in r.reason
    assert ks.resolve("only_cold").symbol is None and "inlined" in ks.resolve("only_cold").reason
    r = ks.resolve("twice")
    assert r.symbol is None and "twice.isra.0, twice.part.1" in r.reason
    r = ks.resolve("dup_in_module")
    assert r.kprobe_target == "amdgpu:dup_in_module" and "2 copies" in r.reason
    assert ks.resolve("some_data").symbol is None  # data symbols are not functions
    assert ks.resolve("execute_queues_cpsch").reason.startswith("not in tiny")
    assert ks.resolve("create_queue_cpsch", module="nomod").reason == "module nomod is not loaded"


def test_kallsyms_bad_input(tmp_path):
    with pytest.raises(GptError, match="no function symbols"):
        Kallsyms("garbage\n", "x")
    with pytest.raises(GptError, match="does not exist"):
        Kallsyms.load(tmp_path / "nope")


# the plan for Debian 6.1.0-56 (fixture kallsyms + BTF): probe -> (target, status)
EXPECTED_61 = {
    "create_queue_cpsch": ("create_queue_cpsch", "planned"),
    "create_queue_nocpsch": ("create_queue_nocpsch", "planned"),
    "destroy_queue_cpsch": ("destroy_queue_cpsch", "planned"),
    "destroy_queue_nocpsch": ("destroy_queue_nocpsch", "planned"),
    "update_queue": ("amdgpu:update_queue", "planned"),
    "execute_queues_cpsch": (None, "unavailable"),
    "map_queues_cpsch": ("map_queues_cpsch", "planned"),
    "unmap_queues_cpsch": ("unmap_queues_cpsch", "planned"),
    "evict_process_queues_cpsch": ("evict_process_queues_cpsch", "planned"),
    "evict_process_queues_nocpsch": ("evict_process_queues_nocpsch", "planned"),
    "restore_process_queues_cpsch": ("restore_process_queues_cpsch", "planned"),
    "restore_process_queues_nocpsch": ("restore_process_queues_nocpsch", "planned"),
    "kfd_process_evict_queues": ("kfd_process_evict_queues", "planned"),
    "kfd_process_restore_queues": ("kfd_process_restore_queues", "planned"),
    "suspend_queues": (None, "unavailable"),
    "resume_queues": (None, "unavailable"),
    "pm_send_runlist": ("pm_send_runlist", "planned"),
    "pm_send_set_resources": ("pm_send_set_resources", "planned"),
    "hw_unmap_wait": ("pm_send_unmap_queue->amdkfd_fence_wait_timeout", "planned"),
    "kfd_ioctl": ("kfd_ioctl", "planned"),
    "add_queue_mes": ("add_queue_mes", "planned"),
    "remove_queue_mes": ("remove_queue_mes.constprop.0", "planned"),
    # the debugger ABI is 6.5+; 6.1 has reset_queues_cpsch and kfd_signal_reset_event, inlines kfd_hws_hang
    "kfd_ioctl_runtime_enable": (None, "unavailable"),
    "kfd_dbg_trap_enable": (None, "unavailable"),
    "kfd_dbg_trap_disable": (None, "unavailable"),
    "reset_queues_cpsch": ("reset_queues_cpsch", "planned"),
    "kgd_gfx_v9_hqd_reset": (None, "unavailable"),
    "kgd_gfx_v10_hqd_reset": (None, "unavailable"),
    "kgd_gfx_v11_hqd_reset": (None, "unavailable"),
    "kfd_hws_hang": (None, "unavailable"),
    "kfd_signal_reset_event": ("kfd_signal_reset_event", "planned"),
    # Debian's kernel has no kfd:* tracepoints (nor ROCm DKMS's amdkfd:* ones)
    "kfd:kfd_queue_create": (None, "unavailable"),
    "kfd:kfd_queue_destroy": (None, "unavailable"),
    "kfd:kfd_queue_update": (None, "unavailable"),
    "kfd:kfd_queue_evict": (None, "unavailable"),
    "kfd:kfd_queue_restore": (None, "unavailable"),
    "kfd:kfd_queue_suspend": (None, "unavailable"),
    "kfd:kfd_queue_resume": (None, "unavailable"),
    "kfd:kfd_queues_unmap": (None, "unavailable"),
    "kfd:kfd_queues_map": (None, "unavailable"),
    "kfd:kfd_hw_unmap_wait": (None, "unavailable"),
    "kfd:kfd_queues_preempt": (None, "unavailable"),
    "kfd:kfd_queues_unpreempt": (None, "unavailable"),
    "amdkfd:kfd_evict_process_worker_start": (None, "unavailable"),
    "amdkfd:kfd_evict_process_worker_end": (None, "unavailable"),
    "amdkfd:kfd_restore_process_worker_start": (None, "unavailable"),
    "amdkfd:kfd_restore_process_worker_end": (None, "unavailable"),
}
KPROBES = [name for name in EXPECTED_61 if ":" not in name]  # the KFD function probes, in plan order


@pytest.fixture(scope="module")
def plan61(kfd_fixture):
    return plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf")


def test_fixture_plan(plan61):
    got = {p.probe: (p.target, p.status) for p in plan61.probes}
    assert got == EXPECTED_61
    assert [p.probe for p in plan61.probes] == list(EXPECTED_61)  # rows in this order, func_id = row number
    by = {p.probe: p for p in plan61.probes}
    assert by["execute_queues_cpsch"].reason == "inlined in this build; map_queues_cpsch and unmap_queues_cpsch are probed"
    assert by["update_queue"].reason.startswith("name also in vmlinux: using amdgpu:update_queue")
    assert "GCC clone remove_queue_mes.constprop.0" in by["remove_queue_mes"].reason
    assert "6.5" in by["suspend_queues"].reason
    assert [p.func_id for p in plan61.probes] == list(range(len(EXPECTED_61)))
    assert by["kfd:kfd_queues_unmap"].reason == "kernel without the kfd:* tracepoint series"
    assert by["amdkfd:kfd_evict_process_worker_start"].reason == "kernel without the DKMS amdkfd:* tracepoints"
    assert by["add_queue_mes"].reason == "fires on MES GPUs (gfx11+) only"
    assert any(n.startswith("fentry/fexit not used") for n in plan61.notes)
    assert by["kfd_ioctl"].as_dict() == {"probe": "kfd_ioctl", "event": "kfd_ioctl", "target": "kfd_ioctl",
                                         "mechanism": "kprobe+kretprobe", "status": "planned", "reason": None, "func_id": 19}


def test_fixture_offsets_and_cflags(plan61):
    """Offsets equal pahole's for this build (btf_layouts.txt); missing fields get no macro."""
    assert plan61.offsets["queue.properties.is_active"] == 110
    assert plan61.offsets["queue.properties.is_evicted"] == 109
    assert plan61.offsets["queue.properties.is_suspended"] is None
    assert plan61.offsets["kfd_dev.id"] == 96
    assert plan61.offsets["kfd_process.pasid"] == 160
    assert plan61.offsets["kfd_process_device.pasid"] is None
    assert plan61.offsets["task_struct.tgid"] == 2420
    flags = set(plan61.cflags)
    for f in ("-DGPT_OFF_Q_TYPE=40", "-DGPT_OFF_Q_QUEUE_ID=48", "-DGPT_OFF_Q_DOORBELL_OFF=104", "-DGPT_OFF_Q_PRIORITY=72",
              "-DGPT_OFF_Q_IS_ACTIVE=110", "-DGPT_OFF_Q_PROCESS=200", "-DGPT_OFF_Q_DEVICE=208", "-DGPT_OFF_DEV_ID=96",
              "-DGPT_OFF_PROC_LEAD_THREAD=96", "-DGPT_OFF_TASK_TGID=2420", "-DGPT_OFF_DQM_DEV=304", "-DGPT_OFF_PDD_QPD=16",
              "-DGPT_KQT_COMPUTE=0", "-DGPT_KQT_SDMA_XGMI=4", "-DGPT_KQF_AQL=1", "-DGPT_KUF_DYNAMIC=2",
              # argument positions from the BTF prototypes (destroy: qpd before q)
              "-DGPT_ARG_destroy_queue_cpsch_Q=2", "-DGPT_ARG_destroy_queue_cpsch_QPD=1", "-DGPT_ARG_create_queue_cpsch_Q=1",
              "-DGPT_ARG_unmap_queues_cpsch_FILTER=1", "-DGPT_ARG_unmap_queues_cpsch_GRACE=-1", "-DGPT_ARG_kfd_ioctl_CMD=1",
              # a GCC clone: no argument is trusted
              "-DGPT_ARG_remove_queue_mes_Q=-1", "-DGPT_ARG_remove_queue_mes_QPD=-1"):
        assert f in flags, f
    assert not [f for f in flags if f.startswith("-DGPT_OFF_Q_IS_SUSPENDED") or f.startswith("-DGPT_OFF_PDD_PASID")]
    assert {"-DGPT_ARG_reset_queues_cpsch_DQM=0", "-DGPT_ARG_reset_queues_cpsch_PASID=1",
            "-DGPT_ARG_kfd_signal_reset_event_DEV=0"} <= flags


def test_every_argument_macro_kfd_bpf_c_pastes_is_defined_once(plan61):
    """kfd.bpf.c pastes GPT_ARG_<probe>_<ROLE> for every role of every probe it declares: each of those
    is defined exactly once, whatever the probe reads (-1: not an argument), so the program compiles."""
    roles = set(re.findall(r"GPT_ARG_##P##_(\w+)", (resources.tracers() / "kfd.bpf.c").read_text()))
    assert {"Q", "QPD", "DQM", "PROC", "GRACE", "CMD", "DEV"} <= roles
    defined = Counter(f.split("=")[0].removeprefix("-DGPT_ARG_") for f in plan61.cflags if f.startswith("-DGPT_ARG_"))
    assert set(defined) == {f"{probe}_{role}" for probe in KPROBES for role in roles}
    assert [m for m, n in defined.items() if n != 1] == []


def test_func_id_base_and_probe_selection(kfd_fixture):
    p = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", func_id_base=40, probes=["kfd_ioctl"])
    assert p.probes[0].func_id == 40 and "-DGPT_FID_kfd_ioctl=59" in p.cflags
    assert [q.probe for q in p.probes if q.status == "planned"] == ["kfd_ioctl"]
    with pytest.raises(GptError, match="unknown KFD probe 'bogus'"):
        plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", probes=["bogus"])
    with pytest.raises(GptError, match="not supported"):
        plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", attach="fentry")


def test_execute_present_keeps_map_and_unmap(tmp_path, kfd_fixture):
    """execute_queues_cpsch (here a plain symbol) is probed AND its unmap/map halves keep their own rows."""
    ks = tmp_path / "kallsyms"
    ks.write_text((kfd_fixture / "kallsyms").read_text() + "ffffffffc0ffe000 t execute_queues_cpsch\t[amdgpu]\n")
    p = {q.probe: q for q in plan_kfd(ks, kfd_fixture / "btf").probes}
    assert (p["execute_queues_cpsch"].status, p["execute_queues_cpsch"].target) == ("planned", "execute_queues_cpsch")
    assert (p["map_queues_cpsch"].status, p["map_queues_cpsch"].target) == ("planned", "map_queues_cpsch")
    assert (p["unmap_queues_cpsch"].status, p["unmap_queues_cpsch"].target) == ("planned", "unmap_queues_cpsch")


def test_no_amdgpu_loaded(tmp_path, kfd_fixture):
    ks = tmp_path / "kallsyms"
    ks.write_text("ffffffff81000000 T _stext\nffffffff8142e620 t update_queue\n")
    p = plan_kfd(ks, kfd_fixture / "btf")
    assert {q.status for q in p.probes} == {"unavailable"}
    assert {q.reason for q in p.probes if not q.probe.startswith("kfd:")} == {"module amdgpu is not loaded"}


class RecordingBpf:
    """Stands in for bcc.BPF: records attach calls, fails the names it is told to."""

    def __init__(self, refuse=()):
        self.refuse = set(refuse)
        self.calls = []

    def attach_kprobe(self, event, fn_name):
        self.calls.append(("kprobe", event, fn_name))
        if event in self.refuse:
            raise Exception(f"Failed to attach BPF program {fn_name} to kprobe {event}")

    def attach_kretprobe(self, event, fn_name):
        self.calls.append(("kretprobe", event, fn_name))
        if event in self.refuse:
            raise Exception(f"Failed to attach BPF program {fn_name} to kretprobe {event}")

    def detach_kprobe(self, event, fn_name):
        self.calls.append(("detach", event, fn_name))


def test_attach_order_and_fallback(kfd_fixture):
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", probes=["create_queue_cpsch", "hw_unmap_wait", "update_queue"])
    bpf = RecordingBpf(refuse={"create_queue_cpsch", "amdgpu:update_queue"})
    plan.attach(bpf)
    p = {q.probe: q for q in plan.probes}
    # plain name refused -> the module-qualified name is tried next
    assert bpf.calls[:4] == [("kprobe", "create_queue_cpsch", "kfd_entry__create_queue_cpsch"),
                             ("kprobe", "amdgpu:create_queue_cpsch", "kfd_entry__create_queue_cpsch"),
                             ("kretprobe", "amdgpu:create_queue_cpsch", "kfd_return__create_queue_cpsch"),
                             ("kprobe", "amdgpu:update_queue", "kfd_entry__update_queue")]
    assert (p["create_queue_cpsch"].status, p["create_queue_cpsch"].target) == ("attached", "amdgpu:create_queue_cpsch")
    assert "after create_queue_cpsch failed" in p["create_queue_cpsch"].reason
    assert p["update_queue"].status == "failed" and "amdgpu:update_queue" in p["update_queue"].reason
    # the unmap-wait pair: entry of one function, return of another
    assert ("kprobe", "pm_send_unmap_queue", "kfd_entry__hw_unmap_wait") in bpf.calls
    assert ("kretprobe", "amdkfd_fence_wait_timeout", "kfd_return__hw_unmap_wait") in bpf.calls
    assert p["hw_unmap_wait"].status == "attached"
    assert p["kfd_ioctl"].status == "unavailable" and p["kfd_ioctl"].reason == "not selected"


def test_kfd_tracepoints_preferred(tmp_path, kfd_fixture):
    """A kernel with the kfd:* tracepoint series (kernel/patches): its raw tracepoints are planned, the
    kprobes they replace are kept resolved as the fallback; attach() uses the fallback when one fails."""
    for name in ("kfd_queue_create", "kfd_queues_unmap", "kfd_queue_evict", "some_other_event"):
        (tmp_path / "events" / "kfd" / name).mkdir(parents=True)
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=tmp_path)
    p = {q.probe: q for q in plan.probes}
    assert (p["kfd:kfd_queue_create"].target, p["kfd:kfd_queue_create"].mechanism, p["kfd:kfd_queue_create"].status) == (
        "kfd:kfd_queue_create", "raw_tracepoint", "planned")
    assert p["kfd:kfd_queues_map"].status == "unavailable"
    assert (p["create_queue_cpsch"].status, p["create_queue_cpsch"].reason) == ("unavailable", "superseded by tracepoint kfd:kfd_queue_create")
    assert p["create_queue_nocpsch"].reason == "superseded by tracepoint kfd:kfd_queue_create"
    assert p["unmap_queues_cpsch"].reason == "superseded by tracepoint kfd:kfd_queues_unmap"
    assert p["evict_process_queues_cpsch"].status == "planned"  # per-queue evict events do not replace it
    assert p["map_queues_cpsch"].status == "planned"  # kfd_queues_map is absent
    assert f"-DGPT_FID_tp_kfd_queue_create={p['kfd:kfd_queue_create'].func_id}" in plan.cflags

    class TpBpf(RecordingBpf):
        def attach_raw_tracepoint(self, tp, fn_name):
            self.calls.append(("raw_tracepoint", tp, fn_name))
            if tp in self.refuse:
                raise Exception(f"Failed to attach BPF to raw tracepoint {tp}")

    bpf = TpBpf(refuse={"kfd_queue_create"})
    plan.attach(bpf)
    assert bpf.calls[0] == ("raw_tracepoint", "kfd_queue_create", "kfd_rtp__kfd_queue_create")
    assert p["kfd:kfd_queue_create"].status == "failed"
    assert p["kfd:kfd_queues_unmap"].status == "attached"
    assert (p["create_queue_cpsch"].status, p["create_queue_cpsch"].reason) == ("attached", "fallback for kfd:kfd_queue_create")
    assert p["unmap_queues_cpsch"].status == "unavailable"  # its tracepoint attached


def test_kfd_tracepoints_from_btf(tmp_path):
    """Offline: a BTF with btf_trace_kfd_* typedefs means the kernel has the series (no tracefs needed)."""
    from gpreempt_trace.recorder.plan import find_kfd_tracepoints

    class FakeBtf:
        def find(self, name, kinds):
            return 7 if name in ("btf_trace_kfd_queue_update", "btf_trace_unrelated") else None

    assert find_kfd_tracepoints([], (None, FakeBtf())) == {"kfd_queue_update"}
    assert find_kfd_tracepoints([tmp_path], ()) == set()


def test_newer_kernel_layout_uses_the_alternatives():
    """A >=6.14-shaped BTF (kfd_node, is_suspended, per-device pasid, grace_period argument): the planner
    picks the renamed/moved members and the BTF argument positions."""
    import struct as st

    from test_btf import Builder

    from gpreempt_trace.recorder.btf import Btf
    from gpreempt_trace.recorder.plan import _param_positions, resolve_fields

    b = Builder()
    u32 = b.int_("unsigned int", 4)
    task = b.add("task_struct", 4, vlen=2, word=16, extra=b.members([("pid", u32, 64), ("tgid", u32, 96)]))
    base = Btf(b.blob(), "vmlinux")
    m = Builder(first_id=base.type_count, str_base=base.str_len)
    bool_ = m.int_("bool", 1)
    node = m.add("kfd_node", 4, vlen=1, word=64, extra=m.members([("id", u32, 32 * 8)]))
    node_p = m.add("", 2, word=node)
    task_p = m.add("", 2, word=task)
    proc = m.add("kfd_process", 4, vlen=1, word=128, extra=m.members([("lead_thread", task_p, 8 * 8)]))
    proc_p = m.add("", 2, word=proc)
    props = m.add("queue_properties", 4, vlen=3, word=16,
                  extra=m.members([("queue_id", u32, 0), ("is_suspended", bool_, 70 * 8), ("is_active", bool_, 71 * 8)]))
    m.add("queue", 4, vlen=3, word=400, extra=m.members([("properties", props, 40 * 8), ("process", proc_p, 200 * 8), ("device", node_p, 208 * 8)]))
    qpd = m.add("qcm_process_device", 4, vlen=0, word=192)
    m.add("kfd_process_device", 4, vlen=2, word=600, extra=m.members([("qpd", qpd, 24 * 8), ("pasid", u32, 560 * 8)]))
    proto = m.add("", 13, vlen=5, word=u32, extra=b"".join(st.pack("<II", m.s(n), u32) for n in ("dqm", "filter", "filter_param", "grace_period", "reset")))
    m.add("unmap_queues_cpsch", 12, word=proto)
    mod = Btf(m.blob(), "amdgpu", base=base)
    mod.check_split()

    chosen, offsets, notes = resolve_fields(mod, base)
    assert chosen["DEV_ID"] == "kfd_node.id" and offsets["kfd_node.id"] == 32
    assert chosen["Q_IS_SUSPENDED"] == "queue.properties.is_suspended" and offsets["queue.properties.is_suspended"] == 110
    assert chosen["PROC_PASID"] is None and offsets["kfd_process.pasid"] is None
    assert chosen["PDD_PASID"] == "kfd_process_device.pasid" and offsets["kfd_process_device.pasid"] == 560
    assert offsets["kfd_process_device.qpd"] == 24 and offsets["task_struct.tgid"] == 12
    assert notes == []
    spec = next(p for p in PROBES if p.name == "unmap_queues_cpsch")
    pos = _param_positions(spec, mod, True)
    assert (pos["DQM"], pos["FILTER"], pos["FPARAM"], pos["GRACE"], pos["Q"]) == (0, 1, 2, 3, -1)


# --- Debian 6.12.117 (fixture): every KFD kprobe attaches ------------------------------------------

@pytest.fixture(scope="module")
def plan612(kernel_fixture):
    k = kernel_fixture("6.12.117+deb12-amd64")
    return plan_kfd(k / "kallsyms", k / "btf")


def test_fixture_612_plan_probes_execute_clone_and_its_map_unmap(plan612):
    by = {p.probe: p for p in plan612.probes}
    ex = by["execute_queues_cpsch"]
    # the clone's name, resolved from kallsyms, is what the plan attaches to and records
    assert (ex.target, ex.status, ex.entry_target, ex.ret_target) == (
        "execute_queues_cpsch.constprop.0", "planned", "execute_queues_cpsch.constprop.0", "execute_queues_cpsch.constprop.0")
    assert "GCC clone execute_queues_cpsch.constprop.0" in ex.reason
    assert (by["unmap_queues_cpsch"].target, by["unmap_queues_cpsch"].status) == ("unmap_queues_cpsch", "planned")
    assert (by["map_queues_cpsch"].target, by["map_queues_cpsch"].status) == ("map_queues_cpsch", "planned")
    assert (by["update_queue"].target, by["update_queue"].status) == ("amdgpu:update_queue", "planned")


def test_fixture_612_plan_attaches_every_kprobe(plan612):
    kprobes = [p for p in plan612.probes if ":" not in p.probe]  # not the kfd:*/amdkfd:* tracepoint rows
    assert [p.probe for p in kprobes] == KPROBES
    assert [p.probe for p in kprobes if p.status != "planned"] == []
    by = {p.probe: p for p in plan612.probes}
    for name in ("suspend_queues", "resume_queues", "kfd_ioctl_runtime_enable", "kfd_dbg_trap_enable", "kfd_dbg_trap_disable",
                 "reset_queues_cpsch", "kgd_gfx_v9_hqd_reset", "kgd_gfx_v10_hqd_reset", "kgd_gfx_v11_hqd_reset",
                 "kfd_hws_hang", "kfd_signal_reset_event"):
        assert (by[name].target, by[name].reason) == (name, None), name
    assert {by[n].event for n in ("reset_queues_cpsch", "kgd_gfx_v9_hqd_reset")} == {"queue_reset"}
    assert (by["kfd_hws_hang"].event, by["kfd_signal_reset_event"].event) == ("hws_hang", "gpu_reset")
    assert (by["suspend_queues"].event, by["resume_queues"].event) == ("queues_suspend", "queues_resume")


def test_fixture_612_argument_positions_from_btf(plan612):
    """6.12 prototypes (BTF): suspend_queues(p, num_queues, grace_period, exception_clear_mask, usr_queue_id_array),
    resume_queues(p, num_queues, usr_queue_id_array), unmap_queues_cpsch(dqm, filter, filter_param, grace_period, reset),
    kfd_dbg_trap_enable(target, ...), kfd_ioctl_runtime_enable(filep, p, data), reset_queues_cpsch(dqm, pasid),
    kfd_signal_reset_event(dev); the execute clone's arguments are not trusted."""
    flags = set(plan612.cflags)
    for f in ("-DGPT_ARG_suspend_queues_PROC=0", "-DGPT_ARG_suspend_queues_NQ=1", "-DGPT_ARG_suspend_queues_GRACE=2",
              "-DGPT_ARG_suspend_queues_QIDS=4", "-DGPT_ARG_resume_queues_PROC=0", "-DGPT_ARG_resume_queues_NQ=1",
              "-DGPT_ARG_resume_queues_QIDS=2", "-DGPT_ARG_resume_queues_GRACE=-1",
              "-DGPT_ARG_unmap_queues_cpsch_GRACE=3", "-DGPT_ARG_unmap_queues_cpsch_FILTER=1",
              "-DGPT_ARG_kfd_dbg_trap_enable_PROC=0", "-DGPT_ARG_kfd_dbg_trap_disable_PROC=0",
              "-DGPT_ARG_kfd_ioctl_runtime_enable_PROC=1", "-DGPT_ARG_reset_queues_cpsch_PASID=1",
              "-DGPT_ARG_kfd_signal_reset_event_DEV=0", "-DGPT_ARG_kfd_hws_hang_DQM=0",
              "-DGPT_ARG_execute_queues_cpsch_DQM=-1", "-DGPT_ARG_execute_queues_cpsch_GRACE=-1"):
        assert f in flags, f


def test_fixture_612_offsets(plan612):
    """6.12 moved the device to struct kfd_node and added queue_properties.is_suspended. Offsets equal
    pahole's (`pahole -F btf --btf_base vmlinux -C queue,queue_properties,kfd_node,kfd_process amdgpu`)."""
    assert plan612.fields["DEV_ID"] == "kfd_node.id"
    assert plan612.fields["Q_IS_SUSPENDED"] == "queue.properties.is_suspended"
    assert plan612.fields["PROC_PASID"] == "kfd_process.pasid"
    assert plan612.fields["PDD_PASID"] is None
    assert {k: plan612.offsets[k] for k in (
        "queue.properties.queue_id", "queue.properties.doorbell_off", "queue.properties.is_evicted",
        "queue.properties.is_suspended", "queue.properties.is_active", "queue.process", "queue.device",
        "kfd_node.id", "kfd_process.pasid", "kfd_process.lead_thread", "task_struct.tgid", "kfd_process_device.qpd")} == {
        "queue.properties.queue_id": 48, "queue.properties.doorbell_off": 104, "queue.properties.is_evicted": 109,
        "queue.properties.is_suspended": 110, "queue.properties.is_active": 112, "queue.process": 264, "queue.device": 272,
        "kfd_node.id": 36, "kfd_process.pasid": 160, "kfd_process.lead_thread": 96, "task_struct.tgid": 2436,
        "kfd_process_device.qpd": 16}
