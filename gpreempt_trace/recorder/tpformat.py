"""tracefs event format files (`events/<system>/<name>/format`): parsed, and found under a tracefs root.

A classic tracepoint program receives the event's record as the kernel lays it out (struct
trace_event_raw_<name>): the common fields, then the event's own. The format file gives each field's
type, offset, size and signedness, so a program can read them with no BTF and no kernel headers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d+);")
_DECL = re.compile(r"^(?P<type>.*?)\s*(?P<name>\w+)\s*(?P<arr>\[[^\]]*\])?$")


class FormatError(ValueError):
    pass


@dataclass(frozen=True)
class FormatField:
    type: str  # as tracefs writes it: "unsigned int", "__data_loc char[]", "char[16]"
    name: str
    offset: int
    size: int
    signed: bool

    @property
    def data_loc(self) -> bool:
        """a __string / __dynamic_array field: a u32 of (length << 16 | offset in the record)"""
        return self.type.startswith("__data_loc ")


@dataclass(frozen=True)
class EventFormat:
    name: str
    id: Optional[int]
    common: tuple[FormatField, ...]
    fields: tuple[FormatField, ...]  # the event's own fields, in record order
    print_fmt: str

    def field(self, name: str) -> Optional[FormatField]:
        return next((f for f in self.fields if f.name == name), None)


def parse(text: str) -> EventFormat:
    name = ident = None
    print_fmt = ""
    common: list[FormatField] = []
    fields: list[FormatField] = []
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            ident = int(line.split(":", 1)[1].strip())
        elif line.startswith("print fmt:"):
            print_fmt = line.split(":", 1)[1].strip()
        elif (m := _FIELD.match(line)):
            d = _DECL.match(m["decl"].strip())
            if not d:
                raise FormatError(f"unreadable field declaration {m['decl']!r}")
            f = FormatField(d["type"] + (d["arr"] or ""), d["name"], int(m["off"]), int(m["size"]), m["signed"] == "1")
            (common if f.name.startswith("common_") else fields).append(f)
    if not name or not common:
        raise FormatError("not a tracefs event format file (no name: line or no common_ fields)")
    return EventFormat(name, ident, tuple(common), tuple(fields), print_fmt)


def find(tracefs_dirs: Iterable[str | Path], system: str, names: Iterable[str]) -> dict[str, EventFormat | str]:
    """{event name: its parsed format, or why it could not be read} for the names this kernel has, from the
    first tracefs root that has events/<system>/; {} when none has."""
    for base in map(Path, tracefs_dirs):
        sysdir = base / "events" / system
        try:
            if not sysdir.is_dir():
                continue
            present = {p.name for p in sysdir.iterdir() if p.is_dir()}
        except OSError:  # tracefs is root-only
            continue
        out: dict[str, EventFormat | str] = {}
        for n in names:
            if n not in present:
                continue
            path = sysdir / n / "format"
            try:
                out[n] = parse(path.read_text())
            except (OSError, FormatError) as e:
                out[n] = f"{path}: {e}"
        return out
    return {}
