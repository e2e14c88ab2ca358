"""A pure-Python reader of raw BTF (as under /sys/kernel/btf), base and split.

What the recorder needs from it: byte offsets of struct members ("queue.properties.is_active"),
following anonymous members and bitfields; the struct a pointer member points to; enum values;
whether a function has a BTF FUNC and the names of its parameters. No pahole/bpftool/libbpf.

Split BTF (a module's file): its type ids continue after the base's last id and its string offsets
continue after the base's string section, so a module file is only meaningful over the vmlinux BTF
of the same build. `Btf.check_split()` detects a mismatched base by validating every reference.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import GptError

BTF_MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
TYPE_HEAD = struct.Struct("<III")  # name_off, info, size_or_type

KIND_NAMES = {
    1: "INT", 2: "PTR", 3: "ARRAY", 4: "STRUCT", 5: "UNION", 6: "ENUM", 7: "FWD", 8: "TYPEDEF",
    9: "VOLATILE", 10: "CONST", 11: "RESTRICT", 12: "FUNC", 13: "FUNC_PROTO", 14: "VAR",
    15: "DATASEC", 16: "FLOAT", 17: "DECL_TAG", 18: "TYPE_TAG", 19: "ENUM64",
}
KIND = {v: k for k, v in KIND_NAMES.items()}
# bytes that follow the 12-byte head: fixed part, per-vlen part
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0), 15: (0, 12), 17: (4, 0), 19: (0, 12)}
# kinds whose third word is a type id (the rest: a size, or unused)
_REF_KINDS = {2, 8, 9, 10, 11, 12, 13, 14, 17, 18}
_MODIFIERS = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag


class BtfError(GptError):
    pass


@dataclass(frozen=True)
class Field:
    """One resolved struct member: absolute byte offset within the top-level struct."""

    path: str  # "queue.properties.is_active"
    offset: int  # bytes from the start of the top-level struct
    size: int  # bytes (0 for a bitfield: see bit_size)
    type_name: str  # "bool", "struct kfd_process *", ...
    bit_offset: int = 0  # bit within `offset` for a bitfield
    bit_size: int = 0  # 0 = not a bitfield


@dataclass
class _Type:
    kind: int
    name_off: int
    vlen: int
    kind_flag: bool
    word: int  # size or type id
    data: int  # offset of the trailing data in the type section


class Btf:
    """One BTF blob; `base` is the vmlinux Btf when this one is split (a module)."""

    def __init__(self, blob: bytes, name: str = "btf", base: "Btf | None" = None):
        self.name = name
        self.base = base
        if len(blob) < HEADER.size:
            raise BtfError(f"{name}: not BTF (only {len(blob)} bytes)", "pass a file from /sys/kernel/btf")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(blob)
        if magic != BTF_MAGIC:
            raise BtfError(f"{name}: not BTF (magic {magic:#06x}, want 0xeb9f)", "pass a raw BTF file as found under /sys/kernel/btf")
        if version != 1:
            raise BtfError(f"{name}: BTF version {version} is not supported", "only version 1 exists")
        end = hdr_len + max(type_off + type_len, str_off + str_len)
        if end > len(blob):
            raise BtfError(f"{name}: truncated BTF ({len(blob)} bytes, header says {end})", "copy the whole file again")
        self._types_raw = blob[hdr_len + type_off: hdr_len + type_off + type_len]
        self._strs = blob[hdr_len + str_off: hdr_len + str_off + str_len]
        self.str_len = str_len
        self.first_id = base.type_count if base else 1  # id 0 is void
        self.str_base = (base.str_base + base.str_len) if base else 0
        self._types: list[_Type] = []
        self._parse_types()
        self.type_count = self.first_id + len(self._types)  # ids < type_count are valid here
        self._by_name: dict[str, list[int]] | None = None

    @classmethod
    def load(cls, path: str | Path, base: "Btf | None" = None) -> "Btf":
        p = Path(path)
        try:
            blob = p.read_bytes()
        except PermissionError:
            raise BtfError(f"cannot read {p}: permission denied", "run as root") from None
        except FileNotFoundError:
            raise BtfError(f"{p} does not exist", "is CONFIG_DEBUG_INFO_BTF set (and _MODULES for a module)?") from None
        return cls(blob, name=str(p), base=base)

    # ---- parsing ----
    def _parse_types(self) -> None:
        raw, pos, n = self._types_raw, 0, len(self._types_raw)
        unpack = TYPE_HEAD.unpack_from
        out = self._types
        while pos < n:
            if pos + 12 > n:
                raise BtfError(f"{self.name}: truncated type section at byte {pos}", "the file is damaged")
            name_off, info, word = unpack(raw, pos)
            kind = (info >> 24) & 0x1F
            if kind not in KIND_NAMES:
                raise BtfError(f"{self.name}: unknown BTF kind {kind} at type {self.first_id + len(out)}", "a newer kernel? update gpreempt-trace")
            vlen = info & 0xFFFF
            fixed, per = _EXTRA.get(kind, (0, 0))
            out.append(_Type(kind, name_off, vlen, bool(info >> 31), word, pos + 12))
            pos += 12 + fixed + per * vlen
        if pos != n:
            raise BtfError(f"{self.name}: type section does not end on a type boundary", "the file is damaged")

    def _owner(self, tid: int) -> "Btf":
        b = self
        while b.base is not None and tid < b.first_id:
            b = b.base
        return b

    def type(self, tid: int) -> _Type:
        if tid <= 0 or tid >= self.type_count:
            raise BtfError(f"{self.name}: type id {tid} out of range", "BTF files from different builds?")
        b = self._owner(tid)
        return b._types[tid - b.first_id]

    def _str_block(self, off: int):
        """(BTF block holding string offset `off`, offset within its string section), or None."""
        b = self
        while b.base is not None and off < b.str_base:
            b = b.base
        rel = off - b.str_base
        return (b, rel) if 0 <= rel < len(b._strs) else None

    def str_at(self, off: int) -> str:
        found = self._str_block(off)
        if found is None:
            raise BtfError(f"{self.name}: string offset {off} out of range", "BTF files from different builds?")
        b, rel = found
        end = b._strs.find(b"\0", rel)
        return b._strs[rel: end if end >= 0 else len(b._strs)].decode("utf-8", "replace")

    def _raw_of(self, tid: int) -> bytes:
        return self._owner(tid)._types_raw

    def name_of(self, tid: int) -> str:
        return "" if tid == 0 else self.str_at(self.type(tid).name_off)

    def kind_of(self, tid: int) -> str:
        return "VOID" if tid == 0 else KIND_NAMES[self.type(tid).kind]

    # ---- lookup ----
    def _index(self) -> dict[str, list[int]]:
        if self._by_name is None:
            idx: dict[str, list[int]] = {}
            for i, t in enumerate(self._types):
                if t.name_off:
                    idx.setdefault(self.str_at(t.name_off), []).append(self.first_id + i)
            self._by_name = idx
        return self._by_name

    def find(self, name: str, kinds: tuple[str, ...] = ("STRUCT",)) -> int | None:
        """Id of a named type; this blob first, then its base."""
        want = {KIND[k] for k in kinds}
        b: Btf | None = self
        while b is not None:
            for tid in b._index().get(name, ()):
                if b._types[tid - b.first_id].kind in want:
                    return tid
            b = b.base
        return None

    def has_func(self, name: str) -> bool:
        """True when a BTF FUNC of this name exists in this blob (not its base)."""
        return any(self._types[t - self.first_id].kind == KIND["FUNC"] for t in self._index().get(name, ()))

    def func_params(self, name: str) -> list[str] | None:
        """Parameter names of a FUNC in this blob (None if it has none)."""
        for tid in self._index().get(name, ()):
            t = self._types[tid - self.first_id]
            if t.kind == KIND["FUNC"]:
                proto = self.type(t.word)
                raw = self._raw_of(t.word)
                return [self.str_at(struct.unpack_from("<I", raw, proto.data + 8 * i)[0]) for i in range(proto.vlen)]
        return None

    def enum_values(self, name: str) -> dict[str, int]:
        tid = self.find(name, ("ENUM", "ENUM64"))
        if tid is None:
            return {}
        t, raw = self.type(tid), self._raw_of(tid)
        out = {}
        for i in range(t.vlen):
            if t.kind == KIND["ENUM"]:
                n, v = struct.unpack_from("<Ii" if t.kind_flag else "<II", raw, t.data + 8 * i)
            else:
                n, lo, hi = struct.unpack_from("<III", raw, t.data + 12 * i)
                v = (hi << 32) | lo
                if t.kind_flag and v >= 1 << 63:
                    v -= 1 << 64
            out[self.str_at(n)] = v
        return out

    # ---- types ----
    def strip(self, tid: int) -> int:
        """Skip typedef/const/volatile/restrict/type_tag."""
        for _ in range(64):
            if tid == 0 or self.type(tid).kind not in _MODIFIERS:
                return tid
            tid = self.type(tid).word
        raise BtfError(f"{self.name}: modifier chain too long at type {tid}", "the file is damaged")

    def size_of(self, tid: int) -> int:
        tid = self.strip(tid)
        if tid == 0:
            return 0
        t = self.type(tid)
        if t.kind in (1, 4, 5, 6, 16, 19):
            return t.word
        if t.kind == 2:
            return 8
        if t.kind == 3:
            elem, _idx, nelems = struct.unpack_from("<III", self._raw_of(tid), t.data)
            return self.size_of(elem) * nelems
        return 0

    def type_str(self, tid: int) -> str:
        if tid == 0:
            return "void"
        t = self.type(tid)
        k, name = t.kind, self.name_of(tid)
        if k in (4, 5, 7):
            kw = "union" if (k == 5 or (k == 7 and t.kind_flag)) else "struct"
            return f"{kw} {name or '(anon)'}"
        if k in (6, 19):
            return f"enum {name or '(anon)'}"
        if k == 2:
            return self.type_str(t.word) + " *"
        if k == 3:
            elem, _idx, nelems = struct.unpack_from("<III", self._raw_of(tid), t.data)
            return f"{self.type_str(elem)} [{nelems}]"
        if k == 10:
            return "const " + self.type_str(t.word)
        if k == 9:
            return "volatile " + self.type_str(t.word)
        if k == 13:
            return "func_proto"
        return name or KIND_NAMES[k].lower()

    def members(self, tid: int) -> list[tuple[str, int, int, int]]:
        """(name, type id, bit offset, bitfield size) of a STRUCT/UNION."""
        t = self.type(tid)
        raw = self._raw_of(tid)
        out = []
        for i in range(t.vlen):
            n, mt, off = struct.unpack_from("<III", raw, t.data + 12 * i)
            if t.kind_flag:
                out.append((self.str_at(n), mt, off & 0xFFFFFF, off >> 24))
            else:
                out.append((self.str_at(n), mt, off, 0))
        return out

    def _member(self, tid: int, name: str) -> tuple[int, int, int] | None:
        """(type id, bit offset, bitfield size) of a named member, looking inside anonymous members."""
        for mname, mt, bit_off, bit_size in self.members(tid):
            if mname == name:
                return mt, bit_off, bit_size
            if not mname:
                inner = self.strip(mt)
                if inner and self.type(inner).kind in (4, 5):
                    hit = self._member(inner, name)
                    if hit:
                        return hit[0], bit_off + hit[1], hit[2]
        return None

    def field(self, path: str) -> Field | None:
        """Resolve "struct.member[.member...]"; None when the struct or a member does not exist."""
        sname, *names = path.split(".")
        tid = self.find(sname, ("STRUCT", "UNION"))
        if tid is None or not names:
            return None
        bits, bit_size, mt = 0, 0, tid
        for name in names:
            cur = self.strip(mt)
            if not cur or self.type(cur).kind not in (4, 5):
                return None
            hit = self._member(cur, name)
            if hit is None:
                return None
            mt, off, bit_size = hit
            bits += off
        if bit_size:
            return Field(path, (bits // 8), 0, self.type_str(mt), bits % 8, bit_size)
        if bits % 8:
            return None
        return Field(path, bits // 8, self.size_of(mt), self.type_str(mt))

    def pointee_struct(self, path: str) -> str | None:
        """Name of the struct a pointer member points to ("queue.device" -> "kfd_dev")."""
        sname, *names = path.split(".")
        tid = self.find(sname, ("STRUCT", "UNION"))
        if tid is None:
            return None
        mt = tid
        for name in names:
            hit = self._member(self.strip(mt), name)
            if hit is None:
                return None
            mt = hit[0]
        mt = self.strip(mt)
        if not mt or self.type(mt).kind != 2:
            return None
        target = self.strip(self.type(mt).word)
        return self.name_of(target) if target else None

    # ---- split BTF sanity ----
    def check_split(self) -> None:
        """Raise BtfError when this module BTF does not sit on its base (different builds).

        Every name offset must land on the start of a string, and every referenced type id must exist
        and be of a kind a reference may name. A base from another build fails both checks at once.
        """
        if self.base is None:
            return
        bad_names = bad_refs = 0
        total = 0
        for t in self._types:
            total += 1
            if t.name_off and not self._is_str_start(t.name_off):
                bad_names += 1
            refs = []
            if t.kind in _REF_KINDS:
                refs.append(t.word)
            elif t.kind in (4, 5):
                raw = self._types_raw
                for i in range(t.vlen):
                    n, mt, _off = struct.unpack_from("<III", raw, t.data + 12 * i)
                    refs.append(mt)
                    if n and not self._is_str_start(n):
                        bad_names += 1
            for r in refs:
                if r >= self.type_count:
                    bad_refs += 1
                elif r and t.kind != 17:
                    rk = self.type(r).kind
                    if (t.kind == 12 and rk != 13) or rk in (12, 14, 15, 17):
                        bad_refs += 1
        if bad_names or bad_refs:
            raise BtfError(
                f"{self.name} does not match its base {self.base.name}: {bad_names} names and {bad_refs} type references "
                f"are invalid over a base of {self.base.type_count - 1} types / {self.base.str_len} string bytes",
                "use the vmlinux BTF of the same kernel build as the module",
            )

    def _is_str_start(self, off: int) -> bool:
        found = self._str_block(off)
        if found is None:
            return False
        b, rel = found
        return rel == 0 or b._strs[rel - 1] == 0


def field_offsets(path: "str | Path", fields: dict[str, str]) -> "tuple[dict[str, int] | None, str | None]":
    """{macro: byte offset} of whole (non-bitfield) struct members in the BTF file at `path`, or
    (None, why) when the file or one member is unusable."""
    try:
        btf = Btf.load(Path(path))
    except (OSError, GptError) as e:
        return None, f"no usable BTF at {path} ({getattr(e, 'what', None) or e.__class__.__name__})"
    out = {}
    for macro, fpath in fields.items():
        f = btf.field(fpath)
        if f is None or f.bit_size:
            return None, f"{fpath} not found in {path}"
        out[macro] = f.offset
    return out, None
