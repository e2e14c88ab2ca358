"""The recorder's wakeup policy: the kernel wakes the reader once per batch of records (a power of two
per CPU, sized from the ring), never per record; the reader's timer collects the rest.

wake_every(ring, ncpu) is the largest power of two n (at most WAKE_EVERY_MAX = 8192) with
n * ncpu * WAKEUPS_PER_RING(8) * stride <= ring, and 1 when even that does not fit. The exact values
below are worked out by hand for any record of 121..248 bytes (stride = record + 8-byte header, rounded
up to 8: 129..256, today 216), so a change of the record layout does not move them."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from gpreempt_trace.recorder import record_layout
from gpreempt_trace.cli.main import main
from gpreempt_trace.recorder import runtime

MiB = 1 << 20


def _stride() -> int:
    return (record_layout.layout().size + 8 + 7) // 8 * 8


def test_the_hand_worked_values_hold_for_this_record():
    assert 128 < _stride() <= 256, f"stride {_stride()}: work the values of the tests below out again"


@pytest.mark.parametrize("ring_mib, ncpu, expected", [
    (1, 1, 512),       # 1 MiB / 8 wakeups = 131072 B per CPU: 512..1016 records -> 512
    (1, 2, 256),       # 65536 B per CPU: 256..508 records -> 256
    (8, 2, 2048),      # 524288 B per CPU: 2048..4064 records -> 2048
    (8, 16, 256),      # 65536 B per CPU -> 256
    (128, 256, 256),   # 65536 B per CPU -> 256
    (32, 1, 8192),     # 4 MiB per CPU: 16384..32512 records, capped at WAKE_EVERY_MAX
    (1024, 2, 8192),   # capped
    (1, 4096, 1),      # 32 B per CPU: not one record, still a wakeup per record at worst
    (1, 1024, 1),      # 128 B per CPU: below one 129..256-byte record -> 1
])
def test_wake_every_exact_values(ring_mib, ncpu, expected):
    assert runtime.wake_every(ring_mib * MiB, ncpu) == expected


def test_wake_every_is_the_largest_power_of_two_that_fits_an_eighth_of_the_ring():
    stride = _stride()
    for mib in (1, 2, 8, 32, 128, 1024):
        for ncpu in (1, 2, 3, 16, 256):
            n = runtime.wake_every(mib * MiB, ncpu)
            assert n >= 1 and n & (n - 1) == 0, (mib, ncpu, n)
            fits = lambda k: k * ncpu * 8 * stride <= mib * MiB  # noqa: E731
            assert n == 1 or fits(n), (mib, ncpu, n)
            assert n == 8192 or not fits(2 * n), (mib, ncpu, n)  # the next power of two would not fit


def test_wake_every_counts_this_machines_cpus_by_default(monkeypatch):
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 16)
    assert runtime.wake_every(8 * MiB) == 256


def test_print_bpf_shows_batched_wakeup_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    res = CliRunner().invoke(main, ["record", "-o", str(tmp_path / "t"), "--probes", "ioctl", "--kfd-path", "/dev/null",
                                    "--ringbuf-mb", "8", "--print-bpf"])
    assert res.exit_code == 0, res.output
    cflags = res.output.splitlines()[0].split()
    assert "-DGPT_RB_FLAGS=1" in cflags  # BPF_RB_NO_WAKEUP on every submit but the batch's last
    assert "-DGPT_WAKE_EVERY=2048" in cflags  # 8 MiB, 2 CPUs (above)
    assert "GPT_RB_FORCE_WAKEUP" in res.output
