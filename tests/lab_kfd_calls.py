"""In the lab guest (real 6.1 kernel, amdgpu loaded, no GPU): open /dev/kfd, issue AMDKFD_IOC_GET_VERSION
(ret 0) and a CREATE_QUEUE naming a gpu_id that does not exist (ret -EINVAL). Prints one JSON line with
the pid, the version and both return values as the caller saw them."""
import ctypes
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gpreempt_trace.recorder import ioctls as I  # noqa: E402

BOGUS_GPU_ID = 0xDEAD


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/kfd", os.O_RDWR | os.O_CLOEXEC)
    ver = I.GetVersionArgs()
    r1 = libc.ioctl(fd, ctypes.c_ulong(I.GET_VERSION), ctypes.byref(ver))
    e1 = ctypes.get_errno() if r1 < 0 else 0
    cq = I.CreateQueueArgs(gpu_id=BOGUS_GPU_ID, queue_type=2, queue_percentage=100, queue_priority=7,
                           ring_size=4096, ring_base_address=0x100000)
    r2 = libc.ioctl(fd, ctypes.c_ulong(I.CREATE_QUEUE), ctypes.byref(cq))
    e2 = ctypes.get_errno() if r2 < 0 else 0
    print(json.dumps({"pid": os.getpid(), "version": [ver.major_version, ver.minor_version],
                      "get_version": -e1 if r1 < 0 else r1, "create_queue": -e2 if r2 < 0 else r2}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
