"""`gpreempt-trace btf build`: a split BTF for the amdgpu module where the module has none.

ROCm's out-of-tree amdgpu DKMS module has no BTF (kbuild skips it without a `vmlinux` in the headers)
and no DWARF (DKMS strips it). The offsets the recorder reads come back from the driver's own sources:

  1. the `.c` files that define the probed functions (recorder/plan.py PROBES) are compiled by the
     TARGET kernel's kbuild (`make -C KBUILD M=...`: its .config, generated headers and flags decide
     every layout, never the build machine's), with debug info; SRC contributes only its amd directory
     (a symlink copy in a work directory, so SRC may be read-only or partial);
  2. `ld -r` joins the objects and `pahole -J --btf_base VMLINUX_BTF` (the flags the target's kbuild
     gives pahole) encodes their DWARF as BTF split on the kernel's own BTF;
  3. the `.BTF` section is the output: readable exactly like /sys/kernel/btf/amdgpu, with a JSON
     sidecar (OUT.json) naming the kernel release and module it was built for.

`--from-dwarf MODULE.ko` skips 1: a module that still has DWARF (a -dbg package, a DKMS build with
stripping off) becomes the same BTF.

Built files live in a cache keyed by kernel release and module version (`cache_path`); plan.py looks
there when the module has no BTF of its own (`locate`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GptError
from . import dkms
from .btf_cache import CACHE_ENV, FORMAT, MODULE, SYS_VMLINUX, Located, build_command, cache_path, cache_root, read_sidecar, sidecar  # noqa: F401
from .btf import Btf, BtfError

# where each tool comes from on Debian/Ubuntu and on EL (shown by `doctor` and in errors)
TOOLS = {
    "pahole": "dwarves (Debian/Ubuntu, EL: dnf install dwarves)",
    "make": "make",
    "gcc": "gcc (the compiler the kernel was built with)",
    "ld": "binutils",
    "objcopy": "binutils",
}
PAHOLE_MIN = (1, 20)  # --btf_base (split BTF) appeared in pahole 1.20
# C files searched for the probed functions: the amdkfd sources and amdgpu's KFD glue (gfx hqd_reset)
_SEARCH_GLOBS = ("amdkfd/*.c", "amdgpu/amdgpu_amdkfd*.c")


class BtfBuildError(GptError):
    pass


@dataclass
class BuildOptions:
    """The options of `btf build` (named like its flags)."""

    source: str | None = None  # SRC: kernel tree or DKMS tree (default: the loaded module's DKMS source)
    kernel_build: str | None = None  # KBUILD (default /lib/modules/$(uname -r)/build)
    base_btf: str | None = None  # VMLINUX_BTF (default /sys/kernel/btf/vmlinux)
    output: str | None = None  # OUT file, or a directory (gets amdgpu + vmlinux); default: the cache
    from_dwarf: str | None = None  # MODULE.ko with DWARF instead of SRC
    jobs: int = 0  # 0 = os.cpu_count()
    work_dir: str | None = None  # kept when given (objects, build.log); default: a temporary directory


@dataclass
class BuildResult:
    output: Path  # the BTF file
    meta: dict  # what OUT.json holds
    seconds: float
    missing_fields: list[str] = field(default_factory=list)  # recorder fields this BTF cannot give
    missing_funcs: list[str] = field(default_factory=list)  # probed functions without a BTF FUNC

    def summary_line(self) -> str:
        from .plan import FIELDS

        n = len(FIELDS)  # the recorder's fields (meta "fields" holds every path tried, alternatives included)
        line = (f"wrote {self.output} ({self.output.stat().st_size} bytes, for {self.meta['kernel_release']}, "
                f"{n - len(self.missing_fields)} of {n} recorder fields, {len(self.meta.get('functions', {}))} probed functions) "
                f"in {self.seconds:.1f} s")
        if self.missing_fields:
            line += f"; not in this driver: {', '.join(self.missing_fields)}"
        return line


# ---------------------------------------------------------------------------------------------
# tools
def which(tool: str) -> str | None:
    return shutil.which(tool)


def pahole_version(pahole: str | None = None) -> tuple[int, int] | None:
    exe = pahole or which("pahole")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"v?(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def tool_status() -> list[tuple[str, str | None, str]]:
    """(tool, what was found or None, the package that brings it) for every tool a build uses."""
    out = []
    for tool, pkg in TOOLS.items():
        path = which(tool)
        found = path
        if tool == "pahole" and path:
            v = pahole_version(path)
            found = f"{path} v{v[0]}.{v[1]}" if v else f"{path} (version unknown)"
            if v and v < PAHOLE_MIN:
                found = None
                pkg = f"{pkg}: v{v[0]}.{v[1]} is too old, split BTF needs >= {PAHOLE_MIN[0]}.{PAHOLE_MIN[1]}"
        out.append((tool, found, pkg))
    return out


def _require_tools(tools: tuple[str, ...]) -> None:
    for tool, found, pkg in tool_status():
        if tool in tools and not found:
            raise BtfBuildError(f"btf build needs {tool}, which is not installed or unusable", f"install {pkg}")


def _run(cmd: list[str], log: Path | None, what: str, cwd: Path | None = None, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    text = f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
    if log is not None:
        with log.open("a") as f:
            f.write(text + f"[exit {proc.returncode}]\n")
    if proc.returncode != 0:
        first = next((ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln.lower()), None)
        first = first or next((ln.strip() for ln in reversed((proc.stderr + proc.stdout).splitlines()) if ln.strip()), "")
        where = f" (log: {log})" if log else ""
        raise BtfBuildError(f"btf build: {what} failed{where}: {first[:300]}",
                            "read the log; a compile error usually means SRC and KBUILD are for different kernels")
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# the target kernel
def kernel_release(kbuild: Path) -> str:
    """UTS_RELEASE of a kernel build tree (what `uname -r` prints on that kernel)."""
    uts = kbuild / "include/generated/utsrelease.h"
    try:
        m = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts.read_text())
        if m:
            return m.group(1)
    except OSError:
        pass
    rel = kbuild / "include/config/kernel.release"
    try:
        return rel.read_text().strip()
    except OSError:
        raise BtfBuildError(f"{kbuild}: not a kernel build tree (no include/generated/utsrelease.h)",
                            "pass --kernel-build with the target kernel's headers (a linux-headers / kernel-devel package, "
                            "/lib/modules/<release>/build)") from None


def _kconfig(kbuild: Path) -> dict[str, str]:
    out = {}
    try:
        for line in (kbuild / ".config").read_text().splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    except OSError:
        raise BtfBuildError(f"{kbuild}: no .config", "pass --kernel-build with a configured kernel build tree (its headers package)") from None
    return out


def pahole_flags(kbuild: Path, work: Path) -> list[str]:
    """The flags the target's kbuild passes pahole (scripts/Makefile.btf or pahole-flags.sh), less -j
    (parallel encoding makes the output differ run to run). Asked as an external-module build (M= an empty
    directory): without M=, kbuild would treat KBUILD as a kernel tree and try to regenerate its config."""
    empty = work / "pahole-flags"
    empty.mkdir(exist_ok=True)
    out = subprocess.run(
        ["make", "-s", "-C", str(kbuild), f"M={empty}",
         "--eval=gpt-pahole-flags: ; @echo GPT_PAHOLE_FLAGS=$(PAHOLE_FLAGS)", "gpt-pahole-flags"],
        capture_output=True, text=True)
    m = re.search(r"^GPT_PAHOLE_FLAGS=(.*)$", out.stdout, re.M)
    flags = m.group(1).split() if m else ["--btf_gen_floats"]
    return [f for f in flags if f != "-j"]


# ---------------------------------------------------------------------------------------------
# sources
def probed_functions() -> list[str]:
    """Every kernel function whose BTF FUNC (parameter names) the recorder reads."""
    from .plan import PROBES

    names: list[str] = []
    for p in PROBES:
        for n in (p.entry, p.ret):
            if n and n not in names:
                names.append(n)
    return names


def _defines(text: str, func: str) -> bool:
    # a definition: "<type> [*]func(" at the start of a line (kernel style), followed by a body, not ';'
    for m in re.finditer(rf"^[A-Za-z_][\w \t\*]*?\b{re.escape(func)}\s*\(", text, re.M):
        depth, i = 0, m.end() - 1
        while i < len(text):
            c = text[i]
            depth += c == "("
            depth -= c == ")"
            i += 1
            if depth == 0:
                break
        rest = text[i:i + 200].lstrip()
        if rest.startswith("{") or re.match(r"^(__\w+(\([^)]*\))?\s*)+\{", rest):
            return True
    return False


def defining_files(amd: Path, funcs: list[str]) -> dict[str, Path]:
    """function -> the .c file under AMD that defines it (functions not found are absent)."""
    texts = {}
    for g in _SEARCH_GLOBS:
        for p in sorted(amd.glob(g)):
            try:
                texts[p] = p.read_text(errors="replace")
            except OSError:
                continue
    found: dict[str, Path] = {}
    for f in funcs:
        for p, t in texts.items():
            if f in t and _defines(t, f):
                found[f] = p
                break
    return found


def default_source() -> Path:
    """The loaded module's DKMS source, else the running kernel's source tree."""
    info = dkms.module_info(MODULE)
    src = dkms.source_for(info) if info.loaded else None
    if src is not None:
        return Path(src)
    for cand in (Path(f"/lib/modules/{os.uname().release}/source"), Path(f"/lib/modules/{os.uname().release}/build")):
        if (cand / "drivers/gpu/drm/amd/amdkfd").is_dir():
            return cand
    raise BtfBuildError("no amdgpu source found: the loaded module has no DKMS source under /usr/src and "
                        f"/lib/modules/{os.uname().release}/source has no drivers/gpu/drm/amd/amdkfd",
                        "pass --source with the kernel source tree or the amdgpu DKMS tree the module was built from")


# ---------------------------------------------------------------------------------------------
def build(opts: BuildOptions) -> BuildResult:
    t0 = time.monotonic()
    kbuild = Path(opts.kernel_build or f"/lib/modules/{os.uname().release}/build")
    base = Path(opts.base_btf) if opts.base_btf else SYS_VMLINUX
    work_ctx = tempfile.TemporaryDirectory(prefix="gpt-btf-") if not opts.work_dir else None
    work = Path(opts.work_dir or work_ctx.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    log.write_text("")
    try:
        base_given = base
        base_btf, base = _base_btf(base, work)
        if opts.from_dwarf:
            _require_tools(("pahole", "objcopy"))
            obj, inputs = _dwarf_object(Path(opts.from_dwarf), work), {}
            release = kernel_release(kbuild) if opts.kernel_build else _module_release(Path(opts.from_dwarf))
            source_meta = {"from_dwarf": str(Path(opts.from_dwarf).resolve())}
            flags = pahole_flags(kbuild, work) if opts.kernel_build and kbuild.is_dir() else ["--btf_gen_floats"]
        else:
            _require_tools(tuple(TOOLS))
            if not kbuild.is_dir():
                raise BtfBuildError(f"--kernel-build {kbuild} does not exist",
                                    "install the target kernel's headers (linux-headers-<release> / kernel-devel-<release>) or pass its build tree")
            release = kernel_release(kbuild)
            src = Path(opts.source) if opts.source else default_source()
            layout = dkms.classify_source(src)
            obj, inputs = _compile(layout, kbuild, work, log, opts.jobs or os.cpu_count() or 1)
            source_meta = {"source": str(src.resolve()), "source_kind": layout.kind,
                           "files": sorted({str(p.relative_to(layout.amd)) for p in inputs.values()})}
            if layout.kind == "dkms":
                source_meta["dkms_config_h"] = str(layout.config_h) if layout.config_h else None
            flags = pahole_flags(kbuild, work)
        _run(["pahole", "-J", *flags, "--btf_base", str(base), str(obj)], log, "pahole -J")
        blob = work / "amdgpu.btf"
        _run(["objcopy", f"--dump-section=.BTF={blob}", str(obj)], log, "objcopy --dump-section .BTF")
        data = blob.read_bytes()
        try:
            mod = Btf(data, name="built amdgpu BTF", base=base_btf)
            mod.check_split()
        except BtfError as e:
            raise BtfBuildError(f"btf build: pahole wrote an unusable BTF ({e.what})", f"see {log}") from None
        missing_fields, fields, missing_funcs = coverage(mod, base_btf)
        meta = {
            "format": FORMAT,
            "kernel_release": release,
            "module": _module_key_for(release),
            "kernel_build": str(kbuild.resolve()) if kbuild.exists() else str(kbuild),
            "base_btf": str(base_given),
            "base_btf_sha256": hashlib.sha256(base.read_bytes()).hexdigest(),
            "pahole": ".".join(map(str, pahole_version() or ())) or None,
            "pahole_flags": flags,
            **source_meta,
            "functions": {f: str(p.name) for f, p in inputs.items()},
            "fields": fields,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        out = _write_output(opts.output, data, meta, base)
        return BuildResult(out, meta, time.monotonic() - t0, missing_fields, missing_funcs)
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()


def _base_btf(base: Path, work: Path) -> tuple[Btf, Path]:
    """The vmlinux BTF: a raw file (/sys/kernel/btf/vmlinux), or a vmlinux ELF (a headers tree's own
    vmlinux carries the same BTF in its .BTF section)."""
    try:
        with base.open("rb") as f:
            elf = f.read(4) == b"\x7fELF"
    except OSError:
        elf = False
    if elf:
        raw = work / "vmlinux.btf"
        r = subprocess.run(["objcopy", f"--dump-section=.BTF={raw}", str(base), str(work / "vmlinux.discard")], capture_output=True, text=True)
        if r.returncode != 0 or not raw.is_file():
            raise BtfBuildError(f"--base-btf {base}: an ELF file without a .BTF section", "pass /sys/kernel/btf/vmlinux of the target kernel")
        base = raw
    try:
        base_btf = Btf.load(base)
    except BtfError as e:
        raise BtfBuildError(f"--base-btf: {e.what}", "pass the target kernel's vmlinux BTF (/sys/kernel/btf/vmlinux on that kernel)") from None
    if base_btf.base is not None or base_btf.find("task_struct") is None:
        raise BtfBuildError(f"--base-btf {base}: not a vmlinux BTF (no struct task_struct)", "pass /sys/kernel/btf/vmlinux of the target kernel")
    return base_btf, base


def coverage(mod: Btf, vmlinux: Btf) -> tuple[list[str], dict[str, int | None], list[str]]:
    """(recorder fields missing, path -> offset of every field tried, probed functions without BTF FUNC)."""
    from .plan import FIELDS, resolve_fields

    chosen, offsets, _ = resolve_fields(mod, vmlinux)
    missing = [s.macro for s in FIELDS if chosen[s.macro] is None]
    funcs = [f for f in probed_functions() if not mod.has_func(f)]
    return missing, offsets, funcs


def _compile(layout, kbuild: Path, work: Path, log: Path, jobs: int) -> tuple[Path, dict[str, Path]]:
    """Compile the files defining the probed functions with the target's kbuild; -> (joined object, func -> file)."""
    funcs = probed_functions()
    found = defining_files(layout.amd, funcs)
    if not found:
        raise BtfBuildError(f"{layout.amd}: none of the probed KFD functions is defined under amdkfd/ or amdgpu/amdgpu_amdkfd*.c",
                            "pass the amdgpu source the module was built from (--source)")
    # a symlink copy: kbuild writes objects next to the sources, and SRC may be read-only or shared
    tree = work / "src"
    if tree.exists():
        shutil.rmtree(tree)
    top = layout.root if layout.kind == "dkms" else layout.amd
    _run(["cp", "-rs", str(top.resolve()), str(tree)], log, "copying the source tree (symlinks)")
    amd = tree / layout.amd.relative_to(top) if layout.kind == "dkms" else tree
    files = sorted(set(found.values()))
    targets = []
    for p in files:
        rel = p.relative_to(layout.amd)
        targets.append(("../" + str(rel) if rel.parts[0] != "amdgpu" else str(Path(*rel.parts[1:]))).replace(".c", ".o"))
    cfg = _kconfig(kbuild)
    kcflags = ["-g"]  # debug info even where the config has none
    if cfg.get("CONFIG_DEBUG_INFO_REDUCED") == "y":
        kcflags.append("-femit-struct-debug-detailed=any")  # REDUCED drops structs defined in headers
    if cfg.get("CONFIG_DEBUG_INFO_SPLIT") == "y":
        kcflags.append("-gno-split-dwarf")  # pahole reads DWARF from the object itself
    env = dict(os.environ)
    env["KCFLAGS"] = " ".join(filter(None, [env.get("KCFLAGS", ""), *kcflags]))
    cmd = ["make", f"-j{jobs}", "-C", str(kbuild), f"M={amd / 'amdgpu'}"]
    if layout.kind == "dkms":
        # the DKMS build's own flags, in its order (its include dirs BEFORE the kernel's): a Kbuild file in
        # the copy's amd/amdgpu (kbuild reads it before the tree's Makefile, which it includes); the tree's
        # backport Makefile wants config.h at amd/dkms/config/config.h
        copy = layout_in(layout, tree)
        own = copy.amd / "dkms/config/config.h"
        if layout.config_h is None:  # DKMS removes its build directory (and config.h) after a build
            _configure(copy, kbuild, log)
        elif own.is_symlink() or not own.exists():
            own.unlink(missing_ok=True)
            own.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(layout.config_h, own)
        copy = dataclasses.replace(copy, config_h=own)
        kb = copy.amdgpu / "Kbuild"
        kb.unlink(missing_ok=True)
        kb.write_text(dkms.kbuild_wrapper(copy, kbuild))
    else:
        cmd.append(f"FULL_AMD_PATH={amd}")  # 6.1's amdgpu Makefile builds it from $(srctree), wrong outside the tree
    _run([*cmd, *targets], log, f"compiling {', '.join(p.name for p in files)} with {kbuild}", env=env)
    objs = [amd / "amdgpu" / t for t in targets]
    joined = work / "amdgpu-btf.o"
    _run(["ld", "-r", "-o", str(joined), *map(str, objs)], log, "ld -r")
    return joined, found


def _configure(copy, kbuild: Path, log: Path) -> None:
    """config.h for the target kernel, as DKMS's pre-build.sh makes it: the tree's amd/dkms/configure run
    against KBUILD (KERNELVER=<release>; --with-linux/--with-linux-obj), in a real (not symlinked) copy of
    amd/dkms so that nothing is written into SRC."""
    dk = copy.amd / "dkms"
    real = dk.with_name("dkms.real")
    shutil.copytree(dk, real, symlinks=False)
    shutil.rmtree(dk)
    real.rename(dk)
    if not (dk / "configure").is_file():
        raise BtfBuildError(f"{copy.root}: no amd/dkms/config/config.h and no amd/dkms/configure to make it",
                            "pass the DKMS tree as installed (/usr/src/amdgpu-<version>) or one with its config.h")
    env = dict(os.environ, KERNELVER=kernel_release(kbuild))
    _run(["sh", "./configure", f"--with-linux={kbuild}", f"--with-linux-obj={kbuild}"], log,
         "the DKMS tree's configure (amd/dkms/configure, for config.h)", cwd=dk, env=env)
    if not (dk / "config/config.h").is_file():
        raise BtfBuildError(f"the DKMS tree's configure ran but wrote no amd/dkms/config/config.h (log: {log})",
                            "run it by hand in a copy of the tree (cd amd/dkms && KERNELVER=<release> ./configure) and pass that copy")


def layout_in(layout, tree: Path):
    """The same layout, rooted at the symlink copy (paths outside the tree, e.g. a config.h from the DKMS
    build directory, stay as they are)."""
    top = layout.root
    repl = {}
    for f in dataclasses.fields(layout):
        v = getattr(layout, f.name)
        if isinstance(v, Path):
            try:
                repl[f.name] = tree / v.relative_to(top)
            except ValueError:
                pass
    return dataclasses.replace(layout, **repl)


def _dwarf_object(ko: Path, work: Path) -> Path:
    """A copy of MODULE.ko (decompressed) with DWARF and without an old .BTF section."""
    if not ko.is_file():
        raise BtfBuildError(f"--from-dwarf {ko} does not exist", "pass a module file (.ko, .ko.xz, .ko.zst) that has debug info")
    dst = work / "module.ko"
    raw = ko.read_bytes()
    if ko.suffix == ".xz":
        import lzma

        raw = lzma.decompress(raw)
    elif ko.suffix in (".zst", ".gz"):
        tool = ["zstd", "-dc"] if ko.suffix == ".zst" else ["gzip", "-dc"]
        raw = subprocess.run([*tool, str(ko)], capture_output=True, check=False).stdout
    if raw[:4] != b"\x7fELF":
        raise BtfBuildError(f"--from-dwarf {ko}: not an ELF module", "pass a .ko (or .ko.xz/.ko.zst) file")
    dst.write_bytes(raw)
    out = subprocess.run(["objcopy", "--remove-section=.BTF", "--remove-section=.BTF.base", str(dst)], capture_output=True, text=True)
    if out.returncode != 0:
        raise BtfBuildError(f"--from-dwarf {ko}: objcopy cannot rewrite it ({out.stderr.strip()[:200]})", "pass an x86-64 kernel module")
    sections = subprocess.run(["objdump", "-h", str(dst)], capture_output=True, text=True).stdout
    if ".debug_info" not in sections:
        raise BtfBuildError(f"--from-dwarf {ko}: the module has no DWARF (.debug_info)",
                            "use the debug package's module (e.g. linux-image-<release>-dbg, kernel-debuginfo) or a DKMS build with stripping off, "
                            "or build from sources: btf build --source SRC")
    return dst


def _module_release(ko: Path) -> str:
    """vermagic's release of a module file."""
    try:
        out = subprocess.run(["modinfo", "-F", "vermagic", str(ko)], capture_output=True, text=True).stdout.split()
    except OSError:
        out = []
    if out:
        return out[0]
    raise BtfBuildError(f"--from-dwarf {ko}: cannot read its vermagic", "also pass --kernel-build of the kernel it was built for")


def _module_key_for(release: str) -> dict:
    """The loaded module's identity when it runs on `release` (else what is known: nothing)."""
    info = dkms.module_info(MODULE)
    if not info.loaded or info.kernel_release != release:
        return {"name": MODULE, "version": None, "srcversion": None, "build_id": None}
    return {"name": MODULE, "version": info.version, "srcversion": info.srcversion, "build_id": info.build_id}


# ---------------------------------------------------------------------------------------------
# output
def _write_output(output: str | None, data: bytes, meta: dict, base: Path) -> Path:
    if output is None:
        out = cache_path(meta["kernel_release"], meta["module"]["version"])
    else:
        out = Path(output)
        if out.is_dir() or output.endswith("/"):
            # a directory laid out like /sys/kernel/btf, for --btf DIR
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base, out / "vmlinux")
            out = out / MODULE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    sidecar(out).write_text(json.dumps(meta, indent=1) + "\n")
    return out
