"""`python -m gpreempt_trace.lab build|run|shell|check|info [--kernel 6.1|6.12]` — the lab by hand.

    build            download + extract the kernel, depmod, initramfs (cached; --rebuild forces;
                     --kernel all builds every series)
    run -- CMD...    boot a guest, run CMD (bash) in the repo, print its output, exit with its status
    shell            boot a guest with an interactive shell on this terminal (serial console)
    check            run the lab self-checks (real KFD facts) and print them as JSON
    info             print the cached build (lab-<series>.json)
    fixture DEST     take a kernel fixture (BTF, amdgpu kallsyms, facts) into DEST/<abi>/
--kernel picks Debian's 6.1 (default) or 6.12 kernel.
Errors are one line and a non-zero exit: 3 = no QEMU here, 1 = the lab broke, 124 = guest timeout."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from .build import DEFAULT_KERNEL, KERNELS
from .errors import LabBroken, LabUnavailable
from .lab import DEFAULT_MODULES, Lab


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpreempt_trace.lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    kernel = argparse.ArgumentParser(add_help=False)
    kernel.add_argument("--kernel", choices=list(KERNELS), default=DEFAULT_KERNEL,
                        help=f"Debian kernel series to boot (default {DEFAULT_KERNEL})")
    b = sub.add_parser("build", help="build or reuse the cached lab")
    b.add_argument("--kernel", choices=[*KERNELS, "all"], default=DEFAULT_KERNEL,
                   help=f"kernel series to build, or all (default {DEFAULT_KERNEL})")
    b.add_argument("--rebuild", action="store_true")
    r = sub.add_parser("run", help="run one command in a fresh guest", parents=[kernel])
    r.add_argument("--timeout", type=float, default=300, help="seconds for the whole guest run (default 300)")
    r.add_argument("--no-amdgpu", action="store_true", help="do not modprobe amdgpu first")
    r.add_argument("--out", help="host folder the guest sees as $OUT (default: a temp folder, printed)")
    r.add_argument("command", nargs=argparse.REMAINDER)
    s = sub.add_parser("shell", help="interactive shell in a guest (exit or Ctrl-D powers off)", parents=[kernel])
    s.add_argument("--no-amdgpu", action="store_true")
    c = sub.add_parser("check", help="run the lab self-checks, print JSON", parents=[kernel])
    c.add_argument("--timeout", type=float, default=300)
    sub.add_parser("info", help="print the cached build", parents=[kernel])
    f = sub.add_parser("fixture", help="take a kernel fixture (BTF, kallsyms) into DEST/<abi>/", parents=[kernel])
    f.add_argument("dest")
    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            for k in KERNELS if a.kernel == "all" else [a.kernel]:
                lab = Lab.ensure(rebuild=a.rebuild, log=lambda m: print(m, file=sys.stderr), kernel=k)
                print(json.dumps(asdict(lab.build), indent=1))
            return 0
        lab = Lab.ensure(log=lambda m: print(m, file=sys.stderr), kernel=a.kernel)
        if a.cmd == "info":
            print(json.dumps(asdict(lab.build), indent=1))
            return 0
        if a.cmd == "check":
            from .selftest import run_checks
            facts = run_checks(lab, timeout_s=a.timeout)
            print(json.dumps(facts, indent=1))
            return 0 if facts.get("ok") else 1
        if a.cmd == "fixture":
            from .fixture import take
            print(take(lab, Path(a.dest)))
            return 0
        if a.cmd == "shell":
            return lab.shell(modules=() if a.no_amdgpu else DEFAULT_MODULES)
        cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
        if not cmd:
            p.error("run needs a command, e.g. run -- ls -l /dev/kfd")
        out = a.out or tempfile.mkdtemp(prefix="gpt-lab-out-")
        res = lab.run(" ".join(cmd), timeout_s=a.timeout, modules=() if a.no_amdgpu else DEFAULT_MODULES,
                      out_dir=out)
        sys.stdout.write(res.output)
        print(f"[lab] rc={res.rc} wall={res.wall_s:.1f}s files={res.files}", file=sys.stderr)
        return res.rc
    except (LabUnavailable, LabBroken) as e:
        print(f"lab: {e.line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
