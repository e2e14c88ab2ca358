"""Which container a process runs in, and which processes a container holds (issue 21).

Kernel-side pids are host pids; a model usually runs in a container (docker, podman, containerd under
Kubernetes, CRI-O). Everything here is read from the host's /proc:

    parse_cgroup(text)            /proc/PID/cgroup (v1 `N:controllers:/path` and v2 `0::/path` lines)
                                  -> CgroupInfo(path, container_id, runtime)
    read_process(tgid)            -> ProcessFacts: ns_tgid (last NSpid field), pidns (inode of
                                  /proc/PID/ns/pid), cgroup, container_id, container_runtime, comm;
                                  None for anything that cannot be read (an exited process keeps
                                  None: never a guess)
    resolve_container(spec)       `--container ID|NAME` -> Container(id, runtime, tgids)

Container ids are 64 hex digits. Recognised layouts (cgroup v1 and v2): cgroupfs `/docker/<id>`,
`/libpod_parent/libpod-<id>`, systemd `docker-<id>.scope`, `cri-containerd-<id>.scope`,
`crio-<id>.scope`, `libpod-<id>.scope`, and the same under Kubernetes `kubepods` paths (systemd
`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/<runtime>-<id>.scope`,
cgroupfs `/kubepods/burstable/pod<uid>/<id>`, where the runtime is not in the path: NULL). Monitor
scopes (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) are not the container: NULL. Nested
containers (docker in docker): the innermost id.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ..errors import GptError

PROC = "/proc"
RUNTIMES = ("docker", "containerd", "podman", "crio")
SHORT_ID = 12  # hex digits of a short container id (what `docker ps` shows)

_HEX64 = r"[0-9a-f]{64}"
# (regex over one path component, runtime) in the order tried; the id is group 1
_COMPONENT_RULES: tuple[tuple[re.Pattern, Optional[str]], ...] = (
    (re.compile(rf"^docker-({_HEX64})\.scope$"), "docker"),
    (re.compile(rf"^cri-containerd-({_HEX64})\.scope$"), "containerd"),
    (re.compile(rf"^crio-({_HEX64})\.scope$"), "crio"),
    (re.compile(rf"^libpod-({_HEX64})\.scope$"), "podman"),
    (re.compile(rf"^libpod-({_HEX64})$"), "podman"),  # podman, cgroupfs manager (/libpod_parent/libpod-<id>)
    (re.compile(rf"^cri-containerd:({_HEX64})$"), "containerd"),  # containerd's systemd driver on v1 (slice:cri-containerd:<id>)
)
_BARE_ID = re.compile(rf"^({_HEX64})$")
# the component before a bare 64-hex one names its runtime (cgroupfs layouts)
_BARE_PARENT_RUNTIME = {"docker": "docker", "libpod_parent": "podman"}


@dataclass(frozen=True)
class CgroupInfo:
    path: Optional[str]  # the process's cgroup path (the v2 path, else the v1 hierarchy that names the container)
    container_id: Optional[str]  # 64 lowercase hex digits; None for a host process
    runtime: Optional[str]  # docker, containerd, podman, crio; None when unknown or not in a container


@dataclass(frozen=True)
class ProcessFacts:
    tgid: int
    ns_tgid: Optional[int]  # its pid in its own pid namespace (last NSpid field)
    pidns: Optional[int]  # inode of its pid namespace
    cgroup: Optional[str]
    container_id: Optional[str]
    container_runtime: Optional[str]
    comm: Optional[str]

    def as_row(self) -> dict:
        return {"tgid": self.tgid, "ns_tgid": self.ns_tgid, "pidns": self.pidns, "cgroup": self.cgroup,
                "container_id": self.container_id, "container_runtime": self.container_runtime, "comm": self.comm}


def container_in_path(path: str) -> tuple[Optional[str], Optional[str]]:
    """(container id, runtime) named by one cgroup path, or (None, None). The innermost id wins."""
    parts = [p for p in path.split("/") if p]
    found: tuple[Optional[str], Optional[str]] = (None, None)
    for i, comp in enumerate(parts):
        # containerd's systemd driver on cgroup v1 writes "<slice>:cri-containerd:<id>" as one component
        tail = comp.rsplit(":", 2)
        cand = [comp] if len(tail) < 3 else [comp, f"{tail[1]}:{tail[2]}"]
        hit = None
        for c in cand:
            for rx, rt in _COMPONENT_RULES:
                m = rx.match(c)
                if m:
                    hit = (m.group(1), rt)
                    break
            if hit:
                break
        if hit is None:
            m = _BARE_ID.match(comp)
            if m:
                parent = parts[i - 1] if i else ""
                hit = (m.group(1), _BARE_PARENT_RUNTIME.get(parent))  # kubepods/.../pod<uid>/<id>: runtime unknown
        if hit:
            found = hit
    return found


# v1 hierarchies in the order their path is preferred when none names a container
_V1_PREFERENCE = ("name=systemd", "memory", "cpu,cpuacct", "cpu", "pids", "devices")


def parse_cgroup(text: str) -> CgroupInfo:
    """Parse /proc/PID/cgroup. A v2 line `0::/path` and v1 lines `N:controllers:/path`; the container is
    the one any hierarchy names (v2 first); the path is that hierarchy's, else the v2 path, else the
    systemd/memory/cpu v1 path."""
    v2: Optional[str] = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, ctrls, path = parts
        if ctrls == "":
            v2 = path
        else:
            v1[ctrls] = path
    ordered: list[str] = ([v2] if v2 is not None else [])
    pref = [c for c in _V1_PREFERENCE if c in v1] + sorted(c for c in v1 if c not in _V1_PREFERENCE)
    ordered += [v1[c] for c in pref]
    for path in ordered:
        cid, rt = container_in_path(path)
        if cid:
            return CgroupInfo(path, cid, rt)
    if v2 is not None and (v2 != "/" or not v1):
        return CgroupInfo(v2, None, None)
    if pref:
        return CgroupInfo(v1[pref[0]], None, None)
    return CgroupInfo(v2, None, None)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def parse_nspid(status: str) -> Optional[int]:
    """The last NSpid field of /proc/PID/status (the pid in its innermost pid namespace)."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            f = line.split()[1:]
            return int(f[-1]) if f and f[-1].isdigit() else None
    return None


def pidns_inode(tgid: int, proc: str = PROC) -> Optional[int]:
    try:
        link = os.readlink(f"{proc}/{tgid}/ns/pid")
    except OSError:
        return None
    m = re.fullmatch(r"pid:\[(\d+)\]", link)
    return int(m.group(1)) if m else None


def read_process(tgid: int, proc: str = PROC) -> ProcessFacts:
    """What /proc says about `tgid` now; None for each fact that cannot be read."""
    status = _read(f"{proc}/{tgid}/status")
    cg_text = _read(f"{proc}/{tgid}/cgroup")
    comm = _read(f"{proc}/{tgid}/comm")
    cg = parse_cgroup(cg_text) if cg_text is not None else CgroupInfo(None, None, None)
    return ProcessFacts(tgid, parse_nspid(status) if status is not None else None, pidns_inode(tgid, proc),
                        cg.path, cg.container_id, cg.runtime, comm.rstrip("\n") if comm is not None else None)


def all_tgids(proc: str = PROC) -> list[int]:
    try:
        return sorted(int(n) for n in os.listdir(proc) if n.isdigit())
    except OSError:
        return []


def container_of(tgid: int, proc: str = PROC) -> Optional[str]:
    text = _read(f"{proc}/{tgid}/cgroup")
    return parse_cgroup(text).container_id if text is not None else None


def processes_by_container(proc: str = PROC) -> dict[str, set[int]]:
    """{container id: host tgids} of every running process that is in a container."""
    out: dict[str, set[int]] = {}
    for t in all_tgids(proc):
        cid = container_of(t, proc)
        if cid:
            out.setdefault(cid, set()).add(t)
    return out


@dataclass(frozen=True)
class Container:
    id: str  # 64 hex
    spec: str  # what the user gave
    tgids: frozenset[int]  # host tgids in it when resolved

    @property
    def short(self) -> str:
        return self.id[:SHORT_ID]


_ID_SPEC = re.compile(r"[0-9a-fA-F]{12,64}")


def _name_to_id(name: str) -> Optional[str]:
    """A container name (or short id) through the docker or podman CLI, or None (no CLI / no match)."""
    for cli in ("docker", "podman"):
        exe = shutil.which(cli)
        if exe is None:
            continue
        try:
            r = subprocess.run([exe, "inspect", "--type", "container", "--format", "{{.Id}}", name],
                               capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        out = r.stdout.strip().lower()
        if r.returncode == 0 and re.fullmatch(_HEX64, out):
            return out
    return None


def resolve_container(spec: str, proc: str = PROC, by_container: Optional[dict[str, set[int]]] = None) -> Container:
    """`--container SPEC`: a full id, a unique prefix of >= 12 hex digits, or a name (docker/podman CLI).
    The container must hold a running process (else GptError naming it)."""
    spec = spec.strip()
    if not spec:
        raise GptError("--container is empty", "give a container id (docker ps --no-trunc) or a name")
    if proc == PROC:
        own = pidns_inode(os.getpid())
        if own not in (None, INIT_PIDNS_INO):  # this /proc shows one pid namespace's processes, the kernel's pids are the host's
            raise GptError(f"--container {spec}: this runs in pid namespace pid:[{own}], not the host's",
                           "run gpreempt-trace on the host, or in its container with docker run --pid=host (gpreempt-trace doctor)")
    running = processes_by_container(proc) if by_container is None else by_container
    if _ID_SPEC.fullmatch(spec):
        low = spec.lower()
        hits = sorted(c for c in running if c.startswith(low))
        if len(hits) > 1:
            raise GptError(f"container id prefix {spec} matches {len(hits)} containers ({', '.join(h[:SHORT_ID + 4] for h in hits)})",
                           "give more hex digits of the id")
        if hits:
            return Container(hits[0], spec, frozenset(running[hits[0]]))
    cid = _name_to_id(spec)
    if cid is not None:
        if cid in running:
            return Container(cid, spec, frozenset(running[cid]))
        raise GptError(f"container {spec} ({cid[:SHORT_ID]}) has no running process on this host",
                       "start it (docker start) or check the name with docker ps")
    if _ID_SPEC.fullmatch(spec):
        raise GptError(f"no running process is in container {spec}",
                       "check the id with `docker ps --no-trunc` (a full id, or a prefix of at least 12 hex digits)")
    if re.fullmatch(r"[0-9a-fA-F]+", spec):
        raise GptError(f"container id {spec} is too short ({len(spec)} hex digits)", "give at least 12 hex digits of the id (docker ps --no-trunc)")
    if shutil.which("docker") is None and shutil.which("podman") is None:
        raise GptError(f"container {spec!r} is not an id and no docker or podman CLI is here to resolve the name",
                       "give the container id (12 to 64 hex digits)")
    raise GptError(f"no running container named {spec!r}", "check the name with `docker ps` (or give its id)")


def resolve_containers(specs: Iterable[str], proc: str = PROC) -> list[Container]:
    specs = list(specs)
    if not specs:
        return []
    running = processes_by_container(proc)
    return [resolve_container(s, proc, running) for s in specs]


def short_id(cid: Optional[str]) -> Optional[str]:
    return cid[:SHORT_ID] if cid else None


# ---- record --container: which tgids the recorder's filter holds ------------------------------------------

# struct paths the recorder reads in sched_process_fork to follow processes that enter a container's pid
# namespace from outside (docker exec: runc setns()es, then forks): current->nsproxy->pid_ns_for_children->ns.inum
PIDNS_WALK = {
    "task_struct__nsproxy": "task_struct.nsproxy",
    "nsproxy__pid_ns_for_children": "nsproxy.pid_ns_for_children",
    "pid_namespace__ns_inum": "pid_namespace.ns.inum",
}
EXEC_CLIS = ("docker", "podman", "nerdctl")
# options of `docker exec` / `podman exec` that take a value (the container is the first other word)
_EXEC_VALUE_OPTS = {"-e", "--env", "--env-file", "-u", "--user", "-w", "--workdir", "--detach-keys", "--preserve-fds"}


def pidns_offsets(btf_path: str | os.PathLike) -> tuple[Optional[dict[str, int]], Optional[str]]:
    """BTF offsets of PIDNS_WALK, or (None, why)."""
    from ..recorder.btf import field_offsets

    return field_offsets(btf_path, PIDNS_WALK)


def exec_target(cmd: Iterable[str]) -> Optional[str]:
    """The container of `docker|podman|nerdctl exec [OPTS] CONTAINER CMD...`, else None."""
    cmd = list(cmd)
    if len(cmd) < 3 or os.path.basename(cmd[0]) not in EXEC_CLIS or cmd[1] != "exec":
        return None
    i = 2
    while i < len(cmd):
        w = cmd[i]
        if w == "--":
            return cmd[i + 1] if i + 1 < len(cmd) else None
        if w.startswith("-"):
            if w in _EXEC_VALUE_OPTS:
                i += 1
            i += 1
            continue
        return w
    return None


def own_pidns(proc: str = PROC) -> Optional[int]:
    return pidns_inode(os.getpid(), proc) if proc == PROC else pidns_inode(1, proc)


class ContainerFilter:
    """`record --container SPEC...` (and `record -- docker exec C ...`): resolved before the trace exists
    (an unknown id is a GptError), the host tgids to put into the recorder's filter, the pid namespaces
    whose new processes the kernel side follows, and a rescan for processes that entered a container
    another way (run every RESCAN_S by the record loop)."""

    RESCAN_S = 0.5

    def __init__(self, specs: Iterable[str], cmd: Iterable[str] = (), proc: str = PROC):
        self.proc = proc
        running = processes_by_container(proc)
        self.containers = [resolve_container(s, proc, running) for s in specs]
        self.exec_container: Optional[Container] = None
        target = exec_target(cmd)
        if target is not None:  # the process docker exec starts is no descendant of the CLI: follow the container's new ones
            self.exec_container = resolve_container(target, proc, running)
        ids = {c.id for c in self.containers}
        self.ids = ids | ({self.exec_container.id} if self.exec_container else set())
        self.tgids: set[int] = set().union(*(c.tgids for c in self.containers)) if self.containers else set()
        # a process present at the start of a `docker exec` record is not the command's: only newer ones
        self.exclude: set[int] = set(self.exec_container.tgids - self.tgids) if self.exec_container else set()
        host = own_pidns(proc)
        ns = {pidns_inode(t, proc) for c in (self.containers + ([self.exec_container] if self.exec_container else [])) for t in c.tgids}
        ns.discard(None)
        self.host_pidns = host
        self.shares_host_pidns = host in ns  # --pid=host containers: their new processes are found by the rescan only
        ns.discard(host)
        self.pidns: set[int] = ns

    def rescan(self) -> set[int]:
        """Processes now in the containers that the filter does not hold yet."""
        new = set()
        for t in all_tgids(self.proc):
            if t in self.tgids or t in self.exclude:
                continue
            if container_of(t, self.proc) in self.ids:
                new.add(t)
        self.tgids |= new
        return new

    def meta(self) -> dict:
        def one(c: Container) -> dict:
            return {"id": c.id, "given": c.spec, "tgids_at_start": sorted(c.tgids)}

        return {"containers": [one(c) for c in self.containers],
                "exec_container": one(self.exec_container) if self.exec_container else None,
                "pidns": sorted(self.pidns), "shares_host_pidns": self.shares_host_pidns}


def uses_kfd(pid: int, kfd_path: str = "/dev/kfd") -> bool:
    """The process has the KFD device open (an fd link) or mapped (/proc/PID/maps)."""
    real = os.path.realpath(kfd_path)
    try:
        st = os.stat(kfd_path)
        rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) else None
    except OSError:
        rdev = None
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in (kfd_path, real):
                    return True
                # the same device opened in another mount namespace (a container's /dev): the link's text
                # differs, the character device does not
                if rdev is not None:
                    s = os.stat(f"/proc/{pid}/fd/{fd}")
                    if stat.S_ISCHR(s.st_mode) and s.st_rdev == rdev:
                        return True
            except OSError:
                continue
        with open(f"/proc/{pid}/maps") as f:
            return any(line.rstrip().endswith((" " + kfd_path, " " + real)) for line in f)
    except OSError:
        return False


# ---- preempt --container ID [--ns-pid N]: the controller's target ----------------------------------------

def ns_pid_of(tgid: int, proc: str = PROC) -> Optional[int]:
    status = _read(f"{proc}/{tgid}/status")
    return parse_nspid(status) if status is not None else None


def resolve_target(spec: str, ns_pid: Optional[int] = None, kfd_path: str = "/dev/kfd", proc: str = PROC) -> tuple[int, Container]:
    """The host pid of the controller's target in container `spec`: the process whose in-container pid
    is `ns_pid`, else the one process of the container with `kfd_path` open. KFD's DBG_TRAP takes the
    pid in the CALLER's pid namespace: a controller on the host must name the host pid."""
    c = resolve_container(spec, proc)

    def desc(t: int) -> str:
        comm = (_read(f"{proc}/{t}/comm") or "?").strip()
        return f"host pid {t} (pid {ns_pid_of(t, proc)} in the container, {comm})"

    if ns_pid is not None:
        hits = sorted(t for t in c.tgids if ns_pid_of(t, proc) == ns_pid)
        if not hits:
            inside = sorted(p for p in (ns_pid_of(t, proc) for t in c.tgids) if p is not None)
            raise GptError(f"container {c.short} has no process with pid {ns_pid} (its pids: {', '.join(map(str, inside[:20]))})",
                           "give --ns-pid as `docker top` or `ps` inside the container shows it")
        if len(hits) > 1:  # pid namespaces nested inside the container
            raise GptError(f"container {c.short} has {len(hits)} processes with pid {ns_pid}: {'; '.join(desc(t) for t in hits)}",
                           "give the host pid with --pid")
        return hits[0], c
    hits = sorted(t for t in c.tgids if uses_kfd(t, kfd_path))
    if not hits:
        raise GptError(f"no process of container {c.short} has {kfd_path} open ({len(c.tgids)} processes in it)",
                       "start the model first, or name the process with --ns-pid N")
    if len(hits) > 1:
        raise GptError(f"{len(hits)} processes of container {c.short} have {kfd_path} open: {'; '.join(desc(t) for t in hits)}",
                       "pick one with --ns-pid N (its pid in the container) or --pid HOSTPID")
    return hits[0], c


# ---- doctor: is gpreempt-trace itself running in a container? -------------------------------------------

INIT_PIDNS_INO = 0xEFFFFFFC  # PROC_PID_INIT_INO: the inode of the initial (host) pid namespace, on every kernel
