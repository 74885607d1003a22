"""moto's KMS in a process of its own, on 127.0.0.1 and an ephemeral port.

One moto process per emulator keeps each emulator's keys apart (moto's backends are
process-global). Run as a module, it prints its port on stdout and exits when stdin closes, so it
never outlives whoever started it; :class:`MotoProcess` is that whoever. Before serving it
installs :mod:`.moto_extensions` (the KMS operations moto lacks, on moto's own backend).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from pathlib import Path

from .._process import set_parent_death_signal

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
        return self.spawn().wait_ready()

    def spawn(self) -> "MotoProcess":
        """Start the process without waiting for it: :meth:`wait_ready` waits (moto's imports take
        about half a second, which the emulator spends on what needs no moto)."""
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
        return self

    def wait_ready(self) -> "MotoProcess":
        """Wait for the port line moto prints once it serves (:class:`MotoStartError` if it dies)."""
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
    # moto builds a service's app and backend at its first request: KMS's now, while the emulator
    # sets up its KMS front (its first call is the seal key's CreateKey).
    threading.Thread(target=_warm_up, args=(port,), daemon=True).start()
    sys.stdin.read()  # until whoever started us closes our stdin (or dies)
    # Exit now: moto keeps nothing worth a clean shutdown, and ThreadedMotoServer.stop() waits out
    # werkzeug's half-second poll interval (most of what stopping an emulator used to take).
    sys.stderr.flush()
    os._exit(0)


_KMS_LIST_KEYS = {
    "X-Amz-Target": "TrentService.ListKeys",
    "Content-Type": "application/x-amz-json-1.1",
    "Authorization": "AWS4-HMAC-SHA256 Credential=emulator/20250101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
}


def _warm_up(port: int) -> None:
    """One harmless KMS request (ListKeys) to this server; whatever it answers is of no interest."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/", body=b"{}", headers=_KMS_LIST_KEYS)
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass  # a warm-up only: the emulator's own first call does the same work
    finally:
        connection.close()


if __name__ == "__main__":
    main()
