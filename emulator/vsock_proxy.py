"""The parent instance's vsock-proxy, emulated: raw TCP from an emulated vsock port to KMS.

Like the real ``vsock-proxy`` it forwards bytes only — the enclave's TLS session runs through it
untouched — and it has one fixed destination.
"""

from __future__ import annotations

import os
import socket

from enclave.forwarder import Relay, pump_both_ways

__all__ = ["VsockProxy"]


class VsockProxy(Relay):
    thread_name = "vsock-proxy"

    def __init__(self, listen_path: str, target: tuple[str, int]) -> None:
        super().__init__()
        self.listen_path = listen_path
        self.target = target

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.listen_path)
        listener.listen(32)
        return listener

    def stop(self) -> None:
        super().stop()
        try:
            os.unlink(self.listen_path)
        except FileNotFoundError:
            pass

    def _serve(self, client: socket.socket) -> None:
        with client:
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            with upstream:
                upstream.settimeout(None)
                pump_both_ways(client, upstream)
