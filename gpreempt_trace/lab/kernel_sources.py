"""Debian's source and headers of the kernels the project has real BTF of (tests/fixtures/kernels/<abi>),
at their exact package versions, fetched with `apt-get download`, checked against pinned sha256 sums
and unpacked into a cache: what `btf build` needs to rebuild a fixture's amdgpu BTF from sources.

    python -m gpreempt_trace.lab.kernel_sources [ABI ...]     (make kernel-sources)

Each fixture folder has a `packages.sha256` (`<sha256>  <package>=<version>`): linux-source-<series>
(only drivers/gpu/drm/amd is unpacked), linux-headers-<abi>, its -common and linux-kbuild (the headers
package's `Depends`). The -amd64 headers' Makefile includes the -common one by absolute path
(/usr/src/...); in the cache it is pointed at the unpacked -common instead (a packaging detail, not a
layout input)."""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import GptError

_log = logging.getLogger(__name__)

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "kernels"
AMD = "drivers/gpu/drm/amd"


def cache_dir() -> Path:
    return Path(os.environ.get("GPT_KERNEL_SOURCES_CACHE") or Path.home() / ".cache" / "gpreempt-trace" / "kernel-sources")


@dataclass(frozen=True)
class KernelSources:
    abi: str
    source: Path  # a kernel tree holding drivers/gpu/drm/amd only
    kbuild: Path  # the unpacked linux-headers-<abi>
    packages: tuple[str, ...]  # package=version, as pinned


def pins(abi: str, fixtures: Path = FIXTURES) -> list[tuple[str, str, str]]:
    """(sha256, package, version) pinned for a fixture ABI."""
    f = fixtures / abi / "packages.sha256"
    try:
        lines = f.read_text().splitlines()
    except OSError:
        raise GptError(f"no pinned packages for {abi} ({f})", f"choose from {', '.join(sorted(p.parent.name for p in fixtures.glob('*/packages.sha256')))}") from None
    out = []
    for ln in lines:
        if ln.strip() and not ln.startswith("#"):
            digest, spec = ln.split()
            pkg, ver = spec.split("=", 1)
            out.append((digest, pkg, ver))
    return out


def _deb_name(pkg: str, ver: str, debs: Path) -> Path | None:
    # apt-get download names files <pkg>_<version with ':' as %3a>_<arch>.deb
    v = ver.replace(":", "%3a")
    hits = sorted(debs.glob(f"{pkg}_{v}_*.deb"))
    return hits[0] if hits else None


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(abi: str, fixtures: Path = FIXTURES, log=_log.info) -> KernelSources:
    """Download (once), verify and unpack the pinned packages of a fixture ABI. `log(line)`: progress (default: logged)."""
    return fetch_packages(abi, pins(abi, fixtures), log)


def packages_for(abi: str, version: str) -> list[tuple[str | None, str, str]]:
    """(None, package, version) of any Debian kernel ABI at `version` (unpinned: e.g. the lab's newest 6.12):
    its linux-source, its headers and what they depend on (-common, linux-kbuild)."""
    series = re.match(r"^(\d+\.\d+)", abi).group(1)
    r = subprocess.run(["apt-cache", "show", f"linux-headers-{abi}={version}"], capture_output=True, text=True)
    dep = next((ln for ln in r.stdout.splitlines() if ln.startswith("Depends:")), "")
    names = re.findall(r"(linux-(?:headers-[^ ,]+-common|kbuild-[^ ,(]+))", dep)
    if r.returncode != 0 or len(names) != 2:
        raise GptError(f"apt has no linux-headers-{abi}={version}", "run `apt-get update`")
    return [(None, f"linux-source-{series}", version), (None, f"linux-headers-{abi}", version),
            *[(None, n, version) for n in names]]


def fetch_packages(abi: str, pinned: list[tuple[str | None, str, str]], log=_log.info) -> KernelSources:
    """Download (once), verify (where a sha256 is pinned) and unpack packages into the cache."""
    root = cache_dir()
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    os.chmod(debs, 0o755)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dest = root / abi
        stamp = dest / ".unpacked"
        key = "\n".join(f"{d} {p}={v}" for d, p, v in pinned)
        hdr = dest / "root" / "usr" / "src" / f"linux-headers-{abi}"
        if stamp.exists() and stamp.read_text() == key and (hdr / "include/generated/autoconf.h").is_file():
            return _result(abi, dest, pinned)
        need = [(d, p, v) for d, p, v in pinned if _deb_name(p, v, debs) is None]
        if need:
            log(f"kernel-sources: apt-get download {' '.join(f'{p}={v}' for _, p, v in need)}")
            r = subprocess.run(["apt-get", "download", *[f"{p}={v}" for _, p, v in need]], cwd=debs, capture_output=True, text=True)
            if r.returncode != 0:
                msg = next((ln for ln in r.stderr.splitlines() if ln.startswith("E:")), r.stderr.strip()[-200:])
                raise GptError(f"cannot download the {abi} packages: {msg}", "run `apt-get update` (Debian's archive must be reachable)")
        for d, p, v in pinned:
            deb = _deb_name(p, v, debs)
            got = _sha256(deb) if deb else None
            if d is not None and got != d:
                if deb:
                    deb.unlink()
                raise GptError(f"{p}={v}: sha256 {got} is not the pinned {d}", "the archive served another file; run again, or re-pin after checking it")
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
        (dest / "root").mkdir(parents=True)
        for _, p, v in pinned:
            deb = _deb_name(p, v, debs)
            if p.startswith("linux-source-"):
                _unpack_amd(deb, dest / "src", log)
            else:
                subprocess.run(["dpkg-deb", "-x", str(deb), str(dest / "root")], check=True)
        hdr = dest / "root" / "usr" / "src" / f"linux-headers-{abi}"
        mk = hdr / "Makefile"
        mk.write_text(re.sub(r"^include /usr/src/", f"include {dest / 'root' / 'usr' / 'src'}/", mk.read_text(), flags=re.M))
        stamp.write_text(key)
        return _result(abi, dest, pinned)


def _unpack_amd(deb: Path, out: Path, log) -> None:
    """drivers/gpu/drm/amd of the linux-source package's tarball -> out/<tree>/drivers/gpu/drm/amd."""
    out.mkdir(parents=True, exist_ok=True)
    log(f"kernel-sources: unpacking {AMD} from {deb.name}")
    script = ('dpkg-deb --fsys-tarfile "$1" | tar -xO --wildcards "./usr/src/linux-source-*.tar.xz" '
              f'| tar -xJ -C "$2" --wildcards "*/{AMD}/*"')
    r = subprocess.run(["bash", "-c", "set -o pipefail; " + script, "unpack", str(deb), str(out)], capture_output=True, text=True)
    if r.returncode != 0 or not any(out.glob(f"*/{AMD}")):
        raise GptError(f"cannot unpack {AMD} from {deb}: {r.stderr.strip()[-200:]}", "delete the .deb from the cache and run again")


def _result(abi: str, dest: Path, pinned) -> KernelSources:
    trees = [p for p in (dest / "src").iterdir() if (p / AMD).is_dir()]
    return KernelSources(abi, trees[0], dest / "root" / "usr" / "src" / f"linux-headers-{abi}", tuple(f"{p}={v}" for _, p, v in pinned))


def main(argv: list[str]) -> int:
    abis = argv or sorted(p.parent.name for p in FIXTURES.glob("*/packages.sha256"))
    try:
        for abi in abis:
            ks = fetch(abi, log=print)  # the command line (python -m): progress on stdout
            print(f"kernel-sources: {abi}: source {ks.source}, kbuild {ks.kbuild}")
    except GptError as e:
        print(f"kernel-sources: {e.line()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
