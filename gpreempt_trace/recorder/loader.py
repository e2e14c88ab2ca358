"""Plan, compile, load and attach the recorder's BPF program in a short-lived child process, so that
BCC, clang/LLVM and the BTF parse never enter the recorder's address space (issue 23 item 6: they were
its peak RSS). The child hands the program's file descriptors to the recorder over a Unix socket
(SCM_RIGHTS) and exits; the recorder keeps them: a map lives as long as an fd refers to it, an attachment
(perf event of a tracepoint or kprobe, raw tracepoint) as long as its fd is open. The recorder then
reads the ring through the map's fd (ring.py) and updates or reads the other maps with the bpf()
syscall (BpfMap); closing the fds (Loaded.close) detaches everything.

    loader = Loader(opts)           # starts the child
    prog = loader.plan()            # the child builds the Program (BTF offsets, attach plan)
    loaded = loader.load(prog)      # the child compiles, loads and attaches by trying; prog.rows/kfd_plan updated
    loaded.map("gpt_tgids").set(pid, 1); loaded.map("gpt_lost").percpu_sum(0); loaded.close()

The child is `python -m gpreempt_trace.recorder.loader_child FD` (loader_child.py); it dies with the
recorder (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import ctypes
import os
import pickle
import platform
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

from ..errors import GptError

BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351}
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_OBJ_GET_INFO_BY_FD = 1, 2, 15
MAP_INFO_SIZE = 80  # sizeof(struct bpf_map_info) up to map_extra; the kernel fills what it knows
PROG_INFO_SIZE = 232  # sizeof(struct bpf_prog_info), uapi of this build; fields past what the kernel knows stay 0
RECURSION_MISSES_OFF = 208  # offsetof(struct bpf_prog_info, recursion_misses) (5.12+)
PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
FDS_PER_MESSAGE = 250  # SCM_MAX_FD is 253
PR_SET_PDEATHSIG = 1
# the maps the recorder uses after the load (the others live on through the programs that use them)
RECORDER_MAPS = ("gpt_events", "gpt_lost", "gpt_tgids", "gpt_pidns", "gpt_ioctl_known")

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long


def bpf(cmd: int, attr: bytearray) -> int:
    """The bpf() syscall; raises OSError with the kernel's errno."""
    nr = BPF_SYSCALL.get(platform.machine())
    if nr is None:
        raise OSError(0, f"bpf() syscall number unknown on {platform.machine()}")
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    ret = LIBC.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def obj_info(fd: int, size: int) -> bytes:
    """BPF_OBJ_GET_INFO_BY_FD: the info struct of a map or program (zero past what the kernel fills)."""
    info = ctypes.create_string_buffer(size)
    attr = bytearray(struct.pack("<IIQ", fd, size, ctypes.addressof(info)))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info.raw


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """How many values a per-CPU map holds per key: the highest possible CPU + 1 (as libbpf counts)."""
    text = Path(path).read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


class BpfMap:
    """One map of the loaded program, read and updated with the bpf() syscall; keys and values are
    unsigned integers of the map's key/value size."""

    def __init__(self, name: str, fd: int):
        self.name, self.fd = name, fd
        info = obj_info(fd, MAP_INFO_SIZE)
        self.type, _id, self.key_size, self.value_size = struct.unpack_from("<IIII", info)

    def _elem(self, cmd: int, key: int, value: bytearray, flags: int = 0) -> None:
        k = ctypes.create_string_buffer(key.to_bytes(self.key_size, "little"), self.key_size)
        v = (ctypes.c_char * len(value)).from_buffer(value)
        bpf(cmd, bytearray(struct.pack("<IIQQQ", self.fd, 0, ctypes.addressof(k), ctypes.addressof(v), flags)))

    def set(self, key: int, value: int) -> None:
        self._elem(BPF_MAP_UPDATE_ELEM, key, bytearray(value.to_bytes(self.value_size, "little")))

    def percpu_sum(self, key: int) -> int:
        """The sum over CPUs of a per-CPU map's value at `key`."""
        step = (self.value_size + 7) // 8 * 8
        ncpu = possible_cpus()
        value = bytearray(step * ncpu)
        self._elem(BPF_MAP_LOOKUP_ELEM, key, value)
        return sum(int.from_bytes(value[i * step:i * step + self.value_size], "little") for i in range(ncpu))


def prog_misses(prog_fds) -> int | None:
    """Program runs the kernel skipped (another BPF program was active on that CPU, e.g. a task
    preempted inside one): events that never reached the ring, counted exactly by the kernel
    (bpf_prog_info.recursion_misses). None when the kernel does not report it."""
    total, seen = 0, False
    for fd in prog_fds:
        try:
            info = obj_info(fd, PROG_INFO_SIZE)
        except OSError:
            continue
        total += int.from_bytes(info[RECURSION_MISSES_OFF:RECURSION_MISSES_OFF + 8], "little")
        seen = True
    return total if seen else None


class Loaded:
    """The loaded, attached program as file descriptors: maps by name, programs by name and the
    attachments. Closing them detaches the probes and frees the program."""

    def __init__(self, maps: dict[str, int], progs: dict[str, int], links: list[tuple[str, str, int]], loader: dict):
        self.maps = {name: BpfMap(name, fd) for name, fd in maps.items()}
        self.progs = progs
        self.links = links  # (kind, target, fd): "tracepoint" | "raw_tracepoint" | "kprobe"
        self.loader = loader  # meta recorder.loader: the child's pid, seconds and peak RSS
        self.closed = False

    def map(self, name: str) -> BpfMap:
        try:
            return self.maps[name]
        except KeyError:
            raise KeyError(f"map {name} was not handed over by the loader") from None

    def lost(self) -> int:
        return self.map("gpt_lost").percpu_sum(0)

    def misses(self) -> int | None:
        return prog_misses(self.progs.values())

    def close(self) -> None:
        """Detach (attachments first), then free the programs and maps; remove a legacy (tracefs)
        kprobe event BCC made in the loader, if it had to (kernels without the kprobe PMU)."""
        if self.closed:
            return
        self.closed = True
        for fd in [fd for _k, _t, fd in self.links] + list(self.progs.values()) + [m.fd for m in self.maps.values()]:
            try:
                os.close(fd)
            except OSError:
                pass
        _remove_legacy_kprobes(self.loader["pid"])


def _remove_legacy_kprobes(pid: int) -> None:
    for tracefs in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")):
        events = tracefs / "kprobe_events"
        try:
            lines = events.read_text().splitlines()
        except OSError:
            continue
        for ln in lines:  # "p:kprobes/p_kfd_ioctl_bcc_1234 kfd_ioctl"
            name = ln.split()[0].split(":", 1)[-1] if ln.strip() else ""
            if name.endswith(f"_bcc_{pid}"):
                try:
                    with open(events, "a") as f:
                        f.write(f"-:{name}\n")
                except OSError:
                    pass
        return


# ---- the protocol: 4-byte length + pickle; file descriptors after the message that counts them -----
def send(sock: socket.socket, obj) -> None:
    data = pickle.dumps(obj)
    sock.sendall(struct.pack("<I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket):
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    data = _recv_exact(sock, struct.unpack("<I", head)[0])
    return None if data is None else pickle.loads(data)


def send_fds(sock: socket.socket, fds: list[int]) -> None:
    for i in range(0, len(fds), FDS_PER_MESSAGE):
        socket.send_fds(sock, [b"F"], fds[i:i + FDS_PER_MESSAGE])


def _recv_fds(sock: socket.socket, n: int) -> list[int]:
    fds: list[int] = []
    while len(fds) < n:
        _data, got, flags, _addr = socket.recv_fds(sock, 1, FDS_PER_MESSAGE)
        fds += got
        if flags & socket.MSG_CTRUNC or not got:
            for fd in fds:
                os.close(fd)
            raise GptError(f"the BPF loader's file descriptors did not arrive ({len(fds)} of {n})",
                           "raise the open-file limit (ulimit -n) and run record again")
    return fds


class Loader:
    """The recorder's side of the loader child (see the module doc)."""

    def __init__(self, opts):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # the child imports this very package, wherever it was imported from
        top = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (top, os.environ.get("PYTHONPATH")) if p))
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "gpreempt_trace.recorder.loader_child", str(child.fileno())],
                                         pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, stdout=2, env=env)
        except OSError as e:
            parent.close()
            raise GptError(f"cannot start the BPF loader ({sys.executable}: {e.strerror})", "check the Python interpreter") from None
        finally:
            child.close()
        self.sock = parent
        self.t0 = time.monotonic()
        self.peak_rss_bytes: int | None = None  # the child's, once reaped
        self.seconds: float | None = None  # how long it lived
        self._send(opts, "starting")

    def _send(self, obj, step: str) -> None:
        try:
            send(self.sock, obj)
        except OSError:  # the child is gone; what it said is on stderr
            self.close()
            raise GptError(f"the BPF loader exited ({self.proc.returncode}) while {step}", "see its messages above") from None

    def _reply(self, step: str):
        msg = recv(self.sock)
        if msg is None:
            self.close()
            raise GptError(f"the BPF loader exited ({self.proc.returncode}) while {step}", "see its messages above")
        for category, text in msg.get("warnings", ()):
            warnings.warn(text, category, stacklevel=3)
        if "error" in msg:
            self.close()
            raise msg["error"]
        return msg

    def plan(self):
        """The Program, built in the child (Recorder.build)."""
        return self._reply("planning the probes")["program"]

    def load(self, prog) -> Loaded:
        """Compile, load and attach in the child; prog becomes the child's after the attach (status,
        reason, target of every probe). The child exits after handing the fds over."""
        self._send("load", "compiling and attaching the BPF program")
        msg = self._reply("compiling and attaching the BPF program")
        fds = _recv_fds(self.sock, msg["nfds"])
        self.close()
        it = iter(fds)
        maps = {name: next(it) for name in msg["maps"]}
        progs = {name: next(it) for name in msg["progs"]}
        links = [(kind, target, next(it)) for kind, target in msg["links"]]
        vars(prog).update(vars(msg["program"]))  # the attach outcome: rows, plans (status, reason, target)
        return Loaded(maps, progs, links, {"pid": self.proc.pid, "seconds": round(self.seconds, 3),
                                           "peak_rss_bytes": self.peak_rss_bytes})

    def close(self) -> None:
        """End the child (its socket closed, it exits; killed after 5 s) and reap it, with its peak RSS."""
        self.sock.close()
        if self.proc.returncode is not None:
            return
        end = time.monotonic() + 5
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > end:
                self.proc.kill()
                pid, status, usage = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.005)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.peak_rss_bytes = usage.ru_maxrss * 1024  # KiB on Linux
        self.seconds = time.monotonic() - self.t0
