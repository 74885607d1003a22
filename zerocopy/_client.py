"""The bot's side: :class:`Signer`, a blocking client of the enclave's wire protocol.

One ``Signer`` holds one connection. Calls are serialised by a lock, so a ``Signer`` can be shared
between threads; for throughput give each thread its own, pipeline with :meth:`Signer.sign_many`,
or use :class:`zerocopy.AsyncSigner`. A call's timeout bounds the whole call, its wait for a turn
included: threads queued behind a slow call time out on time (having sent nothing), not one
timeout after another. A call that times out after sending drops the connection (the next call
opens a new one), so an answer that arrives late is never read as another request's. A call left
with under :data:`SEND_FLOOR` of its timeout when its request would go out sends nothing.

The socket stays in one mode for a connection's life (blocking): the usual call is a ``send``
that does not wait, a ``poll`` for what is left of its timeout (none when a spinning call finds
its answer) and a ``recv``; no timeout is set on the socket per call.

A ``Signer`` that insists on attestation (``expected_pcrs``, which must pin PCR0, and optionally
``roots``) opens every connection with an attested session (:mod:`enclave.protocol.session`): the
document it verifies binds its nonce and both ephemeral keys, and every later frame is sealed, so
answers can only come from the enclave that attested. Without attestation the connection is plain
(see docs/protocol.md).
"""

from __future__ import annotations

import itertools
import math
from itertools import chain
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from enclave.protocol import (
    NEED_DATA,
    VERSION,
    Connection,
    ControlResponse,
    ErrorCode,
    ErrorResponse,
    HttpSignature,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    Signature,
    http_params,
    http_params_items,
    key_name,
    sign_http_body_with,
    sign_http_prefix,
)
from enclave.protocol.address import Address, AddressError, parse_address
from enclave.protocol.frames import HEADER, http_signature_fields
from enclave.protocol.messages import ANSWERS, Attest, Audit, Bind, Generate, KeyInfo, Keys, Message, MessageError, OpenSession, Provision, Remove
from enclave.protocol.signing import API_KEY_RULE
from enclave.protocol.session import ClientHandshake, HandshakeError, check_bound

from . import errors

__all__ = ["Signer", "SignedRequest", "KeyInfo", "ProvisionResult", "ENV_VAR"]

ENV_VAR = "ZEROCOPY_ENCLAVE"
PCR_ENV_PREFIX = "ZEROCOPY_EXPECTED_PCR"  # ZEROCOPY_EXPECTED_PCR0 (and PCR1, PCR2, … if set), hex
ROOT_ENV_VAR = "ZEROCOPY_ATTESTATION_ROOT"  # PEM file of the trusted root; unset = the AWS root
_RECV = 65536
_MAX_ROOT_FILE = 1 << 20  # a root file is a certificate or two, never megabytes
_SIGNER_TIMEOUT: Any = object()  # a call's timeout left to the Signer's own
#: The longest ``Signer.close`` waits for another thread's call (one still connecting; a call
#: blocked on the connection is woken at once).
CLOSE_WAIT = 1.0
#: A call sends nothing with less than this left of its timeout (or half its timeout, if that is
#: shorter): it raises Timeout saying so. An answer cannot arrive in less than a round trip
#: (50-200 µs here and on vsock, a p99 far longer), and a request the enclave signs after the
#: caller gave up still counts against the key's rate and notional limits.
SEND_FLOOR = 0.001
_DONTWAIT = socket.MSG_DONTWAIT
_SIGNATURE, _HTTP_SIGNATURE = 0x81, 0x82  # the answers parsed straight from the bytes read
_PROTOCOL_CODES = {ErrorCode.MALFORMED_FRAME, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.UNKNOWN_MESSAGE_TYPE, ErrorCode.FRAME_TOO_LARGE}


@dataclass(frozen=True)
class SignedRequest:
    """A request ready to send: append ``query`` to the URL, send ``body`` and add ``headers``."""

    method: str
    path: str
    query: str
    body: str | bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url_path(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass(frozen=True)
class ProvisionResult:
    name: str | None
    loaded: bool
    error: str | None = None


def connect_failure(address: Address, exc: OSError) -> str:
    """Why connecting to ``address`` failed, and what to check."""
    reason = f"cannot connect to the enclave at {address}: {exc.strerror or exc}"
    if address.scheme == "unix" and address.path.rsplit("/", 1)[-1].startswith("vsock-"):  # the emulator's stand-in for vsock
        return f"{reason}. Is `zerocopy emulator up` running? Its address changes at every start: use the ZEROCOPY_ENCLAVE it printed"
    if address.scheme == "unix":
        return f"{reason}. Is the enclave listening on that socket?"
    if address.scheme == "vsock":
        return f"{reason}. Is the enclave running with CID {address.cid} (nitro-cli describe-enclaves) and listening on port {address.port}?"
    return f"{reason}. Is the enclave, or a proxy to it, listening on {address.host} port {address.port}?"


def _error_for(event: ErrorResponse) -> errors.ZeroCopyError:
    message = event.message
    if event.code is ErrorCode.UNKNOWN_KEY:
        return errors.UnknownKey(message, code=event.code)
    if event.code is ErrorCode.POLICY_REFUSED:
        refused = errors.KeyNotBound if event.rule == API_KEY_RULE else errors.PolicyRefused
        return refused(f"refused by rule {event.rule!r}: {message}", rule=event.rule, code=event.code)
    if event.code is ErrorCode.PROVISIONING_FAILED:
        return errors.ProvisioningError(message, code=event.code)
    if event.code is ErrorCode.UNSUPPORTED_OPERATION:
        return errors.UnsupportedOperation(message, code=event.code)
    if event.code is ErrorCode.BUSY:
        return errors.EnclaveBusy(message, code=event.code)
    if event.code is ErrorCode.SESSION_FAILED:
        return errors.SessionError(f"the enclave refused this session: {message}")
    if event.code in _PROTOCOL_CODES:
        return errors.ProtocolError(f"the enclave rejected a frame: {message}")
    return errors.EnclaveError(message, code=event.code)


def _key_argument(key: Any) -> bytes:
    """A key name argument as the wire carries it (:func:`enclave.protocol.key_name` checks it)."""
    try:
        return key_name(key if isinstance(key, str) else b"")
    except LocalProtocolError as exc:
        raise ValueError(str(exc)) from None


def _param_text(name: str, value: Any) -> str:
    """A parameter value as the text signed: strings as they are, numbers as plain decimals."""
    if isinstance(value, str):
        return value
    try:
        return plain_decimal(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"parameter {name!r}: {exc}") from None


def plain_decimal(value: int | float | Decimal) -> str:
    """``value`` written as a plain decimal, never with an exponent: ``1e-05`` is ``0.00001``,
    ``Decimal("1E+2")`` is ``100``. A float is written as its shortest round-trip form (``0.1``,
    not its binary expansion), so the text reads back as the same value.

    ``bool`` is a ``TypeError`` (exchanges spell it differently: pass ``"true"`` yourself), as is
    any other type; NaN and infinities are a ``ValueError``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"must be str, int, float or Decimal, not {type(value).__name__}")
    if isinstance(value, int):
        return str(int(value))
    number = Decimal(repr(float(value))) if isinstance(value, float) else value
    if not number.is_finite():
        raise ValueError(f"must be a finite number, not {value}")
    return format(number, "f")


def _unexpected_answer(response: Any, kind: str) -> errors.ZeroCopyError:
    """An error answer's exception, or a ProtocolError for an answer of the wrong type (the
    caller drops the connection then: the exchange is out of step)."""
    if type(response) is ErrorResponse:
        return _error_for(response)
    return errors.ProtocolError(f"unexpected answer to {kind}")


def _control_answer(response: ControlResponse, malformed: type[errors.ProtocolError]) -> Any:
    """A control answer as its typed message (:mod:`enclave.protocol.messages`)."""
    try:
        return ANSWERS[response.kind].from_fields(response.fields)
    except MessageError as exc:
        raise malformed(f"malformed {response.kind.name} answer from the enclave: {exc}") from None


def _sign_http_request(key: str, method: str, path: str, params: Any, body: str | bytes | None) -> bytes:
    """``sign_request``'s arguments, checked and encoded once as a SIGN_HTTP body (framed later
    for whichever connection it goes out on)."""
    try:  # the enclave's own rule for names and values (enclave.protocol.http_params)
        items = _flat_items(params)
        block = http_params_items(items) if items is not None else None  # None: not all text
        texts = _param_texts(params) if block is None else None
        prefix = _request_prefix(key, method, path)
        if texts is not None:
            block = http_params(tuple(texts))
        return sign_http_body_with(prefix, block, body.encode() if isinstance(body, str) else bytes(body or b""))  # type: ignore[arg-type]
    except LocalProtocolError as exc:
        raise ValueError(str(exc)) from None


#: (key, method, path) -> what their SIGN_HTTP bodies start with (a bot calls a handful of endpoints).
_PREFIXES: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
_MAX_PREFIXES = 256
_MAX_PREFIX_PATH = 512  # a longer path (up to 64 KiB) is laid out each time, not held: 256 of them would be 30 MB


def _request_prefix(key: str, method: str, path: str) -> tuple[bytes, bytes]:
    """The SIGN_HTTP body's start for this key, method and path, checked once per endpoint."""
    text = type(key) is str and type(method) is str and type(path) is str  # exact str: a subclass could hash as another
    prefix = _PREFIXES.get((key, method, path)) if text else None
    if prefix is None:
        try:
            parts = (key.encode(), method.upper().encode(), path.encode())
        except (UnicodeEncodeError, AttributeError):
            raise ValueError("key, method, path and parameters must be text") from None
        prefix = sign_http_prefix(*parts)
        if text and len(path) <= _MAX_PREFIX_PATH:
            if len(_PREFIXES) >= _MAX_PREFIXES:
                _PREFIXES.clear()
            _PREFIXES[(key, method, path)] = prefix
    return prefix


_PAIR, _TWO = frozenset({tuple}), frozenset({2})


def _flat_items(params: Any) -> list | None:
    """The usual call's parameters — a dict, or a list or tuple of pairs — laid out as the params
    block wants them (names and values alternating), at C speed; None for anything else."""
    if type(params) is dict:
        return [*chain.from_iterable(params.items())]
    if (type(params) is list or type(params) is tuple) and _PAIR.issuperset(map(type, params)) and _TWO.issuperset(map(len, params)):
        return [*chain.from_iterable(params)]
    return None


def _param_texts(params: Any) -> list[tuple[str, str]]:
    """``params`` (a mapping or pairs) as text pairs: names with ``str``, values with :func:`_param_text`."""
    pairs = params.items() if type(params) is dict or isinstance(params, Mapping) else params or ()
    texts = []
    for name, value in pairs:
        name = name if type(name) is str else str(name)
        texts.append((name, value if type(value) is str else _param_text(name, value)))
    return texts


def _signed_request(method: str, path: str, body: str | bytes | None, event: HttpSignature) -> SignedRequest:
    return _signed_request_from(method, path, body, event.query, event.body, dict(event.headers))


def _signed_request_from(method: str, path: str, body: str | bytes | None, query: str, signed: bytes, headers: dict[str, str]) -> SignedRequest:
    signed_body: str | bytes = signed if isinstance(body, bytes) else signed.decode()
    # Filled in directly: a frozen dataclass's __init__ sets each field through object.__setattr__,
    # a microsecond per request for fields that are already what they must be.
    request = object.__new__(SignedRequest)
    request.__dict__.update(method=method.upper(), path=path, query=query, body=signed_body, headers=headers)
    return request


def _payload_argument(payload: Any) -> bytes:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    return bytes(payload)


def _nonce_argument(nonce: Any) -> bytes:
    if not isinstance(nonce, bytes) or len(nonce) > 1024:
        raise ValueError("nonce must be at most 1024 bytes")
    return nonce


def _provision_message(bundles: Sequence[bytes], credentials: Mapping[str, str], region: str | None) -> Provision:
    """``provision``'s arguments (``Signer`` and ``AsyncSigner`` alike) as its message."""
    if isinstance(bundles, (bytes, str)):
        raise TypeError("bundles must be a list of sealed bundles, not one bundle")
    return Provision(bundles=tuple(map(_bundle_argument, bundles)), credentials=_credentials_argument(credentials), region=region)


def _bundle_argument(bundle: Any) -> bytes:
    if not isinstance(bundle, (bytes, bytearray, memoryview)):
        raise TypeError(f"a sealed bundle must be bytes (SealedBundle.to_json()), not {type(bundle).__name__}")
    return bytes(bundle)


def _credentials_argument(credentials: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in credentials.items() if value is not None}


def _provision_results(answer: Any) -> list[ProvisionResult]:
    return [ProvisionResult(item.name, item.loaded, item.error) for item in answer.results]


def _generate_message(name: str, scheme: str, credentials: Mapping[str, str], **options: Any) -> Generate:
    """``generate``'s arguments as its message (``options``: kms_key_id, api_key, policy, region)."""
    return Generate(name=name, scheme=scheme, credentials=_credentials_argument(credentials), **options)


def _bind_message(key: str, api_key: str, credentials: Mapping[str, str], region: str | None) -> Bind:
    """``bind``'s arguments as its message."""
    if not isinstance(key, str) or not isinstance(api_key, str):
        raise TypeError("key and api_key must be text (the key's name and the exchange's API key id)")
    if not api_key:
        raise ValueError("api_key must be the API key id the exchange issued for the key's public key, not empty")
    return Bind(name=key, api_key=api_key, credentials=_credentials_argument(credentials), region=region)


#: Requests ``sign_many`` keeps in flight (at most two windows' answers are unread): 2 × 128
#: answers of at most 538 bytes (an RSA-4096 signature, sealed) stay under the socket buffers
#: (about 208 KiB for Unix sockets, 256 KiB for vsock), so the enclave never blocks writing to us.
SIGN_MANY_WINDOW = 128


class Signer:
    """A connection to a ZeroCopy enclave.

    ``address`` is ``vsock://CID:PORT``, ``unix:///path`` or ``tcp://127.0.0.1:PORT``. If
    ``expected_pcrs`` (it must pin PCR0: ``{0: <48 bytes>}``) is given, with ``roots`` or the AWS
    root, each connection starts with an attested session: the enclave proves, with a fresh
    attestation document binding a random nonce and an ephemeral key exchange, that it runs the
    expected image under a trusted root (otherwise nothing is sent and
    :class:`~zerocopy.attestation.AttestationError` is raised), and every later frame is
    authenticated both ways — a relayed or altered connection raises
    :class:`~zerocopy.errors.SessionError` and is closed. ``roots`` without a PCR0 pin is a
    ``ValueError``: it would accept any image under the root.

    A PCR is 48 bytes or the same as 96 hex digits; a root is PEM bytes, an
    ``x509.Certificate`` or the path (``str`` or ``pathlib.Path``) of a PEM file. The constructor
    reads no environment: ``roots=None`` is the AWS root even when ``$ZEROCOPY_ATTESTATION_ROOT``
    is set (only :meth:`from_env` reads it), so what a bot trusts is what its code says.

    ``busy_poll_us`` (default 0: off) makes each call spin for its answer, polling the socket
    without sleeping, for up to that many microseconds before it sleeps in a blocking wait. A
    sleeping thread pays a CPU wake-up when the answer lands (tens of microseconds on an idle
    core); a spinning one does not, at the price of a busy core while it waits. Worth it for a
    latency-sensitive bot on a core of its own; on a shared core the spinning steals the time the
    answer needs. The call's timeout still bounds the whole call, spin included.
    """

    def __init__(
        self,
        address: str | Address,
        *,
        expected_pcrs: Mapping[int, bytes | str] | None = None,
        roots: Sequence[Any] | None = None,
        timeout: float | None = 10.0,
        allow_debug: bool = False,
        busy_poll_us: int = 0,
    ) -> None:
        self.address, self.timeout, self._verification = _connection_arguments(address, expected_pcrs, roots, timeout, allow_debug)
        self.busy_poll_us = _busy_poll_argument(busy_poll_us)
        self._spin_s = self.busy_poll_us / 1e6
        self.attestation: Any = None
        self._lock = threading.RLock()  # re-entered when a reconnect re-attests
        self._deadline: float | None = None  # when the call holding the lock must end (monotonic)
        self._send_by: float | None = None  # the last moment its request may go out (SEND_FLOOR)
        self._readable: Any = None  # a poll object for the connection's socket, made once per connection
        self._ids = itertools.count(1)
        self._closed = False
        self._conn = Connection(Role.CLIENT)
        self._sock: socket.socket | None = None
        try:
            outer = self._take_turn(self.timeout)
            try:
                self._reconnect()
            finally:
                self._end_turn(outer)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_env(cls, **kwargs: Any) -> "Signer":
        """Connect to the enclave named by ``$ZEROCOPY_ENCLAVE``.

        If ``$ZEROCOPY_EXPECTED_PCR0`` (hex; ``…PCR1``, ``…PCR2`` and so on too) is set, the Signer
        attests, as ``Signer(address, expected_pcrs=…, roots=…)`` would, under
        ``$ZEROCOPY_ATTESTATION_ROOT`` (a PEM file; unset means the AWS Nitro root). A root without
        PCR0, a variable set but empty, or a malformed one is a
        :class:`~zerocopy.errors.ConfigurationError`: never a silent fall back to accepting any
        image, or to a plain connection. Keyword arguments win over the environment.
        """
        address, kwargs = _env_arguments(kwargs)
        return cls(address, **kwargs)

    @property
    def attested(self) -> bool:
        """Whether the current connection is an attested session (frames sealed both ways)."""
        return self._sock is not None and self._conn.session is not None

    def _connect(self) -> socket.socket:
        sock = socket.socket(self.address.family, socket.SOCK_STREAM)
        sock.settimeout(self._remaining())
        try:
            sock.connect(self.address.sockaddr)
        except socket.timeout:
            sock.close()
            raise errors.Timeout(f"connecting to the enclave at {self.address} timed out") from None
        except OSError as exc:
            sock.close()
            raise errors.ConnectionFailed(connect_failure(self.address, exc)) from None
        if self.address.scheme == "tcp":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # One mode for the connection's life (blocking; a call's own waits poll with what is left
        # of it): settimeout per call was an ioctl, and Python polls before every send of a
        # socket with a timeout, so a call cost six system calls where three do.
        sock.settimeout(None)
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)
        return sock

    def _reconnect(self) -> None:
        """A fresh connection (and, if the Signer insists on one, an attested session over it)."""
        self._sock = self._connect()
        self._conn = Connection(Role.CLIENT)
        if self._closed:  # closed from another thread while this call connected
            raise self._broken("")
        if self._verification is not None:
            try:
                self._open_session()
            except BaseException:
                self._fail()
                raise

    def _open_session(self) -> None:
        """OPEN_SESSION, verify the document binds our nonce and both X25519 keys, then seal."""
        handshake, request = _session_request()
        answer = self._control(request, retry=False, malformed=errors.SessionError)
        self.attestation = _finish_session(self._conn, handshake, answer, self._verification)

    def _ensure_connected(self) -> None:
        if self._sock is None:
            if self._closed:
                raise errors.ConnectionClosed("this Signer is closed")
            self._reconnect()

    def _reconnect_after_break(self) -> None:
        """A connection that turned out to be broken (say, the enclave restarted) is replaced
        once, for a second try: signing has no side effect a second try could double."""
        with self._lock:
            self._fail()
            self._ensure_connected()

    # -- plumbing ---------------------------------------------------------------------------
    def _next_id(self) -> int:
        return next(self._ids) & 0xFFFFFFFF

    def _take_turn(self, seconds: float | None) -> tuple[float | None, float | None]:
        """This thread's turn on the connection, ending ``seconds`` from now: the wait for the turn
        counts, and each socket operation of the call gets only what is left (:meth:`_remaining`).
        A call made within another (a reconnect's handshake) ends by the outer one's deadline too.
        Returns the outer deadlines, for :meth:`_end_turn` (no context manager: this is the sign path)."""
        deadline = send_by = None
        if seconds is not None:
            deadline = time.monotonic() + seconds
            send_by = deadline - min(SEND_FLOOR, seconds / 2)
        if not self._lock.acquire(timeout=-1 if seconds is None else seconds):
            raise errors.Timeout(f"the Signer stayed busy with other threads' calls for {seconds}s (the call's timeout); nothing was sent")
        outer = self._deadline, self._send_by
        if outer[0] is None or (deadline is not None and deadline <= outer[0]):
            self._deadline, self._send_by = deadline, send_by
        return outer

    def _end_turn(self, outer: tuple[float | None, float | None]) -> None:
        self._deadline, self._send_by = outer
        self._lock.release()

    def _remaining(self) -> float | None:
        """What is left of the current call's timeout, for its next socket operation (None: no
        limit). Once spent, a moment, not zero (zero would make the socket non-blocking): an
        answer already received is still taken, one not yet there is a timeout."""
        deadline = self._deadline
        return None if deadline is None else max(deadline - time.monotonic(), 1e-6)

    def _send(self, data: bytes) -> None:
        """``data`` out on the connection: one send without waiting (a frame fits the socket
        buffer), the rest as the buffer drains, by the call's deadline."""
        sock = self._sock
        assert sock is not None
        try:
            sent = sock.send(data, _DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise self._broken(f"the connection to the enclave broke: {exc.strerror or exc}") from None
        if sent < len(data):
            self._send_rest(sock, memoryview(data)[sent:])

    def _send_rest(self, sock: socket.socket, rest: memoryview) -> None:
        while rest:
            self._wait_for(sock, select.POLLOUT, f"sending to the enclave at {self.address} timed out")
            try:
                rest = rest[sock.send(rest, _DONTWAIT) :]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise self._broken(f"the connection to the enclave broke: {exc.strerror or exc}") from None

    def _wait_for(self, sock: socket.socket, events: int, timed_out: str) -> None:
        """Wait until ``sock`` is ready for ``events``, by the call's deadline (what is already
        there is still taken once it passed); past it, drop the connection and raise Timeout.
        A poll, not the kernel's receive timeout: poll's wait is cut to what is left after a
        signal interrupts it, a receive timeout would start again (and never end under a profiler's
        timer signals)."""
        deadline = self._deadline
        poller = self._readable
        if events != select.POLLIN or poller is None:
            poller = select.poll()
            poller.register(sock, events)
        if not poller.poll(None if deadline is None else max(0, math.ceil((deadline - time.monotonic()) * 1000))):
            self._fail()
            raise errors.Timeout(timed_out)

    def _broken(self, why: str) -> errors.ConnectionClosed:
        """Drop the connection; the error to raise (the Signer's closing, if that broke it)."""
        self._fail()
        return errors.ConnectionClosed("this Signer was closed during the call" if self._closed else why)

    def _receive(self) -> Any:
        conn, sock = self._conn, self._sock
        assert sock is not None
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._fail()
                if exc.code is ErrorCode.SESSION_FAILED:
                    raise errors.SessionError(str(exc)) from None
                raise errors.ProtocolError(f"malformed response from the enclave: {exc}") from None
            if event is not NEED_DATA:
                return event
            conn.receive_data(self._read(sock))

    def _read(self, sock: socket.socket) -> bytes:
        """The next bytes from the enclave, by the call's deadline (spinning first, if it spins)."""
        try:
            data = self._spin_recv(sock) if self._spin_s else None
            if data is None:
                data = self._recv_by_deadline(sock)
        except OSError as exc:
            raise self._broken(f"the connection to the enclave broke: {exc.strerror or exc}") from None
        if not data:
            raise self._broken("the enclave closed the connection before answering")
        return data

    def _recv_by_deadline(self, sock: socket.socket) -> bytes:
        """A poll for what is left of the call, then a recv (a call without a deadline: a
        blocking recv)."""
        if self._deadline is None:
            return sock.recv(_RECV)
        while True:
            self._wait_for(sock, select.POLLIN, f"the enclave at {self.address} did not answer within the call's timeout")
            try:
                return sock.recv(_RECV, _DONTWAIT)
            except BlockingIOError:
                continue

    def _spin_recv(self, sock: socket.socket) -> bytes | None:
        """Poll ``sock`` without sleeping for up to ``busy_poll_us`` (and never past the call's
        deadline): what arrived, or None if nothing did (then the caller sleeps in a blocking recv)."""
        clock, recv = time.monotonic, sock.recv
        spin_until, deadline = clock() + self._spin_s, self._deadline
        if deadline is not None and deadline < spin_until:
            spin_until = deadline
        while True:
            try:
                return recv(_RECV, _DONTWAIT)
            except BlockingIOError:
                if clock() >= spin_until:
                    return None

    def _answer(self, request_id: int, kind: int) -> Any:
        """The answer to ``request_id``. On a plain connection, a read that is exactly that
        answer, a ``kind`` frame, is taken straight from the bytes: a SIGNATURE's signature, an
        HTTP_SIGNATURE's (query, body, headers); anything else goes through the Connection (its
        checks and typed errors) as an event."""
        conn = self._conn
        if conn.session is None and not conn.in_frame:
            data = self._read(self._sock)  # type: ignore[arg-type]
            if len(data) >= 10 and HEADER.unpack_from(data) == (len(data) - 10, VERSION, kind, request_id):
                if kind != _HTTP_SIGNATURE:
                    return data[10:]
                fields = http_signature_fields(data)
                if fields is None:
                    self._fail()
                    raise errors.ProtocolError("malformed response from the enclave: HTTP_SIGNATURE body is malformed")
                return fields
            conn.receive_data(data)
        return self._expect(request_id)

    def _expect(self, request_id: int) -> Any:
        event = self._receive()
        if event.request_id != request_id:
            if isinstance(event, ErrorResponse) and event.request_id == 0:
                self._fail()
                raise _error_for(event)
            self._fail()
            raise errors.ProtocolError(f"response for request {event.request_id} arrived while waiting for {request_id}")
        return event

    def _fail(self) -> None:
        # After a broken or desynchronised exchange the connection cannot be trusted.
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _request(self, send: Callable[..., bytes], *parts: Any, retry: bool = True, timeout: Any = _SIGNER_TIMEOUT, answer: int = 0) -> Any:
        """The one way a request goes out: ``send(connection, request_id, *parts)`` (a
        :class:`Connection` method) encodes it for the connection it goes out on — sealed on a
        session, after any reconnect — and the answer event comes back; with ``retry``, once more
        on a new connection if this one turns out to be broken. ``answer``: the type of answer
        taken straight from the bytes read (:meth:`_answer`), if any."""
        return self._exchange(self._send_one, send, answer, *parts, retry=retry, timeout=timeout)

    def _exchange(self, exchange: Callable[..., Any], *parts: Any, retry: bool = True, timeout: Any = _SIGNER_TIMEOUT) -> Any:
        """``exchange(*parts)`` on a connection, in this thread's turn, all of it (the wait for
        the turn, a reconnect, a retry) within ``timeout`` (the Signer's unless given); with
        ``retry``, once more on a new connection if this one turns out to be broken (the one
        retry rule, for one request and for a pipeline)."""
        retried = False
        outer = self._take_turn(self.timeout if timeout is _SIGNER_TIMEOUT else timeout)
        try:
            while True:
                try:
                    self._ensure_connected()
                    return exchange(*parts)
                except errors.ConnectionClosed:
                    if retried or not retry or self._closed:
                        raise
                    retried = True
                    self._reconnect_after_break()
        finally:
            self._end_turn(outer)

    def _send_one(self, send: Callable[..., bytes], answer: int, *parts: Any) -> Any:
        send_by = self._send_by
        if send_by is not None and time.monotonic() > send_by:
            raise errors.Timeout(f"the call's timeout ran out before its request could go out (under {SEND_FLOOR * 1000:g} ms left); nothing was sent")
        request_id = self._next_id()
        try:
            data = send(self._conn, request_id, *parts)
        except LocalProtocolError as exc:
            raise ValueError(str(exc)) from None
        self._send(data)
        return self._answer(request_id, answer) if answer else self._expect(request_id)

    def _control(
        self, message: Message, *, retry: bool = True, malformed: type[errors.ProtocolError] = errors.ProtocolError, timeout: Any = _SIGNER_TIMEOUT
    ) -> Any:
        """Send a control message; its answer, typed (:mod:`enclave.protocol.messages`)."""
        response = self._request(Connection.send_control, message, retry=retry, timeout=timeout)
        if type(response) is not ControlResponse or response.kind != message.TYPE | 0x80:
            raise self._unexpected(response, message.TYPE.name)
        return _control_answer(response, malformed)

    def _unexpected(self, response: Any, kind: str) -> errors.ZeroCopyError:
        """What to raise for an answer that is not the one asked for: an error answer's exception,
        or (the exchange is out of step: the connection is dropped) a ProtocolError."""
        if type(response) is not ErrorResponse:
            self._fail()
        return _unexpected_answer(response, kind)

    # -- the API ----------------------------------------------------------------------------
    def sign(self, key: str, payload: bytes) -> bytes:
        """Raw signature of ``payload`` with the key named ``key`` (if its policy allows raw signing)."""
        key_bytes = _key_argument(key)
        event = self._exchange(self._send_one, Connection.send_sign, _SIGNATURE, key_bytes, _payload_argument(payload))  # _request, a call less
        if type(event) is bytes:
            return event
        if type(event) is not Signature:
            raise self._unexpected(event, "SIGN")
        return event.signature

    def sign_many(self, items: Iterable[tuple[str, bytes]]) -> list[bytes]:
        """Pipeline several raw signatures on this connection, sent ``SIGN_MANY_WINDOW`` at a time
        while the answers to the window before are read; raises the first error after all answers.
        A batch has no size limit, so the timeout bounds the wait for a turn and then each window."""
        requests = [(_key_argument(key), _payload_argument(payload)) for key, payload in items]
        answers = self._exchange(self._pipeline, requests)
        for event in answers:
            if type(event) is not Signature:
                raise self._unexpected(event, "SIGN")
        return [event.signature for event in answers]

    def _pipeline(self, requests: list[tuple[bytes, bytes]]) -> list:
        ids = [self._next_id() for _ in requests]
        answers: list = []
        # A window at a time, taking the previous window's answers while the enclave works
        # on this one: sending everything first deadlocked once the unread answers filled
        # the socket buffers (the enclave stops reading while its answers go unread).
        for start in range(0, len(requests), SIGN_MANY_WINDOW):
            if self.timeout is not None:
                self._deadline = time.monotonic() + self.timeout  # each window has the timeout
            self._send(self._window(ids[start : start + SIGN_MANY_WINDOW], requests[start : start + SIGN_MANY_WINDOW]))
            answers.extend(self._expect(request_id) for request_id in ids[len(answers) : start])
        answers.extend(self._expect(request_id) for request_id in ids[len(answers) :])
        return answers

    def _window(self, ids: list[int], requests: list[tuple[bytes, bytes]]) -> bytes:
        conn = self._conn
        try:
            return b"".join([conn.send_sign(request_id, key, payload) for request_id, (key, payload) in zip(ids, requests)])
        except LocalProtocolError as exc:
            if len(ids) > 1 and conn.session is not None:
                self._fail()  # frames sealed before this one were never sent: the counters parted
            raise ValueError(str(exc)) from None

    def sign_request(
        self,
        key: str,
        method: str,
        path: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        body: str | bytes | None = None,
    ) -> SignedRequest:
        """Have the enclave build and sign an exchange request (the key's scheme decides the format)."""
        event = self._exchange(self._send_one, Connection.send_sign_http, _HTTP_SIGNATURE, _sign_http_request(key, method, path, params, body))
        if type(event) is tuple:
            return _signed_request_from(method, path, body, *event)
        if type(event) is not HttpSignature:
            raise self._unexpected(event, "SIGN_HTTP")
        return _signed_request(method, path, body, event)

    def attest(self, nonce: bytes) -> bytes:
        """A fresh attestation document (raw CBOR) binding ``nonce``; verify it with
        :func:`zerocopy.attestation.verify`."""
        return self._attest_once(_nonce_argument(nonce), retry=True)

    def _attest_once(self, nonce: bytes, *, retry: bool = False) -> bytes:
        return self._control(Attest(nonce=nonce), retry=retry).document

    def audit(self, *, after: int = 0, limit: int = 1000, nonce: bytes | None = None) -> dict:
        """Audit receipts with a sequence number above ``after``, and a checkpoint signed by the
        enclave's identity key (see :mod:`zerocopy.audit` to store and verify them). With a
        ``nonce`` (16-64 bytes) the checkpoint is also signed over it, so it cannot be a replay."""
        return self._control(Audit(after=after, limit=limit, nonce=nonce)).to_fields()

    def keys(self) -> list[KeyInfo]:
        """The keys loaded in the enclave (names, schemes, API key ids, policy digests)."""
        return list(self._control(Keys()).keys)

    def provision(self, bundles: Sequence[bytes], *, credentials: Mapping[str, str], region: str | None = None, timeout: float | None = 60.0) -> list[ProvisionResult]:
        """Send sealed bundles; the enclave unseals them through KMS with these AWS credentials."""
        request = _provision_message(bundles, credentials, region)
        answer = self._control(request, timeout=_timeout_argument(timeout))
        return _provision_results(answer)

    def generate(
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
        """Have the enclave make a key pair for an asymmetric scheme and load it.

        Returns the sealed bundle (keep it: it loads the same key on the next boot) and the public
        key PEM (register it with the exchange). The private key never exists outside the enclave
        unsealed: the enclave seals it only to a KMS key fixed in its launch configuration (its
        first ``--seal-key``, or ``kms_key_id`` if that names another of them; any other key is
        refused).

        An exchange scheme's key may be made before the exchange has issued its API key id
        (``api_key`` left empty): it signs nothing (:class:`~zerocopy.errors.KeyNotBound`) until
        :meth:`bind` gives it the id, which only this boot of the enclave can do.
        """
        request = _generate_message(name, scheme, credentials, kms_key_id=kms_key_id, api_key=api_key, policy=policy, region=region)
        # KMS calls and key generation take longer than a signature; a second try would make a second key
        answer = self._control(request, retry=False, timeout=_timeout_argument(timeout))
        return answer.bundle, answer.public_key.decode()

    def remove(self, key: str) -> None:
        """Unload the key named ``key`` from the enclave. Only keys sealed with ``removable = true``
        in their policy (test keys) can be removed: others raise :class:`~zerocopy.PolicyRefused`
        (rule ``removable``), a key that is not loaded :class:`~zerocopy.UnknownKey`."""
        if not isinstance(key, str):
            raise TypeError(f"key must be the key's name (str), not {type(key).__name__}")
        self._control(Remove(name=key))

    def bind(self, key: str, api_key: str, *, credentials: Mapping[str, str], region: str | None = None, timeout: float | None = 60.0) -> bytes:
        """Bind the exchange's API key id to a key generated without one; returns the re-sealed
        bundle (keep it: it loads the key, bound, on the next boot; the bundle ``generate`` gave is
        now stale). The enclave re-seals the key itself, under the KMS key that sealed it. Once
        only: a bound key cannot be bound again. Until bound, the key's signing requests are
        refused with :class:`~zerocopy.errors.KeyNotBound`."""
        request = _bind_message(key, api_key, credentials, region)
        # a second try would find it bound
        return self._control(request, retry=False, timeout=_timeout_argument(timeout)).bundle

    def close(self) -> None:
        """Close the connection. A call in flight on another thread is not waited out: its
        connection is shut down under it, so it raises :class:`~zerocopy.errors.ConnectionClosed`
        at once, and ``close`` waits for it at most :data:`CLOSE_WAIT` seconds."""
        self._closed = True
        if not self._lock.acquire(blocking=False):
            self._interrupt()
            if not self._lock.acquire(timeout=CLOSE_WAIT):
                return  # still connecting: that call sees the Signer closed and drops its socket itself
        try:
            self._fail()
        finally:
            self._lock.release()

    def _interrupt(self) -> None:
        """Wake another thread's call blocked on the connection. Shut down, not closed: the
        descriptor stays that call's until it drops it (closed here, it could be reused under it)."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by that call

    def __enter__(self) -> "Signer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Signer {self.address}{' closed' if self._sock is None else ''}>"


def _session_request() -> tuple[ClientHandshake, OpenSession]:
    """A fresh handshake and the OPEN_SESSION that starts it."""
    handshake = ClientHandshake()
    return handshake, OpenSession(**handshake.fields())


def _finish_session(conn: Connection, handshake: ClientHandshake, answer: Any, verification: tuple) -> Any:
    """Verify the SESSION answer's document binds our nonce and both X25519 keys, then seal
    ``conn``; the verified attestation document."""
    from .attestation import verify

    expected_pcrs, roots, allow_debug = verification
    server_key, document = answer.public_key, answer.document
    try:
        binding = handshake.binding(server_key)
    except HandshakeError as exc:
        raise errors.SessionError(f"malformed SESSION answer from the enclave: {exc}") from None
    attestation = verify(document, roots=roots, expected_pcrs=expected_pcrs, nonce=binding, allow_debug=allow_debug)
    try:
        check_bound(attestation.user_data, binding)  # nonce alone: an ATTEST document could carry it
    except HandshakeError as exc:
        raise errors.SessionError(str(exc)) from None
    try:
        conn.start_session(handshake.finish(server_key))
    except HandshakeError as exc:
        raise errors.SessionError(f"the enclave's session key is unusable: {exc}") from None
    return attestation


def _connection_arguments(
    address: Any, expected_pcrs: Mapping[int, bytes] | None, roots: Sequence[Any] | None, timeout: Any, allow_debug: bool
) -> tuple[Address, float | None, tuple | None]:
    """The arguments ``Signer`` and ``AsyncSigner`` share, checked in one place: the parsed
    address, the timeout and the attestation options (:func:`_attestation_options`)."""
    try:
        parsed = parse_address(address)
    except AddressError as exc:
        raise ValueError(str(exc)) from None
    return parsed, _timeout_argument(timeout), _attestation_options(expected_pcrs, roots, allow_debug)


#: The longest a Signer spins for an answer before sleeping (a second: beyond it, sleep).
MAX_BUSY_POLL_US = 1_000_000


def _busy_poll_argument(busy_poll_us: Any) -> int:
    """``busy_poll_us`` checked: an int of microseconds, 0 (off) to :data:`MAX_BUSY_POLL_US`."""
    if isinstance(busy_poll_us, bool) or not isinstance(busy_poll_us, int):
        raise TypeError(f"busy_poll_us must be an int of microseconds, not {type(busy_poll_us).__name__}")
    if not 0 <= busy_poll_us <= MAX_BUSY_POLL_US:
        raise ValueError(f"busy_poll_us must be 0 (off) to {MAX_BUSY_POLL_US:,} microseconds, not {busy_poll_us}")
    return busy_poll_us


def _timeout_argument(timeout: Any) -> float | None:
    """``None`` (wait for ever) or a positive number of seconds. Zero would make the socket
    non-blocking and a negative or NaN value time out at once or never: refused, not guessed at."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a positive number of seconds (or None to wait for ever), not {timeout}")
    return timeout


def _attestation_options(expected_pcrs: Mapping[int, bytes | str] | None, roots: Sequence[Any] | None, allow_debug: bool) -> tuple | None:
    """(expected_pcrs, roots, allow_debug) if the Signer attests, None for a plain connection.
    Attesting without PCR0 would accept any image under the root (on Nitro: any enclave anyone
    runs, the host's own included) and still report ``attested``: refused. A debug enclave's PCR0
    is all zeros; pin that, with ``allow_debug=True``, to accept one."""
    if expected_pcrs is None and roots is None:
        return None
    if expected_pcrs is not None and not isinstance(expected_pcrs, Mapping):
        raise TypeError(f"expected_pcrs must be a mapping {{index: PCR}}, e.g. {{0: <48 bytes or 96 hex digits>}}, not {type(expected_pcrs).__name__}")
    if expected_pcrs is None or 0 not in expected_pcrs:
        raise ValueError(
            "expected_pcrs must pin PCR0 ({0: <the image's PCR0, 48 bytes or 96 hex digits>}) whenever the Signer attests: "
            "roots=... alone accepts any enclave image under that root"
        )
    from .attestation import _check_expected_pcrs, _trusted_roots

    # Checked now, so a malformed pin or root is an error here, not after connecting.
    pcrs = _check_expected_pcrs({index: _measurement(index, value) for index, value in expected_pcrs.items()})
    return pcrs, None if roots is None else list(_trusted_roots(_root_list(roots))), allow_debug


def _measurement(index: Any, value: Any) -> bytes:
    """A PCR pin as bytes: 48 bytes, or the same as 96 hex digits (how PCRs are printed)."""
    expected = "48 bytes or 96 hex digits (a SHA-384 measurement)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, str):
        raise TypeError(f"expected_pcrs[{index}] must be {expected}, not {type(value).__name__}")
    try:
        measurement = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"expected_pcrs[{index}] must be {expected}; the string given is not hex") from None
    if len(measurement) != 48:
        raise ValueError(f"expected_pcrs[{index}] must be {expected}, not {len(value.strip())} hex digits")
    return measurement


def _root_list(roots: Any) -> list[Any]:
    """``roots`` with each path (``str`` or ``os.PathLike``) or PEM text replaced by its
    certificates; PEM bytes and certificates as they are (``attestation.verify`` judges them)."""
    from cryptography import x509

    expected = "a list of root certificates (PEM bytes, x509.Certificate, or a path to a PEM file)"
    if isinstance(roots, (str, bytes, bytearray, os.PathLike)) or not isinstance(roots, Iterable):
        raise TypeError(f"roots must be {expected}, not a single {type(roots).__name__}: roots=[...]")
    loaded: list[Any] = []
    for index, entry in enumerate(roots):
        if not isinstance(entry, (str, os.PathLike, bytes, bytearray, x509.Certificate)):
            raise TypeError(f"roots[{index}] must be PEM bytes, an x509.Certificate or a path to a PEM file, not {type(entry).__name__}")
        loaded.extend(_root_entry(index, entry) if isinstance(entry, (str, os.PathLike)) else [entry])
    return loaded


def _root_entry(index: int, entry: str | os.PathLike) -> list[Any]:
    from cryptography import x509

    if isinstance(entry, str) and entry.lstrip().startswith("-----BEGIN"):
        pem, what = entry.encode(), "the PEM text given"  # PEM text, not a path
    else:
        try:
            with open(entry, "rb") as file:
                pem, what = file.read(_MAX_ROOT_FILE + 1), repr(os.fspath(entry))
        except OSError as exc:
            raise ValueError(f"roots[{index}]: cannot read the PEM file {os.fspath(entry)!r}: {exc.strerror or exc}") from None
    try:
        if len(pem) > _MAX_ROOT_FILE:
            raise ValueError
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"roots[{index}]: {what} is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None


def _env_arguments(kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The address and keyword arguments ``from_env`` connects with (``Signer`` and
    ``AsyncSigner`` alike): the environment fills in what the keywords leave out."""
    address = os.environ.get(ENV_VAR)
    if not address:
        raise errors.ZeroCopyError(f"{ENV_VAR} is not set; set it to the enclave's address (vsock://CID:PORT)")
    kwargs = dict(kwargs)
    pcrs = _pcrs_from_env(os.environ)
    if pcrs:
        kwargs.setdefault("expected_pcrs", pcrs)
    if ROOT_ENV_VAR in os.environ and "roots" not in kwargs:
        kwargs["roots"] = [_root_from_env(os.environ[ROOT_ENV_VAR])]
        if kwargs.get("expected_pcrs") is None:
            raise errors.ConfigurationError(
                f"{ROOT_ENV_VAR} is set but {PCR_ENV_PREFIX}0 is not: attesting without a pinned PCR0 accepts any enclave image "
                f"under that root. Set {PCR_ENV_PREFIX}0 to your image's PCR0 (96 hex digits), or unset {ROOT_ENV_VAR}"
            )
    return address, kwargs


def _root_from_env(path: str) -> bytes:
    if not path.strip():
        raise errors.ConfigurationError(f"{ROOT_ENV_VAR} is set but empty: set it to the PEM file of the attestation root, or unset it for the AWS Nitro root")
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise errors.ConfigurationError(f"{ROOT_ENV_VAR}={path}: {exc.strerror or exc}") from None


def _pcrs_from_env(environ: Mapping[str, str]) -> dict[int, bytes]:
    """Every ``ZEROCOPY_EXPECTED_PCR<n>``; anything set under that prefix that is not a PCR pin
    (empty, not hex, not 48 bytes, a misspelt index) is an error, not a silently plain connection."""
    pcrs = {}
    for name, value in environ.items():
        if not name.startswith(PCR_ENV_PREFIX):
            continue
        index = name[len(PCR_ENV_PREFIX):]
        if not (index.isdecimal() and index.isascii() and str(int(index)) == index and int(index) < 32):
            raise errors.ConfigurationError(f"{name} is not a PCR pin: the variables are {PCR_ENV_PREFIX}0 .. {PCR_ENV_PREFIX}31")
        try:
            measurement = bytes.fromhex(value.strip())
        except ValueError:
            raise errors.ConfigurationError(f"{name} must be hex (a SHA-384 measurement, 96 hex digits)") from None
        if len(measurement) != 48:
            raise errors.ConfigurationError(f"{name} must be a SHA-384 measurement (96 hex digits){' and is set but empty' if not value.strip() else ''}")
        pcrs[int(index)] = measurement
    if pcrs and 0 not in pcrs:
        raise errors.ConfigurationError(f"{PCR_ENV_PREFIX}0 must be set whenever another PCR is pinned: PCR0 is the image's measurement")
    return pcrs
