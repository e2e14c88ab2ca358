"""Build (or reuse) the lab in a cache folder outside the repo, from Debian packages alone:
`apt-get download linux-image-<abi>` + `dpkg-deb -x`, `depmod -b`, kernel headers linked for BCC,
and the initramfs. The result is described by `<cache>/kernel/<abi>/lab.json`."""
from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LabBroken, LabUnavailable
from .initramfs import build_initramfs

FORMAT = 3  # bump when the cache layout or the initramfs changes
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


def cache_dir() -> Path:
    return Path(os.environ.get("GPT_LAB_CACHE") or Path.home() / ".cache" / "gpreempt-trace" / "lab")


@dataclass(frozen=True)
class LabBuild:
    """What a built lab is made of (lab.json)."""

    format: int
    abi: str  # e.g. 6.1.0-56-amd64
    package: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # Debian package version, e.g. 6.1.192-2
    root: str  # extracted package root (host path)
    vmlinuz: str
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


def pick_abi() -> str:
    """The kernel ABI to boot: $GPT_LAB_KERNEL, else the one linux-headers-amd64 depends on (so the
    installed headers match for BCC), else the newest linux-image-6.1.0-*-amd64 apt knows."""
    if os.environ.get("GPT_LAB_KERNEL"):
        return os.environ["GPT_LAB_KERNEL"]
    deps = subprocess.run(["apt-cache", "depends", "linux-headers-amd64"], capture_output=True, text=True).stdout
    m = re.search(r"Depends: linux-headers-(6\.1\.0-\d+-amd64)\b", deps)
    if m:
        return m.group(1)
    names = subprocess.run(["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"],
                           capture_output=True, text=True).stdout
    abis = re.findall(r"^linux-image-(6\.1\.0-(\d+)-amd64) ", names, flags=re.M)
    if not abis:
        raise LabBroken("apt knows no linux-image-6.1.0-*-amd64 package", "run `apt-get update` (Debian 12 bookworm sources)")
    return max(abis, key=lambda a: int(a[1]))[0]


def current() -> LabBuild | None:
    """The built lab the cache points at, if it is complete."""
    pointer = cache_dir() / "current"
    try:
        abi = pointer.read_text().strip()
    except OSError:
        return None
    return LabBuild.load(cache_dir() / "kernel" / abi / "lab.json")


@contextmanager
def _locked():
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_built(rebuild: bool = False, log=lambda msg: None) -> LabBuild:
    """Return the cached lab, building it first when it is missing, stale or `rebuild` is set."""
    check_host()
    with _locked():
        build = None if rebuild else current()
        if build is None:
            build = _build(pick_abi(), log)
            (cache_dir() / "current").write_text(build.abi + "\n")
        return build


def _download(pkg: str, dest: Path) -> Path:
    _run(["apt-get", "download", "-q", pkg], f"apt-get download {pkg}", cwd=dest, timeout_s=900)
    debs = sorted(dest.glob(f"{pkg}_*.deb"))
    if not debs:
        raise LabBroken(f"apt-get download {pkg} produced no .deb", str(dest))
    return debs[-1]


def _build(abi: str, log) -> LabBuild:
    t0 = time.monotonic()
    kernels = cache_dir() / "kernel"
    final = kernels / abi
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
        _link_headers(moddir, headers, abi)
        log("lab: initramfs")
        build_initramfs(root, abi, stage / "initrd.cpio.gz", stage)
        shutil.rmtree(stage / "debs")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    root = final / "root"
    headers = headers.replace(str(stage), str(final))
    build = LabBuild(format=FORMAT, abi=abi, package=package, version=version, root=str(root),
                     vmlinuz=str(root / "boot" / f"vmlinuz-{abi}"), initrd=str(final / "initrd.cpio.gz"),
                     moddir=str(root / "lib" / "modules" / abi), headers=headers,
                     download_bytes=download, build_s=round(time.monotonic() - t0, 1))
    (final / "lab.json").write_text(json.dumps(asdict(build), indent=1) + "\n")
    return build


def _headers(abi: str, stage: Path, log) -> tuple[str, int]:
    """Kernel headers for BCC in the guest: the host's /usr/src ones when they match `abi`, else
    linux-headers-<abi> (+ -common, linux-kbuild-6.1) downloaded into the cache."""
    host = Path(f"/usr/src/linux-headers-{abi}")
    if (host / ".config").exists():
        return str(host), 0
    common = abi.rsplit("-", 1)[0] + "-common"
    size = 0
    for pkg in (f"linux-headers-{abi}", f"linux-headers-{common}", "linux-kbuild-6.1"):
        log(f"lab: apt-get download {pkg}")
        deb = _download(pkg, stage / "debs")
        size += deb.stat().st_size
        _run(["dpkg-deb", "-x", str(deb), str(stage / "root")], f"dpkg-deb -x {deb.name}")
    return str(stage / "root" / "usr" / "src" / f"linux-headers-{abi}"), size


def _link_headers(moddir: Path, headers: str, abi: str) -> None:
    """/lib/modules/<abi>/{build,source} as BCC expects them (absolute host paths: the guest sees
    the host's / at /)."""
    final_headers = headers.replace(str(moddir.parents[2]), str(cache_dir() / "kernel" / abi / "root"))
    common = final_headers.replace(f"linux-headers-{abi}", "linux-headers-" + abi.rsplit("-", 1)[0] + "-common")
    for name, target in (("build", final_headers), ("source", common)):
        link = moddir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
