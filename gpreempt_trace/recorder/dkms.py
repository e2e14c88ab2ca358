"""DKMS hosts: recognise an out-of-tree amdgpu module, find its DKMS source, and the compiler flags
ROCm's DKMS build gives amdkfd/amdgpu objects (so a kbuild compile of that source against the target
kernel's headers yields the struct layouts of the real module).

Every path is read relative to `root` (a fixture tree in tests); unknown values are None, never 0 or "".

Where each fact comes from (read with the search tools; facts only, no code carried over)
------------------------------------------------------------------------------------------------
[T] zhenhantech/amdgpudriver @ 46e94948b89dd4f0e0379064384f6bcfc87f2022 (unchanged at
    2adff7651b6c0628b4874be5353ead5737e91a9d), ROCm_keyDriver/kfd-amdgpu-debug-20260106/: a copy of an
    unpacked amdgpu-dkms 6.12.12 source tree (amd/dkms/configure.ac: AC_INIT(amdgpu-dkms, 6.12.12)), i.e.
    what /usr/src/amdgpu-6.12.12-<build> holds on the PoC host:
    - layout: top-level `dkms.conf` -> amd/dkms/dkms.conf and `Makefile` -> amd/dkms/Makefile (symlinks),
      amd/{amdgpu,amdkfd,backport,include,display,pm,acp,amdkcl,amdxcp,dkms}/, include/{kcl,drm,linux,uapi}/,
      scheduler/, ttm/, drm_buddy.c, drm_gem_ttm_helper.c. No amd/dkms/config/config.h and no
      include/rename_symbol.h: both are generated at build time.
    - amd/dkms/dkms.conf: PACKAGE_NAME="amdgpu", MAKE[0]="'make' KERNELVER=$kernelver", 7 modules
      (amdgpu, amdttm, amdkcl, amd-sched, amddrm_ttm_helper, amddrm_buddy, amdxcp); no STRIP[] entry.
    - amd/dkms/Makefile (outer make, KERNELRELEASE unset): runs `amd/dkms/pre-build.sh $(KERNELVER)
      $(CURDIR) $(mktemp -ut amd.XXXXXXXX) $(CC)`, then `make -C /lib/modules/$(KERNELVER)/build
      M=/tmp/amd.XXXXXXXX`; with KERNELRELEASE set it includes amd/dkms/Kbuild.
    - amd/dkms/pre-build.sh: appends `#define <sym> amd<sym>` for every EXPORT_SYMBOL of the amdkcl
      files to include/rename_symbol.h; renames every amdgpu Kconfig symbol CONFIG_X (the `config X`
      lines of amd/*/Kconfig, and CONFIG_DRM_TTM*/CONFIG_DRM_SCHED of ttm/ and scheduler/Makefile) to
      CONFIG_X_AMDKCL in every file (so the kernel's own autoconf.h cannot override DKMS's choice);
      `ln -s <DKMS build dir> /tmp/amd.XXXXXXXX`; `export KERNELVER; (cd amd/dkms && ./configure)`,
      which writes amd/dkms/config/config.h (HAVE_* macros) inside the DKMS build directory.
    - amd/dkms/m4/kernel.m4: configure takes --with-linux=PATH / --with-linux-obj=PATH, else
      /lib/modules/$KERNELVER/{source,build}; AH_BOTTOM `#define AMDGPU_VERSION PACKAGE_VERSION`, and
      amd/amdgpu/amdgpu_drv.c has MODULE_VERSION(AMDGPU_VERSION): /sys/module/amdgpu/version is the
      configure version ("6.12.12"), not the package version ("6.12.12-<build>.<dist>").
    - amd/dkms/Kbuild: LINUXINCLUDE := -I$(src)/include -I$(src)/include/kcl/header
      -include $(src)/include/kcl/kcl_version.h -include $(src)/include/rename_symbol.h
      -include $(src)/amd/dkms/config/config.h <kernel's non-uapi LINUXINCLUDE> -I$(src)/include/uapi
      <kernel's -I.../uapi>; subdir-ccflags-y: -DDRM_VER/-DDRM_PATCH (RHEL_DRM_VERSION/PATCHLEVEL of
      $(srctree)/Makefile, else VERSION/PATCHLEVEL) -DDRM_SUB="0"; OS macros (RHEL_MAJOR/MINOR of
      <linux/version.h> -> "rhel", else ID/VERSION_ID of /etc/os-release; centos/rhel -> custom-rhel,
      linuxmint -> ubuntu); -DCONFIG_HSA_AMD -DCONFIG_DRM_TTM_DMA_PAGE_POOL -DCONFIG_DRM_AMDGPU_CIK
      -DCONFIG_DRM_AMDGPU_SI -DCONFIG_DRM_AMDGPU_USERPTR -DCONFIG_DRM_AMD_DC -Wno-error;
      -DCONFIG_HSA_AMD_SVM when config.h defines HAVE_AMDKCL_HMM_MIRROR_ENABLED and the kernel has
      CONFIG_DEVICE_PRIVATE; -DCONFIG_DRM_AMD_DC_HDCP; -DCONFIG_HSA_AMD_P2P when CONFIG_PCI_P2PDMA=y and
      CONFIG_DMABUF_MOVENOTIFY=y; -DCONFIG_DRM_AMD_DC_FP unless ARM64 (clang, or no -march=core2);
      then Makefile.drm_ttm_helper (-DCONFIG_DRM_TTM_HELPER) and Makefile.drm_buddy (-DCONFIG_DRM_BUDDY).
    - amd/amdgpu/Makefile: FULL_AMD_PATH = $(src) minus /amdgpu; ccflags-y := -I{amd}/include/asic_reg
      -I{amd}/include -I{amd}/amdgpu -I{amd}/pm/inc -I{amd}/acp/include -I{display} -I{display}/include
      -I{display}/modules/inc -I{display}/dc -I{display}/amdgpu_dm -I{amd}/amdkfd; subdir-ccflags-y +=
      -Wno-override-init; amdkfd objects are built in this directory ($(AMDKFD_FILES) from
      amd/amdkfd/Makefile, which adds no flags); it then includes pm/Makefile, display/Makefile (when
      DC) and backport/Makefile, whose flags therefore apply to amdkfd objects too:
      pm/Makefile: 14 subdir -I dirs; display/Makefile: 25 subdir -I dirs + -DBUILD_FEATURE_TIMING_SYNC=0;
      display/amdgpu_dm/Makefile: -I{display}/dc; display/dc/Makefile includes dc/dml2/Makefile only with
      CONFIG_DRM_AMD_DC_FP (9 subdir -I dirs); amd/backport/Makefile: ccflags-y += -I{amd}
      -I{amd}/backport/include -I{amd}/dkms -include config/config.h -include backport/backport.h
      -DHAVE_CONFIG_H.
    - amd/amdkfd/kfd_priv.h: struct kfd_process has `#ifndef HAVE_MMU_NOTIFIER_PUT` and
      HAVE_TREE_INSERT_HAVE_RB_ROOT_CACHED members (config.h decides the layout); of the amdgpu Kconfig
      symbols only CONFIG_HSA_AMD_SVM appears in amd/amdkfd/*.h (kfd_migrate.h, function stubs).
[R] ROCm/ROCK-Kernel-Driver drivers/gpu/drm/amd/dkms/Kbuild @ bb4c642ddecef85882310a8e9d6bf345bb5f19ee
    (the same LINUXINCLUDE and subdir-ccflags as [T]); drivers/gpu/drm/amd/backport/Makefile @
    e63964c7dccde5f30f6bad9f3a520c03db0f7074 (the same ccflags-y as [T]).
[A] ROCm/amdgpu drivers/gpu/drm/amd/dkms/sources @ 6b588fb3c68ca67a8953c7309079c6f1ece33766: how the
    packaging maps the kernel tree into the DKMS tree (drivers/gpu/drm/amd -> amd/, include/kcl ->
    include/kcl, ttm/, scheduler/, include/uapi/linux/kfd_ioctl.h, ...).
[D] dell/dkms dkms.in @ 793fdab5eba9d6b6e9295b18e44a23824e7da44f: the source is copied to
    $dkms_tree/<module>/<version>/build, built there, `strip -g` on each module unless STRIP[n]=no, and
    the build directory is removed (`rm -rf $build_dir`) after a successful build (also in v2.8.4), so
    /var/lib/dkms/amdgpu/<ver>/build/amd/dkms/config/config.h only survives a failed or interrupted
    build; modules are installed to /extra on fedora/rhel, /updates/dkms on debian/ubuntu, /updates on
    suse; `dkms status` prints "m/v, kernel, arch: state[ (note)]" and "m/v: added|broken" (dkms >= 3.0,
    commit f83b758b6fb8ca67b1ab65df9e3d2a1e994eb483 changed "m, v" to "m/v"), "m, v, kernel, arch:
    state" and "m, v: added" before (v2.8.4), and "m, v, kernel, arch: installed-weak from <kernel>".
[I] public build logs: ROCm/amdgpu#192 (amdgpu-dkms 1:6.12.12.60401-2164967.24.04 -> DKMS version
    6.12.12-2164967.24.04, make.log under /var/lib/dkms/amdgpu/<ver>/build); ROCm/legacy-rocm-build#5111
    (objects compiled as /tmp/amd.XXXXXXXX/amd/amdgpu/*.c with amd/amdgpu/../backport/backport.h
    included "from <command-line>"); dmesg lines "[drm] amdgpu version: 6.2.4" (ollama/ollama#2453).
[K] Debian linux-image-6.12.117+deb12-amd64 6.12.117-1~deb12u1 (installed on the dev VM): the in-tree
    amdgpu.ko has `intree: Y`, no version and no srcversion (modpost adds srcversion only with
    MODULE_VERSION), is signed (no E taint); its .note.gnu.build-id is namesz=4, descsz=20, type=3 (GNU).
    Checked here: with a kbuild external module, -I flags in KCFLAGS come after the kernel's own include
    dirs (a header the kernel also has is taken from the kernel), while `LINUXINCLUDE := <dirs>
    $(LINUXINCLUDE)` in the module's Kbuild puts them first (make -C .../6.12.117+deb12-amd64/build).

Consequences for `btf build`: the DKMS LINUXINCLUDE prefix (its own include/drm/ttm, gpu_scheduler.h,
kcl headers, config.h) must precede the kernel's include dirs: use kbuild_wrapper() (or the same
LINUXINCLUDE line), not KCFLAGS; the -D flags may go anywhere. config.h must come from the same target
kernel (configure probes it).
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GptError

MODULE = "amdgpu"
NT_GNU_BUILD_ID = 3
_KO = re.compile(r"\.ko(\.xz|\.zst|\.gz)?$")


# ---------------------------------------------------------------------------------------------
# host recognition
@dataclass(frozen=True)
class DkmsEntry:
    """One line of `dkms status`."""

    module: str
    version: str
    kernel: str | None  # None for "added"/"broken"
    arch: str | None
    state: str  # installed, built, added, broken, installed-weak
    note: str | None = None  # "(Original modules exist)", "from <kernel>" (installed-weak), ...


@dataclass(frozen=True)
class ModuleInfo:
    name: str
    loaded: bool  # /sys/module/<name>/initstate exists
    version: str | None  # /sys/module/<name>/version (in-tree amdgpu has none)
    srcversion: str | None  # /sys/module/<name>/srcversion (only modules with MODULE_VERSION)
    taint: str | None  # letters of /sys/module/<name>/taint ("OE"); "" = read, untainted; None = unknown
    build_id: str | None  # hex GNU build-id from /sys/module/<name>/notes/.note.gnu.build-id
    kernel_release: str | None
    module_path: str | None  # modules.dep path of the file modprobe loads ("extra/amdgpu.ko.xz")
    out_of_tree: bool
    dkms_sources: list[Path] = field(default_factory=list)  # <root>/usr/src/<name>-<ver> with a dkms.conf
    dkms_status: list[DkmsEntry] | None = None  # None: no `dkms` command (or not asked)

    @property
    def dkms_versions(self) -> list[str]:
        return [_src_version(p, self.name) for p in self.dkms_sources]


def _root(root) -> Path:
    return Path(root)


def _under(root, path: str) -> Path:
    return _root(root) / path.lstrip("/")


def _read(p: Path) -> str | None:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return None


def _read_line(p: Path) -> str | None:
    """First line, stripped; None when absent or empty."""
    t = _read(p)
    if t is None:
        return None
    t = t.strip()
    return t or None


def parse_build_id_note(data: bytes) -> str | None:
    """Hex GNU build-id from the raw ELF note(s) (namesz, descsz, type, name, desc; 4-byte aligned)."""
    for order in ("<", ">"):
        off = 0
        while off + 12 <= len(data):
            namesz, descsz, ntype = struct.unpack_from(order + "III", data, off)
            name_end = off + 12 + namesz
            desc_off = off + 12 + ((namesz + 3) & ~3)
            if namesz > 64 or desc_off + descsz > len(data):
                break
            if ntype == NT_GNU_BUILD_ID and data[off + 12:name_end] == b"GNU\0" and descsz:
                return data[desc_off:desc_off + descsz].hex()
            off = desc_off + ((descsz + 3) & ~3)
    return None


def _kernel_release(root) -> str | None:
    rel = _read_line(_under(root, "proc/sys/kernel/osrelease"))
    if rel is None and _root(root) == Path("/"):
        rel = os.uname().release
    return rel


def _module_path(root, release: str | None, name: str) -> str | None:
    """The modules.dep entry (relative to /lib/modules/<release>) for <name>.ko[.xz|.zst|.gz]."""
    if release is None:
        return None
    text = _read(_under(root, f"lib/modules/{release}/modules.dep"))
    if text is None:
        return None
    prefix = f"/lib/modules/{release}/"
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        base = key.rsplit("/", 1)[-1]
        if _KO.search(base) and _KO.sub("", base).replace("-", "_") == name.replace("-", "_"):
            return key[len(prefix):] if key.startswith(prefix) else key
    return None


def dkms_sources(name: str = MODULE, root="/") -> list[Path]:
    """<root>/usr/src/<name>-<version> directories that hold a dkms.conf, sorted."""
    src = _under(root, "usr/src")
    try:
        dirs = sorted(p for p in src.iterdir() if p.name.startswith(name + "-") and p.is_dir())
    except OSError:
        return []
    return [p for p in dirs if (p / "dkms.conf").is_file()]


def _src_version(p: Path, name: str) -> str:
    return p.name[len(name) + 1:]


def parse_dkms_status(text: str) -> list[DkmsEntry]:
    """`dkms status` lines, both formats: "m/v, kernel, arch: state" (dkms >= 3) and "m, v, kernel, arch:
    state" (dkms 2.x), plus "m/v: added" / "m, v: added" and "m, v, kernel, arch: installed-weak from K".
    Lines of any other shape (warnings) are skipped."""
    out = []
    for line in text.splitlines():
        head, sep, rest = line.strip().partition(": ")
        if not sep or not rest:
            continue
        parts = [p.strip() for p in head.split(",")]
        if "/" in parts[0]:
            module, version = parts[0].split("/", 1)
            more = parts[1:]
        elif len(parts) >= 2:
            module, version = parts[0], parts[1]
            more = parts[2:]
        else:
            continue
        if not module or not version or len(more) not in (0, 2) or any(not p for p in more):
            continue
        state, _, note = rest.strip().partition(" ")
        out.append(DkmsEntry(module, version, more[0] if more else None, more[1] if more else None,
                             state, note.strip() or None))
    return out


def dkms_status(root="/", output: str | None = None, timeout: float = 20.0) -> list[DkmsEntry] | None:
    """Parsed `dkms status`; `output` = its text (tests, or collected elsewhere). None when the command
    is absent (or `root` is not this machine's /, whose dkms cannot describe another tree) or fails
    without output."""
    if output is None:
        if _root(root) != Path("/"):
            return None
        exe = shutil.which("dkms")
        if exe is None:
            return None
        try:
            r = subprocess.run([exe, "status"], capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode != 0 and not r.stdout.strip():
            return None
        output = r.stdout
    return parse_dkms_status(output)


def module_info(name: str = MODULE, root="/", *, dkms_output: str | None = None) -> ModuleInfo:
    """What the host says about module `name` (see ModuleInfo). `dkms_output`: the text of `dkms status`
    to parse instead of running it."""
    sysmod = _under(root, f"sys/module/{name}")
    loaded = (sysmod / "initstate").exists()
    taint = _read(sysmod / "taint")
    taint = taint.strip() if taint is not None else None
    try:
        build_id = parse_build_id_note((sysmod / "notes" / ".note.gnu.build-id").read_bytes())
    except OSError:
        build_id = None
    version = _read_line(sysmod / "version")
    release = _kernel_release(root)
    mpath = _module_path(root, release, name)
    status = dkms_status(root, dkms_output)
    out_of_tree = bool(
        (taint and "O" in taint)
        or (mpath is not None and not mpath.startswith("kernel/"))  # extra/, updates/dkms/, updates/
        or (name == MODULE and version is not None)  # in-tree amdgpu declares no MODULE_VERSION; DKMS does
    )
    return ModuleInfo(
        name=name, loaded=loaded, version=version, srcversion=_read_line(sysmod / "srcversion"), taint=taint,
        build_id=build_id, kernel_release=release, module_path=mpath, out_of_tree=out_of_tree,
        dkms_sources=dkms_sources(name, root), dkms_status=status,
    )


def source_for(info: ModuleInfo, root="/") -> Path | None:
    """The DKMS source the loaded module was built from: /usr/src/<name>-<v> where v is the module's
    version or starts with "<version>-" (the module reports "6.12.12", the package is
    "6.12.12-2147987.el8"); several candidates are narrowed by `dkms status` for this kernel; without
    a version match, the version `dkms status` lists as installed for this kernel. None for an in-tree
    module or when nothing matches."""
    if not (info.out_of_tree or info.version):
        return None
    sources = info.dkms_sources or dkms_sources(info.name, root)
    installed = [e.version for e in (info.dkms_status or [])
                 if e.module == info.name and e.kernel == info.kernel_release and e.state.startswith("installed")]
    cands = []
    if info.version:
        cands = [p for p in sources
                 if _src_version(p, info.name) == info.version or _src_version(p, info.name).startswith(info.version + "-")]
    if len(cands) > 1:
        cands = [p for p in cands if _src_version(p, info.name) in installed]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        byver = {_src_version(p, info.name): p for p in sources}
        hits = {byver[v] for v in installed if v in byver}
        if len(hits) == 1:
            return hits.pop()
    return None


# ---------------------------------------------------------------------------------------------
# source layouts
@dataclass(frozen=True)
class SourceLayout:
    kind: str  # "kernel" (drivers/gpu/drm/amd/amdkfd) or "dkms" (amd/amdkfd + include/kcl)
    root: Path  # the tree given
    amd: Path  # .../drivers/gpu/drm/amd or <root>/amd
    amdkfd: Path
    amdgpu: Path
    include: Path | None = None  # dkms: <root>/include (kcl, drm, uapi)
    config_h: Path | None = None  # dkms: the configure-generated config.h to use
    config_h_hint: str | None = None  # dkms, config_h None: how to produce it
    version: str | None = None  # dkms: package version (dkms.conf PACKAGE_VERSION, else the dir name)
    kconfig_renamed: bool = False  # dkms: pre-build.sh already renamed CONFIG_X to CONFIG_X_AMDKCL


_NOT_A_TREE = "not a kernel source tree nor an amdgpu DKMS tree (no drivers/gpu/drm/amd/amdkfd or amd/amdkfd)"


def _conf_value(text: str | None, key: str) -> str | None:
    if not text:
        return None
    m = re.search(rf"^\s*{key}=(.*)$", text, re.M)
    return m.group(1).strip().strip("\"'") or None if m else None


def classify_source(src, root="/") -> SourceLayout:
    """Which kind of amdgpu source `src` is, and (DKMS) which config.h goes with it: the tree's own
    amd/dkms/config/config.h, else the one in DKMS's build directory
    <root>/var/lib/dkms/amdgpu/<ver>/build/amd/dkms/config/config.h, else None with a hint."""
    src = Path(src)
    kamd = src / "drivers/gpu/drm/amd"
    if (kamd / "amdkfd").is_dir():
        return SourceLayout("kernel", src, kamd, kamd / "amdkfd", kamd / "amdgpu")
    amd = src / "amd"
    if not (amd / "amdkfd").is_dir():
        raise GptError(f"{src}: {_NOT_A_TREE}",
                       "pass --source with a kernel source tree (linux-source-*, drivers/gpu/drm/amd/amdkfd) or the "
                       "amdgpu DKMS source the module was built from (/usr/src/amdgpu-<version>: amd/amdkfd, include/kcl)")
    if not (src / "include/kcl").is_dir():
        raise GptError(f"{src}: has amd/amdkfd but no include/kcl: not a whole amdgpu DKMS tree",
                       "pass the whole /usr/src/amdgpu-<version> directory (its include/kcl compat headers are needed)")
    conf = _read(src / "dkms.conf") or _read(amd / "dkms/dkms.conf")
    dirver = src.name[len(MODULE) + 1:] if src.name.startswith(MODULE + "-") else None
    version = _conf_value(conf, "PACKAGE_VERSION")
    if version in (None, "1.0") and dirver:  # "1.0" is the unpackaged template value
        version = dirver
    own = amd / "dkms/config/config.h"
    config_h, hint = None, None
    if own.is_file():
        config_h = own
    else:
        for v in dict.fromkeys(x for x in (version, dirver) if x):
            cand = _under(root, f"var/lib/dkms/{MODULE}/{v}/build/amd/dkms/config/config.h")
            if cand.is_file():
                config_h = cand
                break
    if config_h is None:
        hint = (f"{own} is generated per target kernel by the tree's configure (DKMS runs it from "
                "amd/dkms/pre-build.sh and deletes its build directory after a successful build); in a copy of the "
                "tree run: cd amd/dkms && KERNELVER=<target release> ./configure "
                "(or ./configure --with-linux=<kernel source> --with-linux-obj=<kernel build dir>)")
    kbuild = _read(amd / "dkms/Kbuild") or ""
    renamed = re.search(r"CONFIG_\w+_AMDKCL\b", kbuild) is not None
    return SourceLayout("dkms", src, amd, amd / "amdkfd", amd / "amdgpu", include=src / "include",
                        config_h=config_h, config_h_hint=hint, version=version, kconfig_renamed=renamed)


def kconfig_symbols(layout: SourceLayout) -> list[str]:
    """CONFIG_ names of the tree's amdgpu Kconfig symbols (`config X` lines of amd/*/Kconfig), the set
    pre-build.sh renames to CONFIG_X_AMDKCL; in file order."""
    out: list[str] = []
    for k in sorted(layout.amd.glob("*/Kconfig")):
        for m in re.finditer(r"^config\s+(\w+)", _read(k) or "", re.M):
            name = "CONFIG_" + m.group(1).upper()
            if name not in out:
                out.append(name)
    return out


# ---------------------------------------------------------------------------------------------
# the target kernel, as the DKMS Kbuild sees it
@dataclass(frozen=True)
class DkmsTarget:
    """What amd/dkms/Kbuild reads about the kernel it builds for (and the host's /etc/os-release)."""

    kernel_release: str | None  # include/config/kernel.release
    version: int  # Makefile VERSION / PATCHLEVEL
    patchlevel: int
    rhel_drm_version: int | None = None  # Makefile RHEL_DRM_VERSION / RHEL_DRM_PATCHLEVEL
    rhel_drm_patchlevel: int | None = None
    rhel_major: int | None = None  # include/generated/uapi/linux/version.h
    rhel_minor: int | None = None
    os_id: str | None = None  # /etc/os-release ID / VERSION_ID, quotes removed
    os_version_id: str | None = None
    config: dict = field(default_factory=dict)  # include/config/auto.conf


def _make_vars(path: Path, root, depth: int = 0) -> dict[str, str]:
    text = _read(path) or ""
    out: dict[str, str] = {}
    for m in re.finditer(r"^(VERSION|PATCHLEVEL|RHEL_DRM_VERSION|RHEL_DRM_PATCHLEVEL)\s*=\s*(\S*)", text, re.M):
        out.setdefault(m.group(1), m.group(2))
    if "VERSION" not in out and depth < 2:  # Debian's headers: "include /usr/src/linux-headers-X-common/Makefile"
        m = re.search(r"^include\s+(/\S+)", text, re.M)
        if m:
            out = {**_make_vars(_under(root, m.group(1)), root, depth + 1), **out}
    return out


def kbuild_target(kernel_build, root="/") -> DkmsTarget:
    """The DkmsTarget of a kernel build tree (root-relative paths inside it are resolved under `root`)."""
    kb = Path(kernel_build)
    mv = _make_vars(kb / "Makefile", root)
    if "VERSION" not in mv or "PATCHLEVEL" not in mv:
        raise GptError(f"{kb}/Makefile: no VERSION/PATCHLEVEL",
                       "pass the target kernel's build tree (/lib/modules/<release>/build)")
    vh = _read(kb / "include/generated/uapi/linux/version.h") or ""

    def _define(name):
        m = re.search(rf"^#define {name} (\d+)", vh, re.M)
        return int(m.group(1)) if m else None

    cfg = {}
    for line in (_read(kb / "include/config/auto.conf") or "").splitlines():
        k, sep, v = line.partition("=")
        if sep and k.startswith("CONFIG_"):
            cfg[k] = v.strip('"')
    osr = _read(_under(root, "etc/os-release")) or ""

    def _osr(key):
        m = re.search(rf"^{key}=(.*)$", osr, re.M)
        return m.group(1).strip().replace('"', "").replace("'", "") if m else None

    def _int(v):
        return int(v) if v and v.isdigit() else None

    return DkmsTarget(
        kernel_release=_read_line(kb / "include/config/kernel.release"),
        version=int(mv["VERSION"]), patchlevel=int(mv["PATCHLEVEL"]),
        rhel_drm_version=_int(mv.get("RHEL_DRM_VERSION")), rhel_drm_patchlevel=_int(mv.get("RHEL_DRM_PATCHLEVEL")),
        rhel_major=_define("RHEL_MAJOR"), rhel_minor=_define("RHEL_MINOR"),
        os_id=_osr("ID"), os_version_id=_osr("VERSION_ID"), config=cfg,
    )


def _target(target, root) -> DkmsTarget:
    if isinstance(target, DkmsTarget):
        return target
    if target is None:
        raise GptError("the DKMS compile flags depend on the target kernel", "pass its build tree (/lib/modules/<release>/build)")
    return kbuild_target(target, root)


def _dc_fp(t: DkmsTarget) -> bool:
    """Kbuild: DC_FP unless ARM64; with clang always, with gcc unless KBUILD_CFLAGS has -march=core2
    (arch/x86/Makefile adds it for CONFIG_MCORE2)."""
    if t.config.get("CONFIG_ARM64") == "y":
        return False
    return t.config.get("CONFIG_CC_IS_CLANG") == "y" or t.config.get("CONFIG_MCORE2") != "y"


def _defines_config_h(config_h: Path | None, macro: str) -> bool:
    """Kbuild's _is_kcl_macro_defined: some line of config.h names the macro and says "define"."""
    text = _read(config_h) if config_h else None
    return any(macro in line and "define" in line for line in (text or "").splitlines())


# ---------------------------------------------------------------------------------------------
# the flags
def _need_dkms(layout: SourceLayout) -> None:
    if layout.kind != "dkms":
        raise GptError(f"{layout.root}: a kernel source tree, not an amdgpu DKMS tree",
                       "kernel trees are compiled with their own Makefiles; the DKMS flags apply to /usr/src/amdgpu-<version>")


def _need_config_h(layout: SourceLayout) -> Path:
    if layout.config_h is None:
        raise GptError(f"{layout.root}: no amd/dkms/config/config.h for the target kernel",
                       layout.config_h_hint or "run the tree's amd/dkms/configure for the target kernel")
    return layout.config_h


def dkms_linuxinclude(layout: SourceLayout) -> list[str]:
    """amd/dkms/Kbuild's LINUXINCLUDE additions, in order. They must come BEFORE the kernel's own
    include dirs (the tree's include/drm/ttm, gpu_scheduler.h, include/kcl/header/... replace the
    kernel's): prepend them to LINUXINCLUDE (kbuild_wrapper does); KCFLAGS puts them after. The Kbuild
    places -I<tree>/include/uapi after the kernel's non-uapi dirs; here it comes last of the prefix,
    which resolves the same files: it holds only drm/amdgpu_drm.h and linux/kfd_ioctl.h, kfd_sysfs.h,
    which exist in no kernel include dir but include/uapi. include/rename_symbol.h is generated by
    pre-build.sh (it renames amdkcl's exported functions, no types) and is left out when absent."""
    _need_dkms(layout)
    config_h = _need_config_h(layout)
    inc = layout.include or layout.root / "include"
    out = [f"-I{inc}", f"-I{inc}/kcl/header", "-include", f"{inc}/kcl/kcl_version.h"]
    if (inc / "rename_symbol.h").is_file():
        out += ["-include", f"{inc}/rename_symbol.h"]
    out += ["-include", str(config_h), f"-I{inc}/uapi"]
    return out


def _os_defines(t: DkmsTarget) -> list[str]:
    if t.rhel_major is not None:
        name, ver = "rhel", f"{t.rhel_major}.{t.rhel_minor if t.rhel_minor is not None else ''}"
    elif t.os_id is not None:
        name = {"centos": "custom-rhel", "rhel": "custom-rhel", "linuxmint": "ubuntu"}.get(t.os_id, t.os_id)
        ver = t.os_version_id or ""
    else:
        name, ver = "unknown", "0.0"
    macro = {"ubuntu": "UBUNTU", "rhel": "RHEL", "steamos": "STEAMOS", "sled": "SLE", "sles": "SLE",
             "amzn": "AMZ", "debian": "DEBIAN"}.get(name, "UNKNOWN")
    parts = (ver + ".0").split(".")
    vstr = ver.replace(".", "_")
    out = [f"-DOS_NAME_{macro}", f"-DOS_VERSION_MAJOR={parts[0]}", f"-DOS_VERSION_MINOR={parts[1]}"]
    if name in ("opensuse-leap", "sled", "sles"):
        out.append(f"-DOS_NAME_SUSE_{vstr}")
    if name == "ubuntu":
        rel = t.kernel_release or ""
        f = rel.split("-")
        f2, f3 = (f[1], f[2] if len(f) > 2 else "") if len(f) > 1 else (rel, rel)  # cut -d- -f2 / -f3
        out.append(f"-DUBUNTU_BUILD_NUM={f2}")
        if f3 == "oem":
            out.append("-DOS_NAME_UBUNTU_OEM")
        out.append(f"-DOS_NAME_UBUNTU_{vstr}")
    if name == "rhel":
        out.append(f"-DOS_NAME_RHEL_{vstr}")
        if t.rhel_major == 7:
            out += ["-DOS_NAME_RHEL_7_X", "-include", f"/usr/src/kernels/{t.kernel_release}/include/drm/drm_backport.h"]
        elif t.rhel_major == 8:
            out.append("-DOS_NAME_RHEL_8_X")
    return out


def dkms_defines(layout: SourceLayout, target=None, root="/") -> list[str]:
    """amd/dkms/Kbuild's subdir-ccflags-y (+ Makefile.drm_ttm_helper, Makefile.drm_buddy), in order, as
    the compiler receives them (the shell drops the quotes of -DDRM_SUB="0"). `target`: a DkmsTarget or
    the target kernel's build tree. amdgpu Kconfig symbols carry _AMDKCL when the tree went through
    pre-build.sh (layout.kconfig_renamed)."""
    _need_dkms(layout)
    t = _target(target, root)
    sfx = "_AMDKCL" if layout.kconfig_renamed else ""
    drm_ver = t.rhel_drm_version if t.rhel_drm_version is not None else t.version
    drm_patch = t.rhel_drm_patchlevel if t.rhel_drm_version is not None else t.patchlevel
    out = [f"-DDRM_VER={drm_ver}", f"-DDRM_PATCH={drm_patch if drm_patch is not None else ''}", "-DDRM_SUB=0"]
    out += _os_defines(t)
    out += [f"-DCONFIG_HSA_AMD{sfx}", "-DCONFIG_DRM_TTM_DMA_PAGE_POOL", f"-DCONFIG_DRM_AMDGPU_CIK{sfx}",
            f"-DCONFIG_DRM_AMDGPU_SI{sfx}", f"-DCONFIG_DRM_AMDGPU_USERPTR{sfx}", f"-DCONFIG_DRM_AMD_DC{sfx}", "-Wno-error"]
    if _defines_config_h(layout.config_h, "HAVE_AMDKCL_HMM_MIRROR_ENABLED") and t.config.get("CONFIG_DEVICE_PRIVATE"):
        out.append(f"-DCONFIG_HSA_AMD_SVM{sfx}")
    out.append("-DCONFIG_DRM_AMD_DC_HDCP")
    if t.config.get("CONFIG_PCI_P2PDMA") == "y" and t.config.get("CONFIG_DMABUF_MOVENOTIFY") == "y":
        out.append(f"-DCONFIG_HSA_AMD_P2P{sfx}")
    if _dc_fp(t):
        out.append(f"-DCONFIG_DRM_AMD_DC_FP{sfx}")
    out += ["-DCONFIG_DRM_TTM_HELPER", "-DCONFIG_DRM_BUDDY"]
    return out


_PM_DIRS = ("include/asic_reg", "include", "pm/inc/", "pm/swsmu", "pm/swsmu/inc", "pm/swsmu/inc/pmfw_if", "pm/swsmu/smu11",
            "pm/swsmu/smu12", "pm/swsmu/smu13", "pm/swsmu/smu14", "pm/powerplay/inc", "pm/powerplay/smumgr",
            "pm/powerplay/hwmgr", "pm/legacy-dpm")
_DISPLAY_DIRS = ("dc/inc/", "dc/inc/hw", "dc/clk_mgr", "dc/hwss", "dc/resource", "dc/dsc", "dc/optc", "dc/dpp", "dc/hubbub",
                 "dc/dccg", "dc/hubp", "dc/dio", "dc/dwb", "dc/hpo", "dc/mmhubbub", "dc/mpc", "dc/opp", "dc/pg", "modules/inc",
                 "modules/freesync", "modules/color", "modules/info_packet", "modules/power", "dmub/inc", "modules/hdcp")
_DML2_DIRS = ("dc/dml2", "dc/dml2/dml21/src/dml2_core", "dc/dml2/dml21/src/dml2_mcg/", "dc/dml2/dml21/src/dml2_dpmm/",
              "dc/dml2/dml21/src/dml2_pmo/", "dc/dml2/dml21/src/dml2_standalone_libraries/", "dc/dml2/dml21/src/inc",
              "dc/dml2/dml21/inc", "dc/dml2/dml21/")
_AMDGPU_DIRS = ("include/asic_reg", "include", "amdgpu", "pm/inc", "acp/include", "@", "@/include", "@/modules/inc", "@/dc",
                "@/amdgpu_dm", "amdkfd")  # "@" = display


def amdgpu_ccflags(layout: SourceLayout, dc_fp: bool = True) -> list[str]:
    """What the tree's amd/amdgpu/Makefile gives an object of that directory (amdkfd's included), in
    kbuild's order: its subdir-ccflags-y (own, pm/, display/, display/amdgpu_dm/, display/dc/dml2/ with
    DC_FP), then its ccflags-y (own, amd/backport/). kbuild applies these by itself when the tree's
    Makefile is used (M=<tree>/amd/amdgpu); backport's `-include config/config.h` and
    `-include backport/backport.h` are written here with absolute paths."""
    _need_dkms(layout)
    config_h = _need_config_h(layout)
    amd = layout.amd
    disp = amd / "display"
    out = ["-Wno-override-init"]
    out += [f"-I{amd}/{d}" for d in _PM_DIRS]
    out += [f"-I{disp}/{d}" for d in _DISPLAY_DIRS]
    out += ["-DBUILD_FEATURE_TIMING_SYNC=0", f"-I{disp}/dc"]
    if dc_fp:
        out += [f"-I{disp}/{d}" for d in _DML2_DIRS]
    out += [f"-I{disp}{d[1:]}" if d.startswith("@") else f"-I{amd}/{d}" for d in _AMDGPU_DIRS]
    out += [f"-I{amd}", f"-I{amd}/backport/include", f"-I{amd}/dkms", "-include", str(config_h),
            "-include", f"{amd}/backport/backport.h", "-DHAVE_CONFIG_H"]
    return out


def dkms_kbuild_flags(layout: SourceLayout, target=None, root="/") -> list[str]:
    """Every flag ROCm's DKMS build adds to the kernel's own when it compiles an amdkfd/amdgpu object
    (amd/dkms/Kbuild's LINUXINCLUDE prefix, its subdir-ccflags, then amd/amdgpu/Makefile's), in the
    order the compiler sees them. `target`: DkmsTarget or the target kernel's build tree. To compile
    with kbuild, prefer kbuild_wrapper(): the first group must precede the kernel's include dirs."""
    _need_dkms(layout)
    t = _target(target, root)
    return dkms_linuxinclude(layout) + dkms_defines(layout, t) + amdgpu_ccflags(layout, _dc_fp(t))


# make variables amd/dkms/Kbuild exports (besides the conditional SVM/P2P/DC_FP ones)
_EXPORTS = {"CONFIG_HSA_AMD": "y", "CONFIG_DRM_TTM": "m", "CONFIG_DRM_TTM_DMA_PAGE_POOL": "y", "CONFIG_DRM_AMDGPU": "m",
            "CONFIG_DRM_SCHED": "m", "CONFIG_DRM_AMDGPU_CIK": "y", "CONFIG_DRM_AMDGPU_SI": "y", "CONFIG_DRM_AMDGPU_USERPTR": "y",
            "CONFIG_DRM_AMD_DC": "y", "CONFIG_DRM_AMD_DC_HDCP": "y", "CONFIG_DRM_TTM_HELPER": "m", "CONFIG_DRM_BUDDY": "m"}


def kbuild_wrapper(layout: SourceLayout, target=None, root="/") -> str:
    """Text of a `Kbuild` file for <tree>/amd/amdgpu/ (kbuild reads Kbuild before Makefile) that compiles
    that directory (amdkfd's objects included) the way the DKMS build does: the Kbuild's LINUXINCLUDE
    rewrite (its dirs first, -I<tree>/include/uapi before the kernel's uapi dirs), its make variables
    (so the tree's Makefile takes the DKMS branches: DC on, ACP/ISP/WERROR off, ...), its -D flags, then
    `include` of the tree's own amd/amdgpu/Makefile. Use with `make -C <kbuild> M=<tree>/amd/amdgpu`.
    Needs config.h at <tree>/amd/dkms/config/config.h (amd/backport/Makefile includes it by that name).
    C code of a pristine tree still sees the kernel's autoconf.h values of amdgpu's own Kconfig symbols
    (DKMS hides them by renaming); in 6.12.12 no KFD struct depends on them."""
    t = _target(target, root)
    own = layout.amd / "dkms/config/config.h"
    if _need_config_h(layout) != own:
        raise GptError(f"{own} is missing: amd/backport/Makefile includes config/config.h from the tree",
                       f"copy {layout.config_h} there (in a copy of the tree)")
    pre = dkms_linuxinclude(layout)
    uapi = pre.pop()  # -I<tree>/include/uapi goes between the kernel's non-uapi and uapi parts
    sfx = "_AMDKCL" if layout.kconfig_renamed else ""
    defines = dkms_defines(layout, t)
    values = {k + sfx if k in _kconfig_core(layout) else k: v for k, v in _EXPORTS.items()}
    for d in defines:
        m = re.fullmatch(r"-D(CONFIG_(?:HSA_AMD_SVM|HSA_AMD_P2P|DRM_AMD_DC_FP)(?:_AMDKCL)?)", d)
        if m:
            values[m.group(1)] = "y"
    lines = ["# generated by gpreempt-trace (recorder/dkms.py): the flags of ROCm's amdgpu DKMS build (amd/dkms/Kbuild)",
             "_gpt_inc := $(subst -I ,-I,$(strip $(LINUXINCLUDE)))",
             "_gpt_kinc := $(filter-out -I%/uapi,$(_gpt_inc))",
             f"LINUXINCLUDE := {' '.join(pre)} $(_gpt_kinc) {uapi} $(filter-out $(_gpt_kinc),$(_gpt_inc))"]
    for sym in kconfig_symbols(layout):
        name = sym + sfx
        if name not in values:
            lines.append(f"{name} :=")
    lines += [f"{k} := {v}" for k, v in values.items()]
    lines.append("subdir-ccflags-y += " + " ".join(defines))
    lines.append(f"include {layout.amdgpu}/Makefile")
    return "\n".join(lines) + "\n"


def _kconfig_core(layout: SourceLayout) -> set[str]:
    """Exported names that are amdgpu Kconfig symbols (renamed by pre-build.sh)."""
    syms = set(kconfig_symbols(layout)) or {"CONFIG_HSA_AMD", "CONFIG_DRM_AMDGPU", "CONFIG_DRM_AMDGPU_CIK",
                                            "CONFIG_DRM_AMDGPU_SI", "CONFIG_DRM_AMDGPU_USERPTR", "CONFIG_DRM_AMD_DC"}
    return syms | {"CONFIG_DRM_TTM", "CONFIG_DRM_SCHED"}  # from ttm/Makefile and scheduler/Makefile
