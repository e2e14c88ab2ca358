#!/usr/bin/env bash
# Install everything gpreempt-trace needs on a fresh Debian 12 machine (idempotent).
# - apt: BCC (python3-bpfcc), bpftrace, kernel headers, the QEMU lab, the kernel build check
# - BCC's /lib/modules/$(uname -r)/{build,source} links
# - a virtualenv at .venv with the package installed editable and bcc linked in
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(python3-bpfcc bpfcc-tools bpftrace linux-headers-amd64 python3-venv gcc make
          qemu-system-x86 busybox-static cpio kmod xz-utils zstd
          linux-source-6.12 linux-headers-6.12.117+deb12-amd64 flex bison libelf-dev libssl-dev bc dwarves rsync python3-ply
          chromium)  # headless, for the report's browser test (tests/test_report_browser.py)

need=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "setup: apt-get install ${need[*]}"
  if [ "$(id -u)" != 0 ]; then echo "setup: apt packages missing and not root: run 'sudo make setup'" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# BCC looks for kernel headers at /lib/modules/$(uname -r)/{build,source}. Debian 12 ships 6.1
# headers; their struct offsets are wrong on other kernels, so the tracers read kernel structs
# only through BTF-resolved offsets, never through these headers.
kdir=/lib/modules/$(uname -r)
# Always the headers of Debian's default kernel (what linux-headers-amd64 depends on, 6.1), never
# whichever is newest: the 6.12 headers are installed too, for the kernel series and the lab.
abi=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 2>/dev/null | grep -o 'linux-headers-[^ ,]*-amd64' | head -n1 | sed 's/^linux-headers-//; s/-amd64$//')
hdr=""; common=""
if [ -n "$abi" ] && [ -d "/usr/src/linux-headers-$abi-amd64" ]; then
  hdr=/usr/src/linux-headers-$abi-amd64
  common=/usr/src/linux-headers-$abi-common
fi
if [ -n "$hdr" ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$kdir"
  [ -e "$kdir/build" ] || ln -sfn "$hdr" "$kdir/build"
  [ -e "$kdir/source" ] || ln -sfn "$common" "$kdir/source"
fi

PY=${PYTHON:-/usr/bin/python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -e "$site/bcc" ] || ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -e "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  # the CPU torch wheel for the workloads (pip finds it on this machine's disk when present)
  .venv/bin/pip install -q --disable-pip-version-check 'torch==2.13.0' 2>/dev/null \
    || .venv/bin/pip install -q --disable-pip-version-check 'torch' \
    || echo "setup: torch not installed; workloads will say so" >&2
  touch "$stamp"
fi
echo "setup: ok (.venv/bin/gpreempt-trace)"
