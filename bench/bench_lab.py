"""Lab timings per kernel (Debian 6.1 and 6.12): boot to a shell, boot + modprobe amdgpu, the full
self-check (one guest each). TCG on a shared machine is noisy: the numbers are medians of 3 (self-check: 1)."""
from __future__ import annotations

import statistics

from gpreempt_trace.lab import Lab, LabBroken, LabUnavailable
from gpreempt_trace.lab.selftest import run_checks


def _median_wall(lab: Lab, command: str, modules, n: int = 3) -> tuple[float, float]:
    walls, guest = [], []
    for _ in range(n):
        res = lab.run(command, modules=modules, timeout_s=300)
        if res.rc != 0:
            raise LabBroken(f"bench command failed (rc {res.rc})", res.output[-200:])
        walls.append(res.wall_s)
        guest.append(float(res.output.split()[0]))
    return statistics.median(walls), statistics.median(guest)


def main() -> int:
    rc = 0
    for kernel in ("6.1", "6.12"):
        rc = max(rc, bench_kernel(kernel))
    return rc


def bench_kernel(kernel: str) -> int:
    try:
        lab = Lab.ensure(kernel=kernel)
    except (LabUnavailable, LabBroken) as e:
        print(f"lab {kernel}: {e.line()}")
        return 0 if isinstance(e, LabUnavailable) else 1
    b = lab.build
    print(f"lab kernel {b.abi} ({b.version}), download {b.download_bytes / 1e6:.1f} MB, build {b.build_s} s, vCPUs {lab.cpus}")
    wall, up = _median_wall(lab, "cut -d' ' -f1 /proc/uptime", ())
    print(f"boot to shell: wall {wall:.1f} s (guest uptime at the command {up:.1f} s)")
    wall, up = _median_wall(lab, "cut -d' ' -f1 /proc/uptime", ("amdgpu",))
    print(f"boot + modprobe amdgpu: wall {wall:.1f} s (guest uptime {up:.1f} s)")
    facts = run_checks(lab)
    print(f"full self-check: wall {facts['wall_s']} s (modprobe {facts.get('modprobe_amdgpu_s')} s, "
          f"BCC compile {facts.get('bcc_compile_s')} s, ok={facts['ok']})")
    return 0 if facts["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
