"""Shared fixtures. The lab (QEMU guest with Debian's real 6.1 kernel) plugs in from gpreempt_trace.lab."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GPT_SHARED", REPO.parent / "shared"))
KFD_FIXTURE = SHARED / "fixtures" / "kfd-6.1.0-56-amd64"

pytest_plugins = ["gpreempt_trace.lab.pytest_plugin"]  # fixture `lab`, marker `lab`


@pytest.fixture
def kfd_fixture() -> Path:
    if not KFD_FIXTURE.is_dir():
        pytest.fail(f"{KFD_FIXTURE} is missing: the shared fixtures must sit beside the repo (../shared)")
    return KFD_FIXTURE
