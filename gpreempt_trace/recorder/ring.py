"""Read a BPF ring buffer map in batches, straight from its mmap'ed pages, into numpy.

Every record the recorder's programs submit is one `struct gpt_event` (fixed size), so the data area
between the consumer and producer positions is an array of (8-byte header, record) slots with a
constant stride. One read takes a numpy view of all committed slots, copies the records out in one go
and advances the consumer position: no per-event Python callback (BCC's ring_buffer_poll calls back
once per record). Layout (kernel/bpf/ringbuf.c, uapi bpf.h): page 0 = consumer_pos (rw), page 1 =
producer_pos (ro), then the data pages, twice in a row so that a wrapping record reads contiguously.
The kernel populates every page of a mapping at mmap time, so the reader maps only a window of the data
(WINDOW_BYTES, moved along with the consumer position, over the doubled pages so it never needs to
wrap): the ring's share of the recorder's RSS is the window, not twice the ring. The record header is
u32 len (bit 31 BUSY, bit 30 DISCARD) + u32 page offset, records 8-byte aligned.
The reader sleeps in an epoll on the map's fd (the kernel signals it on a wakeup); `waker` replaces
that epoll (anything with poll(timeout_s) and close()), e.g. for a plain file laid out like a ring.
"""
from __future__ import annotations

import mmap
import select

import numpy as np

HDR_SIZE = 8
WINDOW_BYTES = 4 << 20  # data bytes mapped at a time (at most the ring's size)
BUSY_BIT = np.uint32(1 << 31)
DISCARD_BIT = np.uint32(1 << 30)


class RingReader:
    def __init__(self, map_fd: int, data_size: int, record_dtype: np.dtype, window_bytes: int = WINDOW_BYTES,
                 waker=None):
        self.fd = map_fd
        self.page = mmap.PAGESIZE
        self.size = data_size
        self.mask = data_size - 1
        self.rec_size = record_dtype.itemsize
        self.stride = (self.rec_size + HDR_SIZE + 7) // 8 * 8
        self.slot = np.dtype({"names": ["len", "pg_off", "rec"], "formats": ["<u4", "<u4", record_dtype],
                              "offsets": [0, 4, HDR_SIZE], "itemsize": self.stride})
        self._cons_mm = mmap.mmap(map_fd, self.page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_mm = mmap.mmap(map_fd, self.page, mmap.MAP_SHARED, mmap.PROT_READ, offset=self.page)
        self.cons = np.frombuffer(self._cons_mm, np.uint64, count=1)
        self.prod = np.frombuffer(self._prod_mm, np.uint64, count=1)
        self.window = min(data_size, max(window_bytes - window_bytes % self.page, 2 * self.page))
        self.max_slots = (self.window - self.page) // self.stride  # slots one window always holds from `start`
        self._win_off: int | None = None  # data offset of the window (page aligned, < data_size)
        self._win_mm: mmap.mmap | None = None
        self._win: np.ndarray | None = None
        if waker is None:
            waker = select.epoll()
            waker.register(map_fd, select.EPOLLIN)
        self._ep = waker
        self.odd_records = 0  # records of another size (skipped; never expected)

    def _bytes(self, start: int, length: int) -> np.ndarray:
        """A view of `length` (<= max_slots * stride) bytes of the data from offset `start` (< size),
        moving the window when it does not hold them (an old window stays mapped while a view of it lives)."""
        off = self._win_off
        if off is None or not off <= start or start + length > off + self.window:
            off = start - start % self.page
            self._win_mm = mmap.mmap(self.fd, self.window, mmap.MAP_SHARED, mmap.PROT_READ, offset=2 * self.page + off)
            self._win = np.frombuffer(self._win_mm, np.uint8)
            self._win_off = off
        return self._win[start - off:start - off + length]

    def pending_bytes(self) -> int:
        return int(self.prod[0]) - int(self.cons[0])

    def producer_pos(self) -> int:
        return int(self.prod[0])

    def records_before(self, pos: int) -> int:
        """Records between the consumer position and `pos` (a producer position seen earlier), committed
        or still being written; discarded ones are not counted. Exact for gpt_event-sized records."""
        cons = int(self.cons[0])
        if pos <= cons:
            return 0
        n = (pos - cons) // self.stride
        kept = 0
        for first in range(0, n, self.max_slots):
            k = min(self.max_slots, n - first)
            lens = self._bytes((cons + first * self.stride) & self.mask, k * self.stride).view(self.slot)["len"]
            kept += int(((lens & DISCARD_BIT) == 0).sum())
        return kept + (1 if (pos - cons) % self.stride else 0)

    def read_into(self, out: np.ndarray, until: int | None = None) -> int:
        """Copy committed records into `out` (structured array of the record dtype); return how many.
        With `until` (a producer position), records reserved after it are left in the ring."""
        got = 0
        while got < len(out):
            cons = int(self.cons[0])
            prod = int(self.prod[0]) if until is None else min(int(self.prod[0]), until)
            avail = prod - cons
            if avail <= 0:
                break
            start = cons & self.mask
            n = min(avail // self.stride, len(out) - got, self.max_slots)
            if n == 0:
                n_done = self._read_odd(cons, avail)
                if n_done == 0:
                    break
                continue
            slots = self._bytes(start, n * self.stride).view(self.slot)
            lens = slots["len"]
            bad = (lens & BUSY_BIT) != 0
            bad |= (lens & ~(BUSY_BIT | DISCARD_BIT)) != self.rec_size
            if bad.any():
                n = int(np.argmax(bad))
                slots, lens = slots[:n], lens[:n]
            if n:
                keep = (lens & DISCARD_BIT) == 0
                k = int(keep.sum())
                if k == n:
                    out[got:got + n] = slots["rec"]
                else:
                    out[got:got + k] = slots["rec"][keep]
                got += k
                self.cons[0] = np.uint64(cons + n * self.stride)
            else:
                if self._read_odd(cons, avail) == 0:
                    break
        return got

    def _read_odd(self, cons: int, avail: int) -> int:
        """Skip one committed record that is not a gpt_event (or stop at a busy one). The header is read
        again here: a record that was busy when read_into looked may be committed now, and a committed
        gpt_event is left for read_into (1 = look again), never skipped as odd."""
        start = cons & self.mask
        ln = int(self._bytes(start, 4).view(np.uint32)[0])
        if ln & int(BUSY_BIT):
            return 0
        if ln & ~(int(BUSY_BIT) | int(DISCARD_BIT)) == self.rec_size:
            return 1
        total = ((ln & ~(int(BUSY_BIT) | int(DISCARD_BIT))) + HDR_SIZE + 7) // 8 * 8
        if total > avail:
            return 0
        self.odd_records += 0 if ln & int(DISCARD_BIT) else 1
        self.cons[0] = np.uint64(cons + total)
        return 1

    def wait(self, timeout_s: float) -> None:
        """Sleep until the kernel signals data (or timeout)."""
        self._ep.poll(timeout_s)

    def close(self) -> None:
        self._ep.close()
        del self.cons, self.prod
        self._win = None
        self._cons_mm.close()
        self._prod_mm.close()
        if self._win_mm is not None:
            try:
                self._win_mm.close()
            except BufferError:  # a caller still holds a view: unmapped when that goes
                pass
