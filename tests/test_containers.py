"""gpreempt_trace.trace.containers: /proc/PID/cgroup of every container layout (issue 21), process facts, and
`--container` resolution. The cgroup texts are whole /proc/PID/cgroup files in the kernel's format
(v1: `hierarchy-id:controllers:path`, v2: `0::path`) as docker, podman, containerd and CRI-O leave them."""
from __future__ import annotations

import os

import pytest

from gpreempt_trace.trace import containers as C
from gpreempt_trace.doctor import checks as doctor
from gpreempt_trace.errors import GptError

ID = "3f4e1c0a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
ID2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
POD = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
PODU = POD.replace("-", "_")


def v1(path: str, systemd: str | None = None) -> str:
    """An EL8-style cgroup v1 file: every controller in the same container path."""
    return "\n".join([
        f"12:pids:{path}", f"11:memory:{path}", f"10:cpu,cpuacct:{path}", f"9:devices:{path}",
        f"8:blkio:{path}", f"7:freezer:{path}", f"6:net_cls,net_prio:{path}", f"5:cpuset:{path}",
        f"4:hugetlb:{path}", f"3:perf_event:{path}", f"2:rdma:/", f"1:name=systemd:{systemd or path}",
    ]) + "\n"


def v2(path: str) -> str:
    return f"0::{path}\n"


CASES = [
    # (name, /proc/PID/cgroup text, path, id, runtime)
    ("docker cgroupfs v1", v1(f"/docker/{ID}"), f"/docker/{ID}", ID, "docker"),
    ("docker cgroupfs v2", v2(f"/docker/{ID}"), f"/docker/{ID}", ID, "docker"),
    ("docker systemd v1", v1(f"/system.slice/docker-{ID}.scope"), f"/system.slice/docker-{ID}.scope", ID, "docker"),
    ("docker systemd v2", v2(f"/system.slice/docker-{ID}.scope"), f"/system.slice/docker-{ID}.scope", ID, "docker"),
    ("containerd systemd v2", v2(f"/system.slice/cri-containerd-{ID}.scope"), f"/system.slice/cri-containerd-{ID}.scope", ID, "containerd"),
    ("crio systemd v2", v2(f"/machine.slice/crio-{ID}.scope"), f"/machine.slice/crio-{ID}.scope", ID, "crio"),
    ("podman systemd v2 (rootful)", v2(f"/machine.slice/libpod-{ID}.scope"), f"/machine.slice/libpod-{ID}.scope", ID, "podman"),
    ("podman rootless v2",
     v2(f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"),
     f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container", ID, "podman"),
    ("podman cgroupfs v1", v1(f"/libpod_parent/libpod-{ID}"), f"/libpod_parent/libpod-{ID}", ID, "podman"),
    ("k8s systemd containerd v2",
     v2(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{PODU}.slice/cri-containerd-{ID}.scope"),
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{PODU}.slice/cri-containerd-{ID}.scope", ID, "containerd"),
    ("k8s systemd crio v1",
     v1(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{PODU}.slice/crio-{ID}.scope"),
     f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{PODU}.slice/crio-{ID}.scope", ID, "crio"),
    ("k8s systemd docker v1 (guaranteed pod)",
     v1(f"/kubepods.slice/kubepods-pod{PODU}.slice/docker-{ID}.scope"),
     f"/kubepods.slice/kubepods-pod{PODU}.slice/docker-{ID}.scope", ID, "docker"),
    ("k8s cgroupfs v1", v1(f"/kubepods/burstable/pod{POD}/{ID}"), f"/kubepods/burstable/pod{POD}/{ID}", ID, None),
    ("k8s cgroupfs v2 besteffort", v2(f"/kubepods/besteffort/pod{POD}/{ID}"), f"/kubepods/besteffort/pod{POD}/{ID}", ID, None),
    ("containerd systemd driver on v1 (slice:prefix:id)",
     v1(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{PODU}.slice:cri-containerd:{ID}"),
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{PODU}.slice:cri-containerd:{ID}", ID, "containerd"),
    ("docker in docker: the innermost", v2(f"/docker/{ID2}/docker/{ID}"), f"/docker/{ID2}/docker/{ID}", ID, "docker"),
    ("crio monitor (conmon) is not the container", v2(f"/machine.slice/crio-conmon-{ID}.scope"),
     f"/machine.slice/crio-conmon-{ID}.scope", None, None),
    ("host process v2", v2("/user.slice/user-0.slice/session-3.scope"), "/user.slice/user-0.slice/session-3.scope", None, None),
    ("host process v1 (systemd path)", v1("/user.slice", systemd="/user.slice/user-0.slice/session-3.scope"),
     "/user.slice/user-0.slice/session-3.scope", None, None),
    ("docker daemon itself", v2("/system.slice/docker.service"), "/system.slice/docker.service", None, None),
    ("hybrid v1 + empty v2, container on v1",
     "12:pids:/docker/" + ID + "\n1:name=systemd:/docker/" + ID + "\n0::/\n", f"/docker/{ID}", ID, "docker"),
    ("not 64 hex digits", v1("/process_api/4d85afd2e5e714930491badae1d4fd35"), "/process_api/4d85afd2e5e714930491badae1d4fd35", None, None),
]


@pytest.mark.parametrize("name,text,path,cid,rt", CASES, ids=[c[0] for c in CASES])
def test_parse_cgroup_layouts(name, text, path, cid, rt):
    assert C.parse_cgroup(text) == C.CgroupInfo(path, cid, rt)


def test_this_vm_cgroup_line():
    # this VM's own file (cgroup v1, hybrid): the systemd hierarchy's path, no container
    text = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/4d85afd2e5e714930491badae1d4fd35\n1:cpu:/\n0::/\n"
    assert C.parse_cgroup(text) == C.CgroupInfo("/", None, None)


def test_nspid_last_field():
    assert C.parse_nspid("Name:\tpython\nNSpid:\t4242\t7\t1\n") == 1
    assert C.parse_nspid("Name:\tpython\nNSpid:\t4242\n") == 4242
    assert C.parse_nspid("Name:\tx\n") is None


def fake_proc(tmp_path, tgid, cgroup=None, nspid=None, comm="model", pidns=None):
    d = tmp_path / str(tgid)
    (d / "ns").mkdir(parents=True)
    if cgroup is not None:
        (d / "cgroup").write_text(cgroup)
    if nspid is not None:
        (d / "status").write_text(f"Name:\t{comm}\nTgid:\t{tgid}\nNSpid:\t{tgid}\t{nspid}\n")
    if comm is not None:
        (d / "comm").write_text(comm + "\n")
    if pidns is not None:
        os.symlink(f"pid:[{pidns}]", d / "ns" / "pid")
    return d


def test_read_process_from_proc_files(tmp_path):
    fake_proc(tmp_path, 4242, v1(f"/docker/{ID}"), nspid=7, pidns=4026532890)
    f = C.read_process(4242, proc=str(tmp_path))
    assert f == C.ProcessFacts(4242, 7, 4026532890, f"/docker/{ID}", ID, "docker", "model")


def test_read_process_unreadable_is_none(tmp_path):
    fake_proc(tmp_path, 10, cgroup=None, nspid=None, comm=None)
    assert C.read_process(10, proc=str(tmp_path)) == C.ProcessFacts(10, None, None, None, None, None, None)
    assert C.read_process(99999, proc=str(tmp_path)) == C.ProcessFacts(99999, None, None, None, None, None, None)


def test_read_process_self_is_a_host_process():
    f = C.read_process(os.getpid())
    assert f.ns_tgid == os.getpid() and f.container_id is None
    assert f.pidns == os.stat("/proc/self/ns/pid").st_ino


@pytest.fixture
def procs(tmp_path):
    fake_proc(tmp_path, 100, v1(f"/docker/{ID}"), nspid=1)
    fake_proc(tmp_path, 101, v1(f"/docker/{ID}"), nspid=12)
    fake_proc(tmp_path, 200, v2(f"/system.slice/docker-{ID2}.scope"), nspid=1)
    fake_proc(tmp_path, 300, v1("/user.slice"), nspid=300)
    return str(tmp_path)


def test_resolve_full_id_and_prefix(procs):
    c = C.resolve_container(ID, proc=procs)
    assert (c.id, c.tgids, c.short) == (ID, frozenset({100, 101}), ID[:12])
    assert C.resolve_container(ID2[:12].upper(), proc=procs).tgids == frozenset({200})
    assert [c.id for c in C.resolve_containers([ID[:12], ID2], proc=procs)] == [ID, ID2]


def test_resolve_ambiguous_prefix(tmp_path):
    other = ID[:12] + "0" * 52
    fake_proc(tmp_path, 1, v2(f"/docker/{ID}"), nspid=1)
    fake_proc(tmp_path, 2, v2(f"/docker/{other}"), nspid=1)
    with pytest.raises(GptError) as e:
        C.resolve_container(ID[:12], proc=str(tmp_path))
    assert e.value.line() == (f"container id prefix {ID[:12]} matches 2 containers ({other[:16]}, {ID[:16]}): "
                              "give more hex digits of the id")


def test_resolve_unknown_id_and_short_prefix(procs, monkeypatch):
    monkeypatch.setattr(C, "_name_to_id", lambda name: None)
    with pytest.raises(GptError) as e:
        C.resolve_container("a" * 64, proc=procs)
    assert e.value.line() == (f"no running process is in container {'a' * 64}: check the id with `docker ps --no-trunc` "
                              "(a full id, or a prefix of at least 12 hex digits)")
    with pytest.raises(GptError) as e:
        C.resolve_container(ID[:8], proc=procs)
    assert e.value.line() == f"container id {ID[:8]} is too short (8 hex digits): give at least 12 hex digits of the id (docker ps --no-trunc)"


def test_resolve_name_through_cli(procs, monkeypatch):
    monkeypatch.setattr(C, "_name_to_id", lambda name: ID2 if name == "online-model" else None)
    assert C.resolve_container("online-model", proc=procs).tgids == frozenset({200})
    monkeypatch.setattr(C.shutil, "which", lambda name: None)
    with pytest.raises(GptError) as e:
        C.resolve_container("offline", proc=procs)
    assert e.value.line() == ("container 'offline' is not an id and no docker or podman CLI is here to resolve the name: "
                              "give the container id (12 to 64 hex digits)")


# ---- doctor: gpreempt-trace itself in a container -------------------------------------------------------

def test_doctor_on_the_host_says_not_in_a_container():
    assert [(c.name, c.ok, c.detail) for c in doctor.container_checks()] == [
        ("container", None, "not in a container (the host's pid namespace, no container cgroup)")]


def test_doctor_in_a_bare_container_names_every_gap_and_the_docker_run_flags(tmp_path):
    proc = tmp_path / "proc"
    fake_proc(proc, 1, v2(f"/system.slice/docker-{ID}.scope"), nspid=1, pidns=4026532999)
    (proc / "self").symlink_to("1")
    (proc / "1" / "status").write_text("Name:\tpython\nNSpid:\t1\nCapEff:\t00000000a80425fb\n")  # docker's default set
    root = tmp_path / "root"
    (root / "sys/kernel/debug").mkdir(parents=True)  # an empty mount point: debugfs not mounted
    got = [(c.name, c.ok, c.detail, c.hint) for c in doctor.container_checks(proc=str(proc), root=str(root), release="6.12.0")]
    hint = "run it on the host, or in a tools container: " + doctor.DOCKER_RUN
    assert got == [
        ("container", False, f"running in container {ID[:12]}", ""),
        ("container pid ns", False, "pid:[4026532999] is not the host's (pid:[4026531836]): the kernel's pids in every event "
                                    "and -p/--container/--pid name host processes this /proc does not show", hint),
        ("container mounts", False, f"missing: {root}/sys/kernel/debug (debugfs), {root}/sys/kernel/btf/vmlinux, {root}/lib/modules/6.12.0, "
                                    f"{root}/sys/kernel/tracing", hint),
        ("container caps", False, "missing CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF, CAP_SYS_PTRACE", hint + "; " + doctor.DOCKER_RUN_CAPS),
    ]
    assert "--pid=host --privileged" in doctor.DOCKER_RUN and "--device /dev/kfd" in doctor.DOCKER_RUN


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"), reason="needs root and unshare")
def test_doctor_in_a_new_pid_namespace_for_real():
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = ("import json; from gpreempt_trace.doctor.checks import container_checks; "
            "print(json.dumps([(c.name, c.ok, c.detail) for c in container_checks()]))")
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # root with every capability and the host's mounts: only the pid namespace is wrong, and a mount only
    # where the host itself lacks it (a fresh machine without debugfs mounted)
    got = json.loads(out.stdout)
    assert [(n, ok) for n, ok, _ in got[:2]] == [("container", False), ("container pid ns", False)], out.stderr
    debug = Path("/sys/kernel/debug")
    host_lacks = [] if debug.is_dir() and any(debug.iterdir()) else [f"{debug} (debugfs)"]
    host_lacks += [str(p) for p in (Path("/sys/kernel/btf/vmlinux"), Path("/lib/modules") / os.uname().release) if not p.exists()]
    host_lacks += [] if Path("/sys/kernel/tracing/events").is_dir() or Path("/sys/kernel/debug/tracing/events").is_dir() else ["/sys/kernel/tracing"]
    assert got[2:] == ([["container mounts", False, "missing: " + ", ".join(host_lacks)]] if host_lacks else []), out.stderr


@pytest.mark.parametrize("cmd, target", [
    (["docker", "exec", "-it", "-e", "A=1", "web", "python", "x.py"], "web"),
    (["/usr/bin/podman", "exec", "--user", "0", ID[:12], "ls"], ID[:12]),
    (["docker", "exec", "-d", "--", "web", "ls"], "web"),
    (["docker", "run", "web"], None),
    (["python", "exec", "x"], None),
    (["docker", "exec"], None),
])
def test_exec_target(cmd, target):
    assert C.exec_target(cmd) == target


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"), reason="needs root and unshare")
def test_container_outside_the_host_pid_namespace_is_one_line():
    import subprocess
    import sys

    code = ("from gpreempt_trace.trace.containers import resolve_container; from gpreempt_trace.errors import GptError\n"
            "try:\n    resolve_container('ab' * 6)\nexcept GptError as e:\n    print(e.line())")
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    ns = out.stdout.split("pid:[")[1].split("]")[0] if "pid:[" in out.stdout else "?"
    assert out.stdout.strip() == (f"--container abababababab: this runs in pid namespace pid:[{ns}], not the host's: run gpreempt-trace "
                                  "on the host, or in its container with docker run --pid=host (gpreempt-trace doctor)"), out.stderr
    assert ns != str(C.INIT_PIDNS_INO)
