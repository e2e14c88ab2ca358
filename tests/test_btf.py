"""The pure-Python BTF reader: exact offsets against pahole's for Debian 6.1.0-56 (btf_layouts.txt),
a tiny hand-built blob for the corner cases (anonymous members, bitfields, modifiers, ENUM64, split
BTF), and mismatched/damaged input."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from gpreempt_trace.recorder.btf import Btf, BtfError


@pytest.fixture(scope="module")
def fixture_btf(kfd_fixture):
    vm = Btf.load(kfd_fixture / "btf" / "vmlinux")
    mod = Btf.load(kfd_fixture / "btf" / "amdgpu", base=vm)
    return vm, mod


def parse_layouts(path: Path):
    """{struct: [(path, offset, size)]} and {enum: {name: value}} from pahole's btf_layouts.txt."""
    structs: dict[str, list[tuple[str, int, int]]] = {}
    enums: dict[str, dict[str, int]] = {}
    cur = None
    for line in path.read_text().splitlines():
        m = re.match(r"^struct (\w+)\s+\(btf id", line)
        if m:
            cur = structs.setdefault(m[1], [])
            continue
        m = re.match(r"^enum (\w+)\s+\(btf id", line)
        if m:
            cur = enums.setdefault(m[1], {})
            continue
        if not line.strip() or line.startswith("#") or line.startswith("struct "):
            cur = None if not line.strip() or line.startswith("struct ") else cur
            continue
        if isinstance(cur, list):
            m = re.match(r"^\s+(\d+)\s+(\d+)\s+(\S+)\s", line)
            if m:
                cur.append((m[3], int(m[1]), int(m[2])))
        elif isinstance(cur, dict):
            m = re.match(r"^\s+(\w+) = (-?\d+)$", line)
            if m:
                cur[m[1]] = int(m[2])
    return structs, enums


def test_every_pahole_offset_matches(fixture_btf, kfd_fixture):
    _vm, mod = fixture_btf
    structs, _ = parse_layouts(kfd_fixture / "btf_layouts.txt")
    assert {"queue", "queue_properties", "kfd_process", "kfd_dev", "device_queue_manager", "qcm_process_device",
            "kfd_process_device", "task_struct", "packet_manager", "process_queue_manager"} <= set(structs)
    checked = 0
    for sname, rows in structs.items():
        for path, off, size in rows:
            if path == "(anon)":
                continue
            f = mod.field(f"{sname}.{path}")
            assert f is not None, f"{sname}.{path} not resolved"
            assert (f.offset, f.size) == (off, size), f"{sname}.{path}: btf.py {f.offset}/{f.size}, pahole {off}/{size}"
            checked += 1
    assert checked == 370  # every named row of the file (task_struct and file: the selected members)


def test_enums_match_pahole(fixture_btf, kfd_fixture):
    _vm, mod = fixture_btf
    _, enums = parse_layouts(kfd_fixture / "btf_layouts.txt")
    assert enums["kfd_unmap_queues_filter"] == {"KFD_UNMAP_QUEUES_FILTER_ALL_QUEUES": 1, "KFD_UNMAP_QUEUES_FILTER_DYNAMIC_QUEUES": 2,
                                                "KFD_UNMAP_QUEUES_FILTER_BY_PASID": 3}
    for name, values in enums.items():
        assert mod.enum_values(name) == values


def test_key_fields_and_functions(fixture_btf):
    vm, mod = fixture_btf
    assert mod.first_id == 100751 and vm.type_count == 100751  # ids continue after the base's 100750 types
    assert mod.field("queue.properties.is_active").offset == 110
    assert mod.field("queue.properties.is_suspended") is None  # no debugger fields in 6.1
    assert mod.field("kfd_node.id") is None  # struct kfd_node arrived in 6.5
    assert mod.field("task_struct.tgid").offset == 2420  # falls through to the base
    assert mod.field("mqd_update_info.cu_mask.count").offset == 0  # member of an anonymous union's struct
    assert mod.pointee_struct("queue.device") == "kfd_dev"
    assert mod.pointee_struct("queue.process") == "kfd_process"
    assert mod.has_func("update_queue") and mod.has_func("unmap_queues_cpsch")
    assert not mod.has_func("execute_queues_cpsch")  # inlined in this build
    assert not mod.has_func("suspend_queues")
    assert not vm.has_func("create_queue_cpsch")
    assert mod.func_params("unmap_queues_cpsch") == ["dqm", "filter", "filter_param", "reset"]
    assert mod.func_params("destroy_queue_cpsch") == ["dqm", "qpd", "q"]
    assert mod.func_params("kfd_ioctl") == ["filep", "cmd", "arg"]


@pytest.mark.skipif(shutil.which("pahole") is None, reason="pahole not installed")
def test_cross_check_with_pahole_itself(kfd_fixture, fixture_btf):
    """Independent cross-check: pahole on the same blobs, top-level members of struct queue."""
    _vm, mod = fixture_btf
    d = kfd_fixture / "btf"
    out = subprocess.run(["pahole", "--btf_base", str(d / "vmlinux"), "-F", "btf", "-C", "queue", str(d / "amdgpu")],
                         capture_output=True, text=True, check=True).stdout
    members = re.findall(r"^\t[^\t/][^;]*?[\s*](\w+)(?:\[\d+\])?;\s+/\*\s+(\d+)\s+(\d+)\s+\*/", out, re.M)
    assert len(members) == 18
    for name, off, size in members:
        f = mod.field(f"queue.{name}")
        assert (f.offset, f.size) == (int(off), int(size)), name


# ---- a tiny hand-built BTF ------------------------------------------------------------------------
class Builder:
    def __init__(self, first_id=1, str_base=0):
        self.types = b""
        self.strs = b"" if str_base else b"\0"
        self.str_base = str_base
        self.next_id = first_id

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = self.str_base + len(self.strs)
        self.strs += name.encode() + b"\0"
        return off

    def add(self, name, kind, vlen=0, kflag=0, word=0, extra=b"") -> int:
        self.types += struct.pack("<III", self.s(name), (kflag << 31) | (kind << 24) | vlen, word) + extra
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name, size):
        return self.add(name, 1, word=size, extra=struct.pack("<I", size * 8))

    def members(self, members):  # members: (name, type, bit_offset_word)
        return b"".join(struct.pack("<III", self.s(n), t, o) for n, t, o in members)

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strs))
        return hdr + self.types + self.strs


def test_hand_built_corner_cases():
    b = Builder()
    u32 = b.int_("unsigned int", 4)  # 1
    u8 = b.int_("unsigned char", 1)  # 2
    td = b.add("u32", 8, word=u32)  # 3 typedef
    cst = b.add("", 10, word=td)  # 4 const u32
    # 5: anonymous struct { u32 x; u32 y; }
    anon_s = b.next_id
    b.add("", 4, vlen=2, word=8, extra=b.members([("x", u32, 0), ("y", cst, 32)]))
    # 6: anonymous union { struct {x, y}; u8 raw[?] } -> just the struct
    anon_u = b.next_id
    b.add("", 5, vlen=1, word=8, extra=b.members([("", anon_s, 0)]))
    # 7: struct flags with bitfields (kind_flag): a:3 @bit 0, b:5 @bit 3, c u8 @ byte 1
    flags = b.next_id
    b.add("flags", 4, vlen=3, kflag=1, word=4,
          extra=b.members([("a", u32, (3 << 24) | 0), ("b", u32, (5 << 24) | 3), ("c", u8, (0 << 24) | 8)]))
    # 8: ptr to flags
    ptr = b.add("", 2, word=flags)
    # 9: enum64
    e64 = b.add("big", 19, vlen=2, kflag=1, word=8, extra=struct.pack("<IIIIII", b.s("NEG"), 0xFFFFFFFF, 0xFFFFFFFF, b.s("HUGE"), 0, 1))
    # 10: struct top { u32 head; union anon @8; struct flags fl @16; struct flags *p @24 }
    b.add("top", 4, vlen=4, word=32,
          extra=b.members([("head", u32, 0), ("", anon_u, 64), ("fl", flags, 128), ("p", ptr, 192)]))
    # 11: FUNC_PROTO (int a, u32 b) and 12: FUNC "f"
    proto = b.add("", 13, vlen=2, word=u32, extra=struct.pack("<IIII", b.s("a"), u32, b.s("b"), td))
    b.add("f", 12, word=proto)
    base = Btf(b.blob(), "tiny")
    assert base.type_count == 13 and e64 == 9
    assert base.field("top.x").offset == 8 and base.field("top.y").offset == 12  # through the anon union + struct
    assert base.field("top.y").size == 4 and base.field("top.y").type_name == "const u32"
    fa, fb, fc = base.field("top.fl.a"), base.field("top.fl.b"), base.field("top.fl.c")
    assert (fa.offset, fa.bit_offset, fa.bit_size) == (16, 0, 3)
    assert (fb.offset, fb.bit_offset, fb.bit_size) == (16, 3, 5)
    assert (fc.offset, fc.size, fc.bit_size) == (17, 1, 0)
    assert base.pointee_struct("top.p") == "flags"
    assert base.enum_values("big") == {"NEG": -1, "HUGE": 1 << 32}
    assert base.func_params("f") == ["a", "b"] and base.has_func("f")
    assert base.field("top.nope") is None and base.field("nope.x") is None

    # split BTF on top: ids continue at 13, strings at the base's length
    m = Builder(first_id=13, str_base=base.str_len)
    pair = m.next_id
    m.add("pair", 4, vlen=2, word=16, extra=m.members([("t", 10, 0), ("n", 1, 32 * 8)]))  # refers to base ids
    split = Btf(m.blob(), "split", base=base)
    split.check_split()
    assert split.first_id == 13 and pair == 13
    assert split.field("pair.n").offset == 32
    assert split.field("pair.t.fl.c").offset == 17
    assert split.find("top") == 10  # found in the base

    # the same split blob over a different base: names land mid-string -> one clear error
    other = Builder()
    other.int_("int", 4)
    other.s("padding-so-the-string-offsets-differ")
    with pytest.raises(BtfError, match="does not match its base"):
        Btf(m.blob(), "split", base=Btf(other.blob(), "other")).check_split()


def test_damaged_input(tmp_path):
    with pytest.raises(BtfError, match="not BTF"):
        Btf(b"\x00" * 40, "zeros")
    with pytest.raises(BtfError, match="not BTF"):
        Btf(b"\x9f\xeb", "short")
    b = Builder()
    b.int_("int", 4)
    with pytest.raises(BtfError, match="truncated"):
        Btf(b.blob()[:-3], "cut")
    with pytest.raises(BtfError, match="does not exist"):
        Btf.load(tmp_path / "missing")


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="no running-kernel BTF")
def test_module_btf_over_another_kernels_vmlinux(kfd_fixture):
    """6.1's amdgpu split BTF over this VM's own (6.18) vmlinux BTF is refused, with the counts."""
    other = Btf.load("/sys/kernel/btf/vmlinux")
    if other.str_len == Btf.load(kfd_fixture / "btf" / "vmlinux").str_len:
        pytest.skip("running kernel is the fixture's build")
    mod = Btf.load(kfd_fixture / "btf" / "amdgpu", base=other)
    with pytest.raises(BtfError, match=r"does not match its base .*types / \d+ string bytes"):
        mod.check_split()


@pytest.mark.skipif(shutil.which("pahole") is None, reason="pahole not installed")
def test_612_struct_queue_matches_pahole(kernel_fixture):
    """Debian 6.12.117: every top-level member of struct queue at pahole's offset and size (same blobs)."""
    d = kernel_fixture("6.12.117+deb12-amd64") / "btf"
    mod = Btf.load(d / "amdgpu", base=Btf.load(d / "vmlinux"))
    mod.check_split()
    out = subprocess.run(["pahole", "--btf_base", str(d / "vmlinux"), "-F", "btf", "-C", "queue", str(d / "amdgpu")],
                         capture_output=True, text=True, check=True).stdout
    members = re.findall(r"^\t[^\t/][^;]*?[\s*](\w+)(?:\[\d+\])?;\s+/\*\s+(\d+)\s+(\d+)\s+\*/", out, re.M)
    assert len(members) >= 18
    for name, off, size in members:
        f = mod.field(f"queue.{name}")
        assert (f.offset, f.size) == (int(off), int(size)), name
    assert mod.field("queue.properties.is_suspended").offset == 110  # absent on 6.1


def test_612_module_btf_over_61_vmlinux_is_refused(kernel_fixture, kfd_fixture):
    """The 6.12 amdgpu split BTF over 6.1's vmlinux BTF (another build) is detected."""
    d = kernel_fixture("6.12.117+deb12-amd64") / "btf"
    mod = Btf.load(d / "amdgpu", base=Btf.load(kfd_fixture / "btf" / "vmlinux"))
    with pytest.raises(BtfError, match=r"does not match its base"):
        mod.check_split()
