"""`Lab`: run shell commands or Python inside a QEMU guest booted with Debian's real 6.1 or 6.12 kernel.

    lab = Lab.ensure()                        # build or reuse the cached 6.1 lab
    lab = Lab.ensure(kernel="6.12")           # ... or the 6.12 one (Lab(kernel="6.12") is the same)
    res = lab.run("cat /proc/version")        # -> RunResult(rc, output, files, wall_s, ...)
    res = lab.python("import os; print(os.uname().release)")

In the guest the host `/` is mounted read-only at `/` (so the repo and its .venv work), the cwd is
the repo, `$OUT` is a read-write folder that comes back as `res.files`, /tmp /run /var/tmp are
tmpfs, tracefs/debugfs/bpffs are mounted and /lib/modules/<abi> is the cached module tree with
build/source links to matching kernel headers (for BCC). `modules` are modprobe'd first
(default: amdgpu, so /dev/kfd exists)."""
from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import build as _build
from .errors import LabBroken
from .initramfs import EXIT, GUEST_CTL, INIT_FAIL, READY
from .qemu import Boot, boot, qemu_argv

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODULES = ("amdgpu",)
BOOT_TIMEOUT_S = 120  # a guest whose init has not reached READY by then is hung: killed, retried once
BOOT_RETRIES = 1
TIMEOUT_RC = 124


@dataclass
class RunResult:
    rc: int  # the command's exit status (124 when the guest ran past timeout_s)
    output: str  # the command's stdout + stderr
    files: Path  # host folder the guest saw as $OUT (read-write)
    wall_s: float  # QEMU start to exit, boot included
    timed_out: bool = False
    boot_hangs: int = 0  # boots killed before the command started (TCG hang), then retried
    console: str = field(default="", repr=False)  # the guest's serial console (kernel messages)

    @property
    def ok(self) -> bool:
        return self.rc == 0


_TMP_DIRS: list[str] = []


@atexit.register
def _cleanup_tmp() -> None:
    if os.environ.get("GPT_LAB_KEEP"):
        return
    for d in _TMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


def _keep(work: Path) -> None:
    """Keep a failed run's folder (console log, ctl files) for inspection (GPT_LAB_KEEP_FAILED=0: don't)."""
    if str(work) in _TMP_DIRS and os.environ.get("GPT_LAB_KEEP_FAILED") != "0":
        _TMP_DIRS.remove(str(work))


class Lab:
    """A built lab (kernel + modules + initramfs in the cache). Each `run` boots a fresh guest.
    `Lab(kernel="6.12")` builds (or reuses) the lab of that series; `Lab(build)` wraps a built one."""

    _cached: "Lab | None" = None  # the default (6.1) lab, kept for callers that reset it
    _by_kernel: "dict[str, Lab]" = {}

    def __init__(self, build: _build.LabBuild | None = None, mem_mb: int = 2048, cpus: int | None = None,
                 kernel: str | None = None):
        if build is None:
            build = _build.ensure_built(kernel=kernel or _build.DEFAULT_KERNEL)
        elif kernel is not None and kernel != build.series:
            raise LabBroken(f"Lab(kernel={kernel!r}) given a {build.series} build")
        self.build = build
        self.mem_mb = mem_mb
        # one vCPU: under TCG it boots and loads amdgpu with ~25% less host CPU than two (measured)
        self.cpus = cpus or int(os.environ.get("GPT_LAB_CPUS") or 1)

    @classmethod
    def ensure(cls, rebuild: bool = False, log=None, kernel: str = _build.DEFAULT_KERNEL) -> "Lab":
        """The cached lab of series `kernel` ("6.1" or "6.12"; built on first use).
        LabUnavailable: no QEMU here; LabBroken: build failed or unknown kernel."""
        _build.check_kernel(kernel)
        default = kernel == _build.DEFAULT_KERNEL
        lab = cls._cached if default else cls._by_kernel.get(kernel)
        if lab is None or rebuild:
            lab = cls(_build.ensure_built(rebuild=rebuild, log=log or (lambda msg: None), kernel=kernel))
            if default:
                cls._cached = lab
            else:
                cls._by_kernel[kernel] = lab
        return lab

    @property
    def kernel(self) -> str:
        """The kernel ABI the guest runs (e.g. 6.12.117+deb12-amd64)."""
        return self.build.abi

    @property
    def series(self) -> str:
        """The kernel series: "6.1" or "6.12"."""
        return self.build.series

    def run(self, command: str, timeout_s: float = 120, modules=DEFAULT_MODULES, cwd: str | Path = REPO,
            out_dir: str | Path | None = None, env: dict[str, str] | None = None, cpus: int | None = None) -> RunResult:
        """Boot a guest, run `command` (bash) as root in `cwd`, power off. The whole run (boot
        included) is limited to `timeout_s`. Raises LabBroken when the guest dies before the
        command finished (panic, init failure) or a module in `modules` fails to load."""
        work = Path(tempfile.mkdtemp(prefix="gpt-lab-"))
        _TMP_DIRS.append(str(work))
        ctl = work / "ctl"
        ctl.mkdir()
        files = Path(out_dir) if out_dir else work / "out"
        files.mkdir(parents=True, exist_ok=True)
        os.chmod(files, 0o777)
        (ctl / "user.sh").write_text(command + "\n")
        (ctl / "cmd.sh").write_text(_cmd_script(cwd, modules, env or {}))
        left_s, hung = float(timeout_s), []
        while True:
            console = work / f"console-{len(hung)}.log" if hung else work / "console.log"
            argv = qemu_argv(self.build, ctl, files, console, "cmd.sh", self.mem_mb, cpus or self.cpus)
            b = boot(argv, console, left_s, boot_timeout_s=BOOT_TIMEOUT_S)
            left_s -= b.wall_s
            if not b.boot_hung:
                break
            hung.append(b.wall_s)
            for name in ("output", "rc", "init-error", "modprobe.log", "modprobe-failed"):
                (ctl / name).unlink(missing_ok=True)
            if len(hung) > BOOT_RETRIES or left_s < BOOT_TIMEOUT_S / 3:
                b.timed_out = True  # no time left for another boot: report it as a timeout
                break
        b.wall_s = timeout_s - left_s
        try:
            res = _result(b, ctl, files, timeout_s)
        except LabBroken as e:
            _keep(work)
            raise LabBroken(e.what, f"{e.hint}; guest log kept at {work}") from None
        if hung:
            res.boot_hangs = len(hung)
        if res.timed_out or hung:
            _keep(work)
            res.output += f"[lab] boot hung {len(hung)}x (killed, retried); logs kept at {work}\n" if hung else ""
        return res

    def shell(self, modules=DEFAULT_MODULES, cwd: str | Path = REPO) -> int:
        """Boot a guest with an interactive bash on this terminal; returns its exit status."""
        work = Path(tempfile.mkdtemp(prefix="gpt-lab-"))
        _TMP_DIRS.append(str(work))
        ctl, files = work / "ctl", work / "out"
        ctl.mkdir()
        files.mkdir()
        (ctl / "user.sh").write_text("echo '[lab] guest shell: exit or Ctrl-D powers off; $OUT is the results folder'\nexec /bin/bash -i\n")
        (ctl / "cmd.sh").write_text(_cmd_script(cwd, modules, {}))
        argv = qemu_argv(self.build, ctl, files, None, "cmd.sh", self.mem_mb, self.cpus)
        boot(argv, None, timeout_s=24 * 3600)
        rc = ctl / "rc"
        return int(rc.read_text()) if rc.exists() and rc.read_text().strip() else 1

    def python(self, source: str, timeout_s: float = 120, **kw) -> RunResult:
        """Run Python `source` in the guest with the repo's venv interpreter."""
        kw["env"] = {"PYTHONUNBUFFERED": "1", **(kw.get("env") or {})}
        return self.run(f"exec {shlex.quote(_venv_python())} - <<'GPT_LAB_PY_EOF'\n{source}\nGPT_LAB_PY_EOF", timeout_s, **kw)


def _venv_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _cmd_script(cwd, modules, env: dict[str, str]) -> str:
    lines = ["# written by gpreempt_trace.lab: load modules, then run user.sh in the repo"]
    for k, v in env.items():
        lines.append(f"export {k}={shlex.quote(str(v))}")
    for m in modules or ():
        q = shlex.quote(m)
        lines.append(f"modprobe {q} >>{GUEST_CTL}/modprobe.log 2>&1 || {{ echo {q} >{GUEST_CTL}/modprobe-failed; exit 1; }}")
    msg = shlex.quote(f"lab: no such folder in the guest: {cwd}")
    lines.append(f"cd {shlex.quote(str(cwd))} || {{ echo {msg} >&2; exit 125; }}")
    lines.append(f"exec /bin/bash {GUEST_CTL}/user.sh")
    return "\n".join(lines) + "\n"


def _tail(text: str, n: int = 1) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _result(b: Boot, ctl: Path, files: Path, timeout_s: float) -> RunResult:
    output = (ctl / "output").read_text(errors="replace") if (ctl / "output").exists() else ""
    if (ctl / "modprobe-failed").exists():
        mod = (ctl / "modprobe-failed").read_text().strip()
        log = (ctl / "modprobe.log").read_text(errors="replace") if (ctl / "modprobe.log").exists() else ""
        raise LabBroken(f"modprobe {mod} failed in the lab guest", _tail(log) or "no output")
    rc_file = ctl / "rc"
    if rc_file.exists() and rc_file.read_text().strip():
        return RunResult(rc=int(rc_file.read_text()), output=output, files=files, wall_s=b.wall_s, console=b.console)
    if b.timed_out:
        stage = "the command" if READY in b.console else "boot"
        note = f"\n[lab] guest ran past {timeout_s:g} s (during {stage}) and was killed\n"
        return RunResult(rc=TIMEOUT_RC, output=output + note, files=files, wall_s=b.wall_s, timed_out=True,
                         console=b.console)
    raise LabBroken(_death_reason(b, ctl), f"console tail: {_tail(b.console, 3)[-300:]}")


def _death_reason(b: Boot, ctl: Path) -> str:
    if (ctl / "init-error").exists():
        return "lab init failed: " + (ctl / "init-error").read_text().strip()
    m = re.search(rf"{INIT_FAIL} (.*)", b.console)
    if m:
        return "lab init failed: " + m.group(1).strip()
    m = re.search(r"Kernel panic - not syncing: (.*)", b.console)
    if m:
        return "the lab guest kernel panicked: " + m.group(1).strip()
    if b.qemu_rc not in (0, None):
        return f"QEMU exited with status {b.qemu_rc}"
    if EXIT in b.console:
        return "the lab guest exited but its status was not written back"
    return "the lab guest powered off before the command finished"
