"""The in-enclave CONNECT forwarder: botocore's HTTPS proxy, tunnelling to the parent over vsock.

An enclave has no network. botocore is told to use ``http://127.0.0.1:PORT`` as its HTTPS proxy;
this forwarder accepts only ``CONNECT <kms host>:443`` (the host fixed at launch), opens a stream
to the parent's vsock-proxy and copies bytes both ways. TLS runs end to end between botocore and
KMS, so the parent only ever sees ciphertext, and it cannot redirect the enclave to another host
without failing certificate validation.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable

from .protocol.address import Address

__all__ = ["Relay", "ConnectForwarder", "pump_both_ways"]

log = logging.getLogger("enclave.forwarder")
MAX_HEAD = 8192
_CHUNK = 65536


class Relay:
    """A listening socket whose connections are each handled by ``_serve`` in a thread of their own.

    Every socket and thread it opens is tracked, so ``stop()`` can leave nothing behind: it closes
    the listener, shuts down the sockets still open (a blocked ``recv`` then returns) and joins the
    threads. Subclasses register the extra sockets they open with ``_register``/``_forget``.
    """

    thread_name = "relay"

    def __init__(self) -> None:
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()

    def _listen(self) -> socket.socket:
        raise NotImplementedError

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def start(self) -> "Relay":
        self._listener = self._listen()
        try:
            self._accept_thread = self._spawn(self._accept_loop, self.thread_name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            _shutdown(self._listener)  # wakes the blocked accept()
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        self._release_waiting()
        with self._lock:
            still_open, threads = list(self._open), list(self._threads)
        for sock in still_open:
            _shutdown(sock)
        for thread in threads:
            thread.join(timeout=5)

    def _release_waiting(self) -> None:
        """Hook for subclasses whose threads wait on something other than a socket."""

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._register(client)
            self._dispatch(client)

    def _dispatch(self, client: socket.socket) -> None:
        self._spawn(self._handle, f"{self.thread_name}-connection", client)

    def _handle(self, client: socket.socket) -> None:
        try:
            self._serve(client)
        finally:
            self._forget(client)

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return thread

    def _register(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)
            stopping = self._stopping.is_set()
        if stopping:  # opened after stop() took its list: shut it down here instead
            _shutdown(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        sock.close()


class ConnectForwarder(Relay):
    thread_name = "kms-forwarder"

    def __init__(self, allowed_host: str, allowed_port: int, upstream: Address, *, connect_timeout: float = 10.0) -> None:
        super().__init__()
        self.allowed_target = f"{allowed_host}:{allowed_port}".lower()
        self.upstream = upstream
        self.connect_timeout = connect_timeout

    @property
    def url(self) -> str:
        assert self._listener is not None, "start() first"
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        return listener

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = self._read_head(client)
            if head is None:
                return
            head, _, early = head.partition(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if parts[1].lower() != self.allowed_target:
                log.warning("refused CONNECT to %r (only %s is allowed)", parts[1][:100], self.allowed_target)
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                upstream = self._connect_upstream()
            except OSError as exc:
                log.warning("could not reach the KMS proxy at %s: %s", self.upstream, exc)
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if early:
                    upstream.sendall(early)
                pump_both_ways(client, upstream)
            except OSError:
                pass  # either side went away; nothing to report to anyone
            finally:
                self._forget(upstream)

    def _connect_upstream(self) -> socket.socket:
        upstream = socket.socket(self.upstream.family, socket.SOCK_STREAM)
        self._register(upstream)  # from here on stop() can interrupt it, even mid-connect
        try:
            upstream.settimeout(self.connect_timeout)
            upstream.connect(self.upstream.sockaddr)
            upstream.settimeout(None)
        except OSError:
            self._forget(upstream)
            raise
        return upstream

    @staticmethod
    def _read_head(client: socket.socket) -> bytes | None:
        client.settimeout(10.0)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = client.recv(1024)
                if not chunk or len(head) + len(chunk) > MAX_HEAD:
                    return None
                head += chunk
        except OSError:
            return None
        client.settimeout(None)
        return head


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def pump_both_ways(a: socket.socket, b: socket.socket) -> None:
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(_CHUNK):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join()
