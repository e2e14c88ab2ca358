"""Scheme B in the 6.12 lab: where `make lab-scheme-b` (kernel/check.sh with GPT_KERNEL_MODULE=1) leaves the
patched amdgpu.ko and its ptrace_may_access shim, and the guest script that loads them instead of Debian's
module when both are built (else Debian's amdgpu: scheme B is then refused with ENOTTY, in one line)."""
from __future__ import annotations

import os
from pathlib import Path

KERNEL_CACHE = Path(os.environ.get("GPT_KERNEL_CACHE") or Path.home() / ".cache" / "gpreempt-trace" / "kernel" / "6.12")
PATCHED_KO = KERNEL_CACHE / "linux-source-6.12" / "drivers" / "gpu" / "drm" / "amd" / "amdgpu" / "amdgpu.ko"
SHIM_KO = KERNEL_CACHE / "lab-shim" / "ptrace_may_access_shim.ko"
PATCHED_LINE = "lab: patched amdgpu (kernel/ series) loaded"

# amdgpu's dependencies, then the patched module and its shim where both are built, else Debian's amdgpu;
# run with Lab.run(..., modules=()) as the start of the guest's command
LOAD_AMDGPU = ("set -e\nmodprobe -a $(modinfo -F depends amdgpu | tr , ' ')\n"
               "if [ -f {shim} ] && [ -f {ko} ]; then insmod {shim} && insmod {ko} && echo '" + PATCHED_LINE + "'; "
               "else modprobe amdgpu; fi\nset +e\n")


def built() -> bool:
    """Are the patched module and its shim built here?"""
    return PATCHED_KO.exists() and SHIM_KO.exists()


def load_amdgpu() -> str:
    """LOAD_AMDGPU for this host's cache."""
    return LOAD_AMDGPU.format(shim=SHIM_KO, ko=PATCHED_KO)
