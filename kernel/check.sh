#!/usr/bin/env bash
# make kernel-check: build-check kernel/patches against Debian's linux-source-6.12 (the users' kernel era).
#
#  1. extract /usr/src/linux-source-6.12.tar.xz into the cache (once per tarball)
#  2. configure from Debian's config for the same ABI without the display core, modules_prepare (once per config)
#  3. put the files the series touches back to pristine
#  4. build every amdkfd object with W=1 and keep the warnings (pristine)
#  5. git apply --check, then git apply, each patch in order
#  6. build every amdkfd object with W=1 again; fail on any warning that is new
#  7. scripts/checkpatch.pl --strict on every patch; fail on any message
#  8. with GPT_KERNEL_MODULE=1 also build the patched amdgpu.ko (first build ~45 min on 2 loaded cores,
#     then only what the series touches)
#
# Environment: GPT_KERNEL_VERSION (6.12), GPT_KERNEL_CACHE (default ~/.cache/gpreempt-trace/kernel/6.12),
# GPT_KERNEL_TARBALL, GPT_KERNEL_CONFIG (a .config; default the newest
# /usr/src/linux-headers-6.12.*-amd64/.config), GPT_KERNEL_RELEASE (default: taken from the config's
# directory name), JOBS.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PATCH_DIR=$REPO/kernel/patches
KVER=${GPT_KERNEL_VERSION:-6.12}
CACHE=${GPT_KERNEL_CACHE:-$HOME/.cache/gpreempt-trace/kernel/$KVER}
TARBALL=${GPT_KERNEL_TARBALL:-/usr/src/linux-source-$KVER.tar.xz}
JOBS=${JOBS:-$(nproc)}
TREE=$CACHE/linux-source-$KVER
PRISTINE=$CACHE/pristine          # copies of touched files as extracted; .absent lists new files
LOG=$CACHE/logs
KFD_DIR=drivers/gpu/drm/amd/amdkfd
OBJ_PREFIX=drivers/gpu/drm/amd/amdgpu/../amdkfd   # amdkfd objects are built from amdgpu/

say() { printf 'kernel-check: %s\n' "$*"; [ ! -d "${LOG:-}" ] || printf 'kernel-check: %s\n' "$*" >>"$LOG/check.out"; }
die() { printf 'kernel-check: FAIL: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - T0 ))s"; }
T0=$(date +%s)

default_config() {
  local hdr
  hdr=$(ls -d /usr/src/linux-headers-"$KVER".*-amd64 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$hdr" ] && [ -f "$hdr/.config" ] && echo "$hdr/.config"
}
CONFIG=${GPT_KERNEL_CONFIG:-$(default_config || true)}
[ -f "$TARBALL" ] || die "$TARBALL missing: apt-get install linux-source-$KVER (make setup does)"
[ -n "$CONFIG" ] && [ -f "$CONFIG" ] || die "no Debian $KVER kernel config: apt-get install linux-headers-$KVER.<abi>-amd64 (make setup does) or set GPT_KERNEL_CONFIG"
KREL=${GPT_KERNEL_RELEASE:-$(basename "$(dirname "$CONFIG")" | sed 's/^linux-headers-//')}
mkdir -p "$CACHE"
# One check at a time per cache (tests and make may start it concurrently).
exec 9>"$CACHE/.lock"
flock 9
mapfile -t PATCHES < <(ls "$PATCH_DIR"/[0-9][0-9][0-9][0-9]-*.patch | grep -v '/0000-cover-letter.patch$')
((${#PATCHES[@]})) || die "no patches in $PATCH_DIR"
mkdir -p "$CACHE" "$LOG"

# A check that passed for the same series, config, script and module flag is not redone (each W=1
# pass and the module relink cost minutes): replay its output. GPT_KERNEL_FORCE=1 redoes it.
key=$(cat "${PATCHES[@]}" "$CONFIG" "$0" "$REPO/kernel/lab/"* | sha1sum | cut -c1-16)-$KREL
passed=$CACHE/.passed-$key-module${GPT_KERNEL_MODULE:-0}
replay=
if [ "${GPT_KERNEL_MODULE:-0}" = 1 ]; then
  [ -f "$passed" ] && [ -f "$TREE/drivers/gpu/drm/amd/amdgpu/amdgpu.ko" ] && replay=$passed
else
  for f in "$passed" "$CACHE/.passed-$key-module1"; do [ -f "$f" ] && replay=$f && break; done
fi
if [ "${GPT_KERNEL_FORCE:-0}" != 1 ] && [ -n "$replay" ]; then
  cat "$replay"
  say "(replayed: this series passed on $(date -u -r "$replay" +%FT%TZ); GPT_KERNEL_FORCE=1 redoes it)"
  exit 0
fi
: >"$LOG/check.out"

# 1. extract (stamp = tarball size + mtime)
stamp=$CACHE/.extracted-$(stat -c %s-%Y "$TARBALL")
if [ ! -f "$stamp" ] || [ ! -f "$TREE/Makefile" ]; then
  say "extracting $TARBALL into $CACHE"
  rm -rf "$TREE" "$PRISTINE" "$CACHE"/.extracted-* "$CACHE"/.prepared-*
  tar -C "$CACHE" -xf "$TARBALL"
  touch "$stamp"
fi
cd "$TREE"

# 2. configure + modules_prepare (stamp = config checksum + release)
prep=$CACHE/.prepared-$(cat "$CONFIG" | sha1sum | cut -c1-12)-$KREL-nodc
if [ ! -f "$prep" ]; then
  say "configuring from $CONFIG (release $KREL), modules_prepare"
  cp "$CONFIG" .config
  # Debian's certificate paths are not in the source package; the check signs nothing.
  scripts/config --set-str SYSTEM_TRUSTED_KEYS "" --set-str SYSTEM_REVOCATION_KEYS ""
  # Without the display core (DRM_AMD_DC, ~470 of amdgpu.ko's ~880 objects): amdkfd does not use it,
  # the lab has no display; the first module build needs ~410 compiles instead of ~880.
  scripts/config --disable DRM_AMD_DC
  make -s olddefconfig >"$LOG/olddefconfig.log" 2>&1 || die "olddefconfig, see $LOG/olddefconfig.log"
  # Debian's symbol versions, so that a module built here loads into Debian's kernel.
  symvers=$(dirname "$CONFIG")/Module.symvers
  [ -f "$symvers" ] && cp "$symvers" Module.symvers
  make -s -j"$JOBS" KERNELRELEASE="$KREL" modules_prepare >"$LOG/modules_prepare.log" 2>&1 \
    || die "modules_prepare, see $LOG/modules_prepare.log"
  rm -f "$CACHE"/.prepared-*
  touch "$prep"
fi

# 3. every file the series touches back to pristine
mapfile -t TOUCHED < <(for p in "${PATCHES[@]}"; do git apply --numstat "$p" | cut -f3; done | sort -u)
mkdir -p "$PRISTINE"
touch "$PRISTINE/.absent"
for f in "${TOUCHED[@]}"; do
  if [ -f "$PRISTINE/$f" ]; then
    cp "$PRISTINE/$f" "$f"
  elif grep -qxF "$f" "$PRISTINE/.absent"; then
    rm -f "$f"
  elif [ -f "$f" ]; then
    mkdir -p "$PRISTINE/$(dirname "$f")" && cp "$f" "$PRISTINE/$f"
  else
    echo "$f" >>"$PRISTINE/.absent"
  fi
done

# The objects amdgpu.ko builds from amdkfd/ under this config (AMDKFD_FILES of amdkfd/Makefile),
# plus the object of every other .c file the series touches (kernel/ptrace.o).
kfd_objects() {
  make -s --no-print-directory -f - <<EOF
include .config
AMDKFD_PATH := $OBJ_PREFIX
include $KFD_DIR/Makefile
print: ; @echo \$(AMDKFD_FILES)
EOF
  printf '%s\n' "${TOUCHED[@]}" | grep '\.c$' | grep -v "^$KFD_DIR/" | sed 's/\.c$/.o/' || true
}

# Build the objects with W=1; print the warnings, one per line, without line:column
# (they move when a patch adds lines) so that the two sets can be compared.
build_w1() {
  local tag=$1 objs
  objs=$(kfd_objects)
  # shellcheck disable=SC2086
  rm -f $objs
  # shellcheck disable=SC2086
  make -k -j"$JOBS" W=1 KERNELRELEASE="$KREL" $objs >"$LOG/build-$tag.log" 2>&1 \
    || die "W=1 build of the $tag amdkfd objects failed, see $LOG/build-$tag.log"
  grep -E '(warning|error):' "$LOG/build-$tag.log" | grep -v '^scripts/' \
    | sed -E 's#^(\.\./)*##; s#:[0-9]+:[0-9]+:#:#' | sort >"$LOG/warnings-$tag.txt" || true
  echo $objs | wc -w
}

# 4. pristine build
n=$(build_w1 pristine)
say "pristine: $n objects (amdkfd and the other touched files), $(wc -l <"$LOG/warnings-pristine.txt") W=1 warnings ($(elapsed))"

# 5. apply
for p in "${PATCHES[@]}"; do
  git apply --check "$p" || die "$(basename "$p") does not apply to pristine linux-source-$KVER"
  git apply "$p"
  say "applied $(basename "$p")"
done

# 6. patched build; new warnings = patched minus pristine (as multisets)
n=$(build_w1 patched)
new=$(comm -13 "$LOG/warnings-pristine.txt" "$LOG/warnings-patched.txt" || true)
if [ -n "$new" ]; then
  printf '%s\n' "$new" >&2
  die "the series adds W=1 warnings (full log: $LOG/build-patched.log)"
fi
say "patched: $n objects, $(wc -l <"$LOG/warnings-patched.txt") W=1 warnings, none new ($(elapsed))"

# 7. checkpatch. FILE_PATH_CHANGES ("does MAINTAINERS need updating?") is ignored because the
# new files sit in drivers/gpu/drm/amd/amdkfd/, which MAINTAINERS already covers (checked here).
grep -qE "^F:[[:space:]]+$KFD_DIR/\$" MAINTAINERS || die "MAINTAINERS no longer covers $KFD_DIR/"
for p in "${PATCHES[@]}"; do
  out=$(scripts/checkpatch.pl --strict --ignore FILE_PATH_CHANGES "$p" 2>/dev/null || true)
  grep -qE '^total: 0 errors, 0 warnings, 0 checks' <<<"$out" || { echo "$out" >&2; die "checkpatch --strict: $(basename "$p")"; }
  grep -q '^Signed-off-by:' "$p" || die "$(basename "$p") has no Signed-off-by"
  say "checkpatch --strict clean: $(basename "$p")"
done

# 8. optional: the whole patched module, for loading into Debian's stock kernel in the lab.
# That kernel does not export ptrace_may_access (patch 0002 does, in a rebuilt kernel), so the
# module is linked against the lab shim in kernel/lab/, which provides it; modpost must find
# every other symbol in Debian's Module.symvers.
if [ "${GPT_KERNEL_MODULE:-0}" = 1 ]; then
  shim=$CACHE/lab-shim
  rm -rf "$shim" && cp -r "$REPO/kernel/lab" "$shim"
  make -j"$JOBS" KERNELRELEASE="$KREL" M="$shim" modules >"$LOG/lab-shim.log" 2>&1 \
    || die "lab shim build failed, see $LOG/lab-shim.log"
  say "building the patched amdgpu.ko (minutes)"
  make -j"$JOBS" KERNELRELEASE="$KREL" M=drivers/gpu/drm/amd/amdgpu KBUILD_EXTRA_SYMBOLS="$shim/Module.symvers" \
    modules >"$LOG/module.log" 2>&1 || die "amdgpu.ko build failed, see $LOG/module.log"
  ! grep -q 'undefined!' "$LOG/module.log" || die "amdgpu.ko has undefined symbols, see $LOG/module.log"
  say "built $TREE/drivers/gpu/drm/amd/amdgpu/amdgpu.ko ($(modinfo -F vermagic drivers/gpu/drm/amd/amdgpu/amdgpu.ko)) and $shim/ptrace_may_access_shim.ko"
fi

say "ok: ${#PATCHES[@]} patches apply, build with no new W=1 warnings and pass checkpatch --strict ($(elapsed))"
cp "$LOG/check.out" "$passed"
