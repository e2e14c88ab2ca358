"""Lab errors: `LabUnavailable` when this machine cannot run the QEMU lab at all (tests skip),
`LabBroken` when it can but building or running the lab failed (tests fail)."""
from __future__ import annotations

from ..errors import GptError


class LabUnavailable(GptError):
    """This machine cannot run QEMU at all (no qemu-system-x86_64, busybox-static, dpkg-deb …)."""

    exit_code = 3


class LabBroken(GptError):
    """QEMU exists but the lab could not be built or a guest failed (download, panic, hang …)."""

    exit_code = 1
