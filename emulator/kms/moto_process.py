"""moto's KMS in a process of its own, on 127.0.0.1 and an ephemeral port.

One moto process per emulator keeps each emulator's keys apart (moto's backends are
process-global). Run as a module, it prints its port on stdout and exits when stdin closes, so it
never outlives whoever started it; :class:`MotoProcess` is that whoever. Before serving it
installs :mod:`.moto_extensions` (the KMS operations moto lacks, on moto's own backend).
"""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

from ..launcher import set_parent_death_signal

__all__ = ["MotoProcess", "MotoStartError"]

START_TIMEOUT = 60.0


class MotoStartError(RuntimeError):
    """moto did not start; the message ends with its log."""


class MotoProcess:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._process: subprocess.Popen | None = None
        self.endpoint_url = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> "MotoProcess":
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "emulator.kms.moto_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.log_path.parent,
                preexec_fn=set_parent_death_signal,  # never outlive the emulator
                process_group=0,  # nor die of a terminal's Ctrl-C before the emulator stops it
            )
        try:
            line = self._port_line()
        except BaseException:  # interrupted while moto starts: it must not outlive us either
            self.stop()
            raise
        if not line.strip().isdigit():
            self.stop()
            raise MotoStartError(f"moto did not start:\n{self.log_path.read_text(errors='replace')[-2000:]}")
        self.endpoint_url = f"http://127.0.0.1:{int(line)}"
        return self

    def _port_line(self) -> bytes:
        assert self._process is not None and self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], START_TIMEOUT)
        return self._process.stdout.readline() if ready else b""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=5)
        except (subprocess.TimeoutExpired, OSError):
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> "MotoProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    from moto.server import ThreadedMotoServer

    from .moto_extensions import install

    install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    print(port, flush=True)
    sys.stdin.read()  # until whoever started us closes our stdin (or dies)
    server.stop()


if __name__ == "__main__":
    main()
