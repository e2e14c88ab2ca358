"""`Column`: the declaration every table schema is built from (see schema.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    """One column.

    c:       C type in the kernel record (`u64`, `s32`, `char[16]`, `u32[16]` …) or None when the
             value is filled in user space (or derived from another C field, see `derive`).
    arrow:   Arrow type in Parquet, or None for a kernel-only field (e.g. the numeric `event_id`
             that user space turns into the `event` string).
    derive:  for a user-space column computed from C fields, the name of the C field it decodes.
    nullable: the kernel sets a validity bit when it knows the value; unset means NULL.
    """

    name: str
    c: Optional[str]
    arrow: Optional[pa.DataType]
    unit: str
    doc: str
    nullable: bool = True
    derive: Optional[str] = None

    @property
    def in_record(self) -> bool:
        return self.c is not None

    @property
    def in_parquet(self) -> bool:
        return self.arrow is not None
