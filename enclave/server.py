"""The enclave's socket loop: one thread per connection, the sans-IO core in between.

Each connection reads what is available, turns it into events, answers every complete request
and writes the answers in one ``sendall`` (at most ``max_batch`` per write, so a connection that
pipelines thousands yields between writes). A bad frame gets an error frame and the connection
goes on; a frame that fails to open on a sealed session gets a ``SESSION_FAILED`` error and the
connection is closed. A client that disconnects mid-request only loses its own connection.

Slots and deadlines. At most ``max_connections`` connections are served; a watchdog thread closes
a connection that

* holds part of a frame for longer than ``frame_timeout`` (a slow or stalled sender),
* has sent nothing for ``idle_timeout`` (a forgotten connection), or
* has not taken its answers within ``send_timeout`` (a client that sends and never reads).

When every slot is taken, a new connection evicts the one that has gone longest without a complete
request (one stuck in a partial frame first), provided it has been quiet for ``evict_after`` and
is not being answered; only if no connection qualifies is the newcomer answered BUSY. A ``Signer``
whose connection was evicted reconnects (and re-attests) on its next call.

Lanes. Work that is slow and rare — provisioning, key generation, audit fetches (one lane) and
attestation, including the attested-session handshake (another) — runs one request at a time per
lane, first come first served, so a flood of it occupies at most one thread per lane instead of
one per flooding connection, and signing (never queued) keeps its CPU. A request that cannot get
its lane within ``lane_timeout`` is answered BUSY.

None of this costs the sign path more than a clock read and a few attribute writes per read.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import stat
import threading
import time
import traceback
from typing import Any, Callable

from .protocol import NEED_DATA, Connection, ErrorCode, ErrorResponse, MessageType, RemoteProtocolError, Role
from .protocol.address import Address

__all__ = ["Server", "Lane", "listen"]

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


class Lane:
    """At most ``capacity`` requests at a time; the others wait first come, first served."""

    def __init__(self, name: str, capacity: int = 1) -> None:
        self.name = name
        self.capacity = capacity
        self._cond = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()
        self._active = 0
        self.served = 0
        self.timed_out = 0
        self.most_waiting = 0

    def acquire(self, timeout: float) -> bool:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            self.most_waiting = max(self.most_waiting, len(self._queue))
            deadline = time.monotonic() + timeout
            while self._queue[0] is not ticket or self._active >= self.capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._queue.remove(ticket)
                    self.timed_out += 1
                    self._cond.notify_all()  # the next in line may be first now
                    return False
                self._cond.wait(remaining)
            self._queue.popleft()
            self._active += 1
            self.served += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        return len(self._queue)


class _Client:
    """What the watchdog and the eviction need to know about one connection."""

    __slots__ = ("sock", "progress", "frame_since", "busy", "sending_since", "closing")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.progress = now  # when the last complete frame arrived (or the connection did)
        self.frame_since: float | None = None  # when the partial frame now buffered began
        self.busy = False  # answering (or waiting for a lane): never idle, never evicted
        self.sending_since: float | None = None
        self.closing = ""  # why the server closed it, if it did


class Server:
    def __init__(
        self,
        sock: socket.socket,
        handle: Callable[[Any], Any],
        *,
        max_connections: int = 64,
        max_frame_size: int = 1 << 20,
        busy_poll_us: int = 0,
        idle_timeout: float = 600.0,
        frame_timeout: float = 10.0,
        send_timeout: float = 10.0,
        evict_after: float = 1.0,
        lane_timeout: float = 30.0,
        max_batch: int = 64,
    ) -> None:
        self.sock = sock
        self.busy_poll_ns = busy_poll_us * 1000
        self.handle = handle
        self.max_connections = max_connections
        self.max_frame_size = max_frame_size
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.send_timeout = send_timeout
        self.evict_after = evict_after
        self.lane_timeout = lane_timeout
        self.max_batch = max_batch
        heavy, attest = Lane("provisioning"), Lane("attestation")
        self.lanes = {"provisioning": heavy, "attestation": attest}
        self._lane_of: dict[Any, Lane] = {
            MessageType.PROVISION: heavy,
            MessageType.GENERATE: heavy,
            MessageType.AUDIT: heavy,
            MessageType.ATTEST: attest,
            MessageType.OPEN_SESSION: attest,
        }
        #: closed by the server, by reason: evicted, stalled (partial frame), idle, not_reading,
        #: busy (refused at accept), lane_busy (a request refused after its lane's timeout)
        self.stats: collections.Counter[str] = collections.Counter()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._clients: dict[socket.socket, _Client] = {}
        self._clients_lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    # -- accepting ---------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._watchdog.start()
        while not self._stopping.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            if not self._slots.acquire(blocking=False) and not self._evict_for_newcomer():
                self.stats["busy"] += 1
                self._refuse_busy(client)
                continue
            record = _Client(client, time.monotonic())
            with self._clients_lock:
                self._clients[client] = record
            threading.Thread(target=self._serve_client, args=(record,), name="client", daemon=True).start()

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
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(5)

    def _refuse_busy(self, client: socket.socket) -> None:
        with client:
            conn = Connection(Role.SERVER)
            try:
                client.sendall(conn.send(ErrorResponse(0, ErrorCode.BUSY, f"the enclave serves at most {self.max_connections} connections and none is idle")))
            except OSError:
                pass

    def _evict_for_newcomer(self) -> bool:
        """Close the connection quiet the longest (stuck in a partial frame first) to make room;
        True once its slot is ours."""
        now = time.monotonic()
        with self._clients_lock:
            candidates = [c for c in self._clients.values() if not c.busy and not c.closing and now - c.progress >= self.evict_after and not _has_unread(c.sock)]
            if not candidates:
                return False
            victim = min(candidates, key=lambda c: (c.frame_since is None, c.progress))
            self._close(victim, "evicted", f"quiet for {now - victim.progress:.1f}s while every slot was taken")
        return self._slots.acquire(timeout=2.0)  # its thread sees the shutdown at once

    # -- deadlines -----------------------------------------------------------------------------
    def _watch(self) -> None:
        tick = max(0.01, min(1.0, self.frame_timeout / 4, self.idle_timeout / 4, self.send_timeout / 4))
        while not self._stopping.wait(tick):
            now = time.monotonic()
            with self._clients_lock:
                for client in list(self._clients.values()):
                    if client.closing:
                        continue
                    sending_since, frame_since = client.sending_since, client.frame_since
                    if sending_since is not None and now - sending_since > self.send_timeout:
                        self._close(client, "not_reading", f"did not take its answers within {self.send_timeout:g}s")
                    elif client.busy:
                        continue
                    elif frame_since is not None and now - frame_since > self.frame_timeout:
                        self._close(client, "stalled", f"sent part of a frame and not the rest within {self.frame_timeout:g}s")
                    elif frame_since is None and now - client.progress > self.idle_timeout:
                        self._close(client, "idle", f"sent nothing for {self.idle_timeout:g}s")

    def _close(self, client: _Client, reason: str, why: str) -> None:
        """Shut a connection down from outside its thread (which then sees end of stream)."""
        client.closing = reason
        self.stats[reason] += 1
        log.info("closing a connection (%s): it %s", reason, why)
        try:
            client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- serving -------------------------------------------------------------------------------
    def _serve_client(self, client: _Client) -> None:
        conn = Connection(Role.SERVER, max_frame_size=self.max_frame_size)
        sock = client.sock
        clock = time.monotonic
        try:
            while True:
                data = self._recv(sock)
                if not data:
                    return
                client.busy = True
                conn.receive_data(data)
                out: list[bytes] = []
                frames = 0
                fatal = False
                while True:
                    try:
                        event = conn.next_event()
                    except RemoteProtocolError as exc:
                        frames += 1
                        out.append(conn.send(ErrorResponse(exc.request_id, exc.code, str(exc))))
                        if exc.fatal:
                            log.warning("closing a connection: %s", exc)
                            fatal = True
                            break
                        continue
                    if event is NEED_DATA:
                        break
                    frames += 1
                    out.append(conn.send(self._answer(event)))
                    if len(out) >= self.max_batch:  # a fair share: others get a turn between writes
                        self._write(client, out)
                        out = []
                if out:
                    self._write(client, out)
                if fatal:
                    return
                now = clock()
                if frames:
                    client.progress = now
                if conn.in_frame:
                    if frames or client.frame_since is None:
                        client.frame_since = now
                else:
                    client.frame_since = None
                client.busy = False
        except OSError:
            pass  # the peer went away (or was closed by the watchdog); its unanswered requests die with it
        finally:
            with self._clients_lock:
                self._clients.pop(sock, None)
            sock.close()
            self._slots.release()

    @staticmethod
    def _write(client: _Client, out: list[bytes]) -> None:
        client.sending_since = time.monotonic()
        client.sock.sendall(out[0] if len(out) == 1 else b"".join(out))
        client.sending_since = None

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

    def _answer(self, event: Any) -> Any:
        lane = self._lane_of.get(event.type)
        if lane is None:
            return self._call(event)
        if not lane.acquire(self.lane_timeout):
            self.stats["lane_busy"] += 1
            return ErrorResponse(event.request_id, ErrorCode.BUSY, f"the enclave's {lane.name} lane stayed busy for {self.lane_timeout:g}s; try again")
        try:
            return self._call(event)
        finally:
            lane.release()

    def _call(self, event: Any) -> Any:
        try:
            return self.handle(event)
        except Exception as exc:  # a bug must not take the connection down; never echo exception text
            # type and frames only: an exception's message could quote the bytes it choked on
            log.error("internal error answering %s: %s\n%s", type(event).__name__, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            return ErrorResponse(event.request_id, ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}); see the enclave log")


def _has_unread(sock: socket.socket) -> bool:
    """Bytes have arrived that its thread has not read yet (so it is not idle after all)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
