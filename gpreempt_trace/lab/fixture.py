"""Take a real-kernel fixture out of a lab guest: `python -m gpreempt_trace.lab fixture --kernel 6.12 DEST`.

The guest loads amdgpu and copies /sys/kernel/btf/{vmlinux,amdgpu}, the amdgpu part of /proc/kallsyms
(every `[amdgpu]` line + the core-kernel lines whose names collide with an amdgpu symbol, in kallsyms
order) and facts.txt (uname, /proc/version, KFD ioctl version, modprobe status). The host writes
DEST/<abi>/ the way tests/fixtures/kernels/ holds them: SHA256SUMS of the uncompressed files, then
btf/* and kallsyms xz-compressed (-9e)."""
from __future__ import annotations

import fcntl
import hashlib
import lzma
import os
import shutil
import struct
import subprocess
from pathlib import Path

from ..contracts import uapi
from .errors import LabBroken

AMDKFD_IOC_GET_VERSION = uapi.GET_VERSION
COMPRESSED = ("btf/vmlinux", "btf/amdgpu", "kallsyms")


def amdgpu_kallsyms(text: str, module: str = "amdgpu") -> str:
    """Every `[module]` line plus the vmlinux lines whose symbol names also occur in the module."""
    lines = text.splitlines()
    names = {ln.split()[2] for ln in lines if ln.endswith(f"[{module}]") and len(ln.split()) >= 4}
    keep = [ln for ln in lines if ln.endswith(f"[{module}]")
            or (len(ln.split()) == 3 and ln.split()[2] in names)]
    return "\n".join(keep) + "\n"


def guest_main(out: str) -> None:
    """In the guest (amdgpu not yet loaded): load it, then write the fixture files under `out`."""
    dest = Path(out)
    (dest / "btf").mkdir(parents=True, exist_ok=True)
    mp = subprocess.run(["modprobe", "amdgpu"], capture_output=True, text=True)
    for name in ("vmlinux", "amdgpu"):
        shutil.copyfile(f"/sys/kernel/btf/{name}", dest / "btf" / name)
    (dest / "kallsyms").write_text(amdgpu_kallsyms(Path("/proc/kallsyms").read_text()))
    version, err = "?", 0
    try:
        fd = os.open("/dev/kfd", os.O_RDWR)
        buf = bytearray(8)
        fcntl.ioctl(fd, AMDKFD_IOC_GET_VERSION, buf)
        os.close(fd)
        version = "{}.{}".format(*struct.unpack("<II", buf))
    except OSError as e:
        err = e.errno
    (dest / "facts.txt").write_text(
        f"uname -r: {os.uname().release}\n"
        f"/proc/version: {Path('/proc/version').read_text().strip()}\n"
        f"kfd ioctl version: {version} (ret={-1 if err else 0} errno={err})  [AMDKFD_IOC_GET_VERSION={AMDKFD_IOC_GET_VERSION:#x} on /dev/kfd]\n"
        f"modprobe amdgpu rc: {mp.returncode}\n")


def take(lab, dest: Path, timeout_s: float = 400) -> Path:
    """Boot `lab`, take the fixture, write it to dest/<abi>/ (replacing it). Returns that folder."""
    raw = Path(dest) / f".raw-{lab.kernel}"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    res = lab.python("from gpreempt_trace.lab.fixture import guest_main; import os; guest_main(os.environ['OUT'])",
                     timeout_s=timeout_s, modules=(), out_dir=raw)
    if res.rc != 0 or not (raw / "kallsyms").exists():
        raise LabBroken(f"taking the {lab.kernel} fixture failed (rc {res.rc})", res.output.strip()[-300:])
    final = Path(dest) / lab.kernel
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    sums = []
    for rel in (*COMPRESSED, "facts.txt"):
        data = (raw / rel).read_bytes()
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {rel}")
        target = final / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in COMPRESSED:
            target.with_name(target.name + ".xz").write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        else:
            target.write_bytes(data)
    (final / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    shutil.rmtree(raw, ignore_errors=True)
    return final
