"""Function symbols from /proc/kallsyms (or a saved copy), and how to name one for a probe.

Why this matters (read from the 6.1 sources, see shared/reference/amdgpu-ko-6.1.md):
- kprobe events / the perf kprobe PMU refuse a plain symbol that exists more than once across
  vmlinux and the loaded modules (-EADDRNOTAVAIL); "MOD:SYM" (amdgpu:update_queue) avoids that.
- fentry resolves the name with kallsyms_lookup_name(), vmlinux first: an fentry on a name that
  vmlinux also has lands in vmlinux's function. So fentry is only safe for names unique everywhere.
- GCC clones (.isra.N, .constprop.N, .part.N) are separate entry points whose arguments may differ
  from the source prototype; `.cold` fragments are not entry points at all.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import GptError

FUNC_TYPES = set("tTwW")
VMLINUX = ""  # module name used for symbols of the kernel image
_CLONE = re.compile(r"^(?P<base>[^.]+)(?P<suffix>(?:\.(?:isra|constprop|part|cold|lto_priv)(?:\.\d+)?)+)$")


def split_clone(name: str) -> tuple[str, str]:
    """("remove_queue_mes", ".constprop.0") for a GCC clone name; (name, "") otherwise."""
    m = _CLONE.match(name)
    return (m["base"], m["suffix"]) if m else (name, "")


@dataclass(frozen=True)
class Resolution:
    """How to attach to one source-level function."""

    function: str  # source name asked for
    symbol: str | None  # symbol to attach to (may be a clone); None = unavailable
    kprobe_target: str | None  # what to give the kprobe API ("amdgpu:update_queue" when ambiguous)
    fentry_safe: bool  # fentry would resolve to this very function
    args_reliable: bool  # the symbol has the source prototype (not a GCC clone)
    reason: str | None  # why unavailable, or a note about the choice


class Kallsyms:
    def __init__(self, text: str, source: str = "/proc/kallsyms"):
        self.source = source
        self.by_name: dict[str, list[str]] = defaultdict(list)  # name -> modules ("" = vmlinux)
        self.modules: set[str] = set()
        self.addresses_visible = False
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in FUNC_TYPES:
                continue
            mod = parts[3].strip("[]") if len(parts) > 3 else VMLINUX
            self.by_name[parts[2]].append(mod)
            if mod:
                self.modules.add(mod)
            if not self.addresses_visible and parts[0].strip("0"):
                self.addresses_visible = True
        if not self.by_name:
            raise GptError(f"{source} holds no function symbols", "pass a copy of /proc/kallsyms (read as root)")

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Kallsyms":
        p = Path(path or "/proc/kallsyms")
        try:
            return cls(p.read_text(errors="replace"), str(p))
        except FileNotFoundError:
            raise GptError(f"{p} does not exist", "pass --kallsyms FILE (a copy of /proc/kallsyms)") from None
        except PermissionError:
            raise GptError(f"cannot read {p}: permission denied", "run as root") from None

    def count(self, name: str) -> int:
        return len(self.by_name.get(name, ()))

    def in_module(self, name: str, module: str) -> int:
        return self.by_name.get(name, []).count(module)

    def clones(self, base: str, module: str) -> list[str]:
        """GCC clones of `base` in `module` that are entry points (no .cold fragments)."""
        out = []
        for name, mods in self.by_name.items():
            if name.startswith(base + ".") and module in mods:
                b, suffix = split_clone(name)
                if b == base and ".cold" not in suffix:
                    out.append(name)
        return sorted(out)

    def resolve(self, function: str, module: str = "amdgpu") -> Resolution:
        if module and module not in self.modules:
            return Resolution(function, None, None, False, False, f"module {module} is not loaded")
        n_here = self.in_module(function, module)
        n_all = self.count(function)
        if n_here == 1 and n_all == 1:
            return Resolution(function, function, function, True, True, None)
        if n_here >= 1:
            others = [m or "vmlinux" for m in self.by_name[function] if m != module]
            where = ", ".join(sorted(set(others))) or module
            note = f"name also in {where}: using {module}:{function}"
            if n_here > 1:
                note += f" ({n_here} copies in {module}; the first is probed)"
            return Resolution(function, function, f"{module}:{function}", False, True, note + "; fentry would resolve to the wrong function")
        clones = self.clones(function, module)
        if len(clones) == 1:
            sym = clones[0]
            qualified = sym if self.count(sym) == 1 else f"{module}:{sym}"
            return Resolution(
                function, sym, qualified, False, False,
                f"only the GCC clone {sym} exists: attached to it; its arguments may differ from the source, so they are not read",
            )
        if len(clones) > 1:
            return Resolution(function, None, None, False, False, f"only GCC clones exist ({', '.join(clones)}): ambiguous")
        if any(n.startswith(function + ".") for n in self.by_name):
            return Resolution(function, None, None, False, False, "only a .cold fragment is a symbol: the function was inlined in this build")
        return Resolution(function, None, None, False, False, f"not in {self.source} (inlined in this build, or absent in this kernel version)")
