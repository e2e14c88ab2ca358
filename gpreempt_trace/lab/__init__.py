"""The real-kernel lab: Debian's 6.1 kernel with the real amdgpu/KFD module under QEMU (TCG).

    from gpreempt_trace.lab import Lab, LabUnavailable
    lab = Lab.ensure()
    res = lab.run("ls -l /dev/kfd")   # res.rc, res.output, res.files, res.wall_s

See docs/lab.md."""
from .errors import LabBroken, LabUnavailable
from .lab import Lab, RunResult

__all__ = ["Lab", "LabBroken", "LabUnavailable", "RunResult"]
