"""Build (or reuse) the lab in a cache folder outside the repo, from Debian packages alone:
`apt-get download linux-image-<abi>` + `dpkg-deb -x`, `depmod -b`, kernel headers linked for BCC,
and the initramfs. One lab per kernel series (KERNELS: Debian 12's 6.1 and its 6.12 backport);
each is described by `<cache>/lab-<series>.json` and lives in `<cache>/kernel/<abi>/`."""
from __future__ import annotations

import fcntl
import json
import lzma
import os
import platform
import re
import shutil
import struct
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LabBroken, LabUnavailable
from .initramfs import build_initramfs

FORMAT = 7  # bump when the cache layout or the initramfs changes
# kernel series the lab boots -> apt name pattern of its linux-image ABI (newest match wins)
KERNELS = {
    "6.1": r"6\.1\.0-[0-9]+-amd64",  # bookworm: vmlinuz xz, modules .ko
    "6.12": r"6\.12\.[0-9]+\+deb12-amd64",  # bookworm backport: vmlinuz zstd, modules .ko.xz, virtio_pci built in
}
DEFAULT_KERNEL = "6.1"
QEMU = "qemu-system-x86_64"
HOST_TOOLS = {  # tool -> Debian package
    QEMU: "qemu-system-x86",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "apt-cache": "apt",
    "depmod": "kmod",
    "modprobe": "kmod",
}
ZSTD = "zstd"  # unpacks 6.12's zstd vmlinuz for PVH boot; without it the guest boots vmlinuz (slower)


def cache_dir() -> Path:
    return Path(os.environ.get("GPT_LAB_CACHE") or Path.home() / ".cache" / "gpreempt-trace" / "lab")


@dataclass(frozen=True)
class LabBuild:
    """What a built lab is made of (lab-<series>.json)."""

    format: int
    series: str  # KERNELS key: 6.1 or 6.12
    abi: str  # e.g. 6.1.0-56-amd64, 6.12.117+deb12-amd64
    package: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # Debian package version, e.g. 6.1.192-2
    root: str  # extracted package root (host path)
    vmlinuz: str
    vmlinux: str  # uncompressed ELF for QEMU's PVH boot (skips firmware + decompression); "" = none
    initrd: str
    moddir: str  # <root>/lib/modules/<abi>
    headers: str  # what /lib/modules/<abi>/build points to in the guest
    download_bytes: int
    build_s: float

    @classmethod
    def load(cls, path: Path) -> "LabBuild | None":
        try:
            data = json.loads(path.read_text())
            build = cls(**data)
        except (OSError, ValueError, TypeError):
            return None
        ok = build.format == FORMAT and all(Path(p).exists() for p in (build.vmlinuz, build.initrd, build.moddir))
        return build if ok else None


def check_host() -> None:
    """Raise LabUnavailable when this machine cannot run the lab at all."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise LabUnavailable(f"the lab needs an x86_64 host, this is {platform.machine()}")
    missing = [f"{tool} ({pkg})" for tool, pkg in HOST_TOOLS.items() if not _which(tool)]
    if missing:
        raise LabUnavailable("cannot run the QEMU lab, missing " + ", ".join(missing),
                             "run `make setup` (apt-get install qemu-system-x86 busybox-static cpio kmod)")


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout_s: float = 600) -> str:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise LabBroken(f"{what} timed out after {timeout_s:.0f} s", " ".join(cmd)) from None
    if res.returncode != 0:
        last = (res.stderr.strip() or res.stdout.strip()).splitlines()
        raise LabBroken(f"{what} failed (exit {res.returncode})", last[-1] if last else " ".join(cmd))
    return res.stdout


def check_kernel(kernel: str) -> str:
    """`kernel` as a KERNELS key; LabBroken names the choices otherwise."""
    if kernel not in KERNELS:
        raise LabBroken(f"unknown lab kernel {kernel!r}", "choose one of " + ", ".join(KERNELS))
    return kernel


def series_of(abi: str) -> str:
    """The kernel series ("6.1", "6.12") of an ABI string such as 6.12.117+deb12-amd64."""
    m = re.match(r"(\d+\.\d+)[.-]", abi)
    return m.group(1) if m else abi


def pick_abi(kernel: str = DEFAULT_KERNEL) -> str:
    """The kernel ABI to boot for series `kernel`: $GPT_LAB_KERNEL when it is of that series, else
    (6.1) the one the installed linux-headers-amd64 depends on (so the installed headers match, for
    BCC), else the one its apt candidate depends on; (6.12) the newest installed linux-headers-6.12.*
    (make setup pins the one of the fixtures: the kernel series is built against it and its amdgpu.ko
    must load in the guest); else the newest ABI of the series apt knows; always one apt can still
    download."""
    check_kernel(kernel)
    wanted = os.environ.get("GPT_LAB_KERNEL")
    if wanted and series_of(wanted) == kernel:
        return wanted
    pattern = KERNELS[kernel]
    if kernel == "6.1":
        installed = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", "linux-headers-amd64"],
                                   capture_output=True, text=True).stdout
        candidate = subprocess.run(["apt-cache", "depends", "linux-headers-amd64"], capture_output=True, text=True).stdout
        for deps in (installed, candidate):  # the installed headers first: BCC then uses them as they are
            m = re.search(rf"linux-headers-({pattern})\b", deps)
            if m and _apt_has(f"linux-image-{m.group(1)}"):
                return m.group(1)
    if kernel == "6.12":
        listed = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", "linux-headers-6.12.*-amd64"],
                                capture_output=True, text=True).stdout
        installed = re.findall(rf"^linux-headers-({pattern}) install ok installed$", listed, flags=re.M)
        for abi in sorted(installed, key=lambda a: [int(x) for x in re.findall(r"\d+", a)], reverse=True):
            if _apt_has(f"linux-image-{abi}"):
                return abi
    names = subprocess.run(["apt-cache", "search", "--names-only", rf"^linux-image-{pattern}$"],
                           capture_output=True, text=True).stdout
    abis = re.findall(rf"^linux-image-({pattern}) ", names, flags=re.M)
    if not abis:
        raise LabBroken(f"apt knows no linux-image-{pattern.replace(chr(92), '')} package",
                        "run `apt-get update` (Debian 12 bookworm + bookworm-security sources)")
    return max(abis, key=lambda a: [int(x) for x in re.findall(r"\d+", a)])


def _apt_has(pkg: str) -> bool:
    policy = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
    m = re.search(r"Candidate: (\S+)", policy)
    return bool(m) and m.group(1) != "(none)"


def _pointer(kernel: str) -> Path:
    return cache_dir() / f"lab-{kernel}.json"


def current(kernel: str = DEFAULT_KERNEL) -> LabBuild | None:
    """The built lab of series `kernel` the cache points at, if it is complete and of this FORMAT."""
    return LabBuild.load(_pointer(check_kernel(kernel)))


@contextmanager
def _locked():
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_built(rebuild: bool = False, log=lambda msg: None, kernel: str = DEFAULT_KERNEL) -> LabBuild:
    """Return the cached lab of series `kernel`, building what is missing, stale or everything when
    `rebuild` is set. A kernel tree, once extracted, is never changed in place (guests of other
    processes use it)."""
    check_kernel(kernel)
    check_host()
    with _locked():
        build = None if rebuild else current(kernel)
        wanted = os.environ.get("GPT_LAB_KERNEL")
        if build is not None and (not wanted or series_of(wanted) != kernel or wanted == build.abi):
            return build
        series = kernel
        kernel = _kernel_tree(pick_abi(series), rebuild, log)
        t0 = time.monotonic()  # extract_s covers the kernel tree; add the initramfs and vmlinux
        final = cache_dir() / "kernel" / kernel["abi"]
        initrd = final / f"initrd-f{FORMAT}.cpio.gz"
        if rebuild or not initrd.exists():
            log("lab: initramfs")
            build_initramfs(final / "root", kernel["abi"], initrd, final)
        root = final / "root"
        vmlinux = _pvh_vmlinux(root / "boot" / f"vmlinuz-{kernel['abi']}", final / "vmlinux", rebuild, log)
        build = LabBuild(format=FORMAT, series=series, abi=kernel["abi"], package=kernel["package"], version=kernel["version"],
                         root=str(root), vmlinuz=str(root / "boot" / f"vmlinuz-{kernel['abi']}"), vmlinux=vmlinux,
                         initrd=str(initrd), moddir=str(root / "lib" / "modules" / kernel["abi"]),
                         headers=kernel["headers"], download_bytes=kernel["download_bytes"],
                         build_s=round(kernel["extract_s"] + time.monotonic() - t0, 1))
        tmp = _pointer(series).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(build), indent=1) + "\n")
        os.replace(tmp, _pointer(series))
        return build


def _pvh_vmlinux(vmlinuz: Path, dest: Path, rebuild: bool, log) -> str:
    """Unpack the ELF vmlinux from Debian's bzImage (xz on 6.1, zstd on 6.12): under TCG, QEMU's PVH
    entry boots it several seconds faster than firmware + in-guest decompression. "" when the
    payload cannot be unpacked here or has no PVH note (the guest then boots vmlinuz)."""
    if dest.exists() and not rebuild:
        return str(dest)
    data = vmlinuz.read_bytes()
    log("lab: unpack vmlinux for PVH boot")
    elf = _unpack_payload(data)
    if not elf or not _has_pvh_note(elf):
        return ""
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(elf)
    os.replace(tmp, dest)
    return str(dest)


def _unpack_payload(data: bytes) -> bytes:
    """The ELF inside a bzImage: its xz stream (lzma) or zstd frame (the zstd tool); b"" if neither."""
    start = data.find(b"\xfd7zXZ\x00")
    if start >= 0:
        try:
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
        except lzma.LZMAError:
            return b""
    start = data.find(b"\x28\xb5\x2f\xfd")
    if start < 0 or not _which(ZSTD):
        return b""
    # the frame is followed by the setup trailer: zstd decodes the first frame and stops
    res = subprocess.run([_which(ZSTD), "-dc", "-q"], input=data[start:], capture_output=True)
    return res.stdout if res.stdout[:4] == b"\x7fELF" else b""


def _has_pvh_note(elf: bytes) -> bool:
    """True when a 64-bit ELF has a PT_NOTE "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY (18)."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, off, _va, _pa, size = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        pos, end = off, off + size
        while p_type == 4 and pos + 12 <= end:  # PT_NOTE
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\x00")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _download(pkg: str, dest: Path) -> Path:
    _run(["apt-get", "download", "-q", pkg], f"apt-get download {pkg}", cwd=dest, timeout_s=900)
    debs = sorted(dest.glob(f"{pkg}_*.deb"))
    if not debs:
        raise LabBroken(f"apt-get download {pkg} produced no .deb", str(dest))
    return debs[-1]


def _kernel_tree(abi: str, rebuild: bool, log) -> dict:
    """kernel/<abi>/root: linux-image-<abi> extracted, depmod'ed, build/source linked to headers.
    Described by kernel/<abi>/kernel.json, written last (its presence means complete)."""
    t0 = time.monotonic()
    kernels = cache_dir() / "kernel"
    final = kernels / abi
    if not rebuild:
        try:
            return json.loads((final / "kernel.json").read_text())
        except (OSError, ValueError):
            pass
    stage = kernels / f".stage-{abi}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "debs").mkdir(parents=True)
    root = stage / "root"
    try:
        package = f"linux-image-{abi}"
        log(f"lab: apt-get download {package}")
        deb = _download(package, stage / "debs")
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], "dpkg-deb -f").strip()
        log(f"lab: dpkg-deb -x {deb.name}")
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
        download = deb.stat().st_size
        moddir = root / "lib" / "modules" / abi
        if not (root / "boot" / f"vmlinuz-{abi}").exists() or not moddir.is_dir():
            raise LabBroken(f"{deb.name} has no vmlinuz-{abi} or lib/modules/{abi}")
        log("lab: depmod")
        _run(["depmod", "-b", str(root), abi], "depmod -b")
        headers, hdr_bytes = _headers(abi, stage, log)
        download += hdr_bytes
        headers = headers.replace(str(stage), str(final))
        _link_headers(moddir, headers, abi)
        shutil.rmtree(stage / "debs")
        kernel = {"abi": abi, "package": package, "version": version, "headers": headers,
                  "download_bytes": download, "extract_s": round(time.monotonic() - t0, 1)}
        (stage / "kernel.json").write_text(json.dumps(kernel, indent=1) + "\n")
        if final.exists():  # --rebuild: move the old tree aside first (no in-place changes)
            old = kernels / f".old-{abi}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(stage, final)
        return kernel
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def header_packages(abi: str) -> list[str]:
    """The Debian packages that make /lib/modules/<abi>/build usable for BCC."""
    base = abi.rsplit("-", 1)[0]  # 6.1.0-57 / 6.12.117+deb12
    kbuild = "linux-kbuild-6.1" if series_of(abi) == "6.1" else f"linux-kbuild-{base}"
    return [f"linux-headers-{abi}", f"linux-headers-{base}-common", kbuild]


def _headers(abi: str, stage: Path, log) -> tuple[str, int]:
    """Kernel headers for BCC in the guest: the host's /usr/src ones when they match `abi`, else
    header_packages(abi) downloaded into the cache."""
    host = Path(f"/usr/src/linux-headers-{abi}")
    if (host / ".config").exists() and os.environ.get("GPT_LAB_HEADERS") != "download":
        return str(host), 0
    size = 0
    for pkg in header_packages(abi):
        log(f"lab: apt-get download {pkg}")
        deb = _download(pkg, stage / "debs")
        size += deb.stat().st_size
        _run(["dpkg-deb", "-x", str(deb), str(stage / "root")], f"dpkg-deb -x {deb.name}")
    return str(stage / "root" / "usr" / "src" / f"linux-headers-{abi}"), size


def _link_headers(moddir: Path, headers: str, abi: str) -> None:
    """/lib/modules/<abi>/{build,source} as BCC expects them (absolute host paths: the guest sees
    the host's / at /)."""
    final_headers = headers
    common = final_headers.replace(f"linux-headers-{abi}", "linux-headers-" + abi.rsplit("-", 1)[0] + "-common")
    for name, target in (("build", final_headers), ("source", common)):
        link = moddir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
