"""A fake container for the recorder tests (issue 21): a process in its own pid namespace (unshare --pid
--fork --mount-proc) that puts itself into container-layout cgroups of this VM's cgroup v1 hierarchies.

    python tests/testing/fake_container.py CGROUP_DIR [CGROUP_DIR...] -- N_INIT N_CHILD

Run as pid 1 of a new pid namespace (FakeContainer below starts it so): joins every CGROUP_DIR (writes
"0" to cgroup.procs, i.e. itself), prints "ready" and waits for a line on stdin. Then it
starts a new process in the container (a child that issues N_CHILD rounds of ioctl_calls.SEQUENCE on
/dev/null: a process started after recording began), issues N_INIT rounds itself, prints
"done <child's pid in the namespace>" and waits for another line; then it exits, and the kernel ends
every process of the namespace.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))


def inner(dirs: list[str], n_init: int, n_child: int) -> int:
    import ioctl_calls as W

    for d in dirs:
        Path(d, "cgroup.procs").write_text("0\n")
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":  # "exit" or EOF before the start
        return 0
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # started in the container now; stays alive until the namespace ends
        os.close(r)
        W.issue("/dev/null", n_child)
        os.write(w, b"x")
        while True:
            time.sleep(3600)
    os.close(w)
    W.issue("/dev/null", n_init)
    os.read(r, 1)  # the child's calls are done too
    print(f"done {child}", flush=True)
    sys.stdin.readline()
    return 0


class FakeContainer:
    """cgroups made for one container id in the given layout ("cgroupfs": <hier>/docker/<id>,
    "systemd": <hier>/system.slice/docker-<id>.scope) on the pids and name=systemd v1 hierarchies,
    and the unshare'd process in them. close() ends the process and removes the cgroups."""

    HIERARCHIES = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/systemd")

    def __init__(self, cid: str, layout: str, n_init: int, n_child: int):
        self.cid = cid
        rel = f"docker/{cid}" if layout == "cgroupfs" else f"system.slice/docker-{cid}.scope"
        self.dirs = [Path(h) / rel for h in self.HIERARCHIES if Path(h).is_dir()]
        self.made: list[Path] = []
        for d in self.dirs:
            for p in reversed([d, *d.parents]):
                if not p.exists():
                    p.mkdir()
                    self.made.append(p)
        self.proc = subprocess.Popen(
            [shutil.which("unshare"), "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, str(HERE),
             *map(str, self.dirs), "--", str(n_init), str(n_child)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "ready", f"fake container did not start: {line}"
        (self.init_pid,) = self.host_pids()  # host pid of the namespace's pid 1 (the only process in it yet)
        self.child_ns_pid: int | None = None

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "done", f"fake container failed: {line}"
        self.child_ns_pid = int(line[1])

    def host_pids(self) -> set[int]:
        return {int(p) for d in self.dirs[:1] for p in (d / "cgroup.procs").read_text().split()}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for d in self.dirs:  # the namespace's processes are gone once its pid 1 exited; wait for the reaping
            end = time.monotonic() + 10
            while (d / "cgroup.procs").exists() and (d / "cgroup.procs").read_text().strip() and time.monotonic() < end:
                time.sleep(0.05)
        for p in reversed(self.made):  # a cgroup whose last task is still being torn down is busy for a moment
            end = time.monotonic() + 10
            while p.exists():
                try:
                    p.rmdir()
                except OSError:
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.05)


if __name__ == "__main__":
    a = sys.argv[1:]
    k = a.index("--")
    sys.exit(inner(a[:k], int(a[k + 1]), int(a[k + 2])))
