"""The KFD uapi contract (gpreempt_trace/contracts/uapi.py is the one definition): gcc checks every size, offset,
request number, ioctl nr (the recorder's whole name table) and constant against the real headers (the
system 6.1 header and Debian's 6.12.117 uapi header, kept in tests/fixtures/uapi/), and fails when a
number drifts in a header or in uapi.py; no module types a request number of its own; the BPF header
generated from it is current (queue-type map included), the ctypes side is generated from the same
tables, the written-back queue id flags are decoded once, and scheme B's layout is accepted in one
shape only."""
from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import lzma
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpreempt_trace.contracts import resources, uapi
from gpreempt_trace.recorder import ioctls

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "uapi"
SYSTEM_HEADER = Path("/usr/include/linux/kfd_ioctl.h")
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed (make setup installs it)")


def _header_612(tmp: Path) -> Path:
    """tests/fixtures/uapi/6.12.117+deb12/kfd_ioctl.h (from linux-headers-6.12.117+deb12-common), checked."""
    src = FIXTURES / "6.12.117+deb12"
    data = lzma.decompress((src / "kfd_ioctl.h.xz").read_bytes())
    digest = (src / "SHA256SUMS").read_text().split()[0]
    assert hashlib.sha256(data).hexdigest() == digest
    out = tmp / "inc612" / "linux" / "kfd_ioctl.h"
    out.parent.mkdir(parents=True)
    out.write_bytes(data)
    return out.parent.parent


def _system_minor() -> int:
    return int(next(line.split()[2] for line in SYSTEM_HEADER.read_text().splitlines() if "KFD_IOCTL_MINOR_VERSION" in line))


def _mutated(tmp: Path, header: Path, old: str, new: str) -> Path:
    """An include folder holding a copy of `header` with one edit (which must apply exactly once)."""
    text = header.read_text()
    assert text.count(old) == 1, old
    out = tmp / "mutated" / "linux" / "kfd_ioctl.h"
    out.parent.mkdir(parents=True)
    out.write_text(text.replace(old, new))
    return out.parent.parent


def _compile(tmp: Path, minor: int, include: Path | None) -> subprocess.CompletedProcess:
    # kfd_ioctl.h includes <drm/drm.h> (libdrm-dev) only for the ioctl macros and __u32 types
    shim = tmp / "shim" / "drm"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "drm.h").write_text("#include <linux/types.h>\n#include <linux/ioctl.h>\n")
    src = tmp / f"check{minor}.c"
    src.write_text(uapi.c_checks(minor))
    cmd = ["gcc", "-fsyntax-only", "-Werror", *(["-I", str(include)] if include else []), "-I", str(tmp / "shim"), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True)


@needs_gcc
@pytest.mark.skipif(not SYSTEM_HEADER.is_file(), reason="linux-libc-dev is not installed")
def test_layouts_match_the_system_header(tmp_path):
    res = _compile(tmp_path, _system_minor(), None)
    assert res.returncode == 0, res.stderr


@needs_gcc
def test_layouts_match_the_6_12_uapi_header(tmp_path):
    res = _compile(tmp_path, 17, _header_612(tmp_path))
    assert res.returncode == 0, res.stderr
    # the check really covers the debugger ABI (it would be vacuous if the structs were skipped)
    text = uapi.c_checks(17)
    for needle in ("offsetof(struct kfd_ioctl_dbg_trap_args, suspend_queues.grace_period) == 28",
                   "sizeof(struct kfd_queue_snapshot_entry) == 64", "AMDKFD_IOC_DBG_TRAP == 0xc0204b26u",
                   "AMDKFD_IOC_RUNTIME_ENABLE == 0xc0104b25u", "EC_PROCESS_RUNTIME == 48"):
        assert needle in text


@needs_gcc
def test_a_wrong_offset_fails_the_compile_check(tmp_path, monkeypatch):
    bad = dict(uapi.STRUCTS)
    bad["kfd_ioctl_dbg_trap_suspend_queues_args"] = [("exception_mask", "u64", None), ("num_queues", "u32", None),
                                                    ("queue_array_ptr", "u64", None), ("grace_period", "u32", None)]
    monkeypatch.setattr(uapi, "STRUCTS", bad)
    res = _compile(tmp_path, 17, _header_612(tmp_path))
    assert res.returncode != 0 and "suspend_queues" in res.stderr


def test_the_check_names_every_ioctl_of_both_headers(tmp_path):
    """Every AMDKFD_IOC_* of each header is in uapi.IOCTL_NRS and its nr is asserted (the recorder's names)."""
    nrs = [nr for nr, _ in uapi.IOCTL_NRS.values()]
    assert len(set(nrs)) == len(nrs)  # distinct: with the count assert, no nr of a header's range is missing
    for minor, text in ((17, (_header_612(tmp_path) / "linux" / "kfd_ioctl.h").read_text()),
                        *([(_system_minor(), SYSTEM_HEADER.read_text())] if SYSTEM_HEADER.is_file() else [])):
        names = set(re.findall(r"#define (AMDKFD_IOC_\w+)\s", text))
        assert len(names) >= 35 and names <= set(uapi.IOCTL_NRS), names - set(uapi.IOCTL_NRS)
        checks = uapi.c_checks(minor)
        for name in names:
            assert f"_Static_assert(_IOC_NR({name}) == {uapi.IOCTL_NRS[name][0]:#04x} " in checks, (minor, name)
        for name in uapi.UAPI_QUEUE_TYPES.values():
            if f"KFD_IOC_QUEUE_TYPE_{name.upper()}" in text:
                assert f"_Static_assert(KFD_IOC_QUEUE_TYPE_{name.upper()} == " in checks


# a number changed in a copy of a header: (header, edit, what the failing assert names)
HEADER_MUTATIONS = [
    ("6.12", ("AMDKFD_IOWR(0x26, struct kfd_ioctl_dbg_trap_args)", "AMDKFD_IOWR(0x28, struct kfd_ioctl_dbg_trap_args)"), "AMDKFD_IOC_DBG_TRAP"),
    ("6.12", ("AMDKFD_IOWR(0x21, struct kfd_ioctl_set_xnack_mode_args)", "AMDKFD_IOWR(0x2a, struct kfd_ioctl_set_xnack_mode_args)"), "AMDKFD_IOC_SET_XNACK_MODE nr"),
    ("6.12", ("#define KFD_IOC_QUEUE_TYPE_SDMA_BY_ENG_ID\t0x4", "#define KFD_IOC_QUEUE_TYPE_SDMA_BY_ENG_ID\t0x5"), "KFD_IOC_QUEUE_TYPE_SDMA_BY_ENG_ID"),
    ("6.12", ("#define KFD_DBG_QUEUE_ERROR_BIT\t\t30", "#define KFD_DBG_QUEUE_ERROR_BIT\t\t29"), "KFD_DBG_QUEUE_ERROR_BIT"),
    ("6.12", ("#define AMDKFD_COMMAND_END\t\t0x27", "#define AMDKFD_COMMAND_END\t\t0x28"), "AMDKFD_COMMAND_END"),
    ("system", ("#define KFD_IOC_QUEUE_TYPE_COMPUTE_AQL\t\t0x2", "#define KFD_IOC_QUEUE_TYPE_COMPUTE_AQL\t\t0x6"), "KFD_IOC_QUEUE_TYPE_COMPUTE_AQL"),
    ("system", ("AMDKFD_IOWR(0x16, struct kfd_ioctl_alloc_memory_of_gpu_args)", "AMDKFD_IOWR(0x17, struct kfd_ioctl_alloc_memory_of_gpu_args)"), "AMDKFD_IOC_ALLOC_MEMORY_OF_GPU"),
    ("system", ("AMDKFD_IOW(0x0A, struct kfd_ioctl_set_event_args)", "AMDKFD_IOW(0x3A, struct kfd_ioctl_set_event_args)"), "AMDKFD_IOC_SET_EVENT nr"),
]


@needs_gcc
@pytest.mark.parametrize("which, edit, what", HEADER_MUTATIONS, ids=[m[2] for m in HEADER_MUTATIONS])
def test_a_number_changed_in_a_header_fails_the_check(tmp_path, which, edit, what):
    if which == "system" and not SYSTEM_HEADER.is_file():
        pytest.skip("linux-libc-dev is not installed")
    header, minor = ((_header_612(tmp_path) / "linux" / "kfd_ioctl.h", 17) if which == "6.12" else (SYSTEM_HEADER, _system_minor()))
    res = _compile(tmp_path, minor, _mutated(tmp_path, header, *edit))
    assert res.returncode != 0 and f'"{what}"' in res.stderr, res.stderr


# a number changed in the Python source: (attribute of uapi, key, new value, what the failing assert names)
SOURCE_MUTATIONS = [
    ("IOCTL_NRS", "AMDKFD_IOC_SVM", (0x2F, None), "AMDKFD_IOC_SVM nr"),
    ("IOCTL_NRS", "AMDKFD_IOC_DBG_TRAP", (0x27, 13), "AMDKFD_IOC_DBG_TRAP nr"),
    ("IOCTL_NRS", "AMDKFD_IOC_EXPORT_DMABUF", (0x24, 18), "every ioctl of the header is in IOCTL_NRS"),  # left out at 1.17
    ("IOCTL_NRS", "AMDKFD_IOC_DBG_TRAP", (0x26, 18), "AMDKFD_COMMAND_END"),  # the last one left out
    ("CONSTANTS", "KFD_IOC_QUEUE_TYPE_SDMA", (3, None), "KFD_IOC_QUEUE_TYPE_SDMA"),
    ("CONSTANTS", "KFD_DBG_QUEUE_INVALID_BIT", (29, 13), "KFD_DBG_QUEUE_INVALID_BIT"),
]


@needs_gcc
@pytest.mark.parametrize("table, key, value, what", SOURCE_MUTATIONS, ids=[m[3] for m in SOURCE_MUTATIONS])
def test_a_number_changed_in_uapi_py_fails_the_check(tmp_path, monkeypatch, table, key, value, what):
    monkeypatch.setattr(uapi, table, {**getattr(uapi, table), key: value})
    res = _compile(tmp_path, 17, _header_612(tmp_path))
    assert res.returncode != 0 and f'"{what}"' in res.stderr, res.stderr


# the request-number literal layout_facts.py looks for: _IOC(dir r/w/rw, size < 256, 'K', nr)
_REQUEST_LITERAL = re.compile(r"0x[cC8]0[0-9a-fA-F]{2}4[bB][0-9a-fA-F]{2}\b")


def test_no_module_types_a_request_number_of_its_own():
    """Every request number and queue-type value comes from uapi.py: no other module of the package
    (the recorder, doctor, the synthetic model, the lab's guest code) writes one as a literal."""
    pkg = Path(uapi.__file__).parent
    typed = [f"{f.relative_to(pkg)}:{n}" for f in sorted(pkg.rglob("*.py")) if f.name != "uapi.py"
             for n, line in enumerate(f.read_text().splitlines(), 1) if _REQUEST_LITERAL.search(line)]
    assert typed == []
    assert _REQUEST_LITERAL.search(f"{uapi.ROCM_DBG_TRAP:#x} {uapi.GET_VERSION:#x} {uapi.CREATE_QUEUE:#X}")  # the pattern bites
    src = (resources.tracers() / "ioctl.bpf.c").read_text()
    assert "GPT_UAPI_QTYPE(" in src and not re.search(r"case\s+GPT_UAPI_QUEUE_TYPE_|op == [0-9]|0x4b\b", src, re.I)


def test_generated_bpf_header_is_current():
    assert (resources.tracers() / uapi.HEADER_NAME).read_text() == uapi.c_header(), \
        "tracers/kfd_uapi.h is stale: run `make codegen`"


def test_generated_header_defines_each_macro_once():
    names = [ln.split()[1] for ln in uapi.c_header().splitlines() if ln.startswith("#define ")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_bpf_source_reads_arguments_only_through_generated_offsets():
    src = (resources.tracers() / "ioctl.bpf.c").read_text()
    assert '#include "kfd_uapi.h"' in src
    header = uapi.c_header()
    used = set(re.findall(r"GPT_UAPI_[A-Za-z0-9_]+", src))
    assert used and all(f"#define {m} " in header or f"#define {m}(" in header for m in used)


def test_ctypes_classes_are_generated_from_the_same_layouts():
    for name in uapi.STRUCTS:
        cls, lay = uapi.struct(name), uapi.layout(name)
        assert ctypes.sizeof(cls) == lay.size
        assert [(f, getattr(cls, f).offset) for f, _ in cls._fields_] == [(f.name, f.offset) for f in lay.fields]
    assert ctypes.sizeof(uapi.QueueSnapshotEntry) == 64
    assert ctypes.sizeof(uapi.DbgTrapArgs) == 32
    assert uapi.DbgTrapArgs.suspend_queues.offset + uapi.DbgTrapSuspendQueuesArgs.grace_period.offset == 28


def test_request_numbers():
    assert (uapi.GET_VERSION, uapi.CREATE_QUEUE, uapi.DBG_TRAP, uapi.RUNTIME_ENABLE, uapi.ROCM_DBG_TRAP) == (
        0x80084B01, 0xC0584B02, 0xC0204B26, 0xC0104B25, 0xC0284B82)
    assert uapi.request("AMDKFD_IOC_CREATE_QUEUE") == 0xC0604B02  # 1.15+ size, same nr
    assert (uapi.PREEMPT_QUEUES, uapi.RESUME_QUEUES) == (0xC0184B89, 0xC0184B8A)
    assert ioctls.DBG_TRAP == uapi.DBG_TRAP and ioctls.ioctl_name(0xC0184B89) == "AMDKFD_IOC_PREEMPT_QUEUES"


def test_dbg_trap_args_bytes():
    a = uapi.dbg_trap_args(0x1234, "SUSPEND_QUEUES", exception_mask=0, queue_array_ptr=0x1122334455667788, num_queues=3, grace_period=100)
    assert bytes(a).hex() == "34120000" "06000000" "0000000000000000" "8877665544332211" "03000000" "64000000"


def test_scheme_b_is_read_from_the_kernel_series_json():
    doc = json.loads(resources.scheme_b_uapi().read_text())
    sb = uapi.parse_scheme_b(doc)
    assert sb.ioctls["AMDKFD_IOC_PREEMPT_QUEUES"].request == 0xC0184B89
    assert [(f.name, f.offset) for f in sb.structs["kfd_ioctl_preempt_queues_args"].fields] == [
        ("queue_array_ptr", 0), ("pid", 8), ("num_queues", 12), ("grace_period", 16), ("flags", 20)]
    assert ctypes.sizeof(uapi.PreemptEntry) == 8


@pytest.mark.parametrize("mutate, what", [
    (lambda d: d["ioctls"]["AMDKFD_IOC_PREEMPT_QUEUES"].__setitem__("request", 0xC0184B88), "request"),
    (lambda d: d["structs"]["kfd_ioctl_preempt_queues_args"]["fields"][1].__setitem__("offset", 12), "natural layout"),
    (lambda d: d["structs"]["kfd_ioctl_preempt_queues_args"].__setitem__("size", 32), "natural layout"),
    (lambda d: d.__setitem__("ioctls", {"AMDKFD_IOC_PREEMPT_QUEUES": 0xC0184B89}), "shape"),
    (lambda d: d.pop("structs"), "shape"),
])
def test_scheme_b_other_shapes_are_refused(mutate, what):
    doc = copy.deepcopy(json.loads(resources.scheme_b_uapi().read_text()))
    mutate(doc)
    with pytest.raises(uapi.UapiShapeError, match=what):
        uapi.parse_scheme_b(doc)


def test_queue_type_map_is_defined_once_and_names_schema_types():
    from gpreempt_trace.trace import schema

    assert uapi.UAPI_QUEUE_TYPES == {0: "compute", 1: "sdma", 2: "compute_aql", 3: "sdma_xgmi", 4: "sdma_by_eng_id"}
    assert set(uapi.UAPI_QUEUE_TYPES.values()) <= set(schema.QUEUE_TYPES)


@needs_gcc
def test_generated_queue_type_map_gives_the_schema_index(tmp_path):
    """GPT_UAPI_QTYPE (kfd_uapi.h, what ioctl.bpf.c sets qtype_id with) compiled and run: every uapi
    KFD_IOC_QUEUE_TYPE_* number gives the index of its name in schema.QUEUE_TYPES, others -1."""
    from gpreempt_trace.recorder import record_layout
    from gpreempt_trace.trace import schema

    src = tmp_path / "qt.c"
    src.write_text("\n".join([
        "#include <stdio.h>", f'#include "{record_layout.HEADER_PATH}"', f'#include "{resources.tracers() / uapi.HEADER_NAME}"',
        "int main(void) {", "for (unsigned t = 0; t < 9; t++) printf(\"%u %d\\n\", t, GPT_UAPI_QTYPE(t));", "return 0; }", ""]))
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", tmp_path / "qt", src], check=True)
    out = subprocess.run([tmp_path / "qt"], capture_output=True, text=True, check=True).stdout
    got = dict(tuple(map(int, line.split())) for line in out.splitlines())
    assert got == {0: 0, 1: 1, 2: 5, 3: 4, 4: 6, 5: -1, 6: -1, 7: -1, 8: -1}
    assert {t: schema.QUEUE_TYPES[i] for t, i in got.items() if i >= 0} == uapi.UAPI_QUEUE_TYPES


def test_written_back_queue_ids_are_split_into_id_and_status():
    """KFD_DBG_QUEUE_INVALID_MASK (bit 31) / ERROR_MASK (bit 30) as the 6.12 KFD writes them back."""
    assert (uapi.DBG_QUEUE_INVALID_MASK, uapi.DBG_QUEUE_ERROR_MASK) == (0x80000000, 0x40000000)
    assert [uapi.split_queue_id(w) for w in (5, 0x80000005, 0x40000006, 0xC0000007, 0x3FFFFFFF)] == [
        (5, "ok"), (5, "invalid"), (6, "error"), (7, "invalid"), (0x3FFFFFFF, "ok")]
    import numpy as np

    words = np.array([5, 0x80000005, 0x40000006, 0xC0000007], np.uint32)
    assert [uapi.QUEUE_ID_STATUSES[i] for i in uapi.queue_id_status(words)] == ["ok", "invalid", "error", "invalid"]
