"""recorder/dkms.py on the host fixtures (tests/fixtures/hosts/README.md): DKMS host recognition, the
DKMS source layout and the compiler flags of ROCm's amdgpu DKMS build."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from gpreempt_trace.errors import GptError
from gpreempt_trace.recorder import dkms

HOSTS = Path(__file__).parent / "fixtures" / "hosts"
DKMS_HOST = HOSTS / "dkms-6.12.12-el8"
INTREE_HOST = HOSTS / "intree-6.12.117-deb12"
EL8 = "4.18.0-553.el8_10.x86_64"
PKG = "6.12.12-2147987.el8"
SRC = DKMS_HOST / f"usr/src/amdgpu-{PKG}"
EL8_KBUILD = DKMS_HOST / f"usr/src/kernels/{EL8}"
DEB_KBUILD = Path("/lib/modules/6.12.117+deb12-amd64/build")


def _status_text() -> str:
    return (DKMS_HOST / "dkms-status.txt").read_text()


def _tree_with_config_h(tmp_path: Path, text: str = "#define HAVE_AMDKCL_HMM_MIRROR_ENABLED 1\n") -> Path:
    """A copy of the fixture's DKMS tree with a configure-generated config.h in place."""
    tree = tmp_path / f"amdgpu-{PKG}"
    shutil.copytree(SRC, tree, symlinks=True)
    (tree / "amd/dkms/config/config.h").write_text(text)
    return tree


# ---------------------------------------------------------------------------------------------
# module_info
def test_module_info_dkms_host():
    info = dkms.module_info(root=DKMS_HOST, dkms_output=_status_text())
    assert info.name == "amdgpu"
    assert info.loaded is True
    assert info.version == "6.12.12"
    assert info.srcversion == "7A1C3E0D9F45B2A6C81D04E"
    assert info.taint == "OE"
    assert info.build_id == "5e0c41f7a39b8d26c4e1f0a7b3d95826e4c1a0f3"
    assert info.kernel_release == EL8
    assert info.module_path == "extra/amdgpu.ko.xz"
    assert info.out_of_tree is True
    assert info.dkms_sources == [SRC]
    assert info.dkms_versions == [PKG]
    assert info.dkms_status == [
        dkms.DkmsEntry("amdgpu", PKG, "4.18.0-513.24.1.el8_9.x86_64", "x86_64", "built"),
        dkms.DkmsEntry("amdgpu", PKG, EL8, "x86_64", "installed"),
    ]


def test_module_info_intree_host():
    info = dkms.module_info(root=INTREE_HOST)
    assert info.loaded is True
    assert info.version is None
    assert info.srcversion is None
    assert info.taint == ""  # read: untainted
    assert info.build_id == "18fa82819173f9d8ec794235af988e4a06d5cb84"  # the Debian package's amdgpu.ko
    assert info.kernel_release == "6.12.117+deb12-amd64"
    assert info.module_path == "kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko.xz"
    assert info.out_of_tree is False
    assert info.dkms_sources == []
    assert info.dkms_status is None  # no `dkms` for a fixture root


def test_module_info_not_loaded_is_unknown_not_empty(tmp_path):
    info = dkms.module_info(root=tmp_path)
    assert (info.loaded, info.version, info.srcversion, info.taint, info.build_id) == (False, None, None, None, None)
    assert (info.kernel_release, info.module_path, info.out_of_tree, info.dkms_sources) == (None, None, False, [])


def test_build_id_from_the_binary_note():
    raw = (DKMS_HOST / "sys/module/amdgpu/notes/.note.gnu.build-id").read_bytes()
    assert len(raw) == 12 + 4 + 20
    assert struct.unpack_from("<III", raw) == (4, 20, 3)
    assert raw[12:16] == b"GNU\0"
    assert dkms.parse_build_id_note(raw) == "5e0c41f7a39b8d26c4e1f0a7b3d95826e4c1a0f3"
    # a note of another type before the build-id, and a truncated note
    other = struct.pack("<III", 4, 8, 5) + b"GNU\0" + b"\1" * 8
    assert dkms.parse_build_id_note(other + raw) == "5e0c41f7a39b8d26c4e1f0a7b3d95826e4c1a0f3"
    assert dkms.parse_build_id_note(raw[:30]) is None
    assert dkms.parse_build_id_note(b"") is None


def test_dkms_status_parsing_both_formats():
    old = ("amdgpu, 6.12.12-2147987.el8, 4.18.0-553.el8_10.x86_64, x86_64: installed\n"
           "amdgpu, 6.8.5-2009582.el8, 4.18.0-513.5.1.el8_9.x86_64, x86_64: installed (original_module exists)\n"
           "amdgpu, 6.10.5-2084815.el8: added\n"
           "amdgpu, 6.12.12-2147987.el8, 4.18.0-553.el8_10.x86_64, x86_64: installed-weak from 4.18.0-553.1.1.el8_10.x86_64\n")
    new = ("amdgpu/6.12.12-2164967.24.04, 6.8.0-60-generic, x86_64: installed\n"
           "amdgpu/6.12.12-2164967.24.04, 6.14.0-24-generic, x86_64: built (Differences between built and installed modules)\n"
           "amdgpu/6.16.13-2278356.24.04: added\n"
           "Error! Could not locate dkms.conf file.\n"
           "\n")
    assert dkms.parse_dkms_status(old) == [
        dkms.DkmsEntry("amdgpu", "6.12.12-2147987.el8", "4.18.0-553.el8_10.x86_64", "x86_64", "installed"),
        dkms.DkmsEntry("amdgpu", "6.8.5-2009582.el8", "4.18.0-513.5.1.el8_9.x86_64", "x86_64", "installed",
                       "(original_module exists)"),
        dkms.DkmsEntry("amdgpu", "6.10.5-2084815.el8", None, None, "added"),
        dkms.DkmsEntry("amdgpu", "6.12.12-2147987.el8", "4.18.0-553.el8_10.x86_64", "x86_64", "installed-weak",
                       "from 4.18.0-553.1.1.el8_10.x86_64"),
    ]
    assert dkms.parse_dkms_status(new) == [
        dkms.DkmsEntry("amdgpu", "6.12.12-2164967.24.04", "6.8.0-60-generic", "x86_64", "installed"),
        dkms.DkmsEntry("amdgpu", "6.12.12-2164967.24.04", "6.14.0-24-generic", "x86_64", "built",
                       "(Differences between built and installed modules)"),
        dkms.DkmsEntry("amdgpu", "6.16.13-2278356.24.04", None, None, "added"),
    ]


def test_dkms_status_absent_command(monkeypatch):
    monkeypatch.setattr(dkms.shutil, "which", lambda name: None)
    assert dkms.dkms_status("/") is None
    assert dkms.dkms_status(DKMS_HOST) is None  # never runs this machine's dkms for another root
    assert dkms.dkms_status(DKMS_HOST, output="") == []


# ---------------------------------------------------------------------------------------------
# source_for
def test_source_for_matches_the_module_version_prefix():
    info = dkms.module_info(root=DKMS_HOST, dkms_output=_status_text())
    assert dkms.source_for(info, root=DKMS_HOST) == SRC


def test_source_for_intree_is_none():
    assert dkms.source_for(dkms.module_info(root=INTREE_HOST), root=INTREE_HOST) is None


def _host_with_sources(tmp_path, versions, status):
    root = tmp_path / "root"
    for v in versions:
        d = root / f"usr/src/amdgpu-{v}"
        d.mkdir(parents=True)
        (d / "dkms.conf").write_text(f'PACKAGE_NAME="amdgpu"\nPACKAGE_VERSION="{v}"\n')
    (root / "usr/src/amdgpu-notdkms").mkdir(parents=True)  # no dkms.conf: not a DKMS source
    return root, status


def test_source_for_several_candidates_and_status_fallback(tmp_path):
    root, _ = _host_with_sources(tmp_path, ["6.12.12-2147987.el8", "6.12.12-2164967.el8", "6.8.5-2009582.el8"], None)
    status = (f"amdgpu/6.12.12-2164967.el8, {EL8}, x86_64: installed\n"
              "amdgpu/6.12.12-2147987.el8, 4.18.0-1.el8.x86_64, x86_64: installed\n")
    base = dkms.ModuleInfo("amdgpu", True, "6.12.12", None, "OE", None, EL8, "extra/amdgpu.ko.xz", True,
                           dkms.dkms_sources("amdgpu", root), dkms.parse_dkms_status(status))
    assert [p.name for p in base.dkms_sources] == [
        "amdgpu-6.12.12-2147987.el8", "amdgpu-6.12.12-2164967.el8", "amdgpu-6.8.5-2009582.el8"]
    assert dkms.source_for(base, root) == root / "usr/src/amdgpu-6.12.12-2164967.el8"  # narrowed by status
    unknown_version = dkms.ModuleInfo(**{**vars(base), "version": None})
    assert dkms.source_for(unknown_version, root) == root / "usr/src/amdgpu-6.12.12-2164967.el8"  # status for this kernel
    no_status = dkms.ModuleInfo(**{**vars(base), "dkms_status": None})
    assert dkms.source_for(no_status, root) is None  # two candidates, nothing to choose with
    other = dkms.ModuleInfo(**{**vars(base), "version": "6.8.5"})
    assert dkms.source_for(other, root) == root / "usr/src/amdgpu-6.8.5-2009582.el8"
    gone = dkms.ModuleInfo(**{**vars(base), "version": "6.14.14"})
    assert dkms.source_for(gone, root) == root / "usr/src/amdgpu-6.12.12-2164967.el8"  # falls back to dkms status


# ---------------------------------------------------------------------------------------------
# classify_source
def test_classify_kernel_tree(tmp_path):
    (tmp_path / "linux/drivers/gpu/drm/amd/amdkfd").mkdir(parents=True)
    lay = dkms.classify_source(tmp_path / "linux")
    amd = tmp_path / "linux/drivers/gpu/drm/amd"
    assert lay == dkms.SourceLayout("kernel", tmp_path / "linux", amd, amd / "amdkfd", amd / "amdgpu")
    with pytest.raises(GptError) as e:
        dkms.dkms_kbuild_flags(lay, EL8_KBUILD, root=DKMS_HOST)
    assert e.value.line().startswith(f"{tmp_path / 'linux'}: a kernel source tree, not an amdgpu DKMS tree: ")


def test_classify_dkms_fixture_without_config_h():
    lay = dkms.classify_source(SRC, root=DKMS_HOST)
    assert (lay.kind, lay.root, lay.amd, lay.amdkfd, lay.amdgpu, lay.include) == (
        "dkms", SRC, SRC / "amd", SRC / "amd/amdkfd", SRC / "amd/amdgpu", SRC / "include")
    assert lay.version == PKG
    assert lay.kconfig_renamed is False
    assert lay.config_h is None
    assert lay.config_h_hint == (
        f"{SRC}/amd/dkms/config/config.h is generated per target kernel by the tree's configure (DKMS runs it from "
        "amd/dkms/pre-build.sh and deletes its build directory after a successful build); in a copy of the tree run: "
        "cd amd/dkms && KERNELVER=<target release> ./configure "
        "(or ./configure --with-linux=<kernel source> --with-linux-obj=<kernel build dir>)")
    with pytest.raises(GptError) as e:
        dkms.dkms_kbuild_flags(lay, EL8_KBUILD, root=DKMS_HOST)
    assert e.value.line() == f"{SRC}: no amd/dkms/config/config.h for the target kernel: {lay.config_h_hint}"


def test_classify_dkms_config_h_in_tree_and_in_dkms_build_dir(tmp_path):
    tree = _tree_with_config_h(tmp_path)
    assert dkms.classify_source(tree, root=DKMS_HOST).config_h == tree / "amd/dkms/config/config.h"
    (tree / "amd/dkms/config/config.h").unlink()
    root = tmp_path / "root"
    built = root / f"var/lib/dkms/amdgpu/{PKG}/build/amd/dkms/config/config.h"
    built.parent.mkdir(parents=True)
    built.write_text("#define HAVE_MMU_NOTIFIER_PUT 1\n")
    lay = dkms.classify_source(tree, root=root)
    assert (lay.config_h, lay.config_h_hint) == (built, None)


def test_classify_renamed_tree(tmp_path):
    tree = _tree_with_config_h(tmp_path)
    (tree / "amd/dkms/Kbuild").write_text("subdir-ccflags-y += -DCONFIG_HSA_AMD_AMDKCL\n")
    assert dkms.classify_source(tree).kconfig_renamed is True


def test_classify_garbage(tmp_path):
    (tmp_path / "junk/amd").mkdir(parents=True)
    with pytest.raises(GptError) as e:
        dkms.classify_source(tmp_path / "junk")
    assert e.value.line() == (
        f"{tmp_path / 'junk'}: not a kernel source tree nor an amdgpu DKMS tree (no drivers/gpu/drm/amd/amdkfd or amd/amdkfd): "
        "pass --source with a kernel source tree (linux-source-*, drivers/gpu/drm/amd/amdkfd) or the amdgpu DKMS source "
        "the module was built from (/usr/src/amdgpu-<version>: amd/amdkfd, include/kcl)")
    (tmp_path / "junk/amd/amdkfd").mkdir()
    with pytest.raises(GptError) as e:
        dkms.classify_source(tmp_path / "junk")
    assert e.value.line() == (
        f"{tmp_path / 'junk'}: has amd/amdkfd but no include/kcl: not a whole amdgpu DKMS tree: "
        "pass the whole /usr/src/amdgpu-<version> directory (its include/kcl compat headers are needed)")


# ---------------------------------------------------------------------------------------------
# the target kernel and the flags
def test_kbuild_target_el8_fixture():
    t = dkms.kbuild_target(EL8_KBUILD, root=DKMS_HOST)
    assert (t.kernel_release, t.version, t.patchlevel, t.rhel_drm_version, t.rhel_drm_patchlevel) == (EL8, 4, 18, None, None)
    assert (t.rhel_major, t.rhel_minor, t.os_id, t.os_version_id) == (8, 10, "rhel", "8.10")
    assert t.config["CONFIG_DEVICE_PRIVATE"] == "y"


def test_kbuild_target_rhel_drm_and_debian_include(tmp_path):
    kb = tmp_path / "kb"
    (kb / "include/config").mkdir(parents=True)
    (kb / "Makefile").write_text("VERSION = 4\nPATCHLEVEL = 18\nRHEL_DRM_VERSION = 6\nRHEL_DRM_PATCHLEVEL = 8\n")
    t = dkms.kbuild_target(kb, root=tmp_path)
    assert (t.version, t.patchlevel, t.rhel_drm_version, t.rhel_drm_patchlevel) == (4, 18, 6, 8)
    assert (t.os_id, t.kernel_release) == (None, None)
    common = tmp_path / "usr/src/linux-headers-6.12.117+deb12-common"
    common.mkdir(parents=True)
    (common / "Makefile").write_text("# SPDX\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\n")
    (kb / "Makefile").write_text("include /usr/src/linux-headers-6.12.117+deb12-common/Makefile\n")
    assert (dkms.kbuild_target(kb, root=tmp_path).version, dkms.kbuild_target(kb, root=tmp_path).patchlevel) == (6, 12)
    (kb / "Makefile").write_text("# nothing\n")
    with pytest.raises(GptError) as e:
        dkms.kbuild_target(kb, root=tmp_path)
    assert e.value.line() == (f"{kb}/Makefile: no VERSION/PATCHLEVEL: "
                              "pass the target kernel's build tree (/lib/modules/<release>/build)")


def test_dkms_kbuild_flags_fixture(tmp_path):
    tree = _tree_with_config_h(tmp_path)
    lay = dkms.classify_source(tree, root=DKMS_HOST)
    a, d, i = f"{tree}/amd", f"{tree}/amd/display", f"{tree}/include"
    cfg = f"{tree}/amd/dkms/config/config.h"
    assert dkms.dkms_kbuild_flags(lay, EL8_KBUILD, root=DKMS_HOST) == [
        # amd/dkms/Kbuild: LINUXINCLUDE prefix
        f"-I{i}", f"-I{i}/kcl/header", "-include", f"{i}/kcl/kcl_version.h", "-include", cfg, f"-I{i}/uapi",
        # amd/dkms/Kbuild: subdir-ccflags-y (RHEL 8.10 kernel-devel, DRM 4.18 from its Makefile)
        "-DDRM_VER=4", "-DDRM_PATCH=18", "-DDRM_SUB=0",
        "-DOS_NAME_RHEL", "-DOS_VERSION_MAJOR=8", "-DOS_VERSION_MINOR=10", "-DOS_NAME_RHEL_8_10", "-DOS_NAME_RHEL_8_X",
        "-DCONFIG_HSA_AMD", "-DCONFIG_DRM_TTM_DMA_PAGE_POOL", "-DCONFIG_DRM_AMDGPU_CIK", "-DCONFIG_DRM_AMDGPU_SI",
        "-DCONFIG_DRM_AMDGPU_USERPTR", "-DCONFIG_DRM_AMD_DC", "-Wno-error",
        "-DCONFIG_HSA_AMD_SVM",  # config.h: HAVE_AMDKCL_HMM_MIRROR_ENABLED, kernel: CONFIG_DEVICE_PRIVATE
        "-DCONFIG_DRM_AMD_DC_HDCP",
        "-DCONFIG_DRM_AMD_DC_FP",  # x86, gcc, no CONFIG_MCORE2
        "-DCONFIG_DRM_TTM_HELPER", "-DCONFIG_DRM_BUDDY",
        # amd/amdgpu/Makefile (+ pm/, display/, display/amdgpu_dm/, display/dc/dml2/): subdir-ccflags-y
        "-Wno-override-init",
        f"-I{a}/include/asic_reg", f"-I{a}/include", f"-I{a}/pm/inc/", f"-I{a}/pm/swsmu", f"-I{a}/pm/swsmu/inc",
        f"-I{a}/pm/swsmu/inc/pmfw_if", f"-I{a}/pm/swsmu/smu11", f"-I{a}/pm/swsmu/smu12", f"-I{a}/pm/swsmu/smu13",
        f"-I{a}/pm/swsmu/smu14", f"-I{a}/pm/powerplay/inc", f"-I{a}/pm/powerplay/smumgr", f"-I{a}/pm/powerplay/hwmgr",
        f"-I{a}/pm/legacy-dpm",
        f"-I{d}/dc/inc/", f"-I{d}/dc/inc/hw", f"-I{d}/dc/clk_mgr", f"-I{d}/dc/hwss", f"-I{d}/dc/resource", f"-I{d}/dc/dsc",
        f"-I{d}/dc/optc", f"-I{d}/dc/dpp", f"-I{d}/dc/hubbub", f"-I{d}/dc/dccg", f"-I{d}/dc/hubp", f"-I{d}/dc/dio",
        f"-I{d}/dc/dwb", f"-I{d}/dc/hpo", f"-I{d}/dc/mmhubbub", f"-I{d}/dc/mpc", f"-I{d}/dc/opp", f"-I{d}/dc/pg",
        f"-I{d}/modules/inc", f"-I{d}/modules/freesync", f"-I{d}/modules/color", f"-I{d}/modules/info_packet",
        f"-I{d}/modules/power", f"-I{d}/dmub/inc", f"-I{d}/modules/hdcp", "-DBUILD_FEATURE_TIMING_SYNC=0", f"-I{d}/dc",
        f"-I{d}/dc/dml2", f"-I{d}/dc/dml2/dml21/src/dml2_core", f"-I{d}/dc/dml2/dml21/src/dml2_mcg/",
        f"-I{d}/dc/dml2/dml21/src/dml2_dpmm/", f"-I{d}/dc/dml2/dml21/src/dml2_pmo/",
        f"-I{d}/dc/dml2/dml21/src/dml2_standalone_libraries/", f"-I{d}/dc/dml2/dml21/src/inc", f"-I{d}/dc/dml2/dml21/inc",
        f"-I{d}/dc/dml2/dml21/",
        # amd/amdgpu/Makefile ccflags-y, then amd/backport/Makefile's
        f"-I{a}/include/asic_reg", f"-I{a}/include", f"-I{a}/amdgpu", f"-I{a}/pm/inc", f"-I{a}/acp/include", f"-I{d}",
        f"-I{d}/include", f"-I{d}/modules/inc", f"-I{d}/dc", f"-I{d}/amdgpu_dm", f"-I{a}/amdkfd",
        f"-I{a}", f"-I{a}/backport/include", f"-I{a}/dkms", "-include", cfg, "-include", f"{a}/backport/backport.h",
        "-DHAVE_CONFIG_H",
    ]


def test_dkms_defines_other_targets(tmp_path):
    tree = _tree_with_config_h(tmp_path, "/* #undef HAVE_AMDKCL_HMM_MIRROR_ENABLED */\n")
    lay = dkms.classify_source(tree)
    common = ["-DCONFIG_HSA_AMD", "-DCONFIG_DRM_TTM_DMA_PAGE_POOL", "-DCONFIG_DRM_AMDGPU_CIK", "-DCONFIG_DRM_AMDGPU_SI",
              "-DCONFIG_DRM_AMDGPU_USERPTR", "-DCONFIG_DRM_AMD_DC", "-Wno-error", "-DCONFIG_DRM_AMD_DC_HDCP"]
    ubuntu = dkms.DkmsTarget("6.8.0-60-oem", 6, 8, os_id="ubuntu", os_version_id="24.04",
                             config={"CONFIG_DEVICE_PRIVATE": "y", "CONFIG_PCI_P2PDMA": "y", "CONFIG_DMABUF_MOVENOTIFY": "y",
                                     "CONFIG_CC_IS_CLANG": "y", "CONFIG_MCORE2": "y"})
    assert dkms.dkms_defines(lay, ubuntu) == [
        "-DDRM_VER=6", "-DDRM_PATCH=8", "-DDRM_SUB=0", "-DOS_NAME_UBUNTU", "-DOS_VERSION_MAJOR=24", "-DOS_VERSION_MINOR=04",
        "-DUBUNTU_BUILD_NUM=60", "-DOS_NAME_UBUNTU_OEM", "-DOS_NAME_UBUNTU_24_04", *common,  # no SVM: config.h says #undef
        "-DCONFIG_HSA_AMD_P2P", "-DCONFIG_DRM_AMD_DC_FP", "-DCONFIG_DRM_TTM_HELPER", "-DCONFIG_DRM_BUDDY"]
    rhel7 = dkms.DkmsTarget("3.10.0-1160.el7.x86_64", 3, 10, rhel_drm_version=5, rhel_major=7, rhel_minor=9, os_id="rhel",
                            config={"CONFIG_MCORE2": "y"})
    assert dkms.dkms_defines(lay, rhel7) == [
        "-DDRM_VER=5", "-DDRM_PATCH=", "-DDRM_SUB=0", "-DOS_NAME_RHEL", "-DOS_VERSION_MAJOR=7", "-DOS_VERSION_MINOR=9",
        "-DOS_NAME_RHEL_7_9", "-DOS_NAME_RHEL_7_X",
        "-include", "/usr/src/kernels/3.10.0-1160.el7.x86_64/include/drm/drm_backport.h",
        *common, "-DCONFIG_DRM_TTM_HELPER", "-DCONFIG_DRM_BUDDY"]  # core2 with gcc: no DC_FP
    centos_custom = dkms.DkmsTarget("6.6.1", 6, 6, os_id="centos", os_version_id="9", config={"CONFIG_ARM64": "y"})
    assert dkms.dkms_defines(lay, centos_custom)[3:6] == ["-DOS_NAME_UNKNOWN", "-DOS_VERSION_MAJOR=9", "-DOS_VERSION_MINOR=0"]
    assert "-DCONFIG_DRM_AMD_DC_FP" not in dkms.dkms_defines(lay, centos_custom)  # ARM64
    sles = dkms.DkmsTarget("6.4.0-150600.21-default", 6, 4, os_id="sles", os_version_id="15.6")
    assert dkms.dkms_defines(lay, sles)[3:7] == [
        "-DOS_NAME_SLE", "-DOS_VERSION_MAJOR=15", "-DOS_VERSION_MINOR=6", "-DOS_NAME_SUSE_15_6"]
    debian = dkms.DkmsTarget("6.12.117+deb12-amd64", 6, 12, os_id="debian", os_version_id="12")
    assert dkms.dkms_defines(lay, debian)[:6] == ["-DDRM_VER=6", "-DDRM_PATCH=12", "-DDRM_SUB=0", "-DOS_NAME_DEBIAN",
                                                  "-DOS_VERSION_MAJOR=12", "-DOS_VERSION_MINOR=0"]
    (tree / "amd/dkms/Kbuild").write_text("subdir-ccflags-y += -DCONFIG_HSA_AMD_AMDKCL\n")
    renamed = dkms.classify_source(tree)
    assert [f for f in dkms.dkms_defines(renamed, ubuntu) if "AMDKCL" in f] == [
        "-DCONFIG_HSA_AMD_AMDKCL", "-DCONFIG_DRM_AMDGPU_CIK_AMDKCL", "-DCONFIG_DRM_AMDGPU_SI_AMDKCL",
        "-DCONFIG_DRM_AMDGPU_USERPTR_AMDKCL", "-DCONFIG_DRM_AMD_DC_AMDKCL", "-DCONFIG_HSA_AMD_P2P_AMDKCL",
        "-DCONFIG_DRM_AMD_DC_FP_AMDKCL"]
    with pytest.raises(GptError) as e:
        dkms.dkms_defines(lay, None)
    assert e.value.line() == ("the DKMS compile flags depend on the target kernel: "
                              "pass its build tree (/lib/modules/<release>/build)")


def test_rename_symbol_h_is_included_when_pre_build_made_it(tmp_path):
    tree = _tree_with_config_h(tmp_path)
    (tree / "include/rename_symbol.h").write_text("#define ttm_bo_put amdttm_bo_put //EXPORT_SYMBOL(ttm_bo_put);\n")
    flags = dkms.dkms_linuxinclude(dkms.classify_source(tree))
    assert flags[4:6] == ["-include", f"{tree}/include/rename_symbol.h"]


def test_kbuild_wrapper_text(tmp_path):
    tree = _tree_with_config_h(tmp_path)
    lay = dkms.classify_source(tree, root=DKMS_HOST)
    text = dkms.kbuild_wrapper(lay, EL8_KBUILD, root=DKMS_HOST)
    lines = text.splitlines()
    i = f"{tree}/include"
    assert lines[3] == (f"LINUXINCLUDE := -I{i} -I{i}/kcl/header -include {i}/kcl/kcl_version.h -include "
                        f"{tree}/amd/dkms/config/config.h $(_gpt_kinc) -I{i}/uapi $(filter-out $(_gpt_kinc),$(_gpt_inc))")
    assert lines[4:11] == ["CONFIG_DRM_AMD_ACP :=", "CONFIG_DRM_AMD_ISP :=", "CONFIG_DRM_AMDGPU_WERROR :=",
                           "CONFIG_DRM_AMDGPU_NAVI3X_USERQ :=", "CONFIG_HSA_AMD_P2P :=", "CONFIG_DRM_AMD_DC_SI :=",
                           "CONFIG_DEBUG_KERNEL_DC :="]
    assert "CONFIG_DRM_AMD_DC := y" in lines and "CONFIG_HSA_AMD_SVM := y" in lines and "CONFIG_DRM_AMD_DC_FP := y" in lines
    assert lines[-2] == "subdir-ccflags-y += " + " ".join(dkms.dkms_defines(lay, EL8_KBUILD, root=DKMS_HOST))
    assert lines[-1] == f"include {tree}/amd/amdgpu/Makefile"
    (tree / "amd/dkms/config/config.h").unlink()
    built = tmp_path / f"root/var/lib/dkms/amdgpu/{PKG}/build/amd/dkms/config/config.h"
    built.parent.mkdir(parents=True)
    built.write_text("\n")
    with pytest.raises(GptError) as e:
        dkms.kbuild_wrapper(dkms.classify_source(tree, root=tmp_path / "root"), EL8_KBUILD, root=DKMS_HOST)
    assert e.value.line() == (f"{tree}/amd/dkms/config/config.h is missing: amd/backport/Makefile includes config/config.h "
                              f"from the tree: copy {built} there (in a copy of the tree)")


@pytest.mark.skipif(not (DEB_KBUILD / "Makefile").is_file() or shutil.which("make") is None or shutil.which("gcc") is None,
                    reason="needs the Debian 6.12.117 headers (linux-headers-6.12.117+deb12-amd64), make and gcc")
def test_kbuild_wrapper_compiles_with_real_kbuild(tmp_path):
    """A real external-module compile with the generated Kbuild: the tree's headers win over the kernel's,
    config.h and the -D flags reach the object, and its own amd/amdgpu/Makefile is used."""
    tree = _tree_with_config_h(tmp_path, "#define HAVE_GPT_PROBE 7\n")
    (tree / "include/linux").mkdir(parents=True)
    (tree / "include/linux/dma-resv.h").write_text("#define GPT_TREE_DMA_RESV 1\n")  # the kernel has one too
    (tree / "include/kcl/kcl_version.h").write_text("#define GPT_KCL_VERSION (DRM_VER * 100 + DRM_PATCH)\n")
    (tree / "amd/amdgpu/Makefile").write_text("obj-m := probe.o\nccflags-y += -DGPT_FROM_TREE_MAKEFILE=1\n")
    (tree / "amd/amdgpu/probe.c").write_text(
        "#include <linux/module.h>\n#include <linux/dma-resv.h>\n"
        "#if defined(GPT_TREE_DMA_RESV) && defined(CONFIG_HSA_AMD) && defined(OS_VERSION_MAJOR) && GPT_FROM_TREE_MAKEFILE\n"
        "int gpt_probe[3] = { HAVE_GPT_PROBE, GPT_KCL_VERSION, OS_VERSION_MAJOR };\n#endif\nMODULE_LICENSE(\"GPL\");\n")
    lay = dkms.classify_source(tree)
    data = tmp_path / "probe.data"

    def build(**env) -> bytes:
        (tree / "amd/amdgpu/probe.o").unlink(missing_ok=True)
        r = subprocess.run(["make", "-s", "-C", str(DEB_KBUILD), f"M={tree}/amd/amdgpu", "probe.o"], capture_output=True,
                           text=True, env={**os.environ, "LC_ALL": "C", **env}, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        subprocess.run(["objcopy", "-O", "binary", "--only-section=.data", str(tree / "amd/amdgpu/probe.o"), str(data)],
                       check=True)
        return data.read_bytes()

    # the same flags through KCFLAGS come after the kernel's include dirs: the kernel's linux/dma-resv.h wins
    assert build(KCFLAGS=" ".join(dkms.dkms_kbuild_flags(lay, DEB_KBUILD)))[:12] == b""
    (tree / "amd/amdgpu/Kbuild").write_text(dkms.kbuild_wrapper(lay, DEB_KBUILD))
    build()
    t = dkms.kbuild_target(DEB_KBUILD)
    major = (t.os_version_id or "").split(".")[0]
    if not major.isdigit():
        pytest.skip("this machine's /etc/os-release has no numeric VERSION_ID")
    assert data.read_bytes()[:12] == struct.pack("<iii", 7, 612, int(major))
