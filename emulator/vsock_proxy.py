"""The parent instance's vsock-proxy, emulated: raw TCP from an emulated vsock port to KMS.

Like the real ``vsock-proxy`` it forwards bytes only — the enclave's TLS session runs through it
untouched — and it has one fixed destination.
"""

from __future__ import annotations

import os
import socket
import threading

from enclave.forwarder import pump_both_ways

__all__ = ["VsockProxy"]


class VsockProxy:
    def __init__(self, listen_path: str, target: tuple[str, int]) -> None:
        self.listen_path = listen_path
        self.target = target
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> "VsockProxy":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.listen_path)
        listener.listen(32)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="vsock-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            os.unlink(self.listen_path)
        except FileNotFoundError:
            pass

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(client,), name="vsock-proxy-conn", daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        with client:
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            with upstream:
                upstream.settimeout(None)
                pump_both_ways(client, upstream)
