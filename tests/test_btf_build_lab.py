"""The users' host, reproduced on Debian's real 6.12 kernel (the lab guest, no GPU): amdgpu.ko with its
`.BTF` section removed (objcopy, depmod), so /sys/kernel/btf/amdgpu does not exist, as with ROCm's DKMS
module. `doctor` says so and prints the build command; with the BTF `btf build` made on the host from
Debian's linux-source + linux-headers of the guest's exact version in the cache, `doctor` names it and
`record` of the scheme-A and ioctl scenario gives the same non-NULL field values as with the module's real
BTF (the removed section itself, which is what /sys/kernel/btf/amdgpu shows, passed with --btf)."""
from __future__ import annotations

import dataclasses
import json
import lzma
import os
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpreempt_trace.lab.build import cache_dir as lab_cache
from gpreempt_trace.lab.lab import Lab
from gpreempt_trace.recorder import btf_build

pytestmark = [pytest.mark.lab, pytest.mark.lab612]

SCENARIO = ".venv/bin/python tests/testing/lab_kfd_calls.py --debugger"


def _sections(elf: Path, *names: str, remove: bool = False) -> None:
    args = [f"--remove-section={n}" for n in names] if remove else []
    subprocess.run(["objcopy", *args, str(elf)], check=True)


@pytest.fixture(scope="module")
def host_without_module_btf(lab612):
    """(lab whose amdgpu.ko has no .BTF, dir holding the module's real BTF + vmlinux BTF, BTF cache with the built one)."""
    from gpreempt_trace.lab import kernel_sources

    b = lab612.build
    work = lab_cache() / "no-module-btf" / b.abi  # under the host root the guest mounts (not /tmp: overlaid there)
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    moddir = root / "lib" / "modules" / b.abi
    moddir.parent.mkdir(parents=True)
    subprocess.run(["cp", "-rs", b.moddir, str(moddir)], check=True)  # symlinks: every other module as is
    for f in moddir.glob("modules.*"):  # depmod's outputs go, its inputs become real files
        real_f = Path(os.path.realpath(f))
        f.unlink()
        if f.name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            shutil.copyfile(real_f, f)
    ko = next(moddir.rglob("amdgpu.ko*"))
    raw = Path(os.path.realpath(ko)).read_bytes()
    elf = work / "amdgpu.ko"
    elf.write_bytes(lzma.decompress(raw) if ko.suffix == ".xz" else raw)
    real = work / "real-btf"
    real.mkdir()
    subprocess.run(["objcopy", f"--dump-section=.BTF={real / 'amdgpu'}", str(elf)], check=True)
    subprocess.run(["objcopy", f"--dump-section=.BTF={real / 'vmlinux'}", b.vmlinux], check=True)
    _sections(elf, ".BTF", remove=True)
    ko.unlink()
    ko.write_bytes(lzma.compress(elf.read_bytes(), check=lzma.CHECK_CRC32) if ko.suffix == ".xz" else elf.read_bytes())
    subprocess.run(["depmod", "-b", str(root), b.abi], check=True)
    # the BTF for the guest's kernel, built here from Debian's packages of its exact version
    ks = kernel_sources.fetch_packages(b.abi, kernel_sources.packages_for(b.abi, b.version), log=lambda *_: None)
    cache = work / "btf-cache"
    res = btf_build.build(btf_build.BuildOptions(source=str(ks.source), kernel_build=str(ks.kbuild), base_btf=str(real / "vmlinux"),
                                                 output=str(btf_build.cache_path(b.abi, None, cache))))
    assert res.output.is_file()
    return Lab(dataclasses.replace(b, moddir=str(moddir))), real, cache, res


def _rows(trace: Path) -> list[dict]:
    rows = pa.concat_tables([pq.read_table(f) for f in sorted((trace / "events").glob("seg-*.parquet"))]).to_pylist()
    return sorted(rows, key=lambda r: r["ts_ns"])


def _by_role(rows: list[dict], pids: dict[int, str]) -> list[tuple]:
    """Rows with pids named by role, PASIDs by order of appearance (KFD gives each new process the next
    one), and without what differs run to run (times, cpu, tid, run id)."""
    drop = {"ts_ns", "dur_ns", "cpu", "tid", "run_id"}
    pasids: dict[int, str] = {}
    out = []
    for r in rows:
        if r.get("pasid") is not None:
            pasids.setdefault(r["pasid"], f"pasid#{len(pasids)}")
        out.append(tuple(sorted((k, pids.get(v, v) if k in ("tgid", "target_pid", "owner_tgid") else pasids[v] if k == "pasid" else v)
                                for k, v in r.items() if k not in drop and v is not None)))
    return out


def test_no_module_btf_then_built_btf_gives_the_real_values(host_without_module_btf):
    lab, real, cache, built = host_without_module_btf
    cmd = f"""
set -x
ls /sys/kernel/btf/amdgpu 2>&1
GPT_BTF_CACHE=/nonexistent .venv/bin/gpreempt-trace doctor > $OUT/doctor-none.txt 2>&1
GPT_BTF_CACHE={cache} .venv/bin/gpreempt-trace doctor > $OUT/doctor-built.txt 2>&1
GPT_BTF_CACHE={cache} .venv/bin/gpreempt-trace record -o $OUT/built --probes kfd,ioctl -- {SCENARIO} > $OUT/built.out 2>&1 || echo built-failed
GPT_BTF_CACHE=/nonexistent .venv/bin/gpreempt-trace record -o $OUT/real --btf {real} --probes kfd,ioctl -- {SCENARIO} > $OUT/real.out 2>&1 || echo real-failed
"""
    res = lab.run(cmd, timeout_s=1500)
    assert res.rc == 0, res.output[-3000:]
    assert "No such file or directory" in res.output and "failed" not in res.output.replace("+ ", ""), res.output[-3000:]
    none = (res.files / "doctor-none.txt").read_text()
    abi = lab.kernel
    assert re.search(r"\[FAIL\] btf amdgpu +" + re.escape(
        f"missing: every KFD struct field would be NULL (amdgpu has no BTF (in-tree module without "
        f"BTF: CONFIG_DEBUG_INFO_BTF_MODULES off, or stripped) and none was built for {abi})"), none), none
    assert (f"fix: run `gpreempt-trace btf build --source <the amdgpu source: kernel tree or /usr/src/amdgpu-<version>> "
            f"--kernel-build /lib/modules/{abi}/build --base-btf /sys/kernel/btf/vmlinux` once") in none, none
    with_built = (res.files / "doctor-built.txt").read_text()
    assert re.search(r"\[ok  \] btf amdgpu +" + re.escape(f"{cache}/{abi}/amdgpu-in-tree.btf: no BTF of its own; offsets from the built BTF"),
                     with_built), with_built
    assert f"offsets from: cache: {cache}/{abi}/amdgpu-in-tree.btf (built by btf build; the module has no BTF)" in with_built

    traces = {}
    for name in ("built", "real"):
        out = (res.files / f"{name}.out").read_text()
        seen = json.loads([ln for ln in out.splitlines() if ln.startswith('{"debugger_pid"')][0])
        pids = {seen["debugger_pid"]: "debugger", seen["target_pid"]: "target"}
        meta = json.loads((res.files / name / "meta.json").read_text())
        traces[name] = (_by_role(_rows(res.files / name), pids), meta)
    (b_rows, b_meta), (r_rows, r_meta) = traces["built"], traces["real"]
    assert b_meta["recorder"]["btf_source"]["kind"] == "cache" and r_meta["recorder"]["btf_source"]["kind"] == "dir"
    # one self-owned event (the target's RUNTIME_ENABLE): its owner read through the built offsets is its caller
    pl = b_meta["recorder"]["btf_plausibility"]
    assert (pl["state"], pl["checked"], pl["failed"]) == ("checking", 1, 0), pl
    assert b_rows == r_rows
    # and those values are the real ones: the debugger's suspend names the target, read through kfd_process
    sus = [dict(r) for r in b_rows if ("event", "queues_suspend") in r]
    assert [(r["tgid"], r["target_pid"], r["num_queues"]) for r in sus] == [("debugger", "target", 2)]
