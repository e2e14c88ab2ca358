"""The real-kernel lab: Debian's 6.1 and 6.12 kernels with the real amdgpu/KFD under QEMU.

The facts checked here are the ones the recorder's attach planner must handle. One guest boot per
kernel (`facts`, session-scoped) checks all of them; a few more 6.1 boots check run/python, a panic
and a hard timeout. Tests that need no guest (host checks, bad input) run everywhere."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpreempt_trace.lab import Lab, LabBroken, LabUnavailable
from gpreempt_trace.lab import build as lab_build
from gpreempt_trace.lab import qemu as lab_qemu
from gpreempt_trace.lab.__main__ import main as lab_main
from gpreempt_trace.lab.pytest_plugin import lab_for
from gpreempt_trace.lab.selftest import run_checks

REPO = Path(__file__).resolve().parent.parent


def _qemu_children() -> list[int]:
    """QEMU processes whose parent is this test process."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        if ppid == me and name.startswith("qemu-system"):
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(autouse=True)
def _drop_failed_run_logs(monkeypatch):
    """The failures provoked here need no kept logs in /tmp."""
    monkeypatch.setenv("GPT_LAB_KEEP_FAILED", "0")


KERNELS = [pytest.param("6.1", id="6.1", marks=pytest.mark.lab),
           pytest.param("6.12", id="6.12", marks=[pytest.mark.lab, pytest.mark.lab612])]
_FACTS: dict[str, dict] = {}


@pytest.fixture(scope="session", params=KERNELS)
def facts(request):
    """One guest per kernel for the whole session: modprobe amdgpu, /dev/kfd ioctls, tracefs kprobes,
    kallsyms, a BCC kprobe."""
    kernel = request.param
    if kernel not in _FACTS:
        lab = lab_for(kernel)
        _FACTS[kernel] = run_checks(lab, timeout_s=400)
        _FACTS[kernel]["abi"] = lab.kernel
    result = _FACTS[kernel]
    if "error" in result:
        pytest.fail(f"lab self-check guest ({kernel}) failed: {result['error']}\n{result.get('output', '')}", pytrace=False)
    return result


# --- the real KFD in the guest, per kernel (world.md's table) ---------------------------------------

def test_guest_runs_the_lab_kernel(facts):
    assert facts["kernel"] == facts["abi"]
    if facts["series"] == "6.1":
        assert facts["kernel"].startswith("6.1.0-") and facts["kernel"].endswith("-amd64")
    else:
        assert facts["kernel"].startswith("6.12.") and facts["kernel"].endswith("+deb12-amd64")
    assert facts["rc"] == 0


def test_modprobe_amdgpu_succeeds(facts):
    assert facts["modprobe_amdgpu_rc"] == 0, facts.get("modprobe_amdgpu_error")


def test_dev_kfd_exists(facts):
    assert facts["dev_kfd"] is True


def test_kfd_get_version_is_1_11_on_61_and_1_17_on_612(facts):
    assert facts["kfd_version"] == {"6.1": [1, 11], "6.12": [1, 17]}[facts["series"]]


def test_create_queue_with_bogus_gpu_id_is_einval(facts):
    assert facts["create_queue_bogus_gpu"] == "EINVAL"


def test_amdgpu_module_btf_exists(facts):
    assert facts["btf_amdgpu"] is True


def test_tracefs_and_debugfs_mounted(facts):
    assert facts["tracefs"] is True
    assert facts["debugfs_dri"] is True


def test_kprobe_on_kfd_ioctl_fires_for_both_calls(facts):
    assert facts["probe_kfd_ioctl"] is None
    # AMDKFD_IOC_GET_VERSION then AMDKFD_IOC_CREATE_QUEUE, in that order, once each
    assert facts["kprobe_kfd_ioctl_cmds"] == ["0x80084b01", "0xc0584b02"]
    assert facts["kallsyms_kfd_ioctl"] == ["amdgpu"]


def test_execute_queues_cpsch_inlined_on_61_only_a_constprop_clone_on_612(facts):
    assert facts["kallsyms_execute_queues_cpsch"] == []
    if facts["series"] == "6.1":
        assert facts["clones_execute_queues_cpsch"] == []
        assert facts["probe_execute_queues_cpsch"] == "ENOENT"
    else:
        assert facts["clones_execute_queues_cpsch"] == ["execute_queues_cpsch.constprop.0 [amdgpu]"]
        assert facts["probe_execute_queues_cpsch"] == "EINVAL"  # the plain name is no symbol
        assert facts["probe_execute_queues_cpsch_clone"] is None  # the clone attaches


def test_update_queue_needs_the_module_prefix(facts):
    assert facts["kallsyms_update_queue"] == ["amdgpu", "vmlinux"]  # amdkfd and ipc/sem.c
    # 6.1: EADDRNOTAVAIL; 6.12's tracefs refuses a name that is "not unique" with EINVAL
    assert facts["probe_update_queue_plain"] == {"6.1": "EADDRNOTAVAIL", "6.12": "EINVAL"}[facts["series"]]
    assert facts["probe_update_queue_amdgpu"] is None


def test_debugger_abi_functions_exist_on_612_only(facts):
    names = ("kfd_ioctl_set_debug_trap", "kfd_ioctl_runtime_enable", "suspend_queues", "resume_queues")
    want = [] if facts["series"] == "6.1" else ["amdgpu"]
    assert {n: facts[f"kallsyms_{n}"] for n in names} == {n: want for n in names}


@pytest.mark.parametrize("facts", [KERNELS[1]], indirect=True)
def test_helpers_inlined_on_612(facts):
    for name in ("runtime_enable", "runtime_disable", "suspend_single_queue", "resume_single_queue"):
        assert facts[f"kallsyms_{name}"] == [] and facts[f"clones_{name}"] == [], name


def test_bcc_kprobe_compiles_and_fires_in_the_guest(facts):
    assert "bcc_error" not in facts, facts.get("bcc_error")
    assert facts["bcc_kprobe_hits"] == 1


def test_self_check_verdict(facts):
    assert facts["mismatches"] == {}
    assert facts["ok"] is True


def test_612_initramfs_holds_plain_modules_without_virtio_pci(lab612, tmp_path):
    """6.12 ships .ko.xz and builds virtio_pci in: the initramfs gets decompressed 9p/overlay modules."""
    import gzip
    cpio = gzip.decompress(Path(lab612.build.initrd).read_bytes())
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=cpio, capture_output=True).stdout.decode().split()
    mods = sorted(n.split("/")[-1] for n in listing if n.startswith("mods/") and n != "mods/order")
    assert mods and all(m.endswith(".ko") for m in mods), mods
    assert {"9p.ko", "9pnet_virtio.ko", "overlay.ko"} <= set(mods) and "virtio_pci.ko" not in mods
    assert Path(lab612.build.vmlinux).read_bytes()[:4] == b"\x7fELF"  # unpacked from the zstd vmlinuz


def test_lab_constructor_picks_the_kernel_series(lab612):
    assert Lab(kernel="6.12").build == lab612.build and lab612.series == "6.12"
    assert Lab.ensure(kernel="6.12") is lab612
    with pytest.raises(LabBroken, match=r"Lab\(kernel='6.1'\) given a 6.12 build"):
        Lab(lab612.build, kernel="6.1")


# --- the Lab API -------------------------------------------------------------------------------

def test_python_returns_rc_output_and_files(lab, tmp_path):
    (tmp_path / "in.txt").write_text("from the host")
    res = lab.python(textwrap.dedent(f"""
        import os, sys
        print("out", sys.prefix.endswith(".venv"), os.getcwd())
        print("err", file=sys.stderr)
        open(os.path.join(os.environ["OUT"], "made.txt"), "w").write(os.uname().release)
        print(open("{tmp_path}/in.txt").read())  # host /tmp is visible in the guest
        open("{tmp_path}/in.txt", "w").write("guest")  # ... but writes stay in the guest
        sys.exit(7)
    """), modules=(), timeout_s=120)
    assert res.rc == 7
    assert res.output == f"out True {REPO}\nerr\nfrom the host\n"
    assert (res.files / "made.txt").read_text() == lab.kernel
    assert (tmp_path / "in.txt").read_text() == "from the host"
    assert res.timed_out is False
    assert _qemu_children() == []


def test_kernel_panic_is_a_clear_failure(lab):
    with pytest.raises(LabBroken, match="lab guest kernel panicked: sysrq triggered crash"):
        lab.run("echo c > /proc/sysrq-trigger; sleep 60", modules=(), timeout_s=120)
    assert _qemu_children() == []


def test_guest_past_its_time_limit_is_killed(lab):
    res = lab.run("sleep 600", modules=(), timeout_s=1)
    assert res.rc == 124 and res.timed_out is True
    assert "ran past 1 s (during boot) and was killed" in res.output
    assert _qemu_children() == [] and lab_qemu._LIVE == set()


def test_hung_boot_is_killed_and_retried_once(lab, monkeypatch):
    import gpreempt_trace.lab.lab as lab_mod

    monkeypatch.setattr(lab_mod, "BOOT_TIMEOUT_S", 0.5)  # no guest reaches READY that fast: every boot "hangs"
    res = lab.run("true", modules=(), timeout_s=5)
    assert res.rc == 124 and res.timed_out is True and res.boot_hangs == 2
    assert "boot hung 2x" in res.output
    assert _qemu_children() == [] and lab_qemu._LIVE == set()


def test_cli_run_exits_with_the_guest_status(lab, capsys, tmp_path):
    rc = lab_main(["run", "--no-amdgpu", "--timeout", "120", "--out", str(tmp_path), "--",
                   "echo hello; touch $OUT/x; exit 5"])
    assert rc == 5
    assert capsys.readouterr().out == "hello\n"
    assert (tmp_path / "x").exists()


# --- bad input (no guest) ----------------------------------------------------------------------

def test_no_qemu_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LabUnavailable, match=r"missing qemu-system-x86_64 \(qemu-system-x86\)"):
        lab_build.check_host()


def test_cli_without_qemu_is_one_line_and_exit_3(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(Lab, "_cached", None)
    assert lab_main(["run", "--", "true"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("lab: cannot run the QEMU lab, missing qemu-system-x86_64") and err.count("\n") == 1


def test_missing_kernel_package_is_broken_not_a_hang(monkeypatch, tmp_path):
    if lab_build._which("apt-get") is None:
        pytest.skip("no apt-get here")
    monkeypatch.setenv("GPT_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GPT_LAB_KERNEL", "6.1.0-0-nonexistent-amd64")
    try:
        lab_build.check_host()
    except LabUnavailable as e:
        pytest.skip(str(e))
    with pytest.raises(LabBroken, match="apt-get download linux-image-6.1.0-0-nonexistent-amd64 failed"):
        lab_build.ensure_built()
    assert not any((tmp_path / "cache" / "kernel").iterdir())  # the half-built stage was removed


def test_unknown_kernel_series_is_broken_with_the_choices():
    with pytest.raises(LabBroken, match=r"unknown lab kernel '5.10'.*choose one of 6.1, 6.12"):
        Lab.ensure(kernel="5.10")


def test_cli_rejects_an_unknown_kernel_series(capsys):
    with pytest.raises(SystemExit) as e:
        lab_main(["run", "--kernel", "5.10", "--", "true"])
    assert e.value.code == 2 and "invalid choice: '5.10'" in capsys.readouterr().err


def test_header_packages_follow_debian_naming_per_series():
    assert lab_build.header_packages("6.1.0-57-amd64") == [
        "linux-headers-6.1.0-57-amd64", "linux-headers-6.1.0-57-common", "linux-kbuild-6.1"]
    assert lab_build.header_packages("6.12.117+deb12-amd64") == [
        "linux-headers-6.12.117+deb12-amd64", "linux-headers-6.12.117+deb12-common", "linux-kbuild-6.12.117+deb12"]


def test_series_of_abi():
    assert lab_build.series_of("6.1.0-57-amd64") == "6.1"
    assert lab_build.series_of("6.12.117+deb12-amd64") == "6.12"


def test_gpt_lab_kernel_pins_only_its_own_series(monkeypatch):
    monkeypatch.setenv("GPT_LAB_KERNEL", "6.12.999+deb12-amd64")
    assert lab_build.pick_abi("6.12") == "6.12.999+deb12-amd64"
    monkeypatch.setenv("GPT_LAB_KERNEL", "6.1.0-99-amd64")
    assert lab_build.pick_abi("6.1") == "6.1.0-99-amd64"


def test_pick_abi_612_is_a_bookworm_612_image():
    if lab_build._which("apt-cache") is None:
        pytest.skip("no apt-cache here")
    try:
        abi = lab_build.pick_abi("6.12")
    except LabBroken as e:
        pytest.skip(str(e))
    assert lab_build.series_of(abi) == "6.12" and abi.endswith("+deb12-amd64")


def test_fixture_skips_with_the_reason_without_qemu(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_x(lab):\n    pass\n")
    env = dict(os.environ, PATH=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "gpreempt_trace.lab.pytest_plugin",
                          "-p", "no:cacheprovider", str(tmp_path / "test_x.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SKIPPED" in res.stdout and "lab unavailable: cannot run the QEMU lab, missing qemu-system-x86_64" in res.stdout


def test_pick_abi_612_is_the_abi_kernel_check_builds_for():
    """kernel/check.sh builds the patched amdgpu.ko against the newest /usr/src/linux-headers-6.12.*-amd64;
    the 6.12 guest must boot that ABI or the module is refused (vermagic)."""
    hdrs = sorted(Path("/usr/src").glob("linux-headers-6.12.*-amd64"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)])
    if not hdrs or lab_build._which("apt-cache") is None:
        pytest.skip("no 6.12 headers installed here (make setup installs them)")
    assert lab_build.pick_abi("6.12") == hdrs[-1].name.removeprefix("linux-headers-")
