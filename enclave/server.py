"""The enclave's socket loop: one thread serves every connection from a readiness loop
(``selectors``: epoll on Linux), the sans-IO core in between.

Each connection reads what is available, turns it into events, answers every complete request
and writes the answers. A bad frame gets an error frame and the connection goes on; a frame that
fails to open on a sealed session gets a ``SESSION_FAILED`` error and the connection is closed. A
client that disconnects mid-request only loses its own connection. No socket call blocks: one
connection's slow reader or stalled frame costs the others nothing.

Output and backpressure. A connection's answers are written as soon as the kernel takes them
(several in one ``sendmsg``, never joined into a copy). Once its unwritten answers reach
``FLUSH_BYTES`` the loop answers none of its buffered requests and reads nothing more from it
until the client has taken some: a connection holds unwritten less than ``FLUSH_BYTES`` plus one
answer, or one lane answer alone (docs/protocol.md, "Memory", has the arithmetic), and a client
that pipelines and never reads is held there until the send deadline closes it. A connection that
pipelines thousands is answered ``max_batch`` at a time, the others getting their turn between.

Slots and deadlines. At most ``max_connections`` connections are served; every tick the loop closes
a connection that

* holds part of a frame for longer than ``frame_timeout`` (a slow or stalled sender),
* has sent nothing for ``idle_timeout`` (a forgotten connection), or
* has not taken an answer within ``send_timeout`` of it being next to write (a client that sends
  and never reads, or reads a trickle: the deadline is per answer, not per byte taken).

When every slot is taken, a newcomer evicts a connection that has been quiet for ``evict_after``
(no complete request, nothing unread), or has waited that long for a lane, or for its answers to
be read. A connection that completed an attested-session handshake is never evicted (a bot's
connection is not the host's to take); among the others the newcomer takes one that never
completed a request first, then one stuck in a partial frame, then the one quiet the longest.

Reserved slots. Beyond those, ``reserved_connections`` slots are kept for control: after a restart
64 bots' attested sessions can take every slot before the operator provisions, and none of them may
be evicted. A newcomer that finds no slot and nothing to evict takes a reserved one, where every
control message is served (a session handshake, ``PROVISION``, ``KEYS``, …) but signing is not: a
``SIGN`` there takes a slot that has come free, or is answered BUSY and the connection closed (a bot
in a reserved slot makes room at once). A reserved slot is expendable once quiet for
``evict_after``, attested or not, so whoever fills them (say, the host) holds them only while it
keeps them busy. Only if none is free or expendable is the newcomer answered BUSY.

Lanes. Work that is slow and rare — provisioning and key generation (one lane), audit fetches
(another: a host that stalls KMS stalls provisioning, and an operator's fetch must not wait behind
it), attestation including the attested-session handshake (a third) — runs on the lane's own
worker thread, one request at a time, first come first served, and its answer is encoded there: a
flood of it builds at most one large answer per lane at a time, and signing, on the loop's thread,
is never queued behind it. A lane's request is handed over once the connection's earlier answers
are written, and the connection parses nothing more until the lane's answer comes back (through a
socketpair that wakes the loop): answers stay in request order, and nothing waits unwritten behind
slow work. Audit fetches may also take at most ``AUDIT_SHARE`` of the time (their lane rests in
proportion to the work it did), since building a page holds the GIL signing needs. A request that
does not get its lane within ``lane_timeout`` is answered BUSY.

None of this costs the sign path more than a clock read and a few attribute writes per read; the
deadlines are checked once a tick (at most a second, a quarter of the shortest deadline).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import selectors
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
#: A connection whose unwritten answers reach this many bytes is neither answered nor read from
#: until its client takes some (backpressure): it holds less than this plus one answer.
FLUSH_BYTES = 256 * 1024
#: The most of the enclave's time audit fetches may take (their lane's ``share``). A full page
#: costs a few milliseconds to build and encode, all of it holding the GIL signing needs; at a
#: fifth, an operator fetches a full buffer (about 40 pages) in well under a second all the same.
AUDIT_SHARE = 0.2
#: Slots beyond ``max_connections`` for control messages only: the operator's (or the host
#: agent's) way in when bots hold every slot; two, so a CLI command gets in beside the agent.
RESERVED_CONNECTIONS = 2


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
    """One connection: its sans-IO core, its unwritten answers, and what the deadlines and the
    eviction need to know about it. Touched only by the loop's thread, except ``conn`` while a lane
    answers its request (the loop parses nothing of it meanwhile)."""

    __slots__ = (
        "sock", "conn", "out", "out_size", "mask", "ready", "paused", "lane_job", "close_when_drained", "closed",
        "progress", "frame_since", "sending_since", "waiting_in", "waiting_since", "answered", "attested", "closing",
        "reserved", "routes",
    )

    def __init__(self, sock: socket.socket, conn: Connection, now: float, routes: dict[Any, Any]) -> None:
        self.sock = sock
        self.conn = conn
        self.out: collections.deque[bytes | memoryview] = collections.deque()  # answers not yet written
        self.out_size = 0
        self.mask = 0  # the selector events it is registered for
        self.ready = False  # holds parsed-but-unanswered input: served again before it is read
        self.paused = False  # a request of it is in a lane: nothing more is parsed until it is answered
        self.lane_job: tuple[_LaneWorker, Any] | None = None  # a lane request waiting for the outbox to drain
        self.close_when_drained = False  # a fatal protocol error was answered
        self.closed = False
        self.progress = now  # when the last complete frame arrived (or the connection did)
        self.frame_since: float | None = None  # when the partial frame now buffered began
        self.sending_since: float | None = None  # the next answer to write has waited unwritten since
        self.waiting_in: _LaneWorker | None = None  # the lane it waits for, if it does
        self.waiting_since: float | None = None
        self.answered = False  # has completed a request: not a connection opened only to hold a slot
        self.attested = False  # completed an attested-session handshake: a bot's, never evicted
        self.closing = ""  # why the server closed it, if it did
        self.reserved = False  # holds a reserved slot: control messages only (see the module's docstring)
        self.routes = routes  # message type -> its lane (or, in a reserved slot, _NEEDS_SLOT for signing)

    @property
    def busy(self) -> bool:
        """Answering (in a lane) or holding unwritten answers: never idle."""
        return self.paused or bool(self.out)

    def stuck_for(self, now: float) -> float:
        """How long it has waited for a lane or for its answers to be read (0 if it is not)."""
        since = self.sending_since if self.sending_since is not None else self.waiting_since
        return 0.0 if since is None else now - since


class _LaneWorker:
    """One thread for one :class:`Lane`: its requests run one at a time, first come first served,
    and the lane rests after each as its ``share`` says. The loop expires requests that waited
    ``lane_timeout`` (BUSY) and withdraws those of connections it closed."""

    def __init__(self, name: str, run: Callable[[_Client, Any], None], *, share: float = 1.0) -> None:
        self.lane = Lane(name, share=share)
        self.name = name
        self._run = run
        self._cond = threading.Condition()
        self._jobs: collections.deque[tuple[_Client, Any]] = collections.deque()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.timed_out = 0
        self.most_waiting = 0

    @property
    def share(self) -> float:
        return self.lane.share

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=f"lane-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._jobs.clear()
            self._cond.notify_all()
        self.lane.wake()

    def join(self, timeout: float) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def submit(self, client: _Client, event: Any) -> None:
        with self._cond:
            self._jobs.append((client, event))
            self.most_waiting = max(self.most_waiting, len(self._jobs))
            self._cond.notify_all()

    def withdraw(self, client: _Client) -> bool:
        """Take ``client``'s request out of the queue; False if it is not there (running, or done)."""
        with self._cond:
            for job in self._jobs:
                if job[0] is client:
                    self._jobs.remove(job)
                    return True
        return False

    def expire(self, now: float, timeout: float) -> list[tuple[_Client, Any]]:
        """Remove and return the requests that have waited ``timeout`` or longer."""
        with self._cond:
            expired = [job for job in self._jobs if now - (job[0].waiting_since or now) >= timeout]
            for job in expired:
                self._jobs.remove(job)
            self.timed_out += len(expired)
        return expired

    def _work(self) -> None:
        while self._next_job_waits():
            if not self.lane.acquire(60.0, lambda: self._stopping):  # resting, under ``share``
                continue
            try:
                with self._cond:
                    job = self._jobs.popleft() if self._jobs else None  # expired while it rested?
                    if job is not None:
                        job[0].waiting_in = job[0].waiting_since = None  # running: not expendable
                if job is not None:
                    self._run(*job)
            finally:
                self.lane.release()

    def _next_job_waits(self) -> bool:
        """Wait until a request is queued (True) or the lane stops (False)."""
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            return not self._stopping


_ACCEPT, _WAKE, _NEEDS_SLOT = object(), object(), object()
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_IOV_MAX = 512  # buffers per sendmsg; well under Linux's IOV_MAX (1024)


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
        reserved_connections: int = RESERVED_CONNECTIONS,
    ) -> None:
        self.sock = sock
        self.busy_poll_ns = busy_poll_us * 1000
        self.handle = handle
        self.max_connections, self.reserved_connections = max_connections, reserved_connections
        self.max_frame_size = max_frame_size
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.send_timeout = send_timeout
        self.evict_after = evict_after
        self.lane_timeout = lane_timeout
        self.max_batch = max_batch
        # Audit fetches have a lane of their own: a host that stalls KMS stalls provisioning for
        # as long as it likes, and an operator's fetch must not wait behind that.
        run = self._answer_in_lane
        heavy, audit = _LaneWorker("provisioning", run), _LaneWorker("audit", run, share=audit_share)
        attest = _LaneWorker("attestation", run)
        self.lanes = {"provisioning": heavy, "audit": audit, "attestation": attest}
        self._lane_of: dict[Any, _LaneWorker] = {
            MessageType.PROVISION: heavy,
            MessageType.GENERATE: heavy,
            MessageType.BIND: heavy,
            MessageType.AUDIT: audit,
            MessageType.ATTEST: attest,
            MessageType.OPEN_SESSION: attest,
        }
        self._reserved_routes = {**self._lane_of, MessageType.SIGN: _NEEDS_SLOT, MessageType.SIGN_HTTP: _NEEDS_SLOT}  # signing needs a slot first
        self._in_reserved = 0  # connections holding a reserved slot
        #: closed by the server, by reason: evicted, stalled (partial frame), idle, not_reading,
        #: busy (refused at accept), reserved (a SIGN refused in a reserved slot), lane_busy (a request refused after its lane's timeout),
        #: lane_abandoned (a request whose connection was evicted while it waited for its lane)
        self.stats: collections.Counter[str] = collections.Counter()
        self._stopping = threading.Event()
        self._finished = threading.Event()
        self._serving = False
        self._loop_thread: threading.Thread | None = None
        self._clients: dict[socket.socket, _Client] = {}
        self._ready: collections.deque[_Client] = collections.deque()
        self._answered: collections.deque[tuple[_Client, bytes | None]] = collections.deque()  # by the lanes
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector: selectors.BaseSelector | None = None
        self._tick = max(0.01, min(1.0, frame_timeout / 4, idle_timeout / 4, send_timeout / 4, lane_timeout / 4))

    # -- the loop ------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self._serving, self._loop_thread = True, threading.current_thread()
        selector = self._selector = selectors.DefaultSelector()
        try:
            self.sock.setblocking(False)
            selector.register(self.sock, _READ, _ACCEPT)
            selector.register(self._wake_r, _READ, _WAKE)
            for lane in self.lanes.values():
                lane.start()
            next_check = time.monotonic() + self._tick
            while not self._stopping.is_set():
                now = time.monotonic()
                if now >= next_check:
                    self._watch(now)
                    next_check = now + self._tick
                self._turn(selector, 0.0 if self._ready else next_check - now)
        finally:
            self._wind_down(selector)

    def _turn(self, selector: selectors.BaseSelector, timeout: float) -> None:
        for key, events in self._select(selector, timeout):
            data = key.data
            if data is _ACCEPT:
                self._accept()
            elif data is _WAKE:
                self._take_lane_answers()
            else:
                self._guarded(self._on_ready, data, events)
        for _ in range(len(self._ready)):
            client = self._ready.popleft()
            client.ready = False
            if not client.closed:
                self._guarded(self._pump, client)

    def _select(self, selector: selectors.BaseSelector, timeout: float) -> list:
        # An idle CPU takes tens of microseconds to wake for the next request. On Nitro the
        # enclave's vCPUs are its own, so it may spin a little before sleeping (--busy-poll-us).
        if self.busy_poll_ns and timeout > 0:
            deadline = time.perf_counter_ns() + self.busy_poll_ns
            while time.perf_counter_ns() < deadline:
                events = selector.select(0)
                if events:
                    return events
        return selector.select(max(0.0, timeout))

    def _wind_down(self, selector: selectors.BaseSelector) -> None:
        for client in list(self._clients.values()):
            self._drop(client)
        for lane in self.lanes.values():
            lane.stop()
        deadline = time.monotonic() + 5  # one budget for all: a lane may be stuck in a KMS call
        for lane in self.lanes.values():
            lane.join(max(0.0, deadline - time.monotonic()))
        selector.close()
        self.sock.close()
        for end in (self._wake_r, self._wake_w):
            end.close()
        self._finished.set()

    def shutdown(self) -> None:
        self._stopping.set()
        self._wake()
        if not self._serving:
            self.sock.close()
        elif threading.current_thread() is not self._loop_thread:
            self._finished.wait(10)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (the loop wakes anyway) or closed (the loop has ended)

    def _guarded(self, step: Callable[..., None], client: _Client, *args: Any) -> None:
        """Run one step for one connection; whatever goes wrong closes that connection only."""
        try:
            step(client, *args)
        except OSError:
            self._drop(client)  # the peer went away; its unanswered requests die with it
        except Exception as exc:  # a bug must not take the other connections down
            log.error("internal error serving a connection: %s\n%s", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            self._drop(client)

    # -- accepting -----------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(self.max_connections):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: the listener stays
                log.warning("accept failed: %s", type(exc).__name__)
                return
            sock.setblocking(False)
            reserved = self._slot_for_newcomer()
            if reserved is None:
                self.stats["busy"] += 1
                self._refuse_busy(sock)
                continue
            client = _Client(sock, Connection(Role.SERVER, max_frame_size=self.max_frame_size), time.monotonic(), self._lane_of)
            if reserved:
                client.reserved, client.routes = True, self._reserved_routes
                self._in_reserved += 1
            self._clients[sock] = client
            self._set_interest(client)

    def _slot_for_newcomer(self) -> bool | None:
        """False: a slot of the ``max_connections``; True: a reserved one; None: none is free or
        expendable (the newcomer is answered BUSY)."""
        if len(self._clients) - self._in_reserved < self.max_connections or self._evict_for_newcomer(reserved=False):
            return False
        if self._in_reserved < self.reserved_connections or self._evict_for_newcomer(reserved=True):
            return True
        return None

    def _refuse_busy(self, client: socket.socket) -> None:
        with client:
            conn = Connection(Role.SERVER)
            try:
                client.send(conn.send(ErrorResponse(0, ErrorCode.BUSY, f"the enclave serves at most {self.max_connections} connections and none is idle")))
            except OSError:
                pass

    def _evict_for_newcomer(self, *, reserved: bool) -> bool:
        """Close an expendable connection to make room, in a reserved slot or one of the others
        (see the module's docstring for which); True once its slot is free."""
        now = time.monotonic()
        candidates = [c for c in self._clients.values() if c.reserved is reserved and self._evictable(c, now)]
        if not candidates:
            return False
        victim = min(candidates, key=_eviction_order)
        self._close(victim, "evicted", f"quiet for {now - victim.progress:.1f}s while every slot was taken")
        return True

    def _evictable(self, client: _Client, now: float) -> bool:
        if client.closing or (client.attested and not client.reserved):  # a reserved slot serves control only
            return False
        if client.busy:  # being answered: only if it is stuck behind a lane or an unread answer
            return client.stuck_for(now) >= self.evict_after
        return now - client.progress >= self.evict_after and not _has_unread(client.sock)

    # -- deadlines -----------------------------------------------------------------------------
    def _watch(self, now: float) -> None:
        for client in list(self._clients.values()):
            sending_since, frame_since = client.sending_since, client.frame_since
            if sending_since is not None and now - sending_since > self.send_timeout:
                self._close(client, "not_reading", f"did not take its answers within {self.send_timeout:g}s")
            elif client.busy:
                continue
            elif frame_since is not None and now - frame_since > self.frame_timeout:
                self._close(client, "stalled", f"sent part of a frame and not the rest within {self.frame_timeout:g}s")
            elif frame_since is None and now - client.progress > self.idle_timeout:
                self._close(client, "idle", f"sent nothing for {self.idle_timeout:g}s")
        for lane in self.lanes.values():
            for client, event in lane.expire(now, self.lane_timeout):
                self.stats["lane_busy"] += 1
                busy = ErrorResponse(event.request_id, ErrorCode.BUSY, f"the enclave's {lane.name} lane stayed busy for {self.lane_timeout:g}s; try again")
                self._guarded(self._resume, client, client.conn.send(busy))

    def _close(self, client: _Client, reason: str, why: str) -> None:
        """Close a connection for ``reason`` (a key of ``stats``)."""
        client.closing = reason
        self.stats[reason] += 1
        log.info("closing a connection (%s): it %s", reason, why)
        self._drop(client)

    def _drop(self, client: _Client) -> None:
        if client.closed:
            return
        client.closed = True
        lane = client.waiting_in
        if lane is not None and lane.withdraw(client) and client.closing:
            self.stats["lane_abandoned"] += 1
        if client.mask and self._selector is not None:
            self._selector.unregister(client.sock)
        self._clients.pop(client.sock, None)
        self._in_reserved -= client.reserved
        client.out.clear()
        client.sock.close()

    # -- serving -------------------------------------------------------------------------------
    def _on_ready(self, client: _Client, events: int) -> None:
        if client.closed:
            return
        if events & _WRITE:
            self._write(client)
            if not (client.closed or client.paused or client.ready):
                self._pump(client)  # room again: what is buffered may be answered now
        if events & _READ and client.mask & _READ and not client.closed:
            data = client.sock.recv(_RECV)
            if not data:
                self._drop(client)
                return
            client.conn.receive_data(data)
            self._pump(client)

    def _pump(self, client: _Client) -> None:
        """Answer the complete requests ``client`` holds — up to ``max_batch`` (others get a turn),
        until its unwritten answers reach ``FLUSH_BYTES`` (backpressure), or up to one that goes to
        a lane (the rest waits for its answer: answers stay in request order); then write."""
        conn, frames, more = client.conn, 0, False
        while not client.close_when_drained and client.out_size < FLUSH_BYTES:
            if frames == self.max_batch:
                more = True
                break
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                frames += 1
                self._queue(client, conn.send(ErrorResponse(exc.request_id, exc.code, str(exc))))
                if exc.fatal:
                    log.warning("closing a connection: %s", exc)
                    client.close_when_drained = True
                continue
            if event is NEED_DATA:
                break
            frames += 1
            lane = client.routes.get(event.type)
            if lane is not None:
                if lane is _NEEDS_SLOT:
                    self._queue(client, conn.send(self._sign_in_reserved_slot(client, event)))
                    continue
                self._pause(client, lane, event)
                break
            self._queue(client, conn.send(self._call(event)))
        self._note_progress(client, frames)
        if more and not client.ready:
            client.ready = True
            self._ready.append(client)
        held = client.out_size >= FLUSH_BYTES  # stopped for backpressure: requests may wait parsed
        self._write(client)
        if held and not (client.out or client.closed or client.paused or client.ready):
            client.ready = True  # all written at once: no writable event will come to answer the rest
            self._ready.append(client)

    def _sign_in_reserved_slot(self, client: _Client, event: Any) -> Any:
        """A signing request on a reserved slot: served once the connection has moved to a slot
        that came free; otherwise BUSY, and the connection closed (a reserved slot is for control)."""
        if len(self._clients) - self._in_reserved < self.max_connections:
            client.reserved, client.routes = False, self._lane_of
            self._in_reserved -= 1
            return self._call(event)
        self.stats["reserved"] += 1
        client.close_when_drained = True
        return ErrorResponse(event.request_id, ErrorCode.BUSY, f"all {self.max_connections} signing slots are taken; this connection holds a slot reserved for control messages")

    def _note_progress(self, client: _Client, frames: int) -> None:
        now = time.monotonic()
        if frames:
            client.progress = now
            client.answered = True
            if client.conn.session is not None:
                client.attested = True
        if client.conn.in_frame:
            if frames or client.frame_since is None:
                client.frame_since = now
        else:
            client.frame_since = None

    def _queue(self, client: _Client, frame: bytes) -> None:
        client.out.append(frame)
        client.out_size += len(frame)

    def _write(self, client: _Client) -> None:
        """Write what the kernel takes now; the rest waits for the socket to be writable."""
        out, sock, finished = client.out, client.sock, 0
        while out:
            try:
                n = sock.send(out[0]) if len(out) == 1 else sock.sendmsg(list(itertools.islice(out, _IOV_MAX)))
            except (BlockingIOError, InterruptedError):
                break
            client.out_size -= n
            while n:
                head = out[0]
                if n < len(head):
                    out[0] = memoryview(head)[n:]
                    break
                n -= len(head)
                out.popleft()
                finished += 1
        if not out:
            client.sending_since = None
            if client.close_when_drained:
                self._drop(client)
                return
            if client.lane_job is not None:  # nothing waits unwritten behind slow work
                lane, event = client.lane_job
                client.lane_job = None
                lane.submit(client, event)
        elif finished or client.sending_since is None:
            client.sending_since = time.monotonic()  # the next answer's deadline starts: per answer, not per byte
        self._set_interest(client)

    def _set_interest(self, client: _Client) -> None:
        """Read while it may send more (not waiting for a lane, answers under the bound, nothing
        parsed left); wait for writability while answers wait."""
        want = _WRITE if client.out else 0
        if not (client.paused or client.ready or client.close_when_drained) and client.out_size < FLUSH_BYTES:
            want |= _READ
        if want == client.mask:
            return
        selector = self._selector
        if not client.mask:
            selector.register(client.sock, want, client)
        elif not want:
            selector.unregister(client.sock)
        else:
            selector.modify(client.sock, want, client)
        client.mask = want

    # -- lanes ---------------------------------------------------------------------------------
    def _pause(self, client: _Client, lane: _LaneWorker, event: Any) -> None:
        client.paused = True
        client.waiting_in, client.waiting_since = lane, time.monotonic()
        client.lane_job = (lane, event)  # submitted once what waits before it is written

    def _answer_in_lane(self, client: _Client, event: Any) -> None:
        """On the lane's thread: the encoded answer to slow work, built while the lane is held
        (per lane, one large answer is being built at a time), handed back to the loop."""
        try:
            answer: bytes | None = client.conn.send(self._call(event))
        except Exception as exc:  # a bug: the loop closes that connection
            log.error("internal error encoding an answer: %s", type(exc).__name__)
            answer = None
        self._answered.append((client, answer))
        self._wake()

    def _take_lane_answers(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self._answered:
            client, answer = self._answered.popleft()
            if client.closed:
                continue
            if answer is None:
                self._drop(client)
                continue
            self._guarded(self._resume, client, answer)

    def _resume(self, client: _Client, answer: bytes) -> None:
        """A lane answered ``client`` (or refused it BUSY): write that, then go on parsing."""
        client.paused = False
        client.waiting_in = client.waiting_since = None
        self._queue(client, answer)
        self._note_progress(client, 1)
        self._pump(client)

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
