"""Interrupted at any moment: ``zerocopy demo`` and ``zerocopy emulator up`` stopped by SIGINT
(a terminal's Ctrl-C, sent to the whole process group) or SIGTERM (``kill PID``, to the command
alone) leave no process and no file, and print one line.

Each run is a real ``zerocopy`` subprocess in a session of its own, with a private ``TMPDIR`` (so
the emulator's run directory, ``zc-*``, lands where this test can see every file, and other runs on
the machine cannot confuse it). Afterwards no process of that session may be running (a /proc scan:
the emulator's children sit in process groups of their own, but never leave the session) and the
``TMPDIR`` must be empty.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WAIT_FOR_LINE = 90.0


def session_processes(session: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live (not zombie) process in ``session``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        state, _ppid, _group, session_id = stat.rsplit(")", 1)[1].split()[:4]
        if int(session_id) == session and state != "Z":
            found.append((int(entry), command[:160]))
    return found


class Run:
    """``zerocopy ARGS`` in a new session with its own TMPDIR; killed and cleaned up however the test ends."""

    def __init__(self, *args: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="zci-"))  # short: the emulator's Unix socket paths live under it
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zerocopy", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, start_new_session=True,
        )
        self.stdout = b""

    def wait_for(self, marker: bytes) -> None:
        """Read stdout until a line starting with ``marker`` has been printed."""
        deadline = time.monotonic() + WAIT_FOR_LINE
        assert self.process.stdout is not None
        while not any(line.lstrip().startswith(marker) for line in self.stdout.splitlines()):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line {marker!r} within {WAIT_FOR_LINE:.0f}s; stdout so far:\n{self.stdout.decode(errors='replace')}"
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            chunk = os.read(self.process.stdout.fileno(), 65536) if ready else b""
            assert chunk or not ready, f"zerocopy exited before printing {marker!r}:\n{self.stdout.decode(errors='replace')}"
            self.stdout += chunk

    def wait_until_started(self) -> None:
        """Until the command handles SIGTERM itself (/proc's SigCgt), which it does from the first
        line of its ``main``: before that the interpreter is still starting up, and a signal then
        is Python's to answer, not ZeroCopy's."""
        deadline = time.monotonic() + WAIT_FOR_LINE
        while time.monotonic() < deadline:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
            caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
            if caught & (1 << (signal.SIGTERM - 1)):
                return
            assert self.process.poll() is None, "zerocopy exited while starting"
            time.sleep(0.005)
        raise AssertionError(f"zerocopy did not start within {WAIT_FOR_LINE:.0f}s")

    def interrupt(self, signum: int, *, group: bool) -> tuple[int, str]:
        """Send ``signum`` (to the process group, as a terminal does, or the process alone);
        return the exit status and what was printed on stderr."""
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        _, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stderr.decode(errors="replace")

    def cleanup(self) -> None:
        for pid, _ in session_processes(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def run() -> Iterator[type[Run]]:
    started: list[Run] = []

    class Tracked(Run):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Tracked
    for each in started:
        each.cleanup()


def assert_left_nothing(run: Run) -> None:
    deadline = time.monotonic() + 5  # a child killed by its parent-death signal may take a moment
    while session_processes(run.process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_processes(run.process.pid) == []
    assert sorted(path.name for path in run.tmp.rglob("*")) == []


# (marker on stdout to wait for, or None: right after start) -> the step the demo is in
DEMO_POINTS = [
    pytest.param(None, signal.SIGINT, True, id="starting-ctrl-c"),
    pytest.param(b"3. Creating a KMS key", signal.SIGINT, True, id="kms-key-ctrl-c"),
    pytest.param(b"5. Provisioning", signal.SIGTERM, False, id="provisioning-sigterm"),
    pytest.param(b"9. Sign round trip", signal.SIGINT, True, id="latency-ctrl-c"),
    pytest.param(b"9. Sign round trip", signal.SIGTERM, False, id="latency-sigterm"),
]


@pytest.mark.parametrize(("marker", "signum", "group"), DEMO_POINTS)
def test_demo_interrupted_leaves_nothing(run: type[Run], marker: bytes | None, signum: int, group: bool) -> None:
    demo = run("demo", "--samples", "200000")  # a latency step long enough to be inside when the signal comes
    if marker is None:
        demo.wait_until_started()
        time.sleep(0.1)  # inside the import of the CLI or the emulator's start
    else:
        demo.wait_for(marker)
        time.sleep(0.2)
    status, stderr = demo.interrupt(signum, group=group)
    assert stderr.splitlines() == ["zerocopy: interrupted"]
    assert status == 128 + signum
    assert_left_nothing(demo)


def test_emulator_up_interrupted_while_starting(run: type[Run]) -> None:
    up = run("emulator", "up")
    up.wait_until_started()
    time.sleep(0.5)  # the CLI importing, or moto and the KMS front coming up
    status, stderr = up.interrupt(signal.SIGINT, group=True)
    assert stderr.splitlines() == ["zerocopy: interrupted"]
    assert status == 130
    assert_left_nothing(up)


@pytest.mark.parametrize(("signum", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm"])
def test_emulator_up_interrupted_while_running(run: type[Run], signum: int, group: bool) -> None:
    up = run("emulator", "up")
    up.wait_for(b"export ZEROCOPY_ENCLAVE=")
    up.wait_for(b"export ZEROCOPY_KMS_OPERATOR_SECRET_ACCESS_KEY=")  # the last export: the world is ready
    time.sleep(0.5)  # serving: the "running" line is on stderr by now
    status, stderr = up.interrupt(signum, group=group)
    lines = stderr.splitlines()
    assert lines[-1] == "emulator stopped" and len([line for line in lines if "running" not in line]) == 1, stderr
    assert status == 0
    assert_left_nothing(up)
