"""kernel/: the scheme-B patch series on Debian's linux-source-6.12 (mail format, uapi numbers and
layout) and the full build check (kernel/check.sh, minutes; marked `kernel`). The tracepoint names and
fields are checked against the recorder's table in tests/test_tracepoint_contract.py."""
from __future__ import annotations

import errno
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpreempt_trace.recorder.tracepoints import TRACEPOINTS
from gpreempt_trace.trace.schema import EVENT_COLUMNS

REPO = Path(__file__).resolve().parent.parent
KERNEL = REPO / "kernel"
PATCHES = sorted((KERNEL / "patches").glob("[0-9][0-9][0-9][0-9]-*.patch"))
SERIES = [p for p in PATCHES if not p.name.startswith("0000-")]
UAPI = "include/uapi/linux/kfd_ioctl.h"
TRACE_H = "drivers/gpu/drm/amd/amdkfd/kfd_trace.h"
SCHEME_B = json.loads((KERNEL / "uapi_scheme_b.json").read_text())
KVER = "6.12"
# the pristine uapi header the series applies to (Debian's linux-headers-6.12.117+deb12-common copy)
UAPI_612 = REPO / "tests" / "fixtures" / "uapi" / "6.12.117+deb12" / "kfd_ioctl.h.xz"

# _IOC_NR values already used: upstream KFD 0x01-0x26, ROCm DKMS 0x80-0x86, GPREEMPT phase 1 0x87/0x88
TAKEN_NR = set(range(0x01, 0x27)) | set(range(0x80, 0x89))


def _apply(tmp: Path, include: str, seed: Path | None = None) -> Path:
    """The file `include` after the whole series, applied with git apply in a scratch tree."""
    target = tmp / include
    target.parent.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        shutil.copy(seed, target)
    for p in SERIES:
        subprocess.run(["git", "apply", f"--include={include}", str(p)], cwd=tmp, check=True,
                       capture_output=True, text=True)
    return target


def _header(text: str) -> dict[str, str]:
    """Mail headers (folded lines joined) of a format-patch file."""
    block = re.sub(r"\n[ \t]+", " ", text.split("\n\n", 1)[0])
    return {k.lower(): v for k, v in re.findall(r"^([\w-]+): (.*)$", block, re.M)}


def test_series_files():
    assert [p.name[:5] for p in PATCHES] == ["0000-", "0001-", "0002-", "0003-"]
    assert PATCHES[0].name == "0000-cover-letter.patch"


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name[:4])
def test_patch_is_a_format_patch_mail(patch):
    text = patch.read_text()
    n = int(patch.name[:4])
    assert re.match(r"From [0-9a-f]{40} Mon Sep 17 00:00:00 2001\n", text)
    head = _header(text)
    assert "@" in head["from"]
    assert head["subject"].startswith(f"[RFC PATCH {n}/{len(SERIES)}] ")
    assert re.search(r"^ \d+ files? changed, \d+ insertions?\(\+\)", text, re.M)  # diffstat
    if n == 0:
        assert "*** SUBJECT HERE ***" not in text and "*** BLURB HERE ***" not in text
        for topic in ("Semantics", "Locking", "debug-trap suspend", "Expected latency", "Testing", "Porting notes"):
            assert topic in text, topic
    else:
        assert re.search(r"^Signed-off-by: .+ <.+@.+>$", text, re.M)
        assert re.search(r"^diff --git a/", text, re.M)


def test_scheme_b_numbers_do_not_collide():
    patch = SERIES[-1].read_text()
    nrs = {name: int(nr, 16) for name, nr in
           re.findall(r"^\+#define (AMDKFD_IOC_\w+)\s*\\\n\+\s*AMDKFD_IO\w*\((0x[0-9a-fA-F]+)", patch, re.M)}
    assert nrs == {"AMDKFD_IOC_PREEMPT_QUEUES": 0x89, "AMDKFD_IOC_RESUME_QUEUES": 0x8A}
    assert not set(nrs.values()) & TAKEN_NR
    end2 = int(re.search(r"^\+#define AMDKFD_COMMAND_END_2\s+(0x[0-9a-fA-F]+)", patch, re.M).group(1), 16)
    assert max(nrs.values()) < end2
    assert {k: v["nr"] for k, v in SCHEME_B["ioctls"].items()} == nrs


PROBE_C = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/kfd_ioctl.h>
#define F(s, m) printf(#s " " #m " %zu %zu\n", offsetof(struct s, m), sizeof(((struct s *)0)->m))
#define S(s) printf(#s " size %zu\n", sizeof(struct s))
#define C(c) printf("const " #c " %llu\n", (unsigned long long)(c))
int main(void)
{
	S(kfd_ioctl_preempt_queues_args);
	F(kfd_ioctl_preempt_queues_args, queue_array_ptr);
	F(kfd_ioctl_preempt_queues_args, pid);
	F(kfd_ioctl_preempt_queues_args, num_queues);
	F(kfd_ioctl_preempt_queues_args, grace_period);
	F(kfd_ioctl_preempt_queues_args, flags);
	S(kfd_queue_preempt_entry);
	F(kfd_queue_preempt_entry, queue_id);
	F(kfd_queue_preempt_entry, result);
	C(AMDKFD_IOC_PREEMPT_QUEUES); C(AMDKFD_IOC_RESUME_QUEUES);
	C(KFD_PREEMPT_QUEUES_MAX); C(KFD_PREEMPT_GRACE_PERIOD_DEFAULT);
	C(KFD_PREEMPT_QUEUES_FLAG_ALL); C(KFD_PREEMPT_QUEUES_FLAG_DEVICE_WIDE);
	C(AMDKFD_COMMAND_START_2); C(AMDKFD_COMMAND_END_2);
	return 0;
}
"""


@pytest.fixture(scope="module")
def uapi_layout(tmp_path_factory) -> dict:
    """Compile the patched uapi header (the series applied to 6.12.117's kfd_ioctl.h, a repo fixture)
    and read sizes, offsets and constants back. (-Wpadded cannot be used: upstream structs in the same
    header have padding; the contiguity check below is exact instead.)"""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    tmp = tmp_path_factory.mktemp("uapi")
    pristine = tmp / "pristine_kfd_ioctl.h"
    pristine.write_bytes(lzma.decompress(UAPI_612.read_bytes()))
    _apply(tmp, UAPI, seed=pristine)
    (tmp / "probe.c").write_text(PROBE_C)
    # kfd_ioctl.h includes <drm/drm.h> (libdrm-dev); the parts it needs come from linux-libc-dev
    (tmp / "stub" / "drm").mkdir(parents=True)
    (tmp / "stub" / "drm" / "drm.h").write_text("#include <linux/types.h>\n#include <linux/ioctl.h>\n")
    inc = tmp / "include" / "uapi"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", f"-I{inc}", f"-I{tmp / 'stub'}", "-o", str(tmp / "probe"),
                    str(tmp / "probe.c")], check=True, capture_output=True, text=True)
    out = subprocess.run([str(tmp / "probe")], check=True, capture_output=True, text=True).stdout
    layout: dict = {"size": {}, "fields": {}, "const": {}}
    for line in out.splitlines():
        w = line.split()
        if w[0] == "const":
            layout["const"][w[1]] = int(w[2])
        elif w[1] == "size":
            layout["size"][w[0]] = int(w[2])
        else:
            layout["fields"].setdefault(w[0], []).append((w[1], int(w[2]), int(w[3])))
    return layout


def test_uapi_structs_have_no_implicit_padding(uapi_layout):
    for struct, fields in uapi_layout["fields"].items():
        end = 0
        for name, off, size in fields:
            assert off == end, f"{struct}.{name}: hole before offset {off}"
            end = off + size
        assert end == uapi_layout["size"][struct], f"{struct}: tail padding"
    assert uapi_layout["size"] == {"kfd_ioctl_preempt_queues_args": 24, "kfd_queue_preempt_entry": 8}


def test_uapi_json_matches_the_patched_header(uapi_layout):
    const = uapi_layout["const"]
    for name, io in SCHEME_B["ioctls"].items():
        assert io["request"] == const[name] == int(io["request_hex"], 16)
        assert io["nr"] == const[name] & 0xFF == int(io["nr_hex"], 16)
        assert io["arg_size"] == (const[name] >> 16) & 0x3FFF == uapi_layout["size"][io["arg_struct"]]
        assert io["dir"] == "rw" and const[name] >> 30 == 3 and (const[name] >> 8) & 0xFF == ord("K")
    assert SCHEME_B["constants"] == {k: v for k, v in const.items() if not k.startswith("AMDKFD_IOC_")}
    for struct, doc in SCHEME_B["structs"].items():
        assert doc["size"] == uapi_layout["size"][struct]
        assert [(f["name"], f["offset"], int(f["type"][1:]) // 8) for f in doc["fields"]] == uapi_layout["fields"][struct]


def test_uapi_json_columns_exist():
    names = {c.name for c in EVENT_COLUMNS}
    cols = [f["column"] for s in SCHEME_B["structs"].values() for f in s["fields"] if f["column"]]
    assert cols and set(cols) <= names


def test_docs_name_every_tracepoint_and_its_event():
    doc = (REPO / "docs" / "kernel-tracepoints.md").read_text()
    for t in TRACEPOINTS:
        if t.system == "kfd":  # the series (the DKMS amdkfd:* ones are in docs/recorder.md)
            assert f"kfd:{t.name}" in doc and f"`{t.event}`" in doc, t.name


@pytest.mark.kernel
@pytest.mark.skipif(not Path(f"/usr/src/linux-source-{KVER}.tar.xz").exists(), reason=f"linux-source-{KVER} not installed")
def test_kernel_check_builds_the_series():
    """The real thing: extract, configure, modules_prepare, W=1 before/after, checkpatch (minutes;
    the extracted tree is cached in GPT_KERNEL_CACHE between runs)."""
    res = subprocess.run(["bash", str(KERNEL / "check.sh")], capture_output=True, text=True,
                         env={**os.environ, "GPT_KERNEL_MODULE": "0"}, timeout=3600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "none new" in res.stdout
    for p in SERIES:
        assert f"applied {p.name}" in res.stdout
        assert f"checkpatch --strict clean: {p.name}" in res.stdout


# --- optional: the patched amdgpu.ko in the lab guest (Debian's real 6.12.117 kernel, no GPU) ---

KERNEL_CACHE = Path(os.environ.get("GPT_KERNEL_CACHE") or Path.home() / ".cache" / "gpreempt-trace" / "kernel" / KVER)
PATCHED_KO = KERNEL_CACHE / f"linux-source-{KVER}" / "drivers" / "gpu" / "drm" / "amd" / "amdgpu" / "amdgpu.ko"

# Runs in the guest as root: only the early error paths can be reached without a GPU.
LAB_PROBE = r'''
import ctypes, fcntl, json, os, struct, threading
PRE, RES = 0xC0184B89, 0xC0184B8A
NR_0x87 = (3 << 30) | (24 << 16) | (ord("K") << 8) | 0x87
fd = os.open("/dev/kfd", os.O_RDWR | os.O_CLOEXEC)
entries = (ctypes.c_int32 * 2)(5, 0)  # one kfd_queue_preempt_entry: queue_id 5, result


def call(req, pid, n=1, grace=0xFFFFFFFF, flags=0, ptr=None):
    ptr = ctypes.addressof(entries) if ptr is None else ptr
    buf = bytearray(struct.pack("<QIIII", ptr, pid, n, grace, flags))
    try:
        fcntl.ioctl(fd, req, buf, True)
        return [0, struct.unpack_from("<I", buf, 12)[0]]
    except OSError as e:
        return [-e.errno, None]


me = os.getpid()
hold = threading.Event()
th = threading.Thread(target=hold.wait)
th.start()
r = {
    "num_queues_0": call(PRE, me, n=0),
    "num_queues_1025": call(PRE, me, n=1025),
    "unknown_flag": call(PRE, me, flags=4),
    "all_with_list": call(PRE, me, n=1, flags=1),
    "grace_resume": call(RES, me, grace=100),
    "grace_resume_all": call(RES, me, n=0, flags=1, grace=100),
    "bad_array": call(PRE, me, ptr=8),
    "thread_id_not_tgid": call(PRE, th.native_id),
    "no_such_pid": call(PRE, 0x3FFFFFF0),
    "pid_without_kfd": call(PRE, 1),
    "nr_0x87": call(NR_0x87, me),
    "unknown_queue": call(PRE, me),
}
r["unknown_queue_result"] = entries[1]
r["preempt_all_self"] = call(PRE, me, n=0, flags=1)
r["resume_all_self"] = call(RES, me, n=0, flags=1)
r["grace_preempt_all_self"] = call(PRE, me, n=0, flags=1, grace=100)
hold.set()
th.join()
os.setgid(65534)
os.setuid(65534)
r["foreign_pid_unprivileged"] = call(PRE, 1)
print("RESULT " + json.dumps(r, sort_keys=True))
'''


@pytest.mark.kernel
@pytest.mark.skipif(os.environ.get("GPT_KERNEL_LAB") == "skip", reason="GPT_KERNEL_LAB=skip")
def test_patched_amdgpu_answers_in_the_lab(lab612):
    """Build the patched amdgpu.ko, load it into the 6.12 lab guest instead of Debian's, and check
    every errno of the scheme-B table that a machine without a GPU can reach (no queue can exist, so
    the per-queue EINVAL/EALREADY/EIO and the NO_HWS/MES EOPNOTSUPP need hardware) and the 12 kfd:*
    tracepoints in tracefs. Debian's 6.12 does not export ptrace_may_access either (patch 0002 does,
    in a rebuilt kernel): kernel/lab/ provides it."""
    lab = lab612
    res = subprocess.run(["bash", str(KERNEL / "check.sh")], capture_output=True, text=True,
                         env={**os.environ, "GPT_KERNEL_MODULE": "1"}, timeout=3600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    vermagic = subprocess.run(["modinfo", "-F", "vermagic", str(PATCHED_KO)], capture_output=True, text=True).stdout
    assert vermagic.split()[0] == lab.kernel
    out = lab.run(
        "set -e\n"
        "modprobe -a $(modinfo -F depends amdgpu | tr , ' ')\n"
        f"insmod {KERNEL_CACHE / 'lab-shim' / 'ptrace_may_access_shim.ko'}\n"
        f"insmod {PATCHED_KO}\n"
        "T=/sys/kernel/tracing\n"
        "ls $T/events/kfd | sed 's/^/EVENT /'\n"
        "echo 1 > $T/events/kfd/kfd_queues_preempt/enable\n"
        "echo 1 > $T/events/kfd/kfd_queues_unpreempt/enable\n"
        f"{sys.executable} - <<'GPT_PROBE_EOF'\n{LAB_PROBE}\nGPT_PROBE_EOF\n"
        "grep -o 'kfd_queues_.*preempt: .*' $T/trace | sed 's/^/TRACE /'\n",
        timeout_s=900, modules=())
    assert out.rc == 0, out.output[-3000:]
    events = {ln.split()[1] for ln in out.output.splitlines() if ln.startswith("EVENT kfd_")}  # not enable/filter
    assert events == {t.name for t in TRACEPOINTS if t.system == "kfd"}  # the series's own (amdkfd:* are ROCm DKMS's)
    r = json.loads(next(ln for ln in out.output.splitlines() if ln.startswith("RESULT "))[7:])
    got = {k: v[0] if isinstance(v, list) and v[0] else v for k, v in r.items()}
    assert got == {
        "num_queues_0": -errno.EINVAL,
        "num_queues_1025": -errno.E2BIG,
        "unknown_flag": -errno.EINVAL,
        "all_with_list": -errno.EINVAL,
        "grace_resume": -errno.EINVAL,
        "grace_resume_all": -errno.EINVAL,
        "bad_array": -errno.EFAULT,
        "thread_id_not_tgid": -errno.ESRCH,
        "no_such_pid": -errno.ESRCH,
        "pid_without_kfd": -errno.ESRCH,
        "nr_0x87": -errno.ENOTTY,
        "unknown_queue": -errno.ENOENT,
        "unknown_queue_result": -errno.ENOENT,
        "preempt_all_self": [0, 0],
        "resume_all_self": [0, 0],
        "grace_preempt_all_self": [0, 0],  # 6.12 programs the grace period per unmap
        "foreign_pid_unprivileged": -errno.EPERM,
    }
    traces = [ln for ln in out.output.splitlines() if ln.startswith("TRACE ")]
    assert any(f"ret={-errno.E2BIG}" in t and "num_queues=1025" in t for t in traces), traces
    assert any("kfd_queues_unpreempt:" in t and "grace_period=0x64" in t and f"ret={-errno.EINVAL}" in t for t in traces), traces
    assert any("kfd_queues_preempt:" in t and "grace_period=0x64" in t and "ret=0" in t for t in traces), traces
