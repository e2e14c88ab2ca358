"""`gpreempt-trace doctor`: offline on Debian 6.1.0-56 (fixture), live on this VM (no amdgpu, no kprobes),
and bad input (mismatched/damaged BTF, unknown probe, missing paths): one line, non-zero exit."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpreempt_trace.cli.main import main
from gpreempt_trace.recorder.plan import PROBES, TRACEPOINTS


def doctor(*args):
    return CliRunner().invoke(main, ["doctor", *map(str, args)])


def test_offline_fixture_json(kfd_fixture):
    r = doctor("--kallsyms", kfd_fixture / "kallsyms", "--btf", kfd_fixture / "btf", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["offline"] is True
    assert [(c["name"], c["ok"]) for c in out["checks"]] == [("btf", True), ("kallsyms", True), ("ioctl path", True)]
    assert out["checks"][2]["detail"] == ("kprobe on kfd_ioctl (if the target kernel has kprobes): only calls on the KFD "
                                          "device run the probe; other processes and syscalls pay nothing")
    probes = {p["probe"]: p for p in out["probes"]}
    assert set(probes["update_queue"]) == {"probe", "event", "symbol", "mechanism", "status", "reason", "func_id"}
    assert (probes["update_queue"]["event"], probes["update_queue"]["symbol"]) == ("queue_update", "amdgpu:update_queue")
    assert (probes["execute_queues_cpsch"]["symbol"], probes["execute_queues_cpsch"]["reason"]) == (
        None, "inlined in this build; map_queues_cpsch and unmap_queues_cpsch are probed")
    assert probes["unmap_queues_cpsch"]["symbol"] == "unmap_queues_cpsch"
    assert probes["map_queues_cpsch"]["symbol"] == "map_queues_cpsch"
    assert probes["hw_unmap_wait"]["symbol"] == "pm_send_unmap_queue->amdkfd_fence_wait_timeout"
    fields = {f["path"]: f["offset"] for f in out["fields"]}
    # equal to pahole's offsets for this build (btf_layouts.txt)
    assert fields["queue.properties.queue_id"] == 48
    assert fields["queue.properties.doorbell_off"] == 104
    assert fields["queue.properties.priority"] == 72
    assert fields["queue.properties.is_active"] == 110
    assert fields["queue.properties.is_evicted"] == 109
    assert fields["queue.properties.is_suspended"] is None
    assert fields["queue.process"] == 200 and fields["queue.device"] == 208
    assert fields["kfd_dev.id"] == 96 and fields["kfd_process.pasid"] == 160
    assert fields["kfd_process.lead_thread"] == 96 and fields["task_struct.tgid"] == 2420
    assert fields["device_queue_manager.dev"] == 304


def test_offline_fixture_text(kfd_fixture):
    r = doctor("--kallsyms", kfd_fixture / "kallsyms", "--btf", kfd_fixture / "btf")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert f"attach plan (21 of {len(PROBES) + len(TRACEPOINTS)} probes planned):" in lines
    row = next(ln for ln in lines if ln.split()[:1] == ["update_queue"])
    assert row.split()[:5] == ["update_queue", "queue_update", "amdgpu:update_queue", "kprobe+kretprobe", "planned"]
    row = next(ln for ln in lines if ln.split()[:1] == ["GPT_OFF_Q_IS_SUSPENDED"])
    assert row.split() == ["GPT_OFF_Q_IS_SUSPENDED", "queue.properties.is_suspended", "missing"]


def test_offline_fixture_612_explains_every_probe(kernel_fixture):
    """Debian 6.12.117: every KFD kprobe planned, the execute clone named, the reset path and the debugger ABI."""
    k = kernel_fixture("6.12.117+deb12-amd64")
    r = doctor("--kallsyms", k / "kallsyms", "--btf", k / "btf", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [c["ok"] for c in out["checks"]] == [True, True, True]  # btf, kallsyms, ioctl path (kprobe on kfd_ioctl)
    probes = {p["probe"]: p for p in out["probes"]}
    assert {n for n, p in probes.items() if p["status"] == "planned"} == {s.name for s in PROBES}
    assert probes["execute_queues_cpsch"]["symbol"] == "execute_queues_cpsch.constprop.0"
    assert "its arguments may differ from the source, so they are not read" in probes["execute_queues_cpsch"]["reason"]
    assert (probes["suspend_queues"]["event"], probes["suspend_queues"]["symbol"]) == ("queues_suspend", "suspend_queues")
    assert (probes["kfd_hws_hang"]["event"], probes["kgd_gfx_v9_hqd_reset"]["event"]) == ("hws_hang", "queue_reset")
    # every probe that is not attached says why
    assert all(p["reason"] for p in out["probes"] if p["status"] != "planned")
    fields = {f["path"]: f["offset"] for f in out["fields"]}
    assert fields["kfd_node.id"] == 36 and fields["queue.properties.is_suspended"] == 110
    text = doctor("--kallsyms", k / "kallsyms", "--btf", k / "btf")
    assert f"attach plan ({len(PROBES)} of {len(PROBES) + len(TRACEPOINTS)} probes planned):" in text.output.splitlines()


def test_live_this_vm():
    """The running kernel: whatever it lacks is a FAIL with a fix hint (on this VM: amdgpu, kprobes)."""
    r = doctor("--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["amdgpu module"]["ok"] is Path("/sys/module/amdgpu").is_dir()
    if not Path("/sys/module/amdgpu").is_dir():
        assert "modprobe amdgpu" in checks["amdgpu module"]["hint"]
        assert {p["reason"] for p in out["probes"] if not p["probe"].startswith("kfd:")} == {"module amdgpu is not loaded"}
        assert checks["/dev/kfd"]["ok"] is False and checks["/dev/kfd"]["hint"]
    has_kprobes = Path("/sys/bus/event_source/devices/kprobe").is_dir()
    assert checks["kprobes"]["ok"] is has_kprobes
    if not has_kprobes:
        assert "CONFIG_KPROBES" in checks["kprobes"]["hint"]
    if os.geteuid() == 0:
        assert checks["privileges"]["ok"] is True
    assert all(c["hint"] for c in out["checks"] if c["ok"] is False)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root to drop to nobody")
def test_live_without_privileges():
    exe = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "gpreempt-trace"
    r = subprocess.run(["runuser", "-u", "nobody", "--", str(exe), "doctor", "--json"], capture_output=True, text=True, cwd="/tmp")
    if r.returncode != 0 and "Permission denied" in r.stderr and ".venv" in r.stderr:
        pytest.skip("the venv is not readable by nobody")
    assert r.returncode == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["privileges"]["ok"] is False
    assert checks["privileges"]["hint"] == "run as root (or with CAP_BPF + CAP_PERFMON)"


def test_mismatched_btf_one_line(kfd_fixture, tmp_path):
    vm = Path("/sys/kernel/btf/vmlinux")
    if not vm.exists():
        pytest.skip("no running-kernel BTF to mismatch with")
    shutil.copy(vm, tmp_path / "vmlinux")
    shutil.copy(kfd_fixture / "btf" / "amdgpu", tmp_path / "amdgpu")
    r = doctor("--kallsyms", kfd_fixture / "kallsyms", "--btf", tmp_path)
    assert r.exit_code == 1
    assert len(r.output.strip().splitlines()) == 1
    assert "amdgpu does not match its base" in r.output and "same kernel build" in r.output


@pytest.mark.parametrize("case,message", [("garbage", "not BTF"), ("truncated", "truncated BTF"), ("missing_dir", "does not exist")])
def test_bad_btf_one_line(case, message, tmp_path, kfd_fixture):
    d = tmp_path / "btf"
    if case == "garbage":
        d.mkdir()
        (d / "vmlinux").write_bytes(b"not a btf file at all" * 4)
    elif case == "truncated":
        d.mkdir()
        (d / "vmlinux").write_bytes((kfd_fixture / "btf" / "vmlinux").read_bytes()[:4096])
    r = doctor("--kallsyms", kfd_fixture / "kallsyms", "--btf", d)
    assert r.exit_code != 0
    assert len(r.output.strip().splitlines()) == 1
    assert message in r.output


def test_unknown_probe_one_line(kfd_fixture):
    r = doctor("--kallsyms", kfd_fixture / "kallsyms", "--btf", kfd_fixture / "btf", "--probe", "nope")
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [r.output.strip()]
    assert "unknown KFD probe 'nope'" in r.output


def test_probe_selection(kfd_fixture):
    r = doctor("--kallsyms", kfd_fixture / "kallsyms", "--btf", kfd_fixture / "btf", "--probe", "kfd_ioctl", "--json")
    planned = [p["probe"] for p in json.loads(r.output)["probes"] if p["status"] == "planned"]
    assert planned == ["kfd_ioctl"]


@pytest.mark.parametrize("root", [True, False])
def test_tracefs_not_mounted(monkeypatch, tmp_path, root):
    """tracefs unmounted: as root on a kernel with tracefs that is fine (record mounts it, as the demo does
    on a fresh machine); otherwise a FAIL with the mount command."""
    from gpreempt_trace.doctor import checks as C
    from gpreempt_trace.recorder.plan import KfdPlan

    (tmp_path / "tracing").mkdir()  # a mount point with nothing mounted on it
    monkeypatch.setattr(C, "TRACEFS_DIRS", (tmp_path / "tracing", tmp_path / "debug-tracing"))
    monkeypatch.setattr(C.os, "geteuid", lambda: 0 if root else 1000)
    monkeypatch.setattr(C, "_kernel_has_fs", lambda name: name == "tracefs")
    c = {x.name: x for x in C.live_checks(KfdPlan(probes=[], offsets={}, cflags=[]))}["tracefs"]
    if root:
        assert (c.ok, c.detail, c.hint) == (True, f"not mounted; record mounts it at {tmp_path / 'tracing'} (root)", "")
    else:
        assert (c.ok, c.detail) == (False, "not mounted") and c.hint.startswith("mount -t tracefs nodev")
