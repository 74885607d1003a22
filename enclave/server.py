"""The enclave's socket loop: one thread per connection, the sans-IO core in between.

Each connection reads what is available, turns it into events, answers every complete request
and writes all answers in one ``sendall`` (so pipelined requests cost one write). A bad frame gets
an error frame and the connection goes on; a client that disconnects mid-request only loses its
own connection. Connections beyond ``max_connections`` are answered BUSY and closed.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
import traceback
from typing import Any, Callable

from .protocol import NEED_DATA, Connection, ErrorCode, ErrorResponse, RemoteProtocolError, Role
from .protocol.address import Address

__all__ = ["Server", "listen"]

log = logging.getLogger("enclave.server")
_RECV = 65536


def listen(address: Address, backlog: int = 128) -> socket.socket:
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.scheme == "unix":
            _remove_stale_socket(address.path)
        elif address.scheme == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address.sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a leftover from a process that died
    else:
        raise OSError(f"{path} is in use by another process")
    finally:
        probe.close()


class Server:
    def __init__(self, sock: socket.socket, handle: Callable[[Any], Any], *, max_connections: int = 64, max_frame_size: int = 1 << 20, busy_poll_us: int = 0) -> None:
        self.sock = sock
        self.busy_poll_ns = busy_poll_us * 1000
        self.handle = handle
        self.max_connections = max_connections
        self.max_frame_size = max_frame_size
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()

    def serve_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            if not self._slots.acquire(blocking=False):
                self._refuse_busy(client)
                continue
            with self._clients_lock:
                self._clients.add(client)
            threading.Thread(target=self._serve_client, args=(client,), name="client", daemon=True).start()

    def shutdown(self) -> None:
        self._stopping.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._clients_lock:
            for client in list(self._clients):
                try:
                    client.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _refuse_busy(self, client: socket.socket) -> None:
        with client:
            conn = Connection(Role.SERVER)
            try:
                client.sendall(conn.send(ErrorResponse(0, ErrorCode.BUSY, f"the enclave serves at most {self.max_connections} connections")))
            except OSError:
                pass

    def _serve_client(self, client: socket.socket) -> None:
        conn = Connection(Role.SERVER, max_frame_size=self.max_frame_size)
        handle = self.handle
        try:
            while True:
                data = self._recv(client)
                if not data:
                    return
                conn.receive_data(data)
                out = []
                while True:
                    try:
                        event = conn.next_event()
                    except RemoteProtocolError as exc:
                        out.append(conn.send(ErrorResponse(exc.request_id, exc.code, str(exc))))
                        continue
                    if event is NEED_DATA:
                        break
                    out.append(conn.send(self._answer(handle, event)))
                if out:
                    client.sendall(b"".join(out))
        except OSError:
            pass  # the peer went away; its unanswered requests die with its connection
        finally:
            with self._clients_lock:
                self._clients.discard(client)
            client.close()
            self._slots.release()

    def _recv(self, client: socket.socket) -> bytes:
        # An idle CPU takes tens of microseconds to wake for the next request. On Nitro the
        # enclave's vCPUs are its own, so it may spin a little before sleeping (--busy-poll-us).
        if self.busy_poll_ns:
            deadline = time.perf_counter_ns() + self.busy_poll_ns
            while time.perf_counter_ns() < deadline:
                try:
                    return client.recv(_RECV, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    pass
        return client.recv(_RECV)

    @staticmethod
    def _answer(handle: Callable[[Any], Any], event: Any) -> Any:
        try:
            return handle(event)
        except Exception as exc:  # a bug must not take the connection down; never echo exception text
            # type and frames only: an exception's message could quote the bytes it choked on
            log.error("internal error answering %s: %s\n%s", type(event).__name__, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            return ErrorResponse(event.request_id, ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}); see the enclave log")
