"""pytest plugin: the lab markers and the session-scoped lab fixtures (a built `Lab` per kernel).

    def test_x(lab): ...            # Debian 6.1 guest (marked `lab`)
    def test_y(lab612): ...         # Debian 6.12 guest (marked `lab` and `lab612`)
    @pytest.mark.parametrize("lab_kernel", ["6.1", "6.12"], indirect=True)
    def test_z(lab_kernel): ...     # once per kernel (marked `lab`; `lab612` is not added)

A fixture skips, with the reason, when this machine cannot run QEMU at all (LabUnavailable) and
fails when QEMU exists but that lab cannot be built (LabBroken). Set GPT_LAB=skip to skip lab tests
on purpose. Tests using a lab fixture are marked `lab` automatically (deselect with -m "not lab");
tests using `lab612` are also marked `lab612` (-m "lab and not lab612": the 6.1 ones only)."""
from __future__ import annotations

import os

import pytest

from .build import DEFAULT_KERNEL
from .errors import LabBroken, LabUnavailable
from .lab import Lab

LAB_FIXTURES = ("lab", "lab612", "lab_kernel")


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: runs inside the QEMU lab guest (real Debian 6.1 or 6.12 kernel with amdgpu/KFD)")
    config.addinivalue_line("markers", "lab612: runs inside the Debian 6.12 lab guest (KFD ioctl 1.17, debugger ABI)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = getattr(item, "fixturenames", ())
        if any(f in names for f in LAB_FIXTURES) and not item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.lab)
        if "lab612" in names and not item.get_closest_marker("lab612"):
            item.add_marker(pytest.mark.lab612)


def lab_for(kernel: str) -> Lab:
    """The built lab of `kernel`, or skip/fail the test as the module docstring says."""
    if os.environ.get("GPT_LAB") == "skip":
        pytest.skip("GPT_LAB=skip")
    try:
        return Lab.ensure(kernel=kernel)
    except LabUnavailable as e:
        pytest.skip(f"lab unavailable: {e.line()}")
    except LabBroken as e:
        pytest.fail(f"lab broken ({kernel}): {e.line()}", pytrace=False)


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The Debian 6.1 lab."""
    return lab_for(DEFAULT_KERNEL)


@pytest.fixture(scope="session")
def lab612() -> Lab:
    """The Debian 6.12 lab."""
    return lab_for("6.12")


@pytest.fixture(scope="session")
def lab_kernel(request) -> Lab:
    """The lab of the kernel series the test is parametrized with (indirect=True; default 6.1)."""
    return lab_for(getattr(request, "param", DEFAULT_KERNEL))
