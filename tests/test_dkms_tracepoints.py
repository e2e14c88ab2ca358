"""The DKMS amdkfd:* tracepoints (ROCm amdgpu-dkms's own kfd_trace.h) in the one tracepoint table:

- the table agrees, field by field, with the tracefs format files derived from the DKMS source
  (tests/fixtures/tracefs/amdkfd-dkms-6.12, see its README), and a drifted format is caught;
- plan_kfd plans them from a tracefs tree (offsets as -D flags, never fixed ones), says why when it does not;
- attach() attaches them as classic tracepoints;
- the generated handlers pass this kernel's verifier, and read the fields at the format's offsets on a
  live classic tracepoint of this kernel (no DKMS host here: sched_process_exec stands in)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpreempt_trace.recorder import record_layout
from gpreempt_trace.contracts import resources
from gpreempt_trace.recorder.decode import EventDecoder
from gpreempt_trace.recorder import tpformat
from gpreempt_trace.recorder import tracepoints as tp
from gpreempt_trace.recorder.plan import TRACEPOINTS, find_dkms_tracepoints, plan_kfd

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tracefs" / "amdkfd-dkms-6.12"
EVENTS = FIXTURE / "events" / "amdkfd"
DKMS = [t for t in TRACEPOINTS if t.system == "amdkfd"]
BY = {t.name: t for t in DKMS}
EVICT_END = "kfd_evict_process_worker_end"

# what the fixture says, written out: (name, offset, size, signed) of each event's own fields
FIXTURE_FIELDS = {
    "kfd_map_memory_to_gpu_start": [("pid", 8, 4, False)],
    "kfd_map_memory_to_gpu_end": [("pid", 8, 4, False), ("array_size", 12, 4, False), ("pStatusMsg", 16, 4, True)],
    "kfd_kgd2kfd_schedule_evict_and_restore_process": [("pid", 8, 4, False), ("delay_jiffies", 12, 4, False)],
    "kfd_evict_process_worker_start": [("pid", 8, 4, False)],
    "kfd_evict_process_worker_end": [("pid", 8, 4, False), ("pStatusMsg", 12, 4, True)],
    "kfd_restore_process_worker_start": [("pid", 8, 4, False)],
    "kfd_restore_process_worker_end": [("pid", 8, 4, False), ("pStatusMsg", 12, 4, True)],
}

PLANNED_FLAGS = [
    "-DGPT_TPO_kfd_evict_process_worker_start__pid=8",
    "-DGPT_TPO_kfd_evict_process_worker_end__pid=8", "-DGPT_TPO_kfd_evict_process_worker_end__pStatusMsg=12",
    "-DGPT_TPO_kfd_restore_process_worker_start__pid=8",
    "-DGPT_TPO_kfd_restore_process_worker_end__pid=8", "-DGPT_TPO_kfd_restore_process_worker_end__pStatusMsg=12",
]


def fmt(name: str, root: Path = FIXTURE) -> tpformat.EventFormat:
    return tpformat.parse((root / "events" / "amdkfd" / name / "format").read_text())


def rows(plan) -> dict[str, dict]:
    return {p.probe: p.as_dict() for p in plan.probes if p.probe.startswith("amdkfd:")}


def drifted(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """a copy of the fixture tracefs with one line of one format file changed"""
    root = tmp_path / "tracefs"
    shutil.copytree(FIXTURE, root)
    f = root / "events" / "amdkfd" / name / "format"
    text = f.read_text()
    assert text.count(old) == 1, old
    f.write_text(text.replace(old, new))
    return root


# --- the table <-> the fixture --------------------------------------------------------------------
def test_the_fixture_holds_the_dkms_header_and_the_table_takes_or_leaves_each_event():
    assert sorted(p.name for p in EVENTS.iterdir()) == sorted(FIXTURE_FIELDS)
    assert {t.name for t in DKMS} == {"kfd_evict_process_worker_start", "kfd_evict_process_worker_end",
                                      "kfd_restore_process_worker_start", "kfd_restore_process_worker_end"}
    assert {t.name for t in DKMS} | set(tp.DKMS_LEFT_OUT) == set(FIXTURE_FIELDS)
    assert not {t.name for t in DKMS} & set(tp.DKMS_LEFT_OUT)
    assert len({t.name for t in TRACEPOINTS}) == len(TRACEPOINTS)  # GPT_FID_tp_<name> is one namespace


def test_fixture_files_parse_to_the_trace_event_layout():
    for name, fields in FIXTURE_FIELDS.items():
        f = fmt(name)
        assert f.name == name
        assert [(c.name, c.offset, c.size, c.signed) for c in f.common] == [
            ("common_type", 0, 2, False), ("common_flags", 2, 1, False), ("common_preempt_count", 3, 1, False), ("common_pid", 4, 4, True)]
        assert [(x.name, x.offset, x.size, x.signed) for x in f.fields] == fields, name
    end = fmt(EVICT_END)
    assert [x.type for x in end.fields] == ["unsigned int", "__data_loc char[]"]
    assert end.print_fmt == '"Process pid=%u, StatusMsg=%s", REC->pid, __get_str(pStatusMsg)'


def test_table_agrees_with_the_fixture_field_by_field():
    for t in DKMS:
        f = fmt(t.name)
        flags, problems, notes = tp.format_check(t, f)
        assert (problems, notes) == ([], []), t.name
        for tf in t.fields:
            ff = f.field(tf.name)
            if ff is None:
                assert tf.optional and tf.name == "pasid", (t.name, tf.name)  # older trees only
                continue
            _, size, signed = tp.FORMAT_TYPES[tf.ctype]
            assert (ff.size, ff.type) == (size, tf.ctype), (t.name, tf.name)
            assert signed is None or ff.signed == signed, (t.name, tf.name)
            assert f"-D{tp.tpo_macro(t, tf.name)}={ff.offset}" in flags
        assert t.proto == (tp.DKMS_END_PROTO if t.span == "end" else tp.DKMS_PROC_PROTO)
    assert (BY[EVICT_END].begin, BY["kfd_restore_process_worker_end"].begin) == (
        "kfd_evict_process_worker_start", "kfd_restore_process_worker_start")
    assert {t.name: t.event for t in DKMS} == {
        "kfd_evict_process_worker_start": "process_evict", "kfd_evict_process_worker_end": "process_evict",
        "kfd_restore_process_worker_start": "process_restore", "kfd_restore_process_worker_end": "process_restore"}
    end = {f.name: (f.column, f.also) for f in BY[EVICT_END].fields}
    assert end == {"pid": ("owner_tgid", ("target_pid",)), "pasid": ("pasid", ()), "pStatusMsg": ("ret", ())}
    assert all(t.supersedes == () for t in DKMS)


@pytest.mark.parametrize("old,new,problem", [
    ("field:unsigned int pid;\toffset:8;\tsize:4;\tsigned:0;", "field:unsigned long pid;\toffset:8;\tsize:8;\tsigned:0;",
     "pid has size 8, the table reads 4"),
    ("field:unsigned int pid;\toffset:8;\tsize:4;\tsigned:0;", "field:int pid;\toffset:8;\tsize:4;\tsigned:1;",
     "pid has signed:1, the table has signed:0"),
    ("field:__data_loc char[] pStatusMsg;", "field:__data_loc char[] status;", "no field pStatusMsg"),
    ("field:__data_loc char[] pStatusMsg;\toffset:12;\tsize:4;\tsigned:1;", "field:char pStatusMsg[4];\toffset:12;\tsize:4;\tsigned:1;",
     "pStatusMsg is 'char[4]', the table has '__data_loc char[]'"),
])
def test_a_drifted_format_fails_the_check_and_the_plan_says_so(tmp_path, kfd_fixture, old, new, problem):
    root = drifted(tmp_path, EVICT_END, old, new)
    assert tp.format_check(BY[EVICT_END], fmt(EVICT_END, root))[1] == [problem]
    assert tp.format_check(BY[EVICT_END], fmt(EVICT_END))[1] == []  # the fixture itself is unchanged
    r = rows(plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=root))
    why = f"tracefs format differs from the table: {problem}"
    assert (r[f"amdkfd:{EVICT_END}"]["status"], r[f"amdkfd:{EVICT_END}"]["reason"]) == ("unavailable", why)
    assert (r["amdkfd:kfd_evict_process_worker_start"]["status"], r["amdkfd:kfd_evict_process_worker_start"]["reason"]) == (
        "unavailable", f"amdkfd:{EVICT_END} is not planned ({why}): its span writes no row")
    assert r["amdkfd:kfd_restore_process_worker_end"]["status"] == "planned"


def test_offsets_follow_the_format_never_the_table(tmp_path, kfd_fixture):
    """A field inserted before pid (another DKMS build): the -D offsets move with it."""
    root = drifted(tmp_path, EVICT_END, "\tfield:unsigned int pid;\toffset:8;\tsize:4;\tsigned:0;\n"
                   "\tfield:__data_loc char[] pStatusMsg;\toffset:12;",
                   "\tfield:unsigned int gpu_id;\toffset:8;\tsize:4;\tsigned:0;\n"
                   "\tfield:unsigned int pid;\toffset:12;\tsize:4;\tsigned:0;\n"
                   "\tfield:__data_loc char[] pStatusMsg;\toffset:16;")
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=root)
    assert [f for f in plan.cflags if f.startswith(f"-DGPT_TPO_{EVICT_END}__")] == [
        f"-DGPT_TPO_{EVICT_END}__pid=12", f"-DGPT_TPO_{EVICT_END}__pStatusMsg=16"]
    assert rows(plan)[f"amdkfd:{EVICT_END}"]["reason"] == "fields the table does not read: gpu_id"


def test_an_older_tree_naming_the_process_by_pasid_is_planned_without_an_owner(tmp_path, kfd_fixture):
    root = drifted(tmp_path, EVICT_END, "field:unsigned int pid;", "field:unsigned int pasid;")
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=root)
    r = rows(plan)[f"amdkfd:{EVICT_END}"]
    assert (r["status"], r["reason"]) == ("planned", "no pid field in this build: rows carry no owner_tgid")
    assert [f for f in plan.cflags if f.startswith(f"-DGPT_TPO_{EVICT_END}__")] == [
        f"-DGPT_TPO_{EVICT_END}__pasid=8", f"-DGPT_TPO_{EVICT_END}__pStatusMsg=12"]


# --- the plan --------------------------------------------------------------------------------------
def test_plan_from_the_fixture_tracefs(kfd_fixture):
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=FIXTURE)
    base = next(p.func_id for p in plan.probes if p.probe == "amdkfd:kfd_evict_process_worker_start")
    assert base == len(plan.probes) - 4
    names = ["kfd_evict_process_worker_start", EVICT_END, "kfd_restore_process_worker_start", "kfd_restore_process_worker_end"]
    events = ["process_evict", "process_evict", "process_restore", "process_restore"]
    reasons = ["starts the span: amdkfd:kfd_evict_process_worker_end writes the row", None,
               "starts the span: amdkfd:kfd_restore_process_worker_end writes the row", None]
    assert rows(plan) == {f"amdkfd:{n}": {"probe": f"amdkfd:{n}", "event": e, "target": f"amdkfd:{n}", "mechanism": "tracepoint",
                                          "status": "planned", "reason": why, "func_id": base + i}
                          for i, (n, e, why) in enumerate(zip(names, events, reasons))}
    assert [f for f in plan.cflags if f.startswith("-DGPT_TPO_")] == PLANNED_FLAGS
    assert [f"-DGPT_FID_tp_{n}={base + i}" for i, n in enumerate(names)] == [
        f for f in plan.cflags if f.startswith("-DGPT_FID_tp_kfd_evict_process") or f.startswith("-DGPT_FID_tp_kfd_restore_process")]
    assert {plan.func_names()[base + i] for i in range(4)} == {f"amdkfd:{n}" for n in names}
    # the kfd:* series is not in this tracefs, and no kprobe is superseded
    assert {p.status for p in plan.probes if p.probe.startswith("kfd:")} == {"unavailable"}
    assert {p.probe for p in plan.probes if (p.reason or "").startswith("superseded")} == set()
    assert set(find_dkms_tracepoints([FIXTURE])) == set(BY)


def test_plan_says_why_they_are_unavailable(tmp_path, kfd_fixture):
    absent = "kernel without the DKMS amdkfd:* tracepoints"
    for tracefs in (None, tmp_path):  # offline without tracefs; a tracefs without events/amdkfd
        r = rows(plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=tracefs))
        assert {(x["status"], x["reason"], x["mechanism"]) for x in r.values()} == {("unavailable", absent, None)}
    ks = tmp_path / "kallsyms"
    ks.write_text("ffffffff81000000 T _stext\n")
    r = rows(plan_kfd(ks, kfd_fixture / "btf", tracefs=FIXTURE))
    assert {x["reason"] for x in r.values()} == {"module amdgpu is not loaded"}
    bad = drifted(tmp_path, EVICT_END, "format:", "")
    (bad / "events" / "amdkfd" / EVICT_END / "format").write_text("garbage\n")
    r = rows(plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=bad))
    assert r[f"amdkfd:{EVICT_END}"]["reason"] == (f"format unreadable: {bad}/events/amdkfd/{EVICT_END}/format: "
                                                  "not a tracefs event format file (no name: line or no common_ fields)")


def test_selecting_half_a_span_plans_neither(kfd_fixture):
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=FIXTURE, probes=[f"amdkfd:{EVICT_END}", "kfd_ioctl"])
    r = rows(plan)
    assert (r[f"amdkfd:{EVICT_END}"]["status"], r[f"amdkfd:{EVICT_END}"]["reason"]) == (
        "unavailable", "amdkfd:kfd_evict_process_worker_start is not planned (not selected): its span writes no row")
    assert {x["reason"] for k, x in r.items() if k != f"amdkfd:{EVICT_END}"} == {"not selected"}


def test_plan_on_the_612_fixture(kernel_fixture):
    k = kernel_fixture("6.12.117+deb12-amd64")
    plan = plan_kfd(k / "kallsyms", k / "btf", tracefs=FIXTURE)
    assert {x["status"] for x in rows(plan).values()} == {"planned"}
    assert [f for f in plan.cflags if f.startswith("-DGPT_TPO_")] == PLANNED_FLAGS


class TpBpf:
    """Stands in for bcc.BPF: records attach_tracepoint calls, refuses the named ones."""

    def __init__(self, refuse=()):
        self.refuse, self.calls = set(refuse), []

    def attach_tracepoint(self, tp, fn_name):
        self.calls.append((tp, fn_name))
        if tp in self.refuse:
            raise Exception(f"Failed to attach BPF program {fn_name} to tracepoint {tp}")


def test_attach_uses_classic_tracepoints_and_names_a_broken_span(kfd_fixture):
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=FIXTURE, probes=[t.probe for t in DKMS])
    bpf = TpBpf(refuse={"amdkfd:kfd_restore_process_worker_start"})
    plan.attach(bpf)
    assert bpf.calls == [(t.probe, f"amdkfd_tp__{t.name}") for t in DKMS]
    r = rows(plan)
    assert [r[t.probe]["status"] for t in DKMS] == ["attached", "attached", "failed", "attached"]
    assert r["amdkfd:kfd_restore_process_worker_start"]["reason"] == (
        "Failed to attach BPF program amdkfd_tp__kfd_restore_process_worker_start to tracepoint amdkfd:kfd_restore_process_worker_start")
    assert r["amdkfd:kfd_restore_process_worker_end"]["reason"] == (
        "amdkfd:kfd_restore_process_worker_start failed to attach: its span writes no row")
    assert r[f"amdkfd:{EVICT_END}"]["reason"] is None


# --- the generated C -------------------------------------------------------------------------------
def test_generated_handlers_read_fields_only_through_the_format_offsets():
    text = tp.render()
    assert "AMDKFD_FIELD(ctx, " in text and not re.search(r"AMDKFD_FIELD\(ctx, \d", text)  # no fixed offset anywhere
    for t in DKMS:
        body = text.split(f"int {t.handler}(void *ctx)\n{{", 1)[1].split("\n}\n", 1)[0]
        if t.span == "begin":
            assert f"kfd_key(GPT_FID_tp_{t.name})" in body and "gpt_reserve" not in body
            continue
        assert f"kfd_key(GPT_FID_tp_{t.begin})" in body and "kfd_entries.delete(&key)" in body
        assert f"gpt_reserve_owned(GPT_EV_{t.event.upper()}, GPT_FID_tp_{t.name}, owner)" in body
        for f in t.fields:
            m = tp.tpo_macro(t, f.name)
            assert f"#ifdef {m}" in body
            for col in (f.column, *f.also):
                assert re.search(rf"#ifdef {m}\n(?:[^#]*\n)*?\t+(?:if \(.*\)\n\t+)?GPT_SET\(e, {col}, ", body), (t.name, f.name, col)
    assert tp.header_path().read_text() == text, "run: make codegen"


bcc = None


def _bcc():
    global bcc
    if os.geteuid() != 0:
        pytest.skip("loading BPF programs needs root")
    bcc = pytest.importorskip("bcc")
    os.environ["BCC_KERNEL_SOURCE"] = str(resources.tracers() / "stub")
    return bcc


def _compile(plan, extra=()):
    b = _bcc()
    text = (resources.tracers() / "common.h").read_text() + "\n" + plan.source()
    return b.BPF(text=text.encode(), cflags=plan.cflags + list(extra) + [f"-I{resources.tracers()}"])


@pytest.mark.bpf
@pytest.mark.parametrize("with_tracefs", [True, False], ids=["fixture-offsets", "no-offsets"])
def test_verifier_accepts_the_dkms_handlers(kfd_fixture, with_tracefs):
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=FIXTURE if with_tracefs else None)
    b = _compile(plan)
    try:
        for t in DKMS:
            assert b.load_func(t.handler.encode(), bcc.BPF.TRACEPOINT).fd >= 0  # raises with the verifier log
    finally:
        b.cleanup()


def _live_tracefs() -> list[Path]:
    """This kernel's tracefs dirs with sched_process_exec; as root an unmounted tracefs is mounted first, as
    record does (a fresh machine boots without it)."""
    if os.geteuid() == 0:
        from gpreempt_trace.errors import GptError
        from gpreempt_trace.recorder import runtime

        try:
            runtime._ensure_tracefs()
        except GptError:
            pass
    return [d for d in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
            if (d / "events" / "sched" / "sched_process_exec" / "format").is_file()]


@pytest.mark.bpf
def test_handlers_read_a_live_record_at_its_format_offsets(kfd_fixture, tmp_path):
    """No DKMS host here: the evict-worker pair is attached to this kernel's syscalls:sys_enter_execve (start)
    and sched:sched_process_exec (end), with the offsets of sched_process_exec's own format file standing
    in for pid and pStatusMsg (its `filename` is a __data_loc string too). Exec'ing a program named
    "Success" gives ret 0; another name leaves ret NULL; owner_tgid/target_pid are the exec'ing pid."""
    _bcc()
    LIVE_TRACEFS = _live_tracefs()
    if not LIVE_TRACEFS or not (LIVE_TRACEFS[0] / "events" / "syscalls" / "sys_enter_execve").is_dir():
        pytest.skip("no tracefs with sched_process_exec and syscalls:sys_enter_execve")
    live = tpformat.parse((LIVE_TRACEFS[0] / "events" / "sched" / "sched_process_exec" / "format").read_text())
    pid, filename = live.field("pid"), live.field("filename")
    assert (pid.size, filename.data_loc) == (4, True)
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf", tracefs=FIXTURE)
    begin = BY["kfd_evict_process_worker_start"]
    offs = [f"-DGPT_TPO_{EVICT_END}__pid={pid.offset}", f"-DGPT_TPO_{EVICT_END}__pStatusMsg={filename.offset}"]
    plan.cflags = [f for f in plan.cflags if not f.startswith(f"-DGPT_TPO_{EVICT_END}__")] + offs
    b = _compile(plan)
    got = []
    lay = record_layout.layout()
    dtype = record_layout.numpy_dtype(lay)

    def on_event(_ctx, data, size):
        got.append(np.frombuffer(bytes((__import__("ctypes").c_char * size).from_address(data)), dtype, count=1)[0].copy())

    try:
        b.attach_tracepoint(tp=b"syscalls:sys_enter_execve", fn_name=begin.handler.encode())
        b.attach_tracepoint(tp=b"sched:sched_process_exec", fn_name=BY[EVICT_END].handler.encode())
        b[b"gpt_events"].open_ring_buffer(on_event)
        for name in ("Success", "Failed"):
            shutil.copy("/bin/true", tmp_path / name)
        kids = {}
        for name in ("Success", "Failed"):  # PATH="" makes execve("Success"): the record's filename is exactly it
            p = subprocess.Popen([name], cwd=tmp_path, env={"PATH": ""})
            p.wait()
            kids[p.pid] = name
        b.ring_buffer_consume()
    finally:
        b.cleanup()
    fid = next(p.func_id for p in plan.probes if p.probe == f"amdkfd:{EVICT_END}")
    names = {fid: f"amdkfd:{EVICT_END}"}
    table = EventDecoder("r", [names.get(i, f"f{i}") for i in range(fid + 1)]).decode(np.array(got, dtype)) if got else None
    mine = sorted((r for r in (table.to_pylist() if table else []) if r["owner_tgid"] in kids), key=lambda r: r["owner_tgid"])
    assert [(kids[r["owner_tgid"]], r["event"], r["func"], r["owner_tgid"], r["target_pid"], r["ret"], r["dur_ns"] is not None)
            for r in mine] == sorted(((n, "process_evict", f"amdkfd:{EVICT_END}", k, k, 0 if n == "Success" else None, True)
                                      for k, n in kids.items()), key=lambda x: x[3])
