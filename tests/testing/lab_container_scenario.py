"""Run inside the 6.12 lab guest (real KFD 1.17, no GPU, cgroup v2): scheme A driven by `--container`.

    python tests/testing/lab_container_scenario.py OUTDIR

The target (lab_preempt_scenarios.TARGET: opens /dev/kfd, RUNTIME_ENABLE) runs as pid 1 of its own pid
namespace (unshare) in a systemd-layout docker cgroup of the v2 hierarchy (mounted here). Then:
a wrong container id (one line, exit 1, the target not traced); `preempt run --container <12 hex>`
(the one process with /dev/kfd open) and `--container <id> --ns-pid 1`, made-up queue ids 1 and 7 with
--unchecked-ids (the KFD writes them back INVALID: there are no GPU queues); markers and the processes
view. Prints one line `RESULT {json}`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
GPT = [str(REPO / ".venv" / "bin" / "python"), "-m", "gpreempt_trace.cli.main"]
CID = "e7" * 32
CG = Path("/sys/fs/cgroup")


def status_field(pid: int, name: str) -> str:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith(name + ":"):
            return ln.split(":", 1)[1].strip()
    return ""


def gpt(*args: str, timeout_s: float = 900) -> dict:
    t = time.monotonic()
    r = subprocess.run([*GPT, *args], capture_output=True, text=True, timeout=timeout_s)
    return {"rc": r.returncode, "stderr": r.stderr.strip().splitlines()[-12:], "s": round(time.monotonic() - t, 1)}


def record_by_container(work: Path, host: int, target: subprocess.Popen, log: Path) -> dict:
    """`record --container <12 hex>` (KFD probes + ioctl path) while the controller suspends/resumes the target
    and the target toggles its runtime (SIGUSR2): only the container's process is recorded, attributed."""
    import signal

    from lab_preempt_scenarios import wait_for

    from gpreempt_trace import api

    res: dict = {}
    t3 = work / "t3"
    reclog = open(work / "record.log", "w")
    t = time.monotonic()
    rec = subprocess.Popen([*GPT, "record", "-o", str(t3), "--probes", "kfd,ioctl", "--container", CID[:12]],
                           stdout=reclog, stderr=subprocess.STDOUT)

    def recording() -> bool:
        try:
            return bool(json.loads((t3 / "meta.json").read_text()).get("recorder", {}).get("recording_since_ns"))
        except (OSError, ValueError):
            return False

    res["rec_started"] = wait_for(lambda: recording() or rec.poll() is not None, 900, "record")
    res["rec_start_s"] = round(time.monotonic() - t, 1)
    res["rec_run"] = gpt("preempt", "run", "--container", CID[:12], "--hold", "50", "--queues", "1,7", "--unchecked-ids", "-o", str(t3))
    n = sum(1 for ln in log.read_text(errors="replace").splitlines() if ln.startswith("runtime"))
    os.kill(host, signal.SIGUSR2)  # the target's RUNTIME_ENABLE disable + enable: its own KFD ioctls (not `target`: that is unshare)
    res["rec_toggled"] = wait_for(lambda: sum(1 for ln in log.read_text(errors="replace").splitlines() if ln.startswith("runtime")) >= n + 2,
                                  60, "toggle")
    time.sleep(1)
    rec.send_signal(signal.SIGINT)
    res["rec_rc"] = rec.wait(600)
    res["rec_log"] = (work / "record.log").read_text(errors="replace").strip().splitlines()[-3:]
    con = api.connect([str(t3)])
    res["rec_events"] = con.sql("SELECT event, coalesce(owner_tgid, tgid) AS who, count(*) FROM events GROUP BY ALL ORDER BY ALL").fetchall()
    res["rec_processes"] = con.sql("SELECT p.tgid, p.ns_tgid, p.container_id, p.container_runtime, p.cgroup FROM processes p "
                                   "WHERE p.tgid IN (SELECT DISTINCT coalesce(owner_tgid, tgid) FROM events) ORDER BY 1").fetchall()
    res["rec_containers_meta"] = json.loads((t3 / "meta.json").read_text())["recorder"].get("containers")
    return res


def main() -> int:
    from lab_preempt_scenarios import TARGET, wait_for

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"kernel": os.uname().release}
    if not (CG / "cgroup.controllers").exists():
        subprocess.run(["mount", "-t", "cgroup2", "none", str(CG)], check=True)
    res["cgroup2"] = (CG / "cgroup.controllers").exists()
    cg = CG / "system.slice" / f"docker-{CID}.scope"
    cg.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpt-ct-"))  # guest-local
    script, quit_file, log = work / "target.py", work / "target.quit", out / "target.log"
    script.write_text(TARGET)
    wrapper = (f"import runpy, sys; open({str(cg / 'cgroup.procs')!r}, 'w').write('0'); "
               f"sys.argv = [{str(script)!r}, {str(REPO)!r}, {str(quit_file)!r}]; runpy.run_path(sys.argv[0], run_name='__main__')")
    target = subprocess.Popen([shutil.which("unshare"), "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, "-c", wrapper],
                              stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        res["target_ready"] = wait_for(lambda: "ready" in log.read_text(errors="replace") or target.poll() is not None, 120, "target")
        pids = [int(p) for p in (cg / "cgroup.procs").read_text().split()]
        res["cgroup_procs"] = len(pids)
        host = pids[0]
        res["host_pid"], res["nspid"] = host, status_field(host, "NSpid")
        res["proc_cgroup"] = Path(f"/proc/{host}/cgroup").read_text().strip()
        res["wrong"] = gpt("preempt", "run", "--container", "f" * 64, "--hold", "5", "--queues", "1,7", "--unchecked-ids")
        res["tracer_after_wrong"] = status_field(host, "TracerPid")
        t1, t2 = work / "t1", work / "t2"
        res["by_container"] = gpt("preempt", "run", "--container", CID[:12], "--hold", "50", "--repeat", "2", "--queues", "1,7",
                                  "--unchecked-ids", "-o", str(t1))
        res["by_ns_pid"] = gpt("preempt", "run", "--container", CID, "--ns-pid", "1", "--hold", "50", "--queues", "1,7",
                               "--unchecked-ids", "-o", str(t2))
        res["tracer_after"] = status_field(host, "TracerPid")
        if "--record" in sys.argv:
            res.update(record_by_container(work, host, target, log))
        from gpreempt_trace import api

        for name, t in (("t1", t1), ("t2", t2)):
            if not (t / "meta.json").exists():
                res[f"{name}_markers"] = res[f"{name}_processes"] = None
                continue
            con = api.connect([str(t)])
            res[f"{name}_markers"] = con.sql("SELECT kind, target_tgid, container_id, label, queue_ids FROM markers "
                                             "WHERE source = 'controller' ORDER BY ts_ns, kind").fetchall()
            res[f"{name}_processes"] = con.sql("SELECT tgid, ns_tgid, container_id, container_runtime, cgroup FROM processes "
                                               "ORDER BY tgid").fetchall()
    finally:
        quit_file.write_text("")
        try:
            target.wait(60)
        except subprocess.TimeoutExpired:
            target.kill()
            target.wait()
        res["target_rc"] = target.returncode
        res["target_log_tail"] = log.read_text(errors="replace").strip().splitlines()[-3:]
        end = time.monotonic() + 10
        while cg.exists() and time.monotonic() < end:
            try:
                cg.rmdir()
                (CG / "system.slice").rmdir()
            except OSError:
                time.sleep(0.1)
        res["cgroup_removed"] = not cg.exists()
    print("RESULT " + json.dumps(res, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
