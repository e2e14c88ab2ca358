"""pytest plugin: the `lab` marker and the session-scoped `lab` fixture (a built `Lab`).

The fixture skips, with the reason, when this machine cannot run QEMU at all (LabUnavailable) and
fails when QEMU exists but the lab cannot be built (LabBroken). Set GPT_LAB=skip to skip lab tests
on purpose. Tests using the fixture are marked `lab` automatically (deselect with -m "not lab")."""
from __future__ import annotations

import os

import pytest

from .errors import LabBroken, LabUnavailable
from .lab import Lab


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: runs inside the QEMU lab guest (real Debian 6.1 kernel with amdgpu/KFD)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab() -> Lab:
    if os.environ.get("GPT_LAB") == "skip":
        pytest.skip("GPT_LAB=skip")
    try:
        return Lab.ensure()
    except LabUnavailable as e:
        pytest.skip(f"lab unavailable: {e.line()}")
    except LabBroken as e:
        pytest.fail(f"lab broken: {e.line()}", pytrace=False)
