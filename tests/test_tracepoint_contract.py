"""Contract: the kfd:* tracepoints of kernel/patches <-> the recorder's one table
(gpreempt_trace/recorder/tracepoints.py) <-> the generated handlers (tracers/kfd_tracepoints.h).

The kernel side is read from the series itself: kfd_trace.h is rebuilt by applying every patch that
touches it (git apply, in order) and every TRACE_EVENT / DECLARE_EVENT_CLASS / DEFINE_EVENT is parsed."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gpreempt_trace.contracts import resources
from gpreempt_trace.trace import schema
from gpreempt_trace.recorder import tracepoints as tp
from gpreempt_trace.recorder.plan import TRACEPOINTS as PLAN_TRACEPOINTS, plan_kfd

REPO = Path(__file__).resolve().parents[1]
SERIES = REPO / "kernel" / "patches"
TRACE_H = "drivers/gpu/drm/amd/amdkfd/kfd_trace.h"


def _trace_header(series: Path, tmp: Path) -> str:
    patches = sorted(p for p in series.glob("[0-9][0-9][0-9][0-9]-*.patch") if not p.name.startswith("0000-"))
    assert patches, f"no patches in {series}"
    for p in patches:
        if TRACE_H in p.read_text():
            subprocess.run(["git", "apply", f"--include={TRACE_H}", str(p)], cwd=tmp, check=True, capture_output=True)
    return (tmp / TRACE_H).read_text()


def _macro_bodies(text: str, macro: str):
    """(first argument, whole body) of every MACRO( ... ) with balanced parentheses."""
    for m in re.finditer(rf"^\s*{macro}\(", text, re.M):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        body = text[m.end():i - 1]
        yield body.split(",", 1)[0].strip(), body


def _proto(body: str) -> tuple[tuple[str, str], ...]:
    m = re.search(r"TP_PROTO\((.*?)\),\s*TP_ARGS", body, re.S)
    out = []
    for arg in m.group(1).split(","):
        arg = " ".join(arg.split())
        name = re.search(r"(\w+)$", arg).group(1)
        ty = arg[: -len(name)].strip()
        out.append((ty if ty.endswith("*") else ty, name))
    return tuple(out)


def _fields(body: str) -> tuple[tuple[str, str], ...]:
    entry = re.search(r"TP_STRUCT__entry\((.*?)\),\s*TP_fast_assign", body, re.S).group(1)
    return tuple((ty.strip(), name.strip()) for ty, name in re.findall(r"__field\(\s*([^,]+),\s*(\w+)\s*\)", entry))


def kernel_tracepoints(series: Path, tmp: Path) -> dict[str, dict]:
    """name -> {class, proto, fields} for every event kfd_trace.h of the series defines."""
    text = _trace_header(series, tmp)
    assert re.search(r"#define TRACE_SYSTEM kfd\b", text)
    classes = {n: {"proto": _proto(b), "fields": _fields(b)} for n, b in _macro_bodies(text, "DECLARE_EVENT_CLASS")}
    events = {n: {"class": None, "proto": _proto(b), "fields": _fields(b)} for n, b in _macro_bodies(text, "TRACE_EVENT")}
    for body_name, body in _macro_bodies(text, "DEFINE_EVENT"):
        klass, rest = body_name, body.split(",", 2)
        name = rest[1].strip()
        events[name] = {"class": klass, "proto": _proto(body), "fields": classes[klass]["fields"]}
        assert events[name]["proto"] == classes[klass]["proto"], name
    return events


def _norm_proto(proto):
    return tuple((" ".join(t.split()), n) for t, n in proto)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    return kernel_tracepoints(SERIES, tmp_path_factory.mktemp("series"))


KFD = [t for t in tp.TRACEPOINTS if t.system == "kfd"]  # the series; the DKMS amdkfd:* ones: tests/test_dkms_tracepoints.py


# what kernel/patches adds to kfd_trace.h: per queue (class kfd_queue_class), per runlist/HIQ operation,
# and the scheme B batch (AMDKFD_IOC_PREEMPT_QUEUES / RESUME_QUEUES)
SERIES_TRACEPOINTS = ["kfd_queue_create", "kfd_queue_destroy", "kfd_queue_update", "kfd_queue_evict", "kfd_queue_restore",
          "kfd_queue_suspend", "kfd_queue_resume", "kfd_queues_unmap", "kfd_queues_map", "kfd_hw_unmap_wait",
          "kfd_queues_preempt", "kfd_queues_unpreempt"]


def test_the_series_defines_exactly_the_tables_kfd_tracepoints(kernel):
    assert sorted(kernel) == sorted(SERIES_TRACEPOINTS)
    assert [t.name for t in KFD] == SERIES_TRACEPOINTS  # each once, in this order (the plan's rows and func ids follow it)
    assert {t.system for t in tp.TRACEPOINTS} == {"kfd", "amdkfd"}


def test_every_tracepoint_has_the_tables_class_proto_and_fields_both_ways(kernel):
    for t in KFD:
        k = kernel[t.name]
        assert k["class"] == t.klass, t.name
        assert _norm_proto(k["proto"]) == _norm_proto(t.proto), t.name
        assert set(k["fields"]) == {(f.ctype, f.name) for f in t.fields}, t.name
        assert len(k["fields"]) == len(t.fields), t.name


def test_every_event_and_column_of_the_table_exists_in_the_schema():
    cols = {c.name: c for c in schema.EVENT_COLUMNS}
    for t in tp.TRACEPOINTS:
        assert t.event in schema.EVENTS, t.event
        for f in t.fields:
            if f.column is None:
                assert f.note, f"{t.name}.{f.name} is not recorded and does not say why"
                continue
            for c in (f.column, *f.also):
                assert c in cols and cols[c].in_parquet, (t.name, f.name, c)
    # all four scheme-B events become rows of their own
    events = {t.name: t.event for t in tp.TRACEPOINTS}
    assert (events["kfd_queues_preempt"], events["kfd_queues_unpreempt"]) == ("queues_preempt", "queues_unpreempt")
    assert (events["kfd_queue_suspend"], events["kfd_queue_resume"]) == ("queue_preempt", "queue_unpreempt")


def test_queue_class_columns_are_filled_by_the_named_reader():
    """For TP_PROTO(struct queue *q) the handler reads the queue; the reader the table names sets the column."""
    src = (resources.tracers() / "kfd.bpf.c").read_text() + tp.render()
    for f in tp.QUEUE_FIELDS:
        if f.column is None:
            continue
        m = re.search(rf"static __always_inline \w+ {f.reader}\(.*?\n}}\n", src, re.S)
        assert m, f.reader
        col = "qtype_id" if f.column == "queue_type" else f.column
        body = m.group(0) if f.reader != "kfd_read_flags" else tp.render()  # flags: kfd_rtp_queue sets them
        assert re.search(rf"GPT_SET\(e, {col},", body), (f.name, f.reader)


def test_generated_handlers_read_each_recorded_field_from_its_tp_proto_position():
    text = tp.render()
    for t in KFD:
        assert f"int kfd_rtp__{t.name}(struct bpf_raw_tracepoint_args *ctx)" in text
        if t.kind != "args":
            continue
        body = text.split(f"int kfd_rtp__{t.name}(", 1)[1].split("\n}\n", 1)[0]
        names = [n for _, n in t.proto]
        for f in t.fields:
            if f.column is not None:
                assert re.search(rf"GPT_SET\(e, {f.column}, [^;]*ctx->args\[{names.index(f.name)}\]", body) or \
                    (f.conv and f"{f.conv}((s32)ctx->args[{names.index(f.name)}])" in body), (t.name, f.name)


def test_checked_in_header_is_current():
    assert tp.header_path().read_text() == tp.render(), "run: make codegen"


def test_the_recorder_uses_the_table(kfd_fixture):
    assert PLAN_TRACEPOINTS is tp.TRACEPOINTS
    kfd_c = (resources.tracers() / "kfd.bpf.c").read_text()
    assert kfd_c.count(tp.INCLUDE_LINE) == 1 and "kfd_rtp__" not in kfd_c  # no hand-written handler left
    plan = plan_kfd(kfd_fixture / "kallsyms", kfd_fixture / "btf")
    src = plan.source()
    assert tp.INCLUDE_LINE not in src  # spliced in: BCC builds programs only from the main file
    rows = {p.probe for p in plan.probes}
    for t in tp.TRACEPOINTS:
        assert t.probe in rows and f"{t.handler}(" in src
