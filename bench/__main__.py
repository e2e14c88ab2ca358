"""Run every bench/bench_*.py main() in name order (or only those named: python -m bench recorder)."""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    short = [n.removeprefix("bench_") for n in names]
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: python -m bench [NAME ...]\n\nRun every bench/bench_*.py main() in name order, or only those named.\n"
              f"Names: {', '.join(short)}")
        return 0
    unknown = [a for a in argv if a not in short and a not in names]
    if unknown:
        print(f"error: unknown bench {unknown[0]!r}: choose from {', '.join(short)} (or none for all)", file=sys.stderr)
        return 2
    if argv:
        names = [n for n in names if n.removeprefix("bench_") in argv or n in argv]
    rc = 0
    for name in names:
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            rc |= int(importlib.import_module(f"bench.{name}").main() or 0)
        except SystemExit as e:
            print(f"{name}: {e}", file=sys.stderr)
            rc |= 1
        print(f"== {name} done in {time.monotonic() - t0:.1f}s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
