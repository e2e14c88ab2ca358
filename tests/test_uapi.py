"""The KFD uapi contract (gpreempt_trace/uapi.py is the one definition): gcc checks every size, offset,
request number and constant against the real headers (the system 6.1 header and Debian's 6.12.117 uapi
header, kept in tests/fixtures/uapi/), the BPF header generated from it is current, the ctypes side is
generated from the same tables, and scheme B's layout is accepted in one shape only."""
from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from gpreempt_trace import resources, uapi
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
    minor = int(next(line.split()[2] for line in SYSTEM_HEADER.read_text().splitlines() if "KFD_IOCTL_MINOR_VERSION" in line))
    res = _compile(tmp_path, minor, None)
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
    used = set(__import__("re").findall(r"GPT_UAPI_[A-Za-z0-9_]+", src))
    assert used and all(f"#define {m} " in header for m in used)


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
    from gpreempt_trace import schema

    assert uapi.UAPI_QUEUE_TYPES == {0: "compute", 1: "sdma", 2: "compute_aql", 3: "sdma_xgmi", 4: "sdma_by_eng_id"}
    assert set(uapi.UAPI_QUEUE_TYPES.values()) <= set(schema.QUEUE_TYPES)
    src = (resources.tracers() / "ioctl.bpf.c").read_text()
    for name in uapi.UAPI_QUEUE_TYPES.values():
        assert f"case GPT_UAPI_QUEUE_TYPE_{name.upper()}: GPT_SET(e, qtype_id, GPT_QT_{name.upper()});" in src
