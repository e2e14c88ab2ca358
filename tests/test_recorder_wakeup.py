"""The recorder's wakeup policy: the kernel wakes the reader once per batch of records (a power of two
per CPU, sized from the ring), never per record; the reader's timer collects the rest."""
from __future__ import annotations

from click.testing import CliRunner

from gpreempt_trace import record_layout
from gpreempt_trace.cli import main
from gpreempt_trace.recorder import runtime


def _stride() -> int:
    return (record_layout.layout().size + 8 + 7) // 8 * 8


def test_wake_every_is_a_power_of_two_about_eight_times_per_ring():
    for mb in (1, 2, 8, 32, 128, 1024):
        for ncpu in (1, 2, 16, 256):
            n = runtime.wake_every(mb << 20, ncpu)
            assert n >= 1 and n & (n - 1) == 0, (mb, ncpu, n)
            assert n <= runtime.WAKE_EVERY_MAX
            # all CPUs together fill at most 1/WAKEUPS_PER_RING of the ring between two forced wakeups
            assert n * ncpu * runtime.WAKEUPS_PER_RING * _stride() <= (mb << 20) or n == 1, (mb, ncpu, n)


def test_wake_every_exact_values():
    records_1mb = (1 << 20) // _stride()
    n = records_1mb // (runtime.WAKEUPS_PER_RING * 2)
    assert runtime.wake_every(1 << 20, 2) == 1 << (n.bit_length() - 1)
    assert runtime.wake_every(1024 << 20, 2) == runtime.WAKE_EVERY_MAX
    assert runtime.wake_every(1 << 20, 4096) == 1


def test_print_bpf_shows_batched_wakeup_flags(tmp_path):
    res = CliRunner().invoke(main, ["record", "-o", str(tmp_path / "t"), "--probes", "ioctl", "--kfd-path", "/dev/null",
                                    "--ringbuf-mb", "8", "--print-bpf"])
    assert res.exit_code == 0, res.output
    assert "-DGPT_RB_FLAGS=1 " in res.output
    assert f"-DGPT_WAKE_EVERY={runtime.wake_every(8 << 20)} " in res.output
    assert "GPT_RB_FORCE_WAKEUP" in res.output
