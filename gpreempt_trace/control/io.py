"""The controller's system-call layer, injectable: KFD ioctls and ptrace.

`SysIo` issues the real calls (libc ioctl/ptrace through ctypes, os.waitpid). `DryRunIo` issues none and
hands one line per ioctl to its `say` (the CLI prints them; default: logged) (name, request number, argument bytes as lowercase hex). `ScriptedIo` (tests,
bench) records every call with its exact bytes and answers from a script. The schemes (scheme_a.py,
scheme_b.py) only talk to an Io.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

# ptrace requests and options (asm-generic / x86-64 values from <sys/ptrace.h>)
PTRACE_CONT, PTRACE_DETACH, PTRACE_GETEVENTMSG = 7, 17, 0x4201
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_LISTEN = 0x4206, 0x4207, 0x4208
PTRACE_O_TRACEFORK, PTRACE_O_TRACEVFORK, PTRACE_O_TRACECLONE = 0x02, 0x04, 0x08
PTRACE_O_TRACEEXEC, PTRACE_O_TRACEEXIT = 0x10, 0x40
PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE, PTRACE_EVENT_EXEC = 1, 2, 3, 4
PTRACE_EVENT_EXIT, PTRACE_EVENT_STOP = 6, 128
SEIZE_OPTIONS = PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_TRACEEXIT
WALL = 0x40000000  # __WALL


class Io:
    """What a scheme needs from the system. Errors raise OSError(errno)."""

    kfd_path = "/dev/kfd"
    real_ptrace = False  # ptrace/waitpid are the kernel's (the target's stops can be waited for)

    def open_kfd(self) -> None: ...

    def close_kfd(self) -> None: ...

    def ioctl(self, name: str, request: int, arg: ctypes.Structure, refs: tuple = ()) -> int:
        """Issue `request` with `arg` (in/out). `refs`: buffers arg points into (recorded by tests)."""
        raise NotImplementedError

    def ptrace(self, request: int, pid: int, addr: int = 0, data: int = 0) -> int:
        raise NotImplementedError

    def waitpid(self, pid: int, flags: int) -> tuple[int, int]:
        return os.waitpid(pid, flags)

    def pipe(self) -> tuple[int, int]:
        return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


class SysIo(Io):
    """The real calls."""

    real_ptrace = True

    def __init__(self, kfd_path: str = "/dev/kfd"):
        self.kfd_path = kfd_path
        self.fd: int | None = None
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self.libc.ptrace.restype = ctypes.c_long

    def open_kfd(self) -> None:
        if self.fd is None:
            self.fd = os.open(self.kfd_path, os.O_RDWR | os.O_CLOEXEC)

    def close_kfd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def ioctl(self, name, request, arg, refs=()):
        ret = self.libc.ioctl(self.fd, request, ctypes.addressof(arg))
        if ret < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"{name}: {os.strerror(e)}")
        return ret

    def ptrace(self, request, pid, addr=0, data=0):
        ctypes.set_errno(0)
        ret = self.libc.ptrace(request, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data))
        if ret == -1 and ctypes.get_errno():
            e = ctypes.get_errno()
            raise OSError(e, f"ptrace({request:#x}, {pid}): {os.strerror(e)}")
        return ret


def ioctl_line(name: str, request: int, arg: ctypes.Structure) -> str:
    return f"{name} {request:#010x} {bytes(arg).hex()}"


def default_answer(name: str, arg, minor: int) -> int:
    """What an idle KFD answers: GET_VERSION 1.minor, no debugger event pending (EAGAIN), no queues."""
    if name == "AMDKFD_IOC_GET_VERSION":
        arg.major_version, arg.minor_version = 1, minor
    elif name.endswith(":QUERY_DEBUG_EVENT"):
        raise oserror(errno.EAGAIN)
    elif name.endswith(":GET_QUEUE_SNAPSHOT"):
        arg.queue_snapshot.num_queues = 0
    return 0


class DryRunIo(Io):
    """Issues nothing: `say(line)` gets one line per ioctl (default: logged at INFO); ptrace and waitpid do nothing."""

    def __init__(self, say: Callable[[str], None] | None = None, minor: int = 17):
        self.say = say or log.info
        self.minor = minor

    def ioctl(self, name, request, arg, refs=()):
        self.say(ioctl_line(name, request, arg))
        return default_answer(name, arg, self.minor)

    def ptrace(self, request, pid, addr=0, data=0):
        return 0

    def waitpid(self, pid, flags):
        return 0, 0

    def pipe(self):
        return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


class ScriptedIo(Io):
    """Records (name, request, arg bytes, [bytes of each ref], [address of each ref]) per ioctl and ("ptrace", request, pid, data)
    per ptrace call. `answer(name, arg, refs) -> int` may write outputs into arg/refs and return the
    result or raise OSError; the default answers 0 (GET_VERSION: 1.17). Real ptrace can be passed
    through with `ptrace_io` (e.g. SysIo()) to drive a real child with scripted ioctls."""

    def __init__(self, answer: Callable | None = None, ptrace_io: Io | None = None, minor: int = 17):
        self.calls: list[tuple] = []
        self.answer = answer
        self.ptrace_io = ptrace_io
        self.minor = minor
        self.opened = False
        self.real_ptrace = bool(ptrace_io and ptrace_io.real_ptrace)

    def open_kfd(self):
        self.opened = True

    def close_kfd(self):
        self.opened = False

    def ioctl(self, name, request, arg, refs=()):
        self.calls.append((name, request, bytes(arg), [bytes(r) for r in refs], [ctypes.addressof(r) for r in refs]))
        if self.answer is not None:
            return self.answer(name, arg, refs)
        return default_answer(name, arg, self.minor)

    def ptrace(self, request, pid, addr=0, data=0):
        self.calls.append(("ptrace", request, pid, data))
        if self.ptrace_io:
            return self.ptrace_io.ptrace(request, pid, addr, data)
        if request == PTRACE_INTERRUPT:
            self.interrupted = pid
        return 0

    def waitpid(self, pid, flags):
        if self.ptrace_io:
            return self.ptrace_io.waitpid(pid, flags)
        if getattr(self, "interrupted", None) == pid:  # the stop a PTRACE_INTERRUPT produces
            self.interrupted = None
            return pid, (PTRACE_EVENT_STOP << 16) | (5 << 8) | 0x7F  # SIGTRAP
        return 0, 0

    def ioctls(self) -> list[tuple]:
        return [c for c in self.calls if c[0] != "ptrace"]


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


ERRNO_NAMES = errno.errorcode
