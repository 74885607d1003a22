"""The bot's side for asyncio: :class:`AsyncSigner`, the :class:`~zerocopy.Signer` API awaited.

Concurrent calls share one connection: each request gets its own request id, is written as soon as
it is made, and one reader task routes every answer to the future waiting on that id. Whatever
breaks the connection (the enclave closed it, a frame failed to authenticate, an answer nobody
asked for) fails every waiting call with a typed error and drops the connection; the next call
opens a new one, attesting again if the signer attests. A call that times out raises
:class:`~zerocopy.errors.Timeout` and its id is abandoned: a late answer to it is discarded, and
ids are never reused on a connection, so it cannot reach another call.

The wire work is the same sans-IO core (:class:`enclave.protocol.Connection`) and the same helpers
as the ``Signer``'s (handshake, attestation checks, argument encoding, error mapping).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from enclave.protocol import (
    NEED_DATA,
    Connection,
    ControlResponse,
    ErrorCode,
    ErrorResponse,
    HttpSignature,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    Signature,
)
from enclave.protocol.address import Address
from enclave.protocol.messages import Attest, Audit, Keys, Message

from . import errors
from ._client import (
    SEND_FLOOR,
    SIGN_MANY_WINDOW,
    KeyInfo,
    ProvisionResult,
    SignedRequest,
    _connection_arguments,
    _control_answer,
    _env_arguments,
    _error_for,
    _finish_session,
    _generate_message,
    _bind_message,
    _key_argument,
    _nonce_argument,
    _payload_argument,
    _provision_message,
    _provision_results,
    _session_request,
    _sign_http_request,
    _signed_request,
    _timeout_argument,
    _unexpected_answer,
    connect_failure,
)

__all__ = ["AsyncSigner"]

_RECV = 65536
_SIGNER_TIMEOUT: Any = object()  # a call's timeout left to the signer's own


class _Link:
    """One connection: the protocol core, the stream, the calls waiting on it and its reader task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = Connection(Role.CLIENT)
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future] = {}
        self.abandoned: set[int] = set()  # timed-out ids whose late answers are dropped
        self.broken: errors.ZeroCopyError | None = None
        self.reading = asyncio.get_running_loop().create_task(self._read(), name="zerocopy-async-reader")

    async def request(self, send: Callable[..., bytes], parts: tuple, timeout: float | None) -> Any:
        """Write one request and wait for its own answer."""
        ((request_id, answer),) = self.send_window(send, [parts])
        return await self.answer(request_id, answer, timeout)

    def send_window(self, send: Callable[..., bytes], batch: Sequence[tuple]) -> list[tuple[int, asyncio.Future]]:
        """Encode and write requests (no await between sealing and writing: frames go out in the
        order the session counted them), in one write; each one's id and the future of its answer."""
        if self.broken is not None:
            raise _copy(self.broken)
        loop = asyncio.get_running_loop()
        frames: list[bytes] = []
        sent: list[tuple[int, asyncio.Future]] = []
        try:
            for parts in batch:
                request_id = next(self.ids) & 0xFFFFFFFF
                frames.append(send(self.conn, request_id, *parts))
                sent.append((request_id, loop.create_future()))
        except LocalProtocolError as exc:
            if frames and self.conn.session is not None:  # sealed and never sent: the counters parted
                self.fail(errors.ProtocolError("a request of a batch could not be encoded; the session's counters parted"))
            raise ValueError(str(exc)) from None
        self.waiting.update(sent)
        self.writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
        return sent

    async def answer(self, request_id: int, answer: asyncio.Future, timeout: float | None) -> Any:
        """The answer to a request :meth:`send_window` wrote, within ``timeout`` from now."""
        try:
            async with asyncio.timeout(timeout):  # cancels the wait (and so ``answer``) when due
                await self.writer.drain()
                return await answer
        except TimeoutError:
            self._abandon(request_id)
            raise errors.Timeout(f"the enclave did not answer within {timeout:.3g}s") from None
        except ConnectionError as exc:
            self.fail(errors.ConnectionClosed(f"the connection to the enclave broke: {exc.strerror or exc}"))
        except asyncio.CancelledError:
            self._abandon(request_id)
            raise
        return answer.result()  # the drain failed: fail() has set this call's error

    def abandon(self, sent: Iterable[tuple[int, asyncio.Future]]) -> None:
        """Requests whose answers nobody will wait for: dropped when they arrive."""
        for request_id, _ in sent:
            self._abandon(request_id)

    def _abandon(self, request_id: int) -> None:
        if self.waiting.pop(request_id, None) is not None:
            self.abandoned.add(request_id)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(_RECV)
                if not data:
                    return self.fail(errors.ConnectionClosed("the enclave closed the connection before answering"))
                self.conn.receive_data(data)
                self._route_events()
        except (ConnectionError, OSError) as exc:
            self.fail(errors.ConnectionClosed(f"the connection to the enclave broke: {exc}"))
        except errors.ZeroCopyError as exc:
            self.fail(exc)

    def _route_events(self) -> None:
        while self.broken is None:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError as exc:
                if exc.code is ErrorCode.SESSION_FAILED:
                    raise errors.SessionError(str(exc)) from None
                raise errors.ProtocolError(f"malformed response from the enclave: {exc}") from None
            if event is NEED_DATA:
                return
            answer = self.waiting.pop(event.request_id, None)
            if answer is not None:
                if not answer.done():
                    answer.set_result(event)
            elif event.request_id in self.abandoned:
                self.abandoned.discard(event.request_id)  # the late answer to a call that timed out
            elif isinstance(event, ErrorResponse) and event.request_id == 0:
                raise _error_for(event)
            else:
                raise errors.ProtocolError(f"response for request {event.request_id}, which nothing is waiting for")

    def fail(self, error: errors.ZeroCopyError) -> None:
        """Drop the connection; every waiting call raises (a copy of) ``error``."""
        if self.broken is None:
            self.broken = error
        self.writer.close()
        waiting, self.waiting = self.waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(_copy(self.broken))
        if asyncio.current_task() is not self.reading:
            self.reading.cancel()

    async def close(self) -> None:
        self.fail(errors.ConnectionClosed("this AsyncSigner is closed"))
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reading
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def _deadline(seconds: float | None) -> float | None:
    """``seconds`` from now on the running loop's clock (None: no limit)."""
    return None if seconds is None else asyncio.get_running_loop().time() + seconds


def _left(deadline: float | None) -> float | None:
    """What is left until ``deadline`` (None: no limit; never negative)."""
    return None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())


def _earlier(first: float | None, second: float | None) -> float | None:
    return second if first is None else first if second is None else min(first, second)


def _copy(error: errors.ZeroCopyError) -> errors.ZeroCopyError:
    """A fresh instance per waiting call: one exception object raised in many tasks would share
    (and keep growing) one traceback."""
    clone = type(error).__new__(type(error))
    clone.__dict__.update(error.__dict__)
    clone.args = error.args
    return clone


class AsyncSigner:
    """A connection to a ZeroCopy enclave for asyncio: ``async with AsyncSigner(address) as signer``.

    The arguments are the :class:`~zerocopy.Signer`'s, with the same meaning (attested sessions
    when ``expected_pcrs`` pins PCR0); ``timeout`` bounds each call, connecting and attesting
    included. Calls may run concurrently (``asyncio.gather``): they are pipelined on one connection.
    If the connection turns out to be broken (the enclave restarted), a call is tried once more on
    a new one, as the ``Signer`` does.

    It never spins for an answer (the Signer's ``busy_poll_us``): its answers arrive through the
    event loop, which sleeps in the selector until a socket is ready, and a coroutine spinning
    would stall every other task of the loop. A bot that wants spinning uses a ``Signer`` on a
    thread of its own.
    """

    def __init__(
        self,
        address: str | Address,
        *,
        expected_pcrs: Mapping[int, bytes | str] | None = None,
        roots: Sequence[Any] | None = None,
        timeout: float | None = 10.0,
        allow_debug: bool = False,
    ) -> None:
        self.address, self.timeout, self._verification = _connection_arguments(address, expected_pcrs, roots, timeout, allow_debug)
        self.attestation: Any = None
        self._link: _Link | None = None
        self._connecting: asyncio.Lock | None = None  # made on first use, inside the loop
        self._closed = False

    @classmethod
    def from_env(cls, **kwargs: Any) -> "AsyncSigner":
        """The enclave named by ``$ZEROCOPY_ENCLAVE``, attesting under the same environment rules
        as :meth:`zerocopy.Signer.from_env`. Connects on ``async with`` (or the first call)."""
        address, kwargs = _env_arguments(kwargs)
        return cls(address, **kwargs)

    @property
    def attested(self) -> bool:
        """Whether the current connection is an attested session (frames sealed both ways)."""
        link = self._link
        return link is not None and link.broken is None and link.conn.session is not None

    # -- connections ------------------------------------------------------------------------
    async def _current(self, deadline: float | None) -> _Link:
        """The open connection, or a new one (attested, if this signer attests), by ``deadline``
        (the call's, on the loop's clock): a call that waits while another connects waits no
        longer than its own timeout."""
        link = self._link
        if link is not None and link.broken is None and not self._closed:
            return link  # the sign path: no lock, no timer
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        lock = self._connecting
        await self._wait_for_connecting(lock, deadline)
        try:
            if self._closed:
                raise errors.ConnectionClosed("this AsyncSigner is closed")
            if self._link is None or self._link.broken is not None:
                self._link = None
                self._link = await self._open(_earlier(deadline, _deadline(self.timeout)))
            return self._link
        finally:
            lock.release()

    async def _wait_for_connecting(self, lock: asyncio.Lock, deadline: float | None) -> None:
        """The connecting turn, by ``deadline``: another call may be connecting (or about to)."""
        try:
            async with asyncio.timeout_at(deadline):
                await lock.acquire()
        except TimeoutError:
            raise errors.Timeout(
                f"another call was still connecting to the enclave at {self.address} when this call's timeout ran out; nothing was sent"
            ) from None

    async def _open(self, deadline: float | None) -> _Link:
        """A new connection, attested if this signer attests, all of it by ``deadline``."""
        link = _Link(*await self._connect(_left(deadline)))
        try:
            if self._verification is not None:
                handshake, request = _session_request()
                answer = await self._control_on(link, request, errors.SessionError, _left(deadline))
                self.attestation = _finish_session(link.conn, handshake, answer, self._verification)
        except BaseException:
            await link.close()
            raise
        return link

    async def _connect(self, timeout: float | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(self.address.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, self.address.sockaddr), timeout)
            if self.address.scheme == "tcp":
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return await asyncio.open_connection(sock=sock, limit=_RECV)
        except asyncio.TimeoutError:
            sock.close()
            raise errors.Timeout(f"connecting to the enclave at {self.address} timed out") from None
        except OSError as exc:
            sock.close()
            raise errors.ConnectionFailed(connect_failure(self.address, exc)) from None
        except BaseException:
            sock.close()
            raise

    async def _request(self, send: Callable[..., bytes], *parts: Any, retry: bool = True, timeout: Any = _SIGNER_TIMEOUT) -> Any:
        """The one way a request goes out (``send`` a :class:`Connection` method, as in the
        ``Signer``); with ``retry``, once more on a new connection if this one is broken.
        ``timeout`` (the signer's own unless given) bounds the whole call: a wait for another
        call's connection attempt, connecting, and the wait for the answer."""
        seconds = self.timeout if timeout is _SIGNER_TIMEOUT else timeout
        deadline = _deadline(seconds)
        send_by = None if deadline is None else deadline - min(SEND_FLOOR, seconds / 2)
        for attempt in (1, 2):
            link = await self._current(deadline)
            if send_by is not None and asyncio.get_running_loop().time() > send_by:
                raise errors.Timeout(
                    f"the call's timeout ran out while connecting to the enclave at {self.address} "
                    f"(under {SEND_FLOOR * 1000:g} ms left); nothing was sent"
                )
            try:
                return await link.request(send, parts, _left(deadline))
            except errors.ConnectionClosed:
                if attempt == 2 or not retry or self._closed:
                    raise

    async def _control_on(self, link: _Link, message: Message, malformed: type[errors.ProtocolError], timeout: float | None) -> Any:
        """A control message on ``link`` (not yet published: the handshake), its typed answer."""
        response = await link.request(Connection.send_control, (message,), timeout)
        if type(response) is not ControlResponse or response.kind != message.TYPE | 0x80:
            if type(response) is not ErrorResponse:
                link.fail(errors.ProtocolError(f"unexpected answer to {message.TYPE.name}"))
            raise _unexpected_answer(response, message.TYPE.name)
        return _control_answer(response, malformed)

    async def _control(self, message: Message, *, retry: bool = True, timeout: Any = _SIGNER_TIMEOUT) -> Any:
        response = await self._request(Connection.send_control, message, retry=retry, timeout=timeout)
        if type(response) is not ControlResponse or response.kind != message.TYPE | 0x80:
            raise self._unexpected(response, message.TYPE.name)
        return _control_answer(response, errors.ProtocolError)

    # -- the API ----------------------------------------------------------------------------
    async def sign(self, key: str, payload: bytes) -> bytes:
        """Raw signature of ``payload`` with the key named ``key`` (if its policy allows raw signing)."""
        return await self._sign(_key_argument(key), _payload_argument(payload))

    async def _sign(self, key: bytes, payload: bytes) -> bytes:
        event = await self._request(Connection.send_sign, key, payload)
        if type(event) is not Signature:
            raise self._unexpected(event, "SIGN")
        return event.signature

    async def sign_many(self, items: Iterable[tuple[str, bytes]]) -> list[bytes]:
        """Several raw signatures, in the order of ``items``, as :meth:`zerocopy.Signer.sign_many`:
        every argument is checked before anything is sent, the requests are pipelined on the one
        connection ``SIGN_MANY_WINDOW`` at a time while the answers to the window before are read
        (any batch size: unread answers stay under the socket buffers), tried once more on a new
        connection if this one breaks, and the first error (in the order of ``items``) is raised
        once every answer is in. The timeout bounds the wait for each window's answers."""
        requests = [(_key_argument(key), _payload_argument(payload)) for key, payload in items]
        for attempt in (1, 2):
            outcomes = await self._pipeline(await self._current(_deadline(self.timeout)), requests)
            if attempt == 2 or self._closed or not any(isinstance(outcome, errors.ConnectionClosed) for outcome in outcomes):
                break
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes

    async def _pipeline(self, link: _Link, requests: list[tuple[bytes, bytes]]) -> list[Any]:
        """Each request's signature or error, two windows in flight: one answered while the next
        goes out."""
        outcomes: list[Any] = []
        windows: collections.deque[list[tuple[int, asyncio.Future]]] = collections.deque()
        unsent: errors.ZeroCopyError | None = None
        try:
            for start in range(0, len(requests), SIGN_MANY_WINDOW):
                try:
                    windows.append(link.send_window(Connection.send_sign, requests[start : start + SIGN_MANY_WINDOW]))
                except errors.ZeroCopyError as exc:  # the connection broke: what was not sent fails with it
                    unsent = exc
                    break
                if len(windows) == 2:
                    outcomes += await self._window_outcomes(link, windows.popleft())
            while windows:
                outcomes += await self._window_outcomes(link, windows.popleft())
        except BaseException:  # cancelled: answers still due are dropped when they arrive
            for window in windows:
                link.abandon(window)
            raise
        return outcomes + [unsent] * (len(requests) - len(outcomes))

    async def _window_outcomes(self, link: _Link, window: list[tuple[int, asyncio.Future]]) -> list[Any]:
        outcomes: list[Any] = []
        for request_id, answer in window:
            try:
                event = await link.answer(request_id, answer, self.timeout)
            except errors.ZeroCopyError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(event.signature if type(event) is Signature else self._unexpected(event, "SIGN"))
        return outcomes

    async def sign_request(
        self,
        key: str,
        method: str,
        path: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        body: str | bytes | None = None,
    ) -> SignedRequest:
        """Have the enclave build and sign an exchange request (the key's scheme decides the format)."""
        event = await self._request(Connection.send_sign_http, _sign_http_request(key, method, path, params, body))
        if type(event) is not HttpSignature:
            raise self._unexpected(event, "SIGN_HTTP")
        return _signed_request(method, path, body, event)

    async def attest(self, nonce: bytes) -> bytes:
        """A fresh attestation document (raw CBOR) binding ``nonce``."""
        return (await self._control(Attest(nonce=_nonce_argument(nonce)))).document

    async def audit(self, *, after: int = 0, limit: int = 1000, nonce: bytes | None = None) -> dict:
        """Audit receipts and a signed checkpoint, as :meth:`zerocopy.Signer.audit`."""
        return (await self._control(Audit(after=after, limit=limit, nonce=nonce))).to_fields()

    async def keys(self) -> list[KeyInfo]:
        """The keys loaded in the enclave (names, schemes, API key ids, policy digests)."""
        return list((await self._control(Keys())).keys)

    async def provision(
        self, bundles: Sequence[bytes], *, credentials: Mapping[str, str], region: str | None = None, timeout: float | None = 60.0
    ) -> list[ProvisionResult]:
        """Send sealed bundles; the enclave unseals them through KMS with these AWS credentials
        (:meth:`zerocopy.Signer.provision`). ``timeout`` bounds the wait for the answer."""
        request = _provision_message(bundles, credentials, region)
        return _provision_results(await self._control(request, timeout=_timeout_argument(timeout)))

    async def generate(
        self,
        name: str,
        scheme: str,
        *,
        credentials: Mapping[str, str],
        kms_key_id: str | None = None,
        api_key: str = "",
        policy: dict | None = None,
        region: str | None = None,
        timeout: float | None = 60.0,
    ) -> tuple[bytes, str]:
        """Have the enclave make a key pair for an asymmetric scheme and load it; the sealed
        bundle and the public key PEM (:meth:`zerocopy.Signer.generate`). Never tried twice: a
        second try would make a second key."""
        request = _generate_message(name, scheme, credentials, kms_key_id=kms_key_id, api_key=api_key, policy=policy, region=region)
        answer = await self._control(request, retry=False, timeout=_timeout_argument(timeout))
        return answer.bundle, answer.public_key.decode()

    async def bind(self, key: str, api_key: str, *, credentials: Mapping[str, str], region: str | None = None, timeout: float | None = 60.0) -> bytes:
        """Bind the exchange's API key id to a key generated without one; the re-sealed bundle
        (:meth:`zerocopy.Signer.bind`). Never tried twice: a second try would find it bound."""
        request = _bind_message(key, api_key, credentials, region)
        return (await self._control(request, retry=False, timeout=_timeout_argument(timeout))).bundle

    def _unexpected(self, response: Any, kind: str) -> errors.ZeroCopyError:
        if type(response) is not ErrorResponse and self._link is not None:
            self._link.fail(errors.ProtocolError(f"unexpected answer to {kind}"))
        return _unexpected_answer(response, kind)

    async def close(self) -> None:
        self._closed = True
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    async def __aenter__(self) -> "AsyncSigner":
        try:
            await self._current(_deadline(self.timeout))
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncSigner {self.address}{' closed' if self._closed else ''}>"

