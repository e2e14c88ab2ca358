"""`record` and containers on this VM (cgroup v1, issue 21): fake containers = processes in their own pid
namespace (unshare) in cgroupfs-layout (`<hier>/docker/<id>`) and systemd-layout
(`<hier>/system.slice/docker-<id>.scope`) cgroups, recorded on the ioctl tracepoint path on /dev/null:
attribution in the processes view, --container filtering (processes started later included, and one that
enters the container from outside as docker exec does), and the unknown-id error. Exact counts."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from testing import ioctl_calls as W
from testing.recording import wait_recording
from testing.fake_container import FakeContainer

from gpreempt_trace import api

REPO = Path(__file__).resolve().parent.parent
GPT = [sys.executable, "-m", "gpreempt_trace.cli.main"]
CALLS = str(REPO / "tests" / "testing" / "ioctl_calls.py")
# a host process: waits for a line, issues argv[1] rounds on /dev/null, prints its result, stays until the next line
HOST = ("import sys; sys.path.insert(0, {!r}); import ioctl_calls; sys.stdin.readline(); ioctl_calls.main(['/dev/null', sys.argv[1]]); "
        "sys.stdout.flush(); sys.stdin.readline()").format(str(Path(CALLS).parent))
L = len(W.SEQUENCE)  # calls per round
A = "a1" * 32  # cgroupfs layout
B = "b2" * 32  # systemd layout

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="recording and cgroups need root"),
    pytest.mark.skipif(not Path("/sys/fs/cgroup/pids/cgroup.procs").exists() or shutil.which("unshare") is None,
                       reason="needs cgroup v1 pids hierarchy and unshare"),
]


def _record(trace: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*GPT, "record", "-o", str(trace), "--probes", "ioctl", "--kfd-path", "/dev/null", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(rec: subprocess.Popen) -> str:
    rec.send_signal(signal.SIGINT)
    out, err = rec.communicate(timeout=60)
    assert rec.returncode == 0, err
    return err


def _host(rounds: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOST, str(rounds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _go(p: subprocess.Popen) -> None:
    p.stdin.write("go\n")
    p.stdin.flush()
    assert json.loads(p.stdout.readline())["calls"] > 0


@pytest.fixture
def containers():
    made: list[FakeContainer] = []

    def make(cid, layout, n_init, n_child):
        made.append(FakeContainer(cid, layout, n_init, n_child))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _enter(c: FakeContainer, rounds: int) -> subprocess.Popen:
    """What docker exec does: setns into the container's pid namespace, fork, join its cgroups, exec;
    the process is no descendant of any process of the container. It stays alive until the container ends."""
    code = "\n".join([
        "import sys, time",
        f"sys.path.insert(0, {str(Path(CALLS).parent)!r})",
        *(f"open({str(d / 'cgroup.procs')!r}, 'w').write('0')" for d in c.dirs),
        "import ioctl_calls",
        f"ioctl_calls.main(['/dev/null', '{rounds}'])",
        "sys.stdout.flush()",
        "time.sleep(600)",
    ])
    return subprocess.Popen(["nsenter", "-t", str(c.init_pid), "-p", "--", sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_container_filter_records_that_container_only(tmp_path, containers):
    a = containers(A, "cgroupfs", 2, 3)
    b = containers(B, "systemd", 1, 1)
    host = _host(4)
    trace = tmp_path / "t"
    rec = _record(trace, "--container", A[:12])
    entered = None
    try:
        wait_recording(trace, rec)
        a.go(), b.go()
        _go(host)
        entered = _enter(a, 5)
        assert json.loads(entered.stdout.readline())["calls"] == 5 * L
    finally:
        _stop(rec)
        host.communicate("exit\n", timeout=60)
        if entered is not None:
            entered.kill()
            entered.wait()
    con = api.connect([str(trace)])
    per = con.sql("SELECT p.ns_tgid, p.container_id, p.container_runtime, p.container, p.cgroup, count(*) FROM events e "
                  "LEFT JOIN processes p USING (run_id, tgid) GROUP BY ALL ORDER BY p.ns_tgid").fetchall()
    assert per == [
        (1, A, "docker", A[:12], f"/docker/{A}", 2 * L),  # the container's init (pid 1 inside)
        (2, A, "docker", A[:12], f"/docker/{A}", 3 * L),  # started in it after recording began
        (3, A, "docker", A[:12], f"/docker/{A}", 5 * L),  # entered from outside (setns + fork), as docker exec does
    ]
    assert con.sql("SELECT count(*), count(DISTINCT pidns) FROM processes").fetchall() == [(3, 1)]
    assert con.sql("SELECT tgid FROM processes WHERE ns_tgid = 1").fetchall() == [(a.init_pid,)]
    meta = json.loads((trace / "meta.json").read_text())["recorder"]["containers"]
    assert [c["id"] for c in meta["containers"]] == [A] and meta["containers"][0]["tgids_at_start"] == [a.init_pid]
    assert meta["follow_pidns"] is True and meta["shares_host_pidns"] is False


def test_attribution_per_container_and_host(tmp_path, containers):
    a = containers(A, "cgroupfs", 1, 1)
    b = containers(B, "systemd", 1, 2)
    host = _host(3)
    trace = tmp_path / "t"
    rec = _record(trace, "-p", str(host.pid), "--container", A, "--container", B[:20])
    try:
        wait_recording(trace, rec)
        a.go(), b.go()
        _go(host)
    finally:
        _stop(rec)
        host.communicate("exit\n", timeout=60)
    con = api.connect([str(trace)])
    assert con.sql("SELECT p.container, p.container_runtime, count(DISTINCT e.tgid), count(*) FROM events e "
                   "JOIN processes p USING (run_id, tgid) GROUP BY ALL ORDER BY 1 NULLS LAST").fetchall() == [
        (A[:12], "docker", 2, 2 * L), (B[:12], "docker", 2, 3 * L), (None, None, 1, 3 * L)]
    assert con.execute("SELECT cgroup, ns_tgid FROM processes WHERE container = ? ORDER BY ns_tgid", [B[:12]]).fetchall() == [
        (f"/system.slice/docker-{B}.scope", 1), (f"/system.slice/docker-{B}.scope", 2)]
    # the host process: its pid inside its (the host's) namespace is its pid; NULL container, a read cgroup
    assert con.sql("SELECT tgid = ns_tgid, container_id, cgroup IS NOT NULL FROM processes WHERE container IS NULL").fetchall() == [
        (True, None, True)]


def test_unknown_container_is_one_line_and_leaves_no_trace(tmp_path, containers):
    containers(A, "cgroupfs", 1, 1)
    trace = tmp_path / "t"
    for spec, line in [
        ("c" * 64, f"Error: no running process is in container {'c' * 64}: check the id with `docker ps --no-trunc` "
                   "(a full id, or a prefix of at least 12 hex digits)"),
        (A[:8], f"Error: container id {A[:8]} is too short (8 hex digits): give at least 12 hex digits of the id (docker ps --no-trunc)"),
    ]:
        res = subprocess.run([*GPT, "record", "-o", str(trace), "--probes", "ioctl", "--kfd-path", "/dev/null", "--container", spec,
                              "--duration", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert (res.returncode, res.stderr.strip().splitlines()) == (1, [line])
        assert not trace.exists()


DAEMON = """
import os, subprocess, sys
fifo = sys.argv[1]
while True:
    with open(fifo) as f:
        for line in f:
            target, rounds, done = line.split()
            code = sys.argv[2].replace('ROUNDS', rounds).replace('DONE', done)
            subprocess.Popen(['nsenter', '-t', target, '-p', '--', sys.executable, '-c', code])
"""


def test_record_docker_exec_follows_the_process_inside(tmp_path, containers):
    """`record -- docker exec C CMD`: docker's CLI asks its daemon, runc enters C and forks; the command
    inside is no descendant of the CLI. Here a fake `docker` on PATH asks a fake daemon (started before
    the recording, so no descendant of the recorder either), which setns()es into the fake container's
    pid namespace and forks, as runc does."""
    a = containers(A, "cgroupfs", 1, 1)
    fifo = tmp_path / "dockerd.fifo"
    os.mkfifo(fifo)
    done, release = tmp_path / "exec.done", tmp_path / "release"
    inner = "\n".join([
        "import sys, time",
        f"sys.path.insert(0, {str(Path(CALLS).parent)!r})",
        *(f"open({str(d / 'cgroup.procs')!r}, 'w').write('0')" for d in a.dirs),
        "import io, contextlib, ioctl_calls",
        "buf = io.StringIO()",
        "with contextlib.redirect_stdout(buf):",
        "    ioctl_calls.main(['/dev/null', 'ROUNDS'])",
        "open('DONE', 'w').write(buf.getvalue())",
        "time.sleep(600)",
    ])
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(fifo), inner])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(f"""#!/bin/sh
# fake docker CLI: `docker exec CONTAINER ROUNDS` -> the fake daemon runs it in the container
[ "$1" = exec ] || exit 2
echo "{a.init_pid} $3 {done}" > {fifo}
while [ ! -s {done} ] || [ ! -e {release} ]; do sleep 0.05; done
cat {done}
""")
    (bindir / "docker").chmod(0o755)
    trace = tmp_path / "t"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    rec = subprocess.Popen([*GPT, "record", "-o", str(trace), "--probes", "ioctl", "--kfd-path", "/dev/null", "--",
                            "docker", "exec", A[:12], "4"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_recording(trace, rec)
        a.go()  # the container's pid 1 (running before: not recorded) and a child it starts now (recorded)
        release.write_text("")  # the fake docker returns once its command is done and this exists
        out, err = rec.communicate(timeout=120)  # ends when the fake docker returns
        assert rec.returncode == 0, err
        assert json.loads(done.read_text())["calls"] == 4 * L
    finally:
        if rec.poll() is None:
            rec.kill()
        daemon.kill()
        daemon.wait()
    con = api.connect([str(trace)])
    # pid 2 or 3 inside, whichever started first: the child of the container's pid 1 (L calls), the exec'ed command (4 L)
    assert con.sql("SELECT p.container, count(*) FROM events e JOIN processes p USING (run_id, tgid) "
                   "GROUP BY p.container, e.tgid ORDER BY 2").fetchall() == [(A[:12], L), (A[:12], 4 * L)]
    assert con.sql("SELECT list_sort(list(ns_tgid)) FROM processes WHERE container IS NOT NULL").fetchall() == [([2, 3],)]
    # the launched docker CLI (the launcher's workload markers name it): a host process
    assert con.sql("SELECT count(*), any_value(container_id), any_value(cgroup) IS NOT NULL FROM processes "
                   "WHERE container IS NULL").fetchall() == [(1, None, True)]
    meta = json.loads((trace / "meta.json").read_text())["recorder"]["containers"]
    assert meta["exec_container"]["id"] == A and meta["containers"] == [] and meta["follow_pidns"] is True
