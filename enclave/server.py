"""The enclave's socket loop: one thread per connection, the sans-IO core in between.

Each connection reads what is available, turns it into events, answers every complete request
and writes the answers. A bad frame gets an error frame and the connection goes on; a frame that
fails to open on a sealed session gets a ``SESSION_FAILED`` error and the connection is closed. A
client that disconnects mid-request only loses its own connection.

Output and backpressure. Answers are written together once ``FLUSH_BYTES`` or ``max_batch`` of
them wait (so a connection that pipelines thousands yields between writes); an answer of
``ALONE_BYTES`` or more, or from a lane, is written on its own, after what waited before it.
Writes block, and a connection's thread parses no further request until the kernel has taken its
earlier answers: a connection holds unwritten less than ``FLUSH_BYTES + ALONE_BYTES``, or one
answer (docs/protocol.md, "Memory", has the arithmetic), and a client that pipelines and never
reads is held there until the send deadline closes it.

Slots and deadlines. At most ``max_connections`` connections are served; a watchdog thread closes
a connection that

* holds part of a frame for longer than ``frame_timeout`` (a slow or stalled sender),
* has sent nothing for ``idle_timeout`` (a forgotten connection), or
* has not taken its answers within ``send_timeout`` (a client that sends and never reads).

When every slot is taken, a newcomer evicts a connection that has been quiet for ``evict_after``
(no complete request, nothing unread), or has waited that long for a lane, or for its answers to
be read. A connection that completed an attested-session handshake is never evicted (a bot's
connection is not the host's to take); among the others the newcomer takes one that never
completed a request first, then one stuck in a partial frame, then the one quiet the longest. Only
if none qualifies is the newcomer answered BUSY.

Lanes. Work that is slow and rare — provisioning and key generation (one lane), audit fetches
(another: a host that stalls KMS stalls provisioning, and an operator's fetch must not wait behind
it), attestation including the attested-session handshake (a third) — runs one request at a time
per lane, first come first served, and its answer is encoded while the lane is held: a flood of it
occupies at most one thread per lane and builds at most one large answer per lane at a time, and
signing is never queued. Audit fetches may also take at most ``AUDIT_SHARE`` of the time (their
lane rests in proportion to the work it did), since building a page holds the GIL signing needs. A
request that cannot get its lane within ``lane_timeout`` is answered BUSY.

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
#: Answers waiting for a write are written together once they reach this many bytes (or
#: ``max_batch`` answers); an answer of ``ALONE_BYTES`` or more, or from a lane, is written on its
#: own, never copied into a batch. Writes block, so a connection holds unwritten less than
#: FLUSH_BYTES + ALONE_BYTES, or one answer (at most a frame).
FLUSH_BYTES = 256 * 1024
ALONE_BYTES = 64 * 1024
#: The most of the enclave's time audit fetches may take (their lane's ``share``). A full page
#: costs a few milliseconds to build and encode, all of it holding the GIL signing needs; at a
#: fifth, an operator fetches a full buffer (about 40 pages) in well under a second all the same.
AUDIT_SHARE = 0.2


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
    """At most ``capacity`` requests at a time; the others wait first come, first served.

    ``share`` caps the fraction of time the lane's work may take: after a request that held the
    lane for t seconds, it stays closed for t × (1/share − 1). In one Python process every thread
    shares the GIL, so work in a lane is CPU taken from signing: the cap is what bounds it.
    """

    def __init__(self, name: str, capacity: int = 1, *, share: float = 1.0) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.name = name
        self.capacity = capacity
        self.share = share
        self._rest_factor = 1 / share - 1
        self._cond = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()
        self._active: dict[int, float] = {}  # thread id -> when it took its turn
        self._opens_at = 0.0  # resting after work, under ``share``, until then
        self.served = 0
        self.timed_out = 0
        self.most_waiting = 0

    def acquire(self, timeout: float, abandoned: Callable[[], bool] = lambda: False) -> bool:
        """Wait for a turn: False after ``timeout``, or once ``abandoned()`` is true when woken
        (:meth:`wake`) — a connection evicted while it waits leaves the queue at once."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            self.most_waiting = max(self.most_waiting, len(self._queue))
            deadline = time.monotonic() + timeout
            while (wait := self._wait_for(ticket)) > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or abandoned():
                    self._queue.remove(ticket)
                    self.timed_out += remaining <= 0
                    self._cond.notify_all()  # the next in line may be first now
                    return False
                self._cond.wait(min(remaining, wait))
            self._queue.popleft()
            self._active[threading.get_ident()] = time.monotonic()
            self.served += 1
            return True

    def _wait_for(self, ticket: object) -> float:
        """How long ``ticket`` must still wait at least (inf: until notified; 0: its turn)."""
        if self._queue[0] is not ticket or len(self._active) >= self.capacity:
            return float("inf")
        return max(0.0, self._opens_at - time.monotonic())

    def release(self) -> None:
        with self._cond:
            now = time.monotonic()
            started = self._active.pop(threading.get_ident())
            self._opens_at = max(self._opens_at, now + (now - started) * self._rest_factor)
            self._cond.notify_all()

    def wake(self) -> None:
        """Let every waiter check whether it was abandoned."""
        with self._cond:
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        return len(self._queue)


class _Client:
    """What the watchdog and the eviction need to know about one connection."""

    __slots__ = ("sock", "progress", "frame_since", "busy", "sending_since", "waiting_in", "waiting_since", "answered", "attested", "closing")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.progress = now  # when the last complete frame arrived (or the connection did)
        self.frame_since: float | None = None  # when the partial frame now buffered began
        self.busy = False  # answering, waiting for a lane or writing: never idle
        self.sending_since: float | None = None  # a write blocked since (its answers are not read)
        self.waiting_in: Lane | None = None  # the lane it waits for, if it does
        self.waiting_since: float | None = None
        self.answered = False  # has completed a request: not a connection opened only to hold a slot
        self.attested = False  # completed an attested-session handshake: a bot's, never evicted
        self.closing = ""  # why the server closed it, if it did

    def stuck_for(self, now: float) -> float:
        """How long it has waited for a lane or for its answers to be read (0 if it is not)."""
        since = self.sending_since if self.sending_since is not None else self.waiting_since
        return 0.0 if since is None else now - since


class _Outbox:
    """A connection's answers waiting to be written (see ``FLUSH_BYTES``). Every write blocks until
    the kernel takes it, and the connection's thread parses no request meanwhile: that is the
    backpressure on a client that pipelines and does not read (the send deadline then closes it)."""

    __slots__ = ("_client", "_max_batch", "_frames", "_size")

    def __init__(self, client: _Client, max_batch: int) -> None:
        self._client = client
        self._max_batch = max_batch
        self._frames: list[bytes] = []
        self._size = 0

    def add(self, frame: bytes) -> None:
        if len(frame) >= ALONE_BYTES:  # never copied into a batch
            self.flush()
            self.write(frame)
            return
        self._frames.append(frame)
        self._size += len(frame)
        if self._size >= FLUSH_BYTES or len(self._frames) >= self._max_batch:  # others get a turn between writes
            self.flush()

    def flush(self) -> None:
        frames = self._frames
        if not frames:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self._frames, self._size = [], 0
        del frames  # the parts are freed before the write blocks: only the joined copy is held
        self.write(data)

    def write(self, data: bytes) -> None:
        client = self._client
        client.sending_since = time.monotonic()
        client.sock.sendall(data)
        client.sending_since = None


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
        audit_share: float = AUDIT_SHARE,
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
        # Audit fetches have a lane of their own: a host that stalls KMS stalls provisioning for
        # as long as it likes, and an operator's fetch must not wait behind that.
        heavy, audit, attest = Lane("provisioning"), Lane("audit", share=audit_share), Lane("attestation")
        self.lanes = {"provisioning": heavy, "audit": audit, "attestation": attest}
        self._lane_of: dict[Any, Lane] = {
            MessageType.PROVISION: heavy,
            MessageType.GENERATE: heavy,
            MessageType.BIND: heavy,
            MessageType.AUDIT: audit,
            MessageType.ATTEST: attest,
            MessageType.OPEN_SESSION: attest,
        }
        #: closed by the server, by reason: evicted, stalled (partial frame), idle, not_reading,
        #: busy (refused at accept), lane_busy (a request refused after its lane's timeout),
        #: lane_abandoned (a request whose connection was evicted while it waited for its lane)
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
        """Close an expendable connection to make room (see the module's docstring for which);
        True once its slot is ours."""
        now = time.monotonic()
        with self._clients_lock:
            candidates = [c for c in self._clients.values() if self._evictable(c, now)]
            if candidates:
                victim = min(candidates, key=_eviction_order)
                self._close(victim, "evicted", f"quiet for {now - victim.progress:.1f}s while every slot was taken")
            elif not any(c.closing for c in self._clients.values()):
                return False
            # else a connection closed already (at a deadline, or evicted) is about to give its
            # slot back: wait for that rather than refuse
        return self._slots.acquire(timeout=2.0)  # its thread sees the shutdown at once

    def _evictable(self, client: _Client, now: float) -> bool:
        if client.closing or client.attested:
            return False
        if client.busy:  # being answered: only if it is stuck behind a lane or an unread answer
            return client.stuck_for(now) >= self.evict_after
        return now - client.progress >= self.evict_after and not _has_unread(client.sock)

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
        """Shut a connection down from outside its thread (which then sees end of stream, a
        failed write, or — waiting for a lane — its turn abandoned)."""
        client.closing = reason
        self.stats[reason] += 1
        log.info("closing a connection (%s): it %s", reason, why)
        try:
            client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        lane = client.waiting_in
        if lane is not None:
            lane.wake()

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
                frames, fatal = self._answer_buffered(client, conn)
                if fatal:
                    return
                now = clock()
                if frames:
                    client.progress = now
                    client.answered = True
                    if conn.session is not None:
                        client.attested = True
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

    def _answer_buffered(self, client: _Client, conn: Connection) -> tuple[int, bool]:
        """Answer every complete request ``conn`` holds; returns how many frames were answered and
        whether the connection must close."""
        outbox = _Outbox(client, self.max_batch)
        frames = 0
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                frames += 1
                outbox.add(conn.send(ErrorResponse(exc.request_id, exc.code, str(exc))))
                if exc.fatal:
                    log.warning("closing a connection: %s", exc)
                    outbox.flush()
                    return frames, True
                continue
            if event is NEED_DATA:
                break
            frames += 1
            lane = self._lane_of.get(event.type)
            if lane is None:
                outbox.add(conn.send(self._call(event)))
            else:
                outbox.flush()  # nothing waits unwritten behind slow work
                outbox.write(self._answer_in_lane(lane, client, conn, event))
        outbox.flush()
        return frames, False

    def _answer_in_lane(self, lane: Lane, client: _Client, conn: Connection, event: Any) -> bytes:
        """The encoded answer to slow work, built while its lane is held: per lane, one large
        answer (an audit page) is being built at a time, not one per connection asking."""
        client.waiting_since, client.waiting_in = time.monotonic(), lane
        try:
            turn = lane.acquire(self.lane_timeout, lambda: bool(client.closing))
        finally:
            client.waiting_in = client.waiting_since = None
        if not turn:
            self.stats["lane_busy" if not client.closing else "lane_abandoned"] += 1
            return conn.send(ErrorResponse(event.request_id, ErrorCode.BUSY, f"the enclave's {lane.name} lane stayed busy for {self.lane_timeout:g}s; try again"))
        try:
            return conn.send(self._call(event))
        finally:
            lane.release()

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

    def _call(self, event: Any) -> Any:
        try:
            return self.handle(event)
        except Exception as exc:  # a bug must not take the connection down; never echo exception text
            # type and frames only: an exception's message could quote the bytes it choked on
            log.error("internal error answering %s: %s\n%s", type(event).__name__, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            return ErrorResponse(event.request_id, ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}); see the enclave log")


def _eviction_order(client: _Client) -> tuple:
    """Who goes first: a connection that never completed a request (the cheapest to open just to
    hold a slot), then one stuck in a partial frame, then the one quiet the longest."""
    return (client.answered, client.frame_since is None, client.progress)


def _has_unread(sock: socket.socket) -> bool:
    """Bytes have arrived that its thread has not read yet (so it is not idle after all)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
