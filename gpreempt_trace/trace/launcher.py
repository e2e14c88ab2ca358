"""The one workload launcher: `record -- CMD` and `snapshot -- CMD` start their command through it.

    with Launcher(cmd, trace="TRACE") as w:      # markers go to TRACE (None: no markers)
        w.start(hold=True)                        # held at a gate: the caller learns the pid first
        ...                                       # e.g. add w.pid to the recorder's tgid filter
        w.release()                               # workload_start marker, then CMD runs
        code = w.wait()                           # workload_exit marker; the shell-style exit code

Markers (source `launcher`, through markers.MarkerWriter): `workload_start` (tgid = target_tgid = the
command's pid, label = the command line) and `workload_exit` (same pids, value_ns = run time, label
`exit_code=N`). N is the exit status, or 128 + the signal number when a signal ended it (as a shell
reports it); a command that fails makes its parent exit non-zero with that code.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from typing import Optional, Sequence

from ..errors import GptError
from .markers import MarkerWriter

SOURCE = "launcher"
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long


def exit_code(returncode: int) -> int:
    """A Popen returncode as a shell reports it: the status, or 128 + N for signal N."""
    return returncode if returncode >= 0 else 128 - returncode


class Launcher:
    def __init__(self, cmd: Sequence[str], trace: Optional[str | os.PathLike] = None):
        if not cmd:
            raise GptError("no command given", "give the workload after --, e.g. -- python model.py")
        self.cmd = list(cmd)
        self.markers = MarkerWriter(trace, SOURCE) if trace is not None else None
        self.proc: Optional[subprocess.Popen] = None
        self.start_ns: Optional[int] = None
        self.exit_code: Optional[int] = None
        self._gate_w: Optional[int] = None
        self.markers_written = 0  # marker rows in closed segments, known after close()

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self, hold: bool = False) -> int:
        """Start the command; with hold=True it waits at a gate (a shell reading a pipe, then exec) until
        release(), so the caller can register its pid before the command runs a single instruction."""
        try:
            if hold:
                r, w = os.pipe()
                gate = f'read -r _ <&{r} && exec "$@"'  # EOF (never released): exit 1, CMD never runs
                self.proc = subprocess.Popen(["/bin/bash", "-c", gate, "gate", *self.cmd], pass_fds=(r,))
                os.close(r)
                self._gate_w = w
            else:
                self.proc = subprocess.Popen(self.cmd)
        except OSError as e:
            raise GptError(f"cannot start {self.cmd[0]!r} ({e.strerror or e})",
                           "give the workload command after --, e.g. -- python model.py") from None
        if not hold:
            self._started()
        return self.proc.pid

    def release(self) -> None:
        if self._gate_w is None:
            return
        self._started()
        try:
            os.write(self._gate_w, b"go\n")
        except BrokenPipeError:  # the gate shell is already gone (killed); wait() reports it
            pass
        os.close(self._gate_w)
        self._gate_w = None

    def _started(self) -> None:
        self.start_ns = time.monotonic_ns()
        self._mark("workload_start", self.start_ns, label=shlex.join(self.cmd)[:500])

    def poll(self) -> Optional[int]:
        """None while the command runs; its exit code (and the workload_exit marker) once it ended."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return self._finished()

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the command (subprocess.TimeoutExpired after `timeout`); its exit code."""
        assert self.proc is not None
        self.proc.wait(timeout)
        return self._finished()

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM (SIGKILL after grace_s) a command still running; its exit code."""
        if self.proc is None:
            return 0
        if self._gate_w is not None:  # never released: the gate shell exits on EOF, CMD never runs
            os.close(self._gate_w)
            self._gate_w = None
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._finished()

    def _finished(self) -> int:
        if self.exit_code is None:
            self.exit_code = exit_code(self.proc.returncode)
            now = time.monotonic_ns()
            self._mark("workload_exit", now, value_ns=now - self.start_ns if self.start_ns else None,
                       label=f"exit_code={self.exit_code}")
        return self.exit_code

    def _mark(self, kind: str, ts_ns: int, **cols) -> None:
        if self.markers is not None:
            self.markers.add(kind, ts_ns=ts_ns, tgid=self.proc.pid, target_tgid=self.proc.pid, **cols)

    def tick(self) -> None:
        if self.markers is not None:
            self.markers.tick()

    def close(self) -> None:
        """Stop a command still running, close the marker segments."""
        if self.proc is not None and self.exit_code is None:
            self.stop()
        if self.markers is not None:
            w = self.markers.tw.writers.get("markers") if self.markers.tw else None
            self.markers.close()
            self.markers_written = w.rows_written if w else 0
            self.markers = None

    def __enter__(self) -> "Launcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
