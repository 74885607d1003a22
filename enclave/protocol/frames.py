"""The ZeroCopy wire protocol as a sans-IO core (after h11).

Every message is one frame::

    offset  size  field
    0       4     body length, unsigned big-endian (header not included)
    4       1     protocol version (1)
    5       1     message type
    6       4     request id, chosen by the client, echoed in the response
    10      n     body

The sign path is a fixed binary layout (``SIGN``: one length byte, the key name, the payload), so a
sign round trip costs two small frames and no CBOR. Control messages (attestation, provisioning,
key listing) carry a strict CBOR map. Any request may be answered by an ``ERROR`` frame carrying a
:class:`ErrorCode`, the name of the policy rule that refused it (empty if none) and a message.

Because the length comes first, every frame boundary is known even for versions and types this
side does not understand: such frames are answered with an error and the connection stays usable.
A frame larger than ``max_frame_size`` is skipped without being buffered.

A connection may start with ``OPEN_SESSION`` (see :mod:`.session`): once the enclave has answered
with ``SESSION``, every later frame in both directions is sealed (AES-256-GCM, the header as
associated data, a per-direction frame counter as nonce). A frame that fails to open is a fatal
:class:`RemoteProtocolError` with ``ErrorCode.SESSION_FAILED``: the connection is unusable after it.

:class:`Connection` does no I/O: feed it bytes with :meth:`~Connection.receive_data`, take events
with :meth:`~Connection.next_event`, turn events into bytes with :meth:`~Connection.send`.
"""

from __future__ import annotations

import enum
import struct
from itertools import chain
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Union

from . import cbor
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "VERSION",
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER",
    "MessageType",
    "ErrorCode",
    "Role",
    "NEED_DATA",
    "Event",
    "SignRequest",
    "Signature",
    "HttpSignRequest",
    "HttpSignature",
    "ControlRequest",
    "ControlResponse",
    "ErrorResponse",
    "SessionAccepted",
    "Connection",
    "key_name",
    "sign_http_body_with",
    "sign_http_prefix",
    "signed_http_answer",
    "signature_answer",
    "http_signature_fields",
    "http_params",
    "http_params_items",
]

VERSION = 1
DEFAULT_MAX_FRAME_SIZE = 1 << 20
HEADER = struct.Struct(">IBBI")
_SIGN_PREFIX = struct.Struct(">IBBIB")  # header + key length byte
_ERROR_PREFIX = struct.Struct(">HB")
MAX_KEY_NAME = 255
_REQUEST_ID_MAX = 0xFFFFFFFF


class MessageType(enum.IntEnum):
    SIGN = 0x01
    SIGN_HTTP = 0x02
    ATTEST = 0x10
    KEYS = 0x11
    PROVISION = 0x12
    AUDIT = 0x13
    GENERATE = 0x14
    OPEN_SESSION = 0x15
    REMOVE = 0x16
    BIND = 0x17
    SIGNATURE = 0x81
    HTTP_SIGNATURE = 0x82
    ATTESTATION = 0x90
    KEY_LIST = 0x91
    PROVISIONED = 0x92
    AUDIT_LOG = 0x93
    GENERATED = 0x94
    SESSION = 0x95
    REMOVED = 0x96
    BOUND = 0x97
    ERROR = 0x7F


CONTROL_REQUESTS = frozenset(
    {MessageType.ATTEST, MessageType.KEYS, MessageType.PROVISION, MessageType.AUDIT, MessageType.GENERATE, MessageType.OPEN_SESSION, MessageType.REMOVE, MessageType.BIND}
)
CONTROL_RESPONSES = {request: MessageType(request | 0x80) for request in CONTROL_REQUESTS}


class ErrorCode(enum.IntEnum):
    MALFORMED_FRAME = 1
    UNSUPPORTED_VERSION = 2
    UNKNOWN_MESSAGE_TYPE = 3
    FRAME_TOO_LARGE = 4
    BAD_REQUEST = 5
    UNKNOWN_KEY = 10
    POLICY_REFUSED = 11
    PROVISIONING_FAILED = 12
    UNSUPPORTED_OPERATION = 13
    BUSY = 14
    INTERNAL = 15
    SESSION_FAILED = 16


_SIGN, _SIGN_HTTP = int(MessageType.SIGN), int(MessageType.SIGN_HTTP)  # plain ints: packed per request
_HTTP_SIGNATURE = int(MessageType.HTTP_SIGNATURE)
_SIGNATURE = int(MessageType.SIGNATURE)
_MESSAGE_TYPES = {int(kind): kind for kind in MessageType}


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Any = _NeedData()


def _check_request_id(request_id: int) -> None:
    if not isinstance(request_id, int) or not 0 <= request_id <= _REQUEST_ID_MAX:
        raise LocalProtocolError(f"request_id must be an int in 0..{_REQUEST_ID_MAX}")


_KEY_NAME_RULE = f"key name must be 1..{MAX_KEY_NAME} bytes of UTF-8"


def key_name(key: str | bytes) -> bytes:
    """``key`` as the wire carries it (text, or its UTF-8 bytes), checked: the one place the
    key-name length rule lives."""
    if isinstance(key, str):
        try:
            key = key.encode()
        except UnicodeEncodeError:  # a lone surrogate
            key = b""
    if not isinstance(key, bytes) or not 0 < len(key) <= MAX_KEY_NAME:
        raise LocalProtocolError(_KEY_NAME_RULE)
    return key


def _check_key(key: str) -> None:
    if not isinstance(key, str):  # an event's key is text
        raise LocalProtocolError(_KEY_NAME_RULE)
    key_name(key)


def _check_pairs(pairs: Any, what: str) -> None:
    if type(pairs) is not tuple or len(pairs) > 0xFFFF:
        raise LocalProtocolError(f"{what} must be a tuple of (name, value) pairs")
    # One pass over the joined text instead of one per pair: this runs for every request.
    if not all(type(pair) is tuple and len(pair) == 2 and type(pair[0]) is str and type(pair[1]) is str for pair in pairs):
        raise LocalProtocolError(f"{what} must be (str, str) pairs")
    text = "".join([item for pair in pairs for item in pair])
    if "\0" in text:
        raise LocalProtocolError(f"{what} names and values cannot contain NUL")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate
            raise LocalProtocolError(f"{what} names and values must be UTF-8 text") from None


def _check_fields(fields: Any) -> None:
    if not isinstance(fields, dict):
        raise LocalProtocolError("control fields must be a dict")
    if not all(isinstance(key, str) for key in fields):
        raise LocalProtocolError("control fields must have text keys")
    try:
        cbor.dumps(fields)  # what the peer's strict decoder accepts: plain types, 64-bit integers
    except cbor.CborError as exc:
        raise LocalProtocolError(f"control fields: {exc}") from None


@dataclass(frozen=True, slots=True)
class SignRequest:
    """Sign ``payload`` with the key named ``key`` (the raw-signing hot path)."""

    request_id: int
    key: str
    payload: bytes
    type: ClassVar[MessageType] = MessageType.SIGN

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_key(self.key)
        if not isinstance(self.payload, bytes):
            raise LocalProtocolError("payload must be bytes")


@dataclass(frozen=True, slots=True)
class Signature:
    request_id: int
    signature: bytes
    type: ClassVar[MessageType] = MessageType.SIGNATURE

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if not isinstance(self.signature, bytes):
            raise LocalProtocolError("signature must be bytes")


_HTTP_REQUEST = struct.Struct(">BBHII")  # key, method, path, params and body lengths
_HTTP_RESPONSE = struct.Struct(">III")  # query, body and headers lengths


@dataclass(frozen=True, slots=True)
class HttpSignRequest:
    """Sign an exchange REST request: the enclave serialises the string to sign itself.

    Binary layout: ``key_len u8, method_len u8, path_len u16, params_len u32, body_len u32``,
    then key, method, path, params and body. ``params`` is UTF-8 text ``name\0value\0name\0value``
    in the caller's order (NUL cannot occur in names or values), so decoding it is one split.
    """

    request_id: int
    key: str
    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    type: ClassVar[MessageType] = MessageType.SIGN_HTTP

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_key(self.key)
        if not isinstance(self.method, str) or not 0 < len(self.method) <= 16:
            raise LocalProtocolError("method must be a short string")
        try:
            path_size = len(self.path.encode()) if isinstance(self.path, str) else -1
        except UnicodeEncodeError:
            path_size = -1
        if not 0 <= path_size <= 0xFFFF:
            raise LocalProtocolError("path must be a UTF-8 string of at most 65535 bytes")
        _check_pairs(self.params, "params")
        if not isinstance(self.body, bytes):
            raise LocalProtocolError("body must be bytes")


@dataclass(frozen=True, slots=True)
class HttpSignature:
    """A signed request: the query string and body to send, and the headers to add."""

    request_id: int
    query: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    type: ClassVar[MessageType] = MessageType.HTTP_SIGNATURE

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if not isinstance(self.query, str):
            raise LocalProtocolError("query must be a string")
        if not isinstance(self.body, bytes):
            raise LocalProtocolError("body must be bytes")
        _check_pairs(self.headers, "headers")


def _control_repr(event: ControlRequest | ControlResponse) -> str:
    """The event with its fields' names only: their values may be secrets (credentials, bundles)."""
    return f"{type(event).__name__}(request_id={event.request_id}, kind={event.kind!r}, fields=<{', '.join(map(str, event.fields))}>)"


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A control message (attestation, provisioning, …) with a CBOR map as its body."""

    request_id: int
    kind: MessageType
    fields: dict = field(default_factory=dict, repr=False)  # a PROVISION's hold AWS credentials

    def __repr__(self) -> str:
        return _control_repr(self)

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if self.kind not in CONTROL_REQUESTS:
            raise LocalProtocolError(f"{self.kind!r} is not a control request")
        _check_fields(self.fields)

    @property
    def type(self) -> MessageType:
        return self.kind


@dataclass(frozen=True, slots=True)
class ControlResponse:
    request_id: int
    kind: MessageType
    fields: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return _control_repr(self)

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if self.kind not in CONTROL_RESPONSES.values():
            raise LocalProtocolError(f"{self.kind!r} is not a control response")
        _check_fields(self.fields)

    @property
    def type(self) -> MessageType:
        return self.kind


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """A request was refused or failed. ``rule`` names the policy rule for POLICY_REFUSED."""

    request_id: int
    code: ErrorCode
    message: str
    rule: str = ""
    type: ClassVar[MessageType] = MessageType.ERROR

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        try:
            object.__setattr__(self, "code", ErrorCode(self.code))
        except ValueError:
            raise LocalProtocolError(f"error code {self.code!r} is not an ErrorCode") from None
        if not isinstance(self.message, str):
            raise LocalProtocolError("error message must be a string")
        try:
            rule_size = len(self.rule.encode()) if isinstance(self.rule, str) else -1
        except UnicodeEncodeError:
            rule_size = -1
        if not 0 <= rule_size <= 255:
            raise LocalProtocolError("rule name must be a UTF-8 string of at most 255 bytes")


@dataclass(frozen=True, slots=True)
class SessionAccepted:
    """The enclave's answer to OPEN_SESSION (a ``SESSION`` frame ``{public_key, document}``).

    ``session`` never goes on the wire: sending this event switches the server's connection to
    it, so every frame after this one is sealed. A client decodes the frame as a
    :class:`ControlResponse` and, once it has verified ``document``, calls
    :meth:`Connection.start_session`.
    """

    request_id: int
    public_key: bytes
    document: bytes
    session: Any = field(repr=False, compare=False)
    type: ClassVar[MessageType] = MessageType.SESSION

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if not isinstance(self.public_key, bytes) or not isinstance(self.document, bytes):
            raise LocalProtocolError("public_key and document must be bytes")
        if not hasattr(self.session, "seal_frame"):
            raise LocalProtocolError("session must be an enclave.protocol.session.Session")


Event = Union[SignRequest, Signature, HttpSignRequest, HttpSignature, ControlRequest, ControlResponse, ErrorResponse, SessionAccepted]

_REQUEST_TYPES = frozenset({MessageType.SIGN, MessageType.SIGN_HTTP}) | CONTROL_REQUESTS
_RESPONSE_TYPES = (
    frozenset({MessageType.SIGNATURE, MessageType.HTTP_SIGNATURE, MessageType.ERROR})
    | frozenset(CONTROL_RESPONSES.values())
)


_SETTERS: dict[type, tuple[Any, ...]] = {}


def _unchecked(kind: type, *values: Any) -> Any:
    """An event decoded from bytes whose layout already guarantees what ``__post_init__`` checks,
    or one the enclave built from what it checked itself (:func:`signed_http_answer`).

    Decoding is the server's hot path; re-validating there costs microseconds per request. The
    events have slots, so each field is set through its slot descriptor (half the cost of
    ``object.__setattr__``, which a frozen dataclass's own ``__setattr__`` would refuse).
    """
    setters = _SETTERS.get(kind)
    if setters is None:
        setters = _SETTERS[kind] = tuple(getattr(kind, f.name).__set__ for f in fields(kind))
    event = object.__new__(kind)
    for setter, value in zip(setters, values):
        setter(event, value)
    return event


# The sign path's two events, built unchecked as _unchecked does, each slot set by name (no loop).
_new_event = object.__new__
_SET_REQUEST_ID, _SET_KEY, _SET_METHOD, _SET_PATH, _SET_PARAMS, _SET_BODY = (getattr(HttpSignRequest, f.name).__set__ for f in fields(HttpSignRequest))
_SET_ANSWER_ID, _SET_QUERY, _SET_ANSWER_BODY, _SET_HEADERS = (getattr(HttpSignature, f.name).__set__ for f in fields(HttpSignature))


def _http_sign_request(request_id: int, key: str, method: str, path: str, params: tuple, body: bytes) -> HttpSignRequest:
    event = _new_event(HttpSignRequest)
    _SET_REQUEST_ID(event, request_id)
    _SET_KEY(event, key)
    _SET_METHOD(event, method)
    _SET_PATH(event, path)
    _SET_PARAMS(event, params)
    _SET_BODY(event, body)
    return event  # type: ignore[no-any-return]


_SET_SIGNATURE_ID, _SET_SIGNATURE = (getattr(Signature, f.name).__set__ for f in fields(Signature))


def signature_answer(request_id: int, signature: bytes) -> Signature:
    """The enclave's answer to a SIGN it decoded (so ``request_id`` is in range): its scheme's
    signature bytes, without the constructor's checks (pipelined raw signing is this per request)."""
    event = _new_event(Signature)
    _SET_SIGNATURE_ID(event, request_id)
    _SET_SIGNATURE(event, signature)
    return event  # type: ignore[no-any-return]


def signed_http_answer(request_id: int, query: str, body: bytes, headers: tuple[tuple[str, str], ...]) -> HttpSignature:
    """The enclave's answer to a SIGN_HTTP it decoded (so ``request_id`` is in range), from what its
    scheme built (text query, bytes body, a tuple of text header pairs), without the checks of the
    constructor: encoding it (:meth:`Connection.send`) still refuses text that is not UTF-8 and a
    NUL in a header, which would shift the pairs on the wire."""
    event = _new_event(HttpSignature)
    _SET_ANSWER_ID(event, request_id)
    _SET_QUERY(event, query)
    _SET_ANSWER_BODY(event, body)
    _SET_HEADERS(event, headers)
    return event  # type: ignore[no-any-return]


def http_params(pairs: tuple[tuple[str, str], ...]) -> bytes:
    """``pairs`` as the SIGN_HTTP params block ``name\0value\0...``, under the one rule the
    enclave's events hold them to: text, UTF-8, and no NUL in a name or value. NUL separates them
    on the wire, so ``side="BUY\0type\0MARKET"`` would reach the enclave as two parameters, and
    it would sign ``type=MARKET``: refused (:class:`LocalProtocolError`) before anything is sent."""
    if type(pairs) is not tuple or len(pairs) > 0xFFFF:
        raise LocalProtocolError("params must be a tuple of (name, value) pairs")
    # Each a tuple of two str, checked at C speed (this runs for every sign_request).
    items = list(chain.from_iterable(pairs)) if _TUPLE.issuperset(map(type, pairs)) and _TWO.issuperset(map(len, pairs)) else None
    if items is None or not _STR.issuperset(map(type, items)):
        raise LocalProtocolError("params must be (str, str) pairs")
    return _params_block(items)


_TUPLE, _TWO, _STR = frozenset({tuple}), frozenset({2}), frozenset({str})


def http_params_items(items: list) -> bytes | None:
    """:func:`http_params` of names and values already laid out alternating (a dict's items,
    flattened), under the same rule; None if one is not text (a caller may convert those)."""
    if len(items) % 2 or len(items) > 2 * 0xFFFF:
        raise LocalProtocolError("params must be a tuple of (name, value) pairs")
    return _params_block(items) if _STR.issuperset(map(type, items)) else None


def _params_block(items: list[str]) -> bytes:
    """Names and values, alternating (all text, as :func:`http_params` checks), as the params
    block: joined and encoded once, a NUL inside an item found by counting the separators."""
    text = "\0".join(items)
    if items and text.count("\0") != len(items) - 1:
        raise LocalProtocolError("params names and values cannot contain NUL")
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        raise LocalProtocolError("params names and values must be UTF-8 text") from None


def sign_http_prefix(key: bytes, method: bytes, path: bytes) -> tuple[bytes, bytes]:
    """What every SIGN_HTTP body for this key, method and path (already encoded) starts with,
    checked once: their lengths, and their bytes. A client keeps it per endpoint; each request's
    body is then :func:`sign_http_body_with` it (a retry re-frames that body with a new request id
    and seals it for its connection; see :meth:`Connection.send_sign_http`)."""
    key_name(key)
    if not 0 < len(method) <= 16 or len(path) > 0xFFFF:
        raise LocalProtocolError("key name, method or path out of bounds")
    return _HTTP_NAME_LENGTHS.pack(len(key), len(method), len(path)), key + method + path


def sign_http_body_with(prefix: tuple[bytes, bytes], params: bytes, body: bytes) -> bytes:
    """The SIGN_HTTP body for a ``prefix`` from :func:`sign_http_prefix`, ``params`` the block
    :func:`http_params` builds (the pair count is checked again here: a stray NUL would shift it)."""
    if params and params.count(b"\0") % 2 != 1:
        raise LocalProtocolError("params names and values cannot contain NUL")
    return b"".join((prefix[0], _HTTP_PART_LENGTHS.pack(len(params), len(body)), prefix[1], params, body))


_HTTP_NAME_LENGTHS, _HTTP_PART_LENGTHS = struct.Struct(">BBH"), struct.Struct(">II")  # _HTTP_REQUEST in two


class Connection:
    """One side of a ZeroCopy connection. Not thread-safe; one per socket.

    ``next_event()`` raises :class:`RemoteProtocolError` for a frame the peer got wrong. The
    error's ``request_id`` and ``code`` say what to answer; the frame has been consumed and the
    connection stays usable, except when ``error.fatal`` is set: then every later ``next_event()``
    raises it again (a sealed session that failed to open a frame; this side may still send an
    ``ErrorResponse`` to say so).
    """

    def __init__(self, role: Role, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.role = role
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._offset = 0
        self._skip = 0  # bytes of an oversized frame still to discard
        self._accepts = _REQUEST_TYPES if role is Role.SERVER else _RESPONSE_TYPES
        self._sends = _RESPONSE_TYPES if role is Role.SERVER else _REQUEST_TYPES
        self._is_client = role is Role.CLIENT  # looked up per request on the hot path; an enum member is slower
        self.closed = False
        self.session: Any = None  # an enclave.protocol.session.Session once OPEN_SESSION succeeded
        self._session_offered: int | None = None  # server: the id of an OPEN_SESSION not yet answered
        self._fatal: RemoteProtocolError | None = None

    # -- sessions --------------------------------------------------------------------------
    def start_session(self, session: Any) -> None:
        """Client: seal everything from now on (after the SESSION answer's document was verified).

        Bytes already buffered from the peer are taken as sealed too: an enclave sends nothing
        after SESSION until asked, so anything there was injected and will fail to open.
        """
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("the server starts its session by sending SessionAccepted")
        if self.session is not None:
            raise LocalProtocolError("this connection already has a session")
        self.session = session

    def seal(self, frame: bytes) -> bytes:
        """An already-encoded frame as it goes on the wire: sealed if there is a session
        (the clients' hot paths encode frames without events)."""
        session = self.session
        if session is None:
            return frame
        if len(frame) - 10 + 16 > self.max_frame_size:  # the peer could only take it for tampering
            raise LocalProtocolError(f"message of {len(frame) - 10} bytes exceeds the frame limit of {self.max_frame_size}")
        return session.seal_frame(frame)

    # -- output without events: the client's hot paths and control messages -----------------------
    def send_sign(self, request_id: int, key: bytes, payload: bytes) -> bytes:
        """``SIGN`` for a key name from :func:`key_name`, sealed if there is a session."""
        if not self._is_client or self._fatal is not None:
            self._refuse_request()
        return self.seal(_SIGN_PREFIX.pack(len(key) + 1 + len(payload), VERSION, _SIGN, request_id, len(key)) + key + payload)

    def send_sign_http(self, request_id: int, body: bytes) -> bytes:
        """``SIGN_HTTP`` for a body from :func:`sign_http_body_with`, sealed if there is a session."""
        if not self._is_client or self._fatal is not None:
            self._refuse_request()
        return self.seal(HEADER.pack(len(body), VERSION, _SIGN_HTTP, request_id) + body)

    def send_control(self, request_id: int, message: Any) -> bytes:
        """A control message (:mod:`.messages`: ``TYPE`` and ``to_fields()``) as its frame."""
        kind = message.TYPE
        event_type = ControlRequest if kind in CONTROL_REQUESTS else ControlResponse
        return self.send(event_type(request_id, kind, message.to_fields()))

    @staticmethod
    def _refuse_request() -> None:
        raise LocalProtocolError("only a client connection that has not failed sends requests")

    @property
    def in_frame(self) -> bool:
        """Part of a frame has arrived and the rest has not (what a partial-frame deadline watches)."""
        return self._skip > 0 or len(self._buffer) > self._offset

    # -- input -----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if not data:
            self.closed = True
            return
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet turned into events (a partial frame at close is lost)."""
        return len(self._buffer) - self._offset

    def next_event(self) -> Any:
        if self._fatal is not None:
            raise self._fatal
        buffer, offset = self._buffer, self._offset
        if len(buffer) - offset < 10:
            self._compact()
            return NEED_DATA
        length, version, type_code, request_id = HEADER.unpack_from(buffer, offset)
        session = self.session
        if length > self.max_frame_size:
            if session is not None:  # a sealed peer never sends one: the stream is not the peer's
                return self._fail(f"a frame of {length} bytes on a sealed session", request_id)
            available = len(buffer) - offset - 10
            self._skip = length - min(length, available)
            self._offset = offset + 10 + min(length, available)
            self._compact()
            raise RemoteProtocolError(
                f"frame of {length} bytes exceeds the limit of {self.max_frame_size}",
                code=ErrorCode.FRAME_TOO_LARGE,
                request_id=request_id,
            )
        end = offset + 10 + length
        if len(buffer) < end:
            self._compact()
            return NEED_DATA
        self._offset = end
        if session is not None:
            try:  # as bytes: cryptography takes those faster than bytearray slices
                body = session.open_body(bytes(buffer[offset : offset + 10]), bytes(buffer[offset + 10 : end]))
            except Exception as exc:  # SessionBroken; anything else is as bad
                return self._fail(str(exc) or "a sealed frame failed to open", request_id)
        else:
            body = b""
        if version != VERSION:
            raise RemoteProtocolError(f"protocol version {version} is not supported (this side speaks {VERSION})", code=ErrorCode.UNSUPPORTED_VERSION, request_id=request_id)
        if type_code not in self._accepts:
            raise RemoteProtocolError(
                f"message type 0x{type_code:02x} is not a valid {'request' if self.role is Role.SERVER else 'response'}",
                code=ErrorCode.UNKNOWN_MESSAGE_TYPE,
                request_id=request_id,
            )
        if session is None:
            body = bytes(buffer[offset + 10 : end])
        # The sign paths' types first, by their numbers: making an enum member costs a microsecond.
        if type_code == _SIGN_HTTP:
            return _decode_http_request(request_id, body)
        if type_code == _SIGN:
            return _decode_sign(request_id, body)
        if type_code == _HTTP_SIGNATURE:
            return _decode_http_signature(request_id, body)
        if type_code == MessageType.OPEN_SESSION:
            if session is not None:
                raise _bad("this connection already has a session (one OPEN_SESSION per connection)", request_id)
            event = _decode_body(MessageType.OPEN_SESSION, request_id, body)
            self._session_offered = request_id
            return event
        return _decode_body(_MESSAGE_TYPES[type_code], request_id, body)

    def _fail(self, message: str, request_id: int) -> Any:
        self._fatal = RemoteProtocolError(
            f"session authentication failed ({message}): the connection was altered, relayed to "
            "another peer or replayed; it is closed",
            code=ErrorCode.SESSION_FAILED,
            request_id=0,
            fatal=True,
        )
        self._buffer.clear()
        self._offset = 0
        raise self._fatal

    def _compact(self) -> None:
        if self._offset:
            del self._buffer[: self._offset]
            self._offset = 0

    # -- output ----------------------------------------------------------------------------
    def send(self, event: Event) -> bytes:
        if not self._is_client and self._fatal is None:  # the sign paths' answers: none of the checks below applies
            if type(event) is HttpSignature:
                return self._framed(_HTTP_SIGNATURE, event.request_id, _encode_http_signature(event))
            if type(event) is Signature:
                return self._framed(_SIGNATURE, event.request_id, event.signature)
        if event.type not in self._sends:
            raise LocalProtocolError(f"a {self.role.value} cannot send {type(event).__name__}")
        if self._fatal is not None and type(event) is not ErrorResponse:
            raise LocalProtocolError("this connection failed; only an ErrorResponse can still be sent")
        accepted = type(event) is SessionAccepted
        if event.type is MessageType.SESSION:
            if not accepted:
                raise LocalProtocolError("answer OPEN_SESSION with SessionAccepted, which starts the session")
            if self._session_offered != event.request_id or self.session is not None:
                raise LocalProtocolError("SessionAccepted answers an OPEN_SESSION on a plain connection, with its request id")
        if type(event) is ErrorResponse and event.request_id == self._session_offered:
            self._session_offered = None  # the handshake was refused; the connection stays plain
        frame = self._framed(event.type, event.request_id, _encode_body(event))
        if accepted:
            self.session, self._session_offered = event.session, None  # this frame in the clear, every later one sealed
        return frame

    def _framed(self, type_code: int, request_id: int, body: bytes) -> bytes:
        """``body`` as a frame of ``type_code``, sealed if there is a session."""
        session = self.session
        if session is not None:
            if len(body) + 16 > self.max_frame_size:
                raise LocalProtocolError(f"message of {len(body)} bytes exceeds the frame limit of {self.max_frame_size}")
            return session.seal(HEADER.pack(len(body) + 16, VERSION, type_code, request_id), body)  # type: ignore[no-any-return]
        if len(body) > self.max_frame_size:
            raise LocalProtocolError(f"message of {len(body)} bytes exceeds the frame limit of {self.max_frame_size}")
        return HEADER.pack(len(body), VERSION, type_code, request_id) + body


def _bad(message: str, request_id: int) -> RemoteProtocolError:
    return RemoteProtocolError(message, code=ErrorCode.BAD_REQUEST, request_id=request_id)


def _decode_sign(request_id: int, body: bytes) -> SignRequest:
    if not body:
        raise _bad("SIGN body is empty", request_id)
    key_length = body[0]
    if key_length == 0 or key_length + 1 > len(body):
        raise _bad("SIGN key name length is out of bounds", request_id)
    try:
        key = body[1 : 1 + key_length].decode()
    except UnicodeDecodeError:
        raise _bad("SIGN key name is not UTF-8", request_id) from None
    return _unchecked(SignRequest, request_id, key, body[1 + key_length :])  # type: ignore[no-any-return]


def _decode_body(kind: MessageType, request_id: int, body: bytes) -> Event:
    if kind is MessageType.SIGN:
        return _decode_sign(request_id, body)
    if kind is MessageType.SIGNATURE:
        return _unchecked(Signature, request_id, body)
    if kind is MessageType.ERROR:
        if len(body) < 3:
            raise _bad("ERROR body is truncated", request_id)
        code, rule_length = _ERROR_PREFIX.unpack_from(body)
        if 3 + rule_length > len(body):
            raise _bad("ERROR rule name is truncated", request_id)
        try:
            code = ErrorCode(code)
        except ValueError:
            code = ErrorCode.INTERNAL
        try:  # strict: with replacement characters a 255-byte rule could grow past the limit
            rule = body[3 : 3 + rule_length].decode()
        except UnicodeDecodeError:
            raise _bad("ERROR rule name is not UTF-8", request_id) from None
        return ErrorResponse(request_id, code, body[3 + rule_length :].decode(errors="replace"), rule)
    if kind is MessageType.SIGN_HTTP:
        return _decode_http_request(request_id, body)
    if kind is MessageType.HTTP_SIGNATURE:
        return _decode_http_signature(request_id, body)
    try:
        fields = cbor.loads(body) if body else {}
    except cbor.CborError as exc:
        raise _bad(f"{kind.name} body: {exc}", request_id) from None
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        raise _bad(f"{kind.name} body must be a CBOR map with text keys", request_id)
    if kind in CONTROL_REQUESTS:
        return ControlRequest(request_id, kind, fields)
    return ControlResponse(request_id, kind, fields)



def _encode_body(event: Event) -> bytes:
    if isinstance(event, SignRequest):
        key = event.key.encode()
        return bytes((len(key),)) + key + event.payload
    if isinstance(event, Signature):
        return event.signature
    if isinstance(event, ErrorResponse):
        rule = event.rule.encode()
        return _ERROR_PREFIX.pack(int(event.code), len(rule)) + rule + event.message.encode(errors="replace")
    if isinstance(event, HttpSignRequest):
        return _encode_http_request(event)
    if isinstance(event, HttpSignature):
        return _encode_http_signature(event)
    if isinstance(event, SessionAccepted):
        return cbor.dumps({"public_key": event.public_key, "document": event.document})
    return cbor.dumps(event.fields) if event.fields else b""


def _pairs(text: str) -> tuple[tuple[str, str], ...] | None:
    if not text:
        return ()
    items = text.split("\0")
    if len(items) % 2:
        return None
    return tuple(zip(items[0::2], items[1::2]))


def _join_pairs(pairs: tuple[tuple[str, str], ...]) -> bytes:
    try:
        return "\0".join(chain.from_iterable(pairs)).encode()
    except UnicodeEncodeError:
        raise LocalProtocolError("names and values must be encodable as UTF-8") from None


def _text(data: bytes, what: str, request_id: int, *, plural: bool = False) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise _bad(f"SIGN_HTTP {what} {'are' if plural else 'is'} not UTF-8", request_id) from None


def _decode_http_request(request_id: int, body: bytes) -> HttpSignRequest:
    if len(body) < _HTTP_REQUEST.size:
        raise _bad("SIGN_HTTP body is truncated", request_id)
    key_length, method_length, path_length, params_length, body_length = _HTTP_REQUEST.unpack_from(body)
    start = _HTTP_REQUEST.size
    key_end = start + key_length
    method_end = key_end + method_length
    path_end = method_end + path_length
    params_end = path_end + params_length
    if params_end + body_length > len(body):
        raise _bad("SIGN_HTTP body is truncated (its lengths exceed the frame)", request_id)
    if params_end + body_length < len(body):
        raise _bad("SIGN_HTTP body has trailing bytes", request_id)
    if key_length == 0:
        raise _bad("SIGN_HTTP key name is empty", request_id)
    text = body[start:params_end]
    if text.isascii():  # the usual request: one decode, and character offsets are byte offsets
        text = text.decode()
        key, method, path = text[: key_end - start], text[key_end - start : method_end - start], text[method_end - start : path_end - start]
        params = _pairs(text[path_end - start :])
    else:
        key = _text(body[start:key_end], "key name", request_id)
        method = _text(body[key_end:method_end], "method", request_id)
        path = _text(body[method_end:path_end], "path", request_id)
        params = _pairs(_text(body[path_end:params_end], "parameters", request_id, plural=True))
    if params is None:
        raise _bad("SIGN_HTTP parameters must come in name/value pairs", request_id)
    if not 0 < len(method) <= 16:
        raise _bad("SIGN_HTTP: method must be a short string", request_id)
    # Everything else the event would check, the layout already guarantees (lengths, UTF-8, pairs).
    return _http_sign_request(request_id, key, method, path, params, body[params_end:])


def _encode_http_request(event: HttpSignRequest) -> bytes:
    key, method, path = event.key.encode(), event.method.encode(), event.path.encode()
    params = _join_pairs(event.params)
    return _HTTP_REQUEST.pack(len(key), len(method), len(path), len(params), len(event.body)) + key + method + path + params + event.body


def _decode_http_signature(request_id: int, body: bytes) -> HttpSignature:
    if len(body) < _HTTP_RESPONSE.size:
        raise _bad("HTTP_SIGNATURE body is truncated", request_id)
    query_length, body_length, headers_length = _HTTP_RESPONSE.unpack_from(body)
    query_end = _HTTP_RESPONSE.size + query_length
    body_end = query_end + body_length
    if body_end + headers_length > len(body):
        raise _bad("HTTP_SIGNATURE body is truncated (its lengths exceed the frame)", request_id)
    if body_end + headers_length < len(body):
        raise _bad("HTTP_SIGNATURE body has trailing bytes", request_id)
    try:
        query = body[_HTTP_RESPONSE.size : query_end].decode()
        headers = _pairs(body[body_end:].decode())
    except UnicodeDecodeError:
        raise _bad("HTTP_SIGNATURE text fields must be UTF-8", request_id) from None
    if headers is None:
        raise _bad("HTTP_SIGNATURE headers must come in name/value pairs", request_id)
    return signed_http_answer(request_id, query, body[query_end:body_end], headers)


def http_signature_fields(frame: bytes) -> tuple[str, bytes, dict[str, str]] | None:
    """A whole HTTP_SIGNATURE frame's (query, body, headers), read straight from its bytes (the
    client's fast path, header already checked by its caller); None if it is malformed, for
    ``Connection`` to judge and word."""
    start = HEADER.size + _HTTP_RESPONSE.size
    if len(frame) < start:
        return None
    query_length, body_length, headers_length = _HTTP_RESPONSE.unpack_from(frame, HEADER.size)
    query_end = start + query_length
    body_end = query_end + body_length
    if body_end + headers_length != len(frame):
        return None
    try:
        query, items = frame[start:query_end].decode(), frame[body_end:].decode().split("\0") if headers_length else []
    except UnicodeDecodeError:
        return None
    if len(items) % 2:
        return None
    return query, frame[query_end:body_end], dict(zip(items[0::2], items[1::2]))


def _encode_http_signature(event: HttpSignature) -> bytes:
    try:
        query = event.query.encode()
    except UnicodeEncodeError:
        raise LocalProtocolError("query must be encodable as UTF-8") from None
    headers = _join_pairs(event.headers)
    if event.headers and headers.count(b"\0") != 2 * len(event.headers) - 1:  # the enclave's answers skip the constructor's checks
        raise LocalProtocolError("headers names and values cannot contain NUL")
    return _HTTP_RESPONSE.pack(len(query), len(event.body), len(headers)) + query + event.body + headers

