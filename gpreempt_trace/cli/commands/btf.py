"""`gpreempt-trace btf build`: the amdgpu module's BTF, from sources, where the module has none."""
from __future__ import annotations

import click

from ... import api
from .. import options as opt


@click.group("btf")
def command():
    """The amdgpu module's BTF, for hosts whose module has none (ROCm's DKMS amdgpu).

    The recorder reads KFD struct fields at offsets from module BTF; `btf build` makes one from the
    driver's sources with the target kernel's kbuild and pahole. `doctor` prints the exact command.
    """


@command.command("build")
@click.option("--source", "source", type=opt.Path(exists=True, file_okay=False),
              help="Kernel source tree (drivers/gpu/drm/amd/amdkfd) or amdgpu DKMS tree (amd/amdkfd, include/kcl). "
                   "Default: /usr/src/amdgpu-<version> of the loaded module, else the running kernel's source.")
@click.option("--kernel-build", "kernel_build", type=opt.Path(file_okay=False),
              help="The target kernel's build tree (its headers package).  [default: /lib/modules/$(uname -r)/build]")
@click.option("--base-btf", "base_btf", type=opt.Path(dir_okay=False),
              help="The target kernel's vmlinux BTF, raw or a vmlinux ELF with a .BTF section (e.g. a headers package's "
                   "vmlinux).  [default: /sys/kernel/btf/vmlinux]")
@click.option("-o", "--output", "output", type=opt.Path(),
              help="BTF file to write (a DIR/ gets DIR/amdgpu and DIR/vmlinux, for --btf DIR). "
                   "Default: the cache the recorder looks in.")
@click.option("--from-dwarf", "from_dwarf", type=opt.Path(dir_okay=False),
              help="Make it from a module that has DWARF (a -dbg/debuginfo package's amdgpu.ko) instead of sources.")
@click.option("-j", "--jobs", type=click.IntRange(min=0, max=4096), default=0, help="Parallel compile jobs (0: one per CPU).")
@click.option("--work-dir", "work_dir", type=opt.Path(file_okay=False), help="Keep the objects and build.log here.")
def build(source, kernel_build, base_btf, output, from_dwarf, jobs, work_dir):
    """Make a split BTF for the amdgpu module (readable like /sys/kernel/btf/amdgpu)."""
    from ...recorder.btf_build import BuildOptions

    if from_dwarf and source:
        raise click.UsageError("--from-dwarf and --source are exclusive: build from the module's DWARF or from sources")
    res = api.btf_build(BuildOptions(source, kernel_build, base_btf, output, from_dwarf, jobs, work_dir))
    click.echo(res.summary_line())
