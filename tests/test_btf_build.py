"""`btf build` against real Debian kernels: the amdgpu BTF rebuilt from Debian's linux-source + linux-headers
packages (exact versions, tests/fixtures/kernels/<abi>/packages.sha256) gives, for every field and
function the recorder reads, exactly what the real module's BTF gives (the fixture, taken from a guest
running that kernel). Plus the cache lookup order, the refusals and the one-line errors."""
from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpreempt_trace.cli.main import main
from gpreempt_trace.doctor.report import render_text, run_doctor
from gpreempt_trace.errors import GptError
from gpreempt_trace.doctor.checks import module_checks
from gpreempt_trace.recorder import btf_build, dkms, plan
from gpreempt_trace.recorder.btf import Btf
from gpreempt_trace.recorder.btf_build import BuildOptions

ABIS = ("6.1.0-56-amd64", "6.12.117+deb12-amd64")
HOSTS = Path(__file__).parent / "fixtures" / "hosts"


@pytest.fixture(scope="module")
def built(kernel_fixture, tmp_path_factory):
    """abi -> (fixture dir, built dir, work dir): each fixture kernel's amdgpu BTF built from its packages."""
    from gpreempt_trace.lab import kernel_sources

    out = {}

    def get(abi):
        if abi not in out:
            fx = kernel_fixture(abi)
            ks = kernel_sources.fetch(abi, log=lambda *_: None)
            root = tmp_path_factory.mktemp(f"btf-{abi}")
            kept = {f: (ks.kbuild / f).read_bytes() for f in ("include/config/auto.conf", "include/generated/autoconf.h", ".config")}
            res = btf_build.build(BuildOptions(source=str(ks.source), kernel_build=str(ks.kbuild), base_btf=str(fx / "btf" / "vmlinux"),
                                               output=str(root / "built") + "/", work_dir=str(root / "work")))
            # KBUILD is the user's /lib/modules/<release>/build: read, never written (kbuild run without M=
            # regenerates a headers tree's config and deletes it)
            assert {f: (ks.kbuild / f).read_bytes() for f in kept} == kept
            out[abi] = (fx, root / "built", root / "work", res)
        return out[abi]

    return get


def _doctor_lines(btf_dir: Path, kallsyms: Path) -> list[str]:
    text = render_text(run_doctor(kallsyms=kallsyms, btf_dir=btf_dir))
    return [ln.replace(str(btf_dir), "BTF") for ln in text.splitlines() if not ln.startswith("offsets from: ")]


@pytest.mark.kernel
@pytest.mark.parametrize("abi", ABIS)
def test_built_btf_gives_the_real_modules_layout(built, abi):
    fx, out, _work, res = built(abi)
    real = _doctor_lines(fx / "btf", fx / "kallsyms")
    mine = _doctor_lines(out, fx / "kallsyms")
    # doctor's attach plan and struct-field table, line for line (missing ones included)
    assert mine == real, "\n".join(difflib.unified_diff(real, mine, lineterm=""))
    vm = Btf.load(fx / "btf" / "vmlinux")
    rmod, bmod = Btf.load(fx / "btf" / "amdgpu", base=vm), Btf.load(out / "amdgpu", base=vm)
    bmod.check_split()
    # every offset tried (also the alternatives that are missing), every parameter list, every enum
    assert plan.resolve_fields(bmod, vm) == plan.resolve_fields(rmod, vm)
    for f in btf_build.probed_functions():
        assert bmod.func_params(f) == rmod.func_params(f), f
    for e in plan.ENUM_MACROS:
        assert bmod.enum_values(e) == rmod.enum_values(e), e
    meta = json.loads((out / "amdgpu.json").read_text())
    assert meta["kernel_release"] == abi and meta["format"] == btf_build.FORMAT
    assert meta["source_kind"] == "kernel"
    assert res.missing_fields == [s.macro for s in plan.FIELDS if plan.resolve_fields(rmod, vm)[0][s.macro] is None]


@pytest.mark.kernel
def test_exact_offsets_612(built):
    """The values themselves (from the real 6.12.117 module BTF), so a change in both would still show."""
    fx, out, _work, _res = built("6.12.117+deb12-amd64")
    vm = Btf.load(fx / "btf" / "vmlinux")
    chosen, offsets, _ = plan.resolve_fields(Btf.load(out / "amdgpu", base=vm), vm)
    assert {k: offsets[v] for k, v in chosen.items() if v} == {
        "Q_TYPE": 40, "Q_FORMAT": 44, "Q_QUEUE_ID": 48, "Q_QUEUE_ADDRESS": 56, "Q_QUEUE_SIZE": 64, "Q_PRIORITY": 72,
        "Q_QUEUE_PERCENT": 76, "Q_DOORBELL_OFF": 104, "Q_IS_ACTIVE": 112, "Q_IS_EVICTED": 109, "Q_IS_SUSPENDED": 110,
        "Q_PROCESS": 264, "Q_DEVICE": 272, "DEV_ID": 36, "PROC_PASID": 160, "PROC_LEAD_THREAD": 96, "TASK_TGID": 2436,
        "QPD_DQM": 0, "QPD_PQM": 8, "PQM_PROCESS": 0, "PDD_QPD": 16, "DQM_DEV": 312, "PM_DQM": 0}
    assert chosen["PDD_PASID"] is None
    line = _res.summary_line()
    assert f"for 6.12.117+deb12-amd64, 23 of {len(plan.FIELDS)} recorder fields, 32 probed functions) in " in line, line
    assert line.endswith("; not in this driver: PDD_PASID")


@pytest.mark.kernel
def test_from_dwarf_gives_the_same_btf(built, tmp_path):
    abi = "6.12.117+deb12-amd64"
    fx, out, work, _res = built(abi)
    from gpreempt_trace.lab import kernel_sources

    ks = kernel_sources.fetch(abi, log=lambda *_: None)
    obj = tmp_path / "amdgpu-debug.ko"
    shutil.copyfile(work / "amdgpu-btf.o", obj)  # the joined objects with DWARF (and the .BTF pahole added)
    res = btf_build.build(BuildOptions(from_dwarf=str(obj), kernel_build=str(ks.kbuild), base_btf=str(fx / "btf" / "vmlinux"),
                                       output=str(tmp_path / "from-dwarf.btf")))
    assert res.output.read_bytes() == (out / "amdgpu").read_bytes()
    assert res.meta["from_dwarf"] == str(obj.resolve())
    # the headers package's own vmlinux (ELF) as the base: its .BTF is the kernel's BTF, same result
    res = btf_build.build(BuildOptions(from_dwarf=str(obj), kernel_build=str(ks.kbuild), base_btf=str(ks.kbuild / "vmlinux"),
                                       output=str(tmp_path / "from-elf-base.btf")))
    assert res.output.read_bytes() == (out / "amdgpu").read_bytes()
    assert res.meta["base_btf"] == str(ks.kbuild / "vmlinux")


@pytest.mark.kernel
def test_no_dwarf_is_one_line(kernel_fixture, tmp_path):
    fx = kernel_fixture("6.12.117+deb12-amd64")
    c = tmp_path / "x.c"
    c.write_text("int f(int a) { return a + 1; }\n")
    subprocess.run(["gcc", "-c", "-O2", "-o", str(tmp_path / "x.ko"), str(c)], check=True)
    with pytest.raises(GptError, match=r"has no DWARF \(\.debug_info\): use the debug package"):
        btf_build.build(BuildOptions(from_dwarf=str(tmp_path / "x.ko"), kernel_build=str(tmp_path), base_btf=str(fx / "btf" / "vmlinux"),
                                     output=str(tmp_path / "o.btf")))


# ---- sources: which files define the probed functions --------------------------------------------------
def test_defines_tells_definitions_from_prototypes_and_calls():
    text = """static int create_queue_cpsch(struct device_queue_manager *dqm, struct queue *q,
			struct qcm_process_device *qpd,
			const struct kfd_criu_queue_priv_data *qd)
{
	return 0;
}
int suspend_queues(struct kfd_process *p, uint32_t num_queues);
static void x(void) { suspend_queues(p, 1); }
"""
    assert btf_build._defines(text, "create_queue_cpsch")
    assert not btf_build._defines(text, "suspend_queues")  # a prototype and a call
    assert not btf_build._defines(text, "resume_queues")


def test_defining_files(tmp_path):
    (tmp_path / "amdkfd").mkdir()
    (tmp_path / "amdgpu").mkdir()
    (tmp_path / "amdkfd" / "kfd_a.c").write_text("int kfd_ioctl_x(void);\nstatic long kfd_ioctl(struct file *f, unsigned int cmd, unsigned long arg)\n{\n}\n")
    (tmp_path / "amdgpu" / "amdgpu_amdkfd_gfx_v9.c").write_text("uint64_t kgd_gfx_v9_hqd_reset(struct amdgpu_device *adev)\n{\n}\n")
    (tmp_path / "amdgpu" / "amdgpu_other.c").write_text("int kfd_hws_hang(void *d)\n{\n}\n")  # not searched
    got = btf_build.defining_files(tmp_path, ["kfd_ioctl", "kgd_gfx_v9_hqd_reset", "kfd_hws_hang"])
    assert {k: v.relative_to(tmp_path).as_posix() for k, v in got.items()} == {
        "kfd_ioctl": "amdkfd/kfd_a.c", "kgd_gfx_v9_hqd_reset": "amdgpu/amdgpu_amdkfd_gfx_v9.c"}


def test_kernel_release_of_a_build_tree(tmp_path):
    (tmp_path / "include" / "generated").mkdir(parents=True)
    (tmp_path / "include" / "generated" / "utsrelease.h").write_text('#define UTS_RELEASE "6.12.117+deb12-amd64"\n')
    assert btf_build.kernel_release(tmp_path) == "6.12.117+deb12-amd64"
    with pytest.raises(GptError, match=r"not a kernel build tree .*pass --kernel-build"):
        btf_build.kernel_release(tmp_path / "nope")


# ---- where the offsets come from -------------------------------------------------------------------------
@pytest.fixture
def live_host(kernel_fixture, tmp_path, monkeypatch):
    """A 'running' 6.12 kernel whose amdgpu has no BTF: /sys/kernel/btf with vmlinux only, a cache dir."""
    fx = kernel_fixture("6.12.117+deb12-amd64")
    sysbtf = tmp_path / "sys-btf"
    sysbtf.mkdir()
    shutil.copyfile(fx / "btf" / "vmlinux", sysbtf / "vmlinux")
    monkeypatch.setattr(plan, "SYS_BTF", sysbtf)
    release = "6.12.117+deb12-amd64"
    real_uname = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result((real_uname.sysname, real_uname.nodename, release, real_uname.version, real_uname.machine)))
    cache = tmp_path / "cache"
    monkeypatch.setenv(btf_build.CACHE_ENV, str(cache))
    # amdgpu loaded, in-tree (Debian 6.12.117's: no version, no srcversion)
    info = dkms.module_info("amdgpu", root=HOSTS / "intree-6.12.117-deb12")
    assert info.loaded and info.kernel_release == release and info.version is None
    monkeypatch.setattr(dkms, "module_info", lambda name="amdgpu", root="/", **kw: info)
    return fx, sysbtf, cache, release


def _put_in_cache(fx: Path, cache: Path, release: str, name: str = "amdgpu-in-tree", meta: dict | None = None) -> Path:
    d = cache / release
    d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fx / "btf" / "amdgpu", d / f"{name}.btf")
    m = {"format": btf_build.FORMAT, "kernel_release": release, "module": {"name": "amdgpu", "version": None, "srcversion": None, "build_id": None}}
    m.update(meta or {})
    (d / f"{name}.btf.json").write_text(json.dumps(m))
    return d / f"{name}.btf"


def test_no_module_btf_and_nothing_built_names_the_command(live_host):
    _fx, _sysbtf, _cache, _release = live_host
    vm, mod, loc = plan.locate_btf()
    assert mod is None and loc.kind == "none"
    assert loc.detail == ("amdgpu has no BTF (in-tree module without BTF: CONFIG_DEBUG_INFO_BTF_MODULES off, or stripped) "
                          "and none was built for 6.12.117+deb12-amd64")
    assert loc.fix == ("run `gpreempt-trace btf build --source <the amdgpu source: kernel tree or /usr/src/amdgpu-<version>> "
                       "--kernel-build /lib/modules/6.12.117+deb12-amd64/build --base-btf /sys/kernel/btf/vmlinux`")
    checks = {c.name: c for c in module_checks(_plan_live())}
    assert (checks["btf amdgpu"].ok, checks["btf amdgpu"].hint) == (False, loc.fix + " once (needs the amdgpu source, this kernel's "
                                                                     "headers and pahole; docs/recorder.md 'DKMS hosts')")
    assert checks["amdgpu module"].detail == "loaded, in-tree"


def _plan_live():
    """plan_kfd as on a live host, against the 6.12 fixture's kallsyms (the offsets part is what is tested)."""
    class P:  # the only thing module_checks reads of a plan
        pass

    p = P()
    p.btf_source = plan.locate_btf()[2].as_dict()
    return p


def test_cached_btf_is_used_when_the_module_has_none(live_host):
    fx, _sysbtf, cache, release = live_host
    p = _put_in_cache(fx, cache, release)
    _vm, mod, loc = plan.locate_btf()
    assert (loc.kind, loc.path) == ("cache", str(p))
    assert mod is not None and mod.field("queue.properties.doorbell_off").offset == 104
    assert loc.as_dict()["built_for"]["kernel_release"] == release


def test_module_btf_wins_over_the_cache(live_host):
    fx, sysbtf, cache, release = live_host
    _put_in_cache(fx, cache, release)
    shutil.copyfile(fx / "btf" / "amdgpu", sysbtf / "amdgpu")
    _vm, _mod, loc = plan.locate_btf()
    assert (loc.kind, loc.path) == ("module", str(sysbtf / "amdgpu"))


def test_cache_for_another_module_version_is_refused(live_host):
    fx, _sysbtf, cache, release = live_host
    _put_in_cache(fx, cache, release, name="amdgpu-6.12.12-2147987.el8")
    _vm, mod, loc = plan.locate_btf()
    assert mod is None and loc.kind == "none"
    assert loc.detail.startswith(f"the cache has amdgpu-6.12.12-2147987.el8.btf for {release}, not amdgpu-in-tree.btf")


def test_btf_dir_built_for_another_kernel_is_refused(live_host, tmp_path):
    fx, _sysbtf, cache, _release = live_host
    p = _put_in_cache(fx, cache, "6.12.99-other")
    d = tmp_path / "dir"
    d.mkdir()
    shutil.copyfile(fx / "btf" / "vmlinux", d / "vmlinux")
    shutil.copyfile(p, d / "amdgpu")
    shutil.copyfile(btf_build.sidecar(p), d / "amdgpu.json")
    with pytest.raises(GptError, match=r"^.*amdgpu was built for kernel 6.12.99-other, this one is 6.12.117\+deb12-amd64: build one"):
        plan.locate_btf(d, live=True)
    # offline (doctor --btf DIR for another machine) it is just read
    _vm, mod, loc = plan.locate_btf(d)
    assert loc.kind == "dir" and mod is not None and "built by btf build for 6.12.99-other" in loc.detail


def test_cache_on_another_base_is_one_line(live_host, kernel_fixture):
    fx, _sysbtf, cache, release = live_host
    other = kernel_fixture("6.1.0-56-amd64")
    _put_in_cache(other, cache, release)  # 6.1's module BTF filed under 6.12: its base does not match
    with pytest.raises(GptError, match=r"does not match this kernel's vmlinux BTF .*rebuild it: gpreempt-trace btf build"):
        plan.locate_btf()


# ---- CLI -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, line", [
    (["btf", "build", "--from-dwarf", "/nonexistent.ko", "--base-btf", "/nonexistent"],
     "Error: --base-btf: /nonexistent does not exist: pass the target kernel's vmlinux BTF (/sys/kernel/btf/vmlinux on that kernel)"),
    (["btf", "build", "--source", ".", "--from-dwarf", "x.ko"],
     "Error: --from-dwarf and --source are exclusive: build from the module's DWARF or from sources: see 'gpreempt-trace btf build --help'"),
])
def test_cli_errors_are_one_line(args, line):
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0
    assert r.output.strip().splitlines() == [line]


def test_cli_bad_kernel_build_is_one_line(kernel_fixture, tmp_path):
    fx = kernel_fixture("6.12.117+deb12-amd64")
    src = tmp_path / "src" / "drivers" / "gpu" / "drm" / "amd" / "amdkfd"
    src.mkdir(parents=True)
    r = CliRunner().invoke(main, ["btf", "build", "--source", str(tmp_path / "src"), "--kernel-build", str(tmp_path / "nokbuild"),
                                  "--base-btf", str(fx / "btf" / "vmlinux"), "-o", str(tmp_path / "o.btf")])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        f"Error: --kernel-build {tmp_path / 'nokbuild'} does not exist: install the target kernel's headers "
        "(linux-headers-<release> / kernel-devel-<release>) or pass its build tree"]
    assert not (tmp_path / "o.btf").exists()


# ---- a DKMS-layout tree --------------------------------------------------------------------------------
def _dkms_shaped(root: Path, source: Path, config_h: str | None, configure: str | None) -> Path:
    """Debian's 6.12 amd directory in ROCm's DKMS layout (amd/, include/kcl, amd/dkms): not ROCm's code,
    but the same layout, so the DKMS path of btf build (its Kbuild wrapper, flags, config.h) runs for real."""
    t = root / "amdgpu-6.12.117-deb"
    t.mkdir(parents=True)
    subprocess.run(["cp", "-rs", str(source / "drivers/gpu/drm/amd"), str(t / "amd")], check=True)
    for d in ("include/kcl/header", "include/uapi", "amd/dkms/config", "amd/backport"):
        (t / d).mkdir(parents=True, exist_ok=True)
    (t / "include/kcl/kcl_version.h").write_text("/* empty */\n")
    (t / "amd/backport/backport.h").write_text("\n")
    (t / "amd/dkms/dkms.conf").write_text('PACKAGE_NAME="amdgpu"\nPACKAGE_VERSION="6.12.117-deb"\n')
    if config_h is not None:
        (t / "amd/dkms/config/config.h").write_text(config_h)
    if configure is not None:
        (t / "amd/dkms/configure").write_text(configure)
    return t


@pytest.mark.kernel
def test_dkms_layout_builds_the_same_layout(built, tmp_path):
    """The DKMS path: the tree's own flags (include/kcl first, config.h, -D) through the generated Kbuild."""
    abi = "6.12.117+deb12-amd64"
    fx, out, _work, _res = built(abi)
    from gpreempt_trace.lab import kernel_sources

    ks = kernel_sources.fetch(abi, log=lambda *_: None)
    tree = _dkms_shaped(tmp_path, ks.source, "/* no HAVE_* needed by the Debian tree */\n", None)
    res = btf_build.build(BuildOptions(source=str(tree), kernel_build=str(ks.kbuild), base_btf=str(fx / "btf" / "vmlinux"),
                                       output=str(tmp_path / "dkms.btf"), work_dir=str(tmp_path / "work")))
    assert res.meta["source_kind"] == "dkms"
    vm = Btf.load(fx / "btf" / "vmlinux")
    assert plan.resolve_fields(Btf.load(res.output, base=vm), vm) == plan.resolve_fields(Btf.load(fx / "btf" / "amdgpu", base=vm), vm)
    wrapper = (tmp_path / "work/src/amd/amdgpu/Kbuild").read_text()
    assert f"-include {tmp_path}/work/src/amd/dkms/config/config.h" in wrapper


@pytest.mark.kernel
def test_dkms_tree_without_config_h_runs_its_configure_in_a_copy(built, tmp_path):
    abi = "6.12.117+deb12-amd64"
    fx, _out, _work, _res = built(abi)
    from gpreempt_trace.lab import kernel_sources

    ks = kernel_sources.fetch(abi, log=lambda *_: None)
    # a stand-in for the tree's autoconf configure: records how it was called, writes config/config.h
    configure = '#!/bin/sh\nmkdir -p config\necho "/* KERNELVER=$KERNELVER $* */" > config/config.h\n'
    tree = _dkms_shaped(tmp_path, ks.source, None, configure)
    res = btf_build.build(BuildOptions(source=str(tree), kernel_build=str(ks.kbuild), base_btf=str(fx / "btf" / "vmlinux"),
                                       output=str(tmp_path / "dkms.btf"), work_dir=str(tmp_path / "work")))
    assert (tmp_path / "work/src/amd/dkms/config/config.h").read_text() == \
        f"/* KERNELVER={abi} --with-linux={ks.kbuild} --with-linux-obj={ks.kbuild} */\n"
    assert not (tree / "amd/dkms/config/config.h").exists()  # nothing written into SRC
    assert res.missing_fields == ["PDD_PASID"]
    # a configure that writes nothing: one line
    tree2 = _dkms_shaped(tmp_path / "b", ks.source, None, "#!/bin/sh\nexit 0\n")
    with pytest.raises(GptError, match=r"^the DKMS tree's configure ran but wrote no amd/dkms/config/config.h \(log: "):
        btf_build.build(BuildOptions(source=str(tree2), kernel_build=str(ks.kbuild), base_btf=str(fx / "btf" / "vmlinux"),
                                     output=str(tmp_path / "x.btf")))


def test_doctor_on_a_dkms_host_names_the_module_and_the_command():
    """ROCm's amdgpu-dkms 6.12.12 on EL8 (fixture host: module version and taint, /usr/src layout): no module
    BTF, nothing built: doctor says which module this is and prints the command with the host's paths."""
    root = HOSTS / "dkms-6.12.12-el8"

    class P:
        btf_source = {"kind": "none", "path": None, "detail": "amdgpu has no BTF", "fix": None}

    checks = {c.name: c for c in module_checks(P(), root=str(root))}
    m = checks["amdgpu module"]
    assert (m.ok, m.detail) == (True, "loaded, out-of-tree (DKMS) 6.12.12; taint OE; DKMS source "
                                      f"{root}/usr/src/amdgpu-6.12.12-2147987.el8")
    b = checks["btf amdgpu"]
    assert b.ok is False
    assert b.hint == ("run `gpreempt-trace btf build --source /usr/src/amdgpu-6.12.12-2147987.el8 "
                      "--kernel-build /lib/modules/4.18.0-553.el8_10.x86_64/build --base-btf /sys/kernel/btf/vmlinux` once "
                      "(needs the amdgpu source, this kernel's headers and pahole; docs/recorder.md 'DKMS hosts')")
