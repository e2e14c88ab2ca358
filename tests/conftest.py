"""Shared fixtures. The lab (QEMU guest with Debian's real kernels) plugs in from gpreempt_trace.lab.

Real kernel data (BTF, kallsyms taken from a guest running Debian's kernel with the real amdgpu module)
lives in tests/fixtures/kernels/<abi>/, xz-compressed, with SHA256SUMS of the uncompressed files; it is
unpacked once per session and checked (see tests/fixtures/kernels/README.md).
"""
from __future__ import annotations

import hashlib
import lzma
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KERNEL_FIXTURES = REPO / "tests" / "fixtures" / "kernels"


def unpack_kernel_fixture(abi: str, dest: Path) -> Path:
    """tests/fixtures/kernels/ABI → DEST/ABI with every .xz file decompressed and SHA256SUMS checked."""
    src = KERNEL_FIXTURES / abi
    if not (src / "SHA256SUMS").is_file():
        raise FileNotFoundError(f"{src}/SHA256SUMS is missing: kernel fixture {abi!r} is not in the repo")
    out = dest / abi
    for f in src.rglob("*"):
        if f.is_file() and f.name != "SHA256SUMS":
            rel = f.relative_to(src)
            target = out / (rel.with_suffix("") if f.suffix == ".xz" else rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            if f.suffix == ".xz":
                target.write_bytes(lzma.decompress(f.read_bytes()))
            else:
                shutil.copyfile(f, target)
    for line in (src / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        got = hashlib.sha256((out / name).read_bytes()).hexdigest()
        if got != digest:
            raise ValueError(f"kernel fixture {abi}/{name}: sha256 {got} != {digest} in SHA256SUMS")
    return out


@pytest.fixture(scope="session")
def kernel_fixture(tmp_path_factory):
    """kernel_fixture(abi) → the unpacked fixture folder (btf/vmlinux, btf/amdgpu, kallsyms, ...)."""
    root = tmp_path_factory.mktemp("kernels")
    done: dict[str, Path] = {}

    def get(abi: str) -> Path:
        if abi not in done:
            done[abi] = unpack_kernel_fixture(abi, root)
        return done[abi]

    return get

pytest_plugins = ["gpreempt_trace.lab.pytest_plugin"]  # fixture `lab`, marker `lab`


@pytest.fixture(scope="session")
def kfd_fixture(kernel_fixture) -> Path:
    """Debian 6.1.0-56-amd64 (KFD ioctl 1.11): BTF, kallsyms, btf_layouts.txt, facts.txt."""
    return kernel_fixture("6.1.0-56-amd64")
