"""Round-trip latency, measured against a bare socket echo in the same run.

The machines this runs on are shared and noisy, so absolute numbers say little; the ratio of a
sign round trip to an echo of the same bytes over the same kind of socket says what the signer
adds. The echo server is a separate process, like the enclave, so both pay the same scheduling.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Percentiles", "percentiles", "time_calls", "time_samples", "EchoServer", "pinned_apart", "process_threads"]

_ECHO = """\
import os, socket, sys, threading, time
# Never outlive whoever started us: our stdin closes when it exits, however it exits.
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1]); listener.listen(1)
spin_ns = int(sys.argv[2]) * 1000  # as the enclave's --busy-poll-us: spin, then sleep in recv

def receive(conn):
    if spin_ns:
        deadline = time.perf_counter_ns() + spin_ns
        while time.perf_counter_ns() < deadline:
            try:
                return conn.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
    return conn.recv(65536)

print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    with conn:
        while data := receive(conn):
            conn.sendall(data)
"""


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50_us: float
    p99_us: float
    mean_us: float

    def __str__(self) -> str:
        return f"p50 {self.p50_us:.0f} µs, p99 {self.p99_us:.0f} µs (n={self.count})"


def percentiles(samples_ns: list[int]) -> Percentiles:
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Percentiles(len(ordered), statistics.median(ordered) / 1000, p99 / 1000, statistics.fmean(ordered) / 1000)


def time_calls(call: Callable[[], object], count: int, *, warmup: int = 200) -> Percentiles:
    return percentiles(time_samples(call, count, warmup=warmup))


def time_samples(call: Callable[[], object], count: int, *, warmup: int = 200) -> list[int]:
    """Nanoseconds each of ``count`` calls took, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(count):
        start = clock()
        call()
        samples.append(clock() - start)
    return samples


@contextlib.contextmanager
def pinned_apart(*server_pids: int) -> Iterator[bool]:
    """Pin this process to one CPU and the servers to another, for the duration: every thread of
    each process, not only its main one.

    A round trip between two CPUs (an enclave has vCPUs of its own) costs a wake-up on the other
    CPU; between two processes on the same CPU it costs only a context switch. Left to the
    scheduler, the two cases mix from run to run and the ratio says nothing. A server answers on
    its connection threads: those already running are pinned one by one (``/proc/PID/task``),
    and threads started later inherit the affinity of the thread that starts them. Yields whether
    the pinning took effect (it needs two CPUs).
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield False
        return
    previous: dict[int, set[int]] = {}
    try:
        _pin_process(os.getpid(), {cpus[0]}, previous)
        for pid in server_pids:
            _pin_process(pid, {cpus[1]}, previous)
        yield True
    finally:
        for tid, affinity in previous.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(tid, affinity)


def process_threads(pid: int) -> list[int]:
    """The ids of ``pid``'s threads now (empty if the process is gone)."""
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def _pin_process(pid: int, cpus: set[int], previous: dict[int, set[int]]) -> None:
    """Every thread of ``pid`` onto ``cpus``, main thread first (threads it starts meanwhile
    inherit the pinning), then again for any thread another one started meanwhile; each thread's
    affinity before is kept in ``previous``."""
    pinned: set[int] = set()
    while new := sorted(set(process_threads(pid)) - pinned, key=lambda tid: tid != pid):
        for tid in new:
            pinned.add(tid)
            try:
                previous.setdefault(tid, os.sched_getaffinity(tid))
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:  # the thread ended meanwhile
                previous.pop(tid, None)


class EchoServer:
    """A process echoing bytes on a Unix socket: the floor under any signer round trip.

    With ``busy_poll_us`` both ends spin as a busy-polling enclave and a ``Signer(busy_poll_us=…)``
    do: the server polls for the next request that long before sleeping in ``recv``, and
    :meth:`roundtrip` polls for the echo that long before sleeping. A spinning signer is compared
    with this floor, a sleeping one with the sleeping echo (``busy_poll_us=0``).
    """

    def __init__(self, busy_poll_us: int = 0) -> None:
        self.busy_poll_us = busy_poll_us
        self._dir: str | None = None
        self.path = ""
        self._process: subprocess.Popen | None = None
        self._sock: socket.socket | None = None

    def __enter__(self) -> "EchoServer":
        # Everything it makes is made here, under the clean-up of a signal that interrupts it.
        try:
            self._dir = tempfile.mkdtemp(prefix="zc-echo-")
            self.path = os.path.join(self._dir, "echo.sock")
            # Its own process group: a terminal's Ctrl-C interrupts us, and we stop it (no traceback of its own).
            self._process = subprocess.Popen([sys.executable, "-I", "-c", _ECHO, self.path, str(self.busy_poll_us)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, process_group=0)
            assert self._process.stdout is not None
            self._process.stdout.readline()
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.connect(self.path)
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def roundtrip(self, data: bytes) -> bytes:
        sock = self._sock
        assert sock is not None
        sock.sendall(data)
        received = b""
        spin_ns = self.busy_poll_us * 1000
        deadline = time.perf_counter_ns() + spin_ns
        while len(received) < len(data):
            if spin_ns and time.perf_counter_ns() < deadline:
                try:
                    received += sock.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    pass
                continue
            received += sock.recv(65536)
        return received

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
