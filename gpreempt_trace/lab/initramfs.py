"""The lab's initramfs: a static busybox, the virtio/9p modules, and an /init that mounts the host
`/` read-only (9p), a control folder and a results folder read-write, chroots into the host tree,
runs the command script named on the kernel command line, records its exit status and powers off.
"""
from __future__ import annotations

import gzip
import lzma
import os
import shutil
import subprocess
from pathlib import Path

from .errors import LabBroken, LabUnavailable

# Modules the init loads before it can mount anything (dependencies are resolved by modprobe; a
# built-in one, such as virtio_pci on 6.12, is skipped).
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")

# Mount points inside the guest (all on tmpfs under /run, which the init creates).
GUEST_CTL = "/run/gpt-ctl"  # control share: cmd.sh, user.sh, output, rc
GUEST_OUT = "/run/gpt-out"  # results share: $OUT

# Console sentinels the host looks for.
READY = "GPT-LAB-READY"
EXIT = "GPT-LAB-EXIT"
INIT_FAIL = "GPT-LAB-INIT-FAIL"

INIT_SH = r"""#!/bin/busybox sh
# PID 1 of the gpreempt-trace lab guest. Kernel args: gpt.abi= gpt.moddir= (host path of the
# kernel's module tree), gpt.run= (script, relative to the control share).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ABI=""; MODDIR=""; RUN=""; TTY=0
for a in $(cat /proc/cmdline); do
  case "$a" in
    gpt.abi=*) ABI=${a#gpt.abi=} ;;
    gpt.moddir=*) MODDIR=${a#gpt.moddir=} ;;
    gpt.run=*) RUN=${a#gpt.run=} ;;
    gpt.tty=*) TTY=${a#gpt.tty=} ;;
  esac
done
R=/newroot
fail() { echo "@INIT_FAIL@ $*"; [ -d $R@CTL@ ] && echo "$*" > $R@CTL@/init-error; sync; reboot -f; sleep 5; }
while read m; do insmod /mods/$m || fail "insmod $m"; done < /mods/order
O9P=trans=virtio,version=9p2000.L,msize=262144
mkdir -p $R
mount -t 9p -o $O9P,ro,cache=loose hostroot $R || fail "mount host / over 9p"
mount -t proc proc $R/proc && mount -t sysfs sys $R/sys && mount -t devtmpfs dev $R/dev || fail "mount proc/sys/dev"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts; mount -t tmpfs shm $R/dev/shm
# /tmp and /var/tmp: the host's files stay visible (read-only lower layer), writes stay in the guest
mkdir -p /ovl && mount -t tmpfs -o mode=755 ovl /ovl
for d in /tmp /var/tmp; do
  [ -d $R$d ] || continue
  u=/ovl/${d#/}; mkdir -p $u/upper $u/work; chmod 1777 $u/upper
  mount -t overlay -o lowerdir=$R$d,upperdir=$u/upper,workdir=$u/work overlay $R$d \
    || mount -t tmpfs -o mode=1777 tmp $R$d
done
mount -t tmpfs -o mode=755 run $R/run
mkdir -p $R@CTL@ $R@OUT@
mount -t 9p -o $O9P gptctl $R@CTL@ || fail "mount control share"
mount -t 9p -o $O9P gptout $R@OUT@ || fail "mount results share"
mount -t tracefs tracefs $R/sys/kernel/tracing || fail "mount tracefs"
mount -t debugfs debugfs $R/sys/kernel/debug || fail "mount debugfs"
mount -t bpf bpf $R/sys/fs/bpf
# the host's /lib/modules is read-only and lacks this kernel: put the cached module tree there
mount -t tmpfs -o mode=755 modules $R/lib/modules || fail "mount /lib/modules"
mkdir -p $R/lib/modules/$ABI
mount -o bind $R$MODDIR $R/lib/modules/$ABI || fail "bind $MODDIR"
echo "@READY@"
ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp LANG=C.UTF-8 OUT=@OUT@ GPT_LAB=1 PYTHONDONTWRITEBYTECODE=1"
if [ "$TTY" = 1 ]; then  # interactive: the command owns the serial console
  setsid cttyhack chroot $R /usr/bin/env -i $ENV TERM=linux /bin/sh @CTL@/$RUN
else
  chroot $R /usr/bin/env -i $ENV TERM=dumb /bin/sh @CTL@/$RUN </dev/null >$R@CTL@/output 2>&1
fi
rc=$?
echo $rc > $R@CTL@/rc
sync
echo "@EXIT@ $rc"
reboot -f
sleep 5
"""


def init_script() -> str:
    return (INIT_SH.replace("@INIT_FAIL@", INIT_FAIL).replace("@READY@", READY).replace("@EXIT@", EXIT)
            .replace("@CTL@", GUEST_CTL).replace("@OUT@", GUEST_OUT))


def static_busybox() -> Path:
    path = Path(shutil.which("busybox") or "/bin/busybox")
    if not path.exists():
        raise LabUnavailable("busybox is not installed", "apt-get install busybox-static (or run `make setup`)")
    ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    if "not a dynamic executable" not in (ldd.stdout + ldd.stderr):
        raise LabUnavailable(f"{path} is dynamically linked", "apt-get install busybox-static")
    return path


def boot_module_paths(root: Path, abi: str) -> list[Path]:
    """The .ko files (dependencies first) that BOOT_MODULES need, from the extracted kernel tree."""
    res = subprocess.run(["modprobe", "-d", str(root), "-S", abi, "--show-depends", "-a", *BOOT_MODULES],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise LabBroken("modprobe --show-depends failed for the lab kernel", res.stderr.strip().splitlines()[-1:])
    paths: list[Path] = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["insmod"]:
            p = Path(parts[1])
            if p not in paths:
                paths.append(p)
    return paths


def build_initramfs(root: Path, abi: str, dest: Path, work: Path) -> None:
    """Write a gzip'd newc cpio at `dest` (root = the extracted linux-image package)."""
    tree = work / "initramfs"
    if tree.exists():
        shutil.rmtree(tree)
    for d in ("bin", "mods", "proc", "sys", "dev", "newroot"):
        (tree / d).mkdir(parents=True)
    shutil.copy2(static_busybox(), tree / "bin" / "busybox")
    (tree / "init").write_text(init_script())
    (tree / "init").chmod(0o755)
    order = []
    for ko in boot_module_paths(root, abi):
        if ko.name.endswith(".ko.xz"):  # 6.12: busybox insmod wants plain ELF modules
            name = ko.name[:-3]
            (tree / "mods" / name).write_bytes(lzma.decompress(ko.read_bytes()))
        else:
            name = ko.name
            shutil.copy2(ko, tree / "mods" / name)
        order.append(name)
    (tree / "mods" / "order").write_text("\n".join(order) + "\n")
    names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=tree,
                          input="\n".join(["."] + names).encode(), capture_output=True)
    if cpio.returncode != 0:
        raise LabBroken("cpio failed building the lab initramfs", cpio.stderr.decode(errors="replace").strip())
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(cpio.stdout, compresslevel=6))
    os.replace(tmp, dest)
    shutil.rmtree(tree)
