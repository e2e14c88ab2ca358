"""Start one lab guest under QEMU (TCG), wait for it with a hard time limit, and always kill it.

Every QEMU this process starts is killed by pid on every exit path: the `finally` of `boot`, an
atexit hook, and PR_SET_PDEATHSIG (the kernel kills QEMU if the Python process dies first)."""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .build import QEMU, LabBuild
from .errors import LabBroken
from .initramfs import READY

QBOOT = "/usr/share/qemu/qboot.rom"
_LIVE: set[int] = set()  # pids of QEMUs this process started and has not reaped yet


def _kill_live() -> None:
    for pid in list(_LIVE):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        _LIVE.discard(pid)


atexit.register(_kill_live)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Boot:
    """How one guest ended."""

    exited: bool  # QEMU exited by itself (the guest powered off or the kernel panicked)
    timed_out: bool
    boot_hung: bool  # killed because the init never reported READY within boot_timeout_s
    qemu_rc: int | None
    wall_s: float
    console: str


def qemu_argv(build: LabBuild, ctl: Path, out: Path, console: Path | None, run: str, mem_mb: int, cpus: int) -> list[str]:
    """QEMU's argv; console=None puts the serial console on this terminal (interactive)."""
    append = " ".join([
        "console=ttyS0", "quiet", "loglevel=3", "panic=-1", "mitigations=off", "nokaslr", "cryptomgr.notests",
        "tsc=reliable", "i8042.noaux", "i8042.nokbd", "random.trust_cpu=on",
        f"gpt.abi={build.abi}", f"gpt.moddir={build.moddir}", f"gpt.run={run}", f"gpt.tty={int(console is None)}",
    ])
    serial = ["-serial", f"file:{console}"] if console else ["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"]
    share = "security_model=none,multidevs=remap"
    firmware = ["-bios", QBOOT] if os.path.exists(QBOOT) else []  # minimal firmware: boots faster than SeaBIOS
    return [
        QEMU, "-machine", "q35", "-accel", "tcg", *firmware, "-cpu", "max", "-m", str(mem_mb), "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-monitor", "none",
        *serial,
        "-kernel", build.vmlinux or build.vmlinuz, "-initrd", build.initrd, "-append", append,
        "-fsdev", f"local,id=hostroot,path=/,readonly=on,{share}",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=gptctl,path={ctl},{share}",
        "-device", "virtio-9p-pci,fsdev=gptctl,mount_tag=gptctl",
        "-fsdev", f"local,id=gptout,path={out},{share}",
        "-device", "virtio-9p-pci,fsdev=gptout,mount_tag=gptout",
    ]


def boot(argv: list[str], console: Path | None, timeout_s: float, boot_timeout_s: float | None = None) -> Boot:
    """Run QEMU until it exits or `timeout_s` passes; QEMU never outlives this call. When the init
    has not reported READY on the console after `boot_timeout_s`, QEMU is killed (boot_hung).
    console=None: interactive, QEMU's stdio is this terminal."""
    t0 = time.monotonic()
    qemu_log = console.with_name("qemu.log") if console else Path(os.devnull)
    interactive = console is None
    with open(qemu_log, "wb") as err:
        try:
            proc = subprocess.Popen(argv, stdin=None if interactive else subprocess.DEVNULL,
                                    stdout=None if interactive else err, stderr=err,
                                    start_new_session=not interactive, preexec_fn=_die_with_parent)
        except OSError as e:
            raise LabBroken(f"cannot start {argv[0]}", str(e)) from None
    _LIVE.add(proc.pid)
    timed_out = boot_hung = ready = False
    try:
        while True:
            try:
                proc.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - t0
            if elapsed >= timeout_s:
                timed_out = True
                break
            if console is not None and not ready and boot_timeout_s is not None:
                ready = console.exists() and READY in console.read_text(errors="replace")
                if not ready and elapsed >= boot_timeout_s:
                    boot_hung = True
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _LIVE.discard(proc.pid)
    wall_s = time.monotonic() - t0
    text = console.read_text(errors="replace") if console and console.exists() else ""
    if not timed_out and not boot_hung and proc.returncode != 0 and console:
        text += "\n[qemu] " + qemu_log.read_text(errors="replace")
    return Boot(exited=not (timed_out or boot_hung), timed_out=timed_out, boot_hung=boot_hung,
                qemu_rc=proc.returncode, wall_s=wall_s, console=text)
