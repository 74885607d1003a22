"""The wire protocol's sans-IO core, driven by bytes (after h11's tests/helpers.py).

A :class:`ConnectionPair` joins a CLIENT and a SERVER :class:`Connection`: events sent on one side
are turned into bytes, fed to the other side whole, one byte at a time and in random fragments,
and must come out equal. Peer mistakes raise :class:`RemoteProtocolError` with an exact
:class:`ErrorCode` and request id and leave the connection usable; caller mistakes raise
:class:`LocalProtocolError`. Hypothesis checks that no byte string makes ``next_event`` raise
anything else.
"""

from __future__ import annotations

import dataclasses
import random
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    VERSION,
    Connection,
    ControlRequest,
    ControlResponse,
    ErrorCode,
    ErrorResponse,
    HttpSignature,
    HttpSignRequest,
    LocalProtocolError,
    MessageType,
    ProtocolError,
    RemoteProtocolError,
    Role,
    Signature,
    SignRequest,
)
from enclave.protocol import cbor
from enclave.protocol.frames import CONTROL_REQUESTS, CONTROL_RESPONSES, HEADER, http_signature_fields, sign_http_body_with, sign_http_prefix

CLIENT, SERVER = Role.CLIENT, Role.SERVER
OTHER = {CLIENT: SERVER, SERVER: CLIENT}
REQUEST_KINDS = sorted(CONTROL_REQUESTS)
# SESSION is sent only as SessionAccepted, which starts a session: see the session tests below.
RESPONSE_KINDS = sorted(set(CONTROL_RESPONSES.values()) - {MessageType.SESSION})

FUZZ = settings(
    max_examples=250,
    deadline=None,  # no timing assertions; slow CI machines must not flake
    suppress_health_check=[HealthCheck.too_slow],
)


# -- helpers ---------------------------------------------------------------------------------
def encode_sign_request(request_id: int, key: bytes, payload: bytes) -> bytes:
    """A plain client's SIGN frame by the fast path the Signer uses (``Connection.send_sign``)."""
    return Connection(CLIENT).send_sign(request_id, key, payload)


def encode_http_sign_request(request_id: int, key: bytes, method: bytes, path: bytes, params: bytes, body: bytes) -> bytes:
    """A plain client's SIGN_HTTP frame by the fast path (``sign_http_body_with`` + ``Connection.send_sign_http``)."""
    return Connection(CLIENT).send_sign_http(request_id, sign_http_body(key, method, path, params, body))


def sign_http_body(key: bytes, method: bytes, path: bytes, params: bytes, body: bytes) -> bytes:
    return sign_http_body_with(sign_http_prefix(key, method, path), params, body)


def frame(type_code: int, body: bytes = b"", request_id: int = 7, *, version: int = VERSION, length: int | None = None) -> bytes:
    """A raw frame, written by hand rather than by ``Connection.send``."""
    return HEADER.pack(len(body) if length is None else length, version, type_code, request_id) + body


def drain(conn: Connection) -> list[Any]:
    """Every event ``conn`` can produce from what it has buffered."""
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def feed(conn: Connection, chunks: Iterable[bytes]) -> list[Any]:
    """Feed ``chunks`` one by one, taking events after each, as a socket loop would."""
    events: list[Any] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        events += drain(conn)
    return events


def fixed_chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, min(8, len(data) - 1)))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def splits(data: bytes, seed: int = 0) -> Iterator[list[bytes]]:
    """The ways the pair feeds bytes: whole, one byte at a time, and a few random splits."""
    yield [data]
    yield fixed_chunks(data, 1)
    rng = random.Random(seed)
    for _ in range(5):
        yield random_chunks(data, rng)


class ConnectionPair:
    """A CLIENT and a SERVER connection, each receiving what the other sends."""

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.conn = {role: Connection(role, max_frame_size=max_frame_size) for role in Role}

    def send(self, role: Role, events: Any | Sequence[Any], chunks: Iterable[list[bytes]] | None = None) -> bytes:
        """Send ``events`` from ``role``; assert the peer decodes exactly them, however the bytes are cut."""
        if not isinstance(events, (list, tuple)):
            events = [events]
        data = b"".join(self.conn[role].send(event) for event in events)
        for pieces in splits(data) if chunks is None else chunks:
            assert b"".join(pieces) == data
            peer = self.conn[OTHER[role]]
            assert feed(peer, pieces) == list(events)
            assert peer.pending == 0
        return data


def remote_error(conn: Connection, data: bytes, code: ErrorCode, request_id: int) -> RemoteProtocolError:
    """Feed ``data``; assert one RemoteProtocolError with ``code`` and ``request_id``; check the
    connection then decodes a valid frame."""
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    error = info.value
    assert error.code is code
    assert error.request_id == request_id
    assert not error.fatal
    assert conn.next_event() is NEED_DATA
    assert_usable(conn)
    return error


def assert_usable(conn: Connection) -> None:
    """A following valid frame decodes."""
    if conn.role is SERVER:
        event: Any = SignRequest(4242, "after", b"still usable")
    else:
        event = Signature(4242, b"still usable")
    conn.receive_data(Connection(OTHER[conn.role]).send(event))
    assert drain(conn) == [event]
    assert conn.pending == 0


# -- samples of every event type ---------------------------------------------------------------
REQUESTS: list[Any] = [
    SignRequest(1, "k", b"payload"),
    SignRequest(0, "binance-main", b""),
    SignRequest(0xFFFFFFFF, "ключ-🔑", bytes(range(256))),
    SignRequest(2, "x" * 255, b"\x00" * 1000),
    HttpSignRequest(3, "binance-main", "GET", "/api/v3/account"),
    HttpSignRequest(
        4,
        "bybit",
        "POST",
        "/v5/order/create",
        (("symbol", "BTCUSDT"), ("qty", "0.001"), ("symbol", "ETHUSDT")),
        b'{"side":"Buy"}',
    ),
    HttpSignRequest(5, "okx", "DELETE", "", (("", ""),), b""),
    HttpSignRequest(6, "ключ", "PUT", "/путь/ü", (("名前", "値 & = ?"), ("emoji", "🚀")), "tëxt".encode()),
    HttpSignRequest(7, "k", "X" * 16, "/" + "p" * 1000, tuple((f"n{i}", "v" * i) for i in range(50)), bytes(300)),
    *(ControlRequest(10 + i, kind) for i, kind in enumerate(REQUEST_KINDS)),
    *(
        ControlRequest(20 + i, kind, {"nonce": b"\x01" * 32, "names": ["a", "b"], "n": -5, "ok": True, "none": None, "nested": {1: {"x": b""}}})
        for i, kind in enumerate(REQUEST_KINDS)
    ),
]

RESPONSES: list[Any] = [
    Signature(1, b"\x30\x45" + bytes(69)),
    Signature(0xFFFFFFFF, b""),
    HttpSignature(2, "symbol=BTCUSDT&signature=abc", b"", (("X-MBX-APIKEY", "key"),)),
    HttpSignature(3, "", b'{"a":1}', ()),
    HttpSignature(4, "q=ü", "bödy".encode(), (("X-Ünïcode", "värde"), ("X-Empty", ""), ("X-Dup", "1"), ("X-Dup", "2"))),
    *(ControlResponse(30 + i, kind) for i, kind in enumerate(RESPONSE_KINDS)),
    *(
        ControlResponse(40 + i, kind, {"document": b"\x84" * 100, "keys": [{"name": "k", "scheme": "ed25519"}], "count": 2**64 - 1})
        for i, kind in enumerate(RESPONSE_KINDS)
    ),
    *(ErrorResponse(50 + i, code, f"refused: {code.name}") for i, code in enumerate(ErrorCode)),
    ErrorResponse(60, ErrorCode.POLICY_REFUSED, "withdrawals are refused", "fund-moving-endpoint"),
    ErrorResponse(61, ErrorCode.POLICY_REFUSED, "", "r" * 255),
    ErrorResponse(62, ErrorCode.BAD_REQUEST, "ünïcödé message ✓", "règle"),
]


def _id(event: Any) -> str:
    return f"{type(event).__name__}-{event.request_id}"


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("event", REQUESTS, ids=_id)
def test_request_round_trip(event):
    ConnectionPair().send(CLIENT, event)


@pytest.mark.parametrize("event", RESPONSES, ids=_id)
def test_response_round_trip(event):
    ConnectionPair().send(SERVER, event)


def test_every_message_type_is_covered_by_the_samples():
    types = {event.type for event in REQUESTS + RESPONSES}
    assert types | {MessageType.SESSION} == set(MessageType)  # SESSION: test_a_session_* below


@pytest.mark.parametrize(("role", "events"), [(CLIENT, REQUESTS), (SERVER, RESPONSES)], ids=["requests", "responses"])
def test_fragments_of_every_size(role, events):
    pair = ConnectionPair()
    data = b"".join(pair.conn[role].send(event) for event in events)
    pair.send(role, events, [fixed_chunks(data, size) for size in (*range(1, 80), 511, 4096, len(data))])


@pytest.mark.parametrize("role", [CLIENT, SERVER])
def test_every_cut_point_of_one_frame(role):
    event = REQUESTS[5] if role is CLIENT else RESPONSES[4]
    data = Connection(role).send(event)
    ConnectionPair().send(role, event, [[data[:cut], data[cut:]] for cut in range(1, len(data))])


def test_random_splits_of_a_long_pipeline():
    events = [SignRequest(i, f"key-{i % 7}", bytes([i % 256]) * (i % 40)) for i in range(300)]
    rng = random.Random(1234)
    data = b"".join(Connection(CLIENT).send(event) for event in events)
    ConnectionPair().send(CLIENT, events, [random_chunks(data, rng) for _ in range(20)])


def test_pending_counts_a_partial_frame():
    server = Connection(SERVER)
    data = Connection(CLIENT).send(SignRequest(1, "k", b"payload"))
    server.receive_data(data[:-3])
    assert server.next_event() is NEED_DATA
    assert server.pending == len(data) - 3
    server.receive_data(data[-3:])
    assert server.next_event() == SignRequest(1, "k", b"payload")
    assert server.pending == 0


def test_empty_receive_means_the_peer_closed():
    server = Connection(SERVER)
    assert not server.closed
    server.receive_data(b"")
    assert server.closed
    assert server.next_event() is NEED_DATA


def test_need_data_is_a_singleton_with_a_name():
    assert Connection(SERVER).next_event() is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"


# -- pipelining ----------------------------------------------------------------------------------
def test_pipelined_requests_come_out_in_order_with_their_ids():
    rng = random.Random(7)
    events = [rng.choice(REQUESTS) for _ in range(200)]
    events = [dataclasses.replace(event, request_id=1000 + i) for i, event in enumerate(events)]
    client, server = Connection(CLIENT), Connection(SERVER)
    server.receive_data(b"".join(client.send(event) for event in events))
    received = drain(server)
    assert received == events
    assert [event.request_id for event in received] == list(range(1000, 1200))


def test_pipelined_responses_may_arrive_out_of_request_order():
    responses = [Signature(9, b"nine"), ErrorResponse(3, ErrorCode.UNKNOWN_KEY, "no key"), Signature(5, b"five")]
    ConnectionPair().send(SERVER, responses)


def test_an_error_in_the_middle_of_a_pipeline_spares_the_frames_around_it():
    client_bytes = Connection(CLIENT).send(SignRequest(1, "k", b"one")) + frame(0x03, b"junk", 2) + Connection(CLIENT).send(SignRequest(3, "k", b"three"))
    server = Connection(SERVER)
    server.receive_data(client_bytes)
    assert server.next_event() == SignRequest(1, "k", b"one")
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert (info.value.code, info.value.request_id) == (ErrorCode.UNKNOWN_MESSAGE_TYPE, 2)
    assert drain(server) == [SignRequest(3, "k", b"three")]


# -- peer errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [0, 2, 255])
@pytest.mark.parametrize("role", [CLIENT, SERVER])
def test_unsupported_version(role, version):
    type_code = MessageType.SIGN if role is SERVER else MessageType.SIGNATURE
    error = remote_error(Connection(role), frame(type_code, b"\x01kpayload", 77, version=version), ErrorCode.UNSUPPORTED_VERSION, 77)
    assert f"version {version}" in str(error)


def test_version_is_checked_before_the_message_type():
    remote_error(Connection(SERVER), frame(0xEE, b"", 5, version=9), ErrorCode.UNSUPPORTED_VERSION, 5)


NEXT_CONTROL = max(CONTROL_REQUESTS) + 1  # the control message type after the last one defined


@pytest.mark.parametrize("type_code", [0x00, 0x03, NEXT_CONTROL, 0x7E, 0x80, NEXT_CONTROL | 0x80, 0xFF])
@pytest.mark.parametrize("role", [CLIENT, SERVER])
def test_unknown_message_type(role, type_code):
    error = remote_error(Connection(role), frame(type_code, b"body", 0xABCDEF01), ErrorCode.UNKNOWN_MESSAGE_TYPE, 0xABCDEF01)
    assert f"0x{type_code:02x}" in str(error)


RESPONSE_TYPES = [MessageType.SIGNATURE, MessageType.HTTP_SIGNATURE, MessageType.ERROR, MessageType.SESSION, *RESPONSE_KINDS]
REQUEST_TYPES = [MessageType.SIGN, MessageType.SIGN_HTTP, *REQUEST_KINDS]


@pytest.mark.parametrize("type_code", RESPONSE_TYPES, ids=lambda t: t.name)
def test_a_response_sent_to_a_server_is_refused(type_code):
    error = remote_error(Connection(SERVER), frame(type_code, b"", 12), ErrorCode.UNKNOWN_MESSAGE_TYPE, 12)
    assert "request" in str(error)


@pytest.mark.parametrize("type_code", REQUEST_TYPES, ids=lambda t: t.name)
def test_a_request_sent_to_a_client_is_refused(type_code):
    error = remote_error(Connection(CLIENT), frame(type_code, b"\x01kx", 13), ErrorCode.UNKNOWN_MESSAGE_TYPE, 13)
    assert "response" in str(error)


def test_frame_at_the_size_limit_is_accepted_one_byte_more_is_not():
    limit = 64
    pair = ConnectionPair(max_frame_size=limit)
    pair.send(CLIENT, SignRequest(1, "k", b"x" * (limit - 2)))
    server = Connection(SERVER, max_frame_size=limit)
    error = remote_error(server, frame(MessageType.SIGN, b"\x01k" + b"x" * (limit - 1), 8), ErrorCode.FRAME_TOO_LARGE, 8)
    assert str(limit) in str(error)


@pytest.mark.parametrize("role", [CLIENT, SERVER])
def test_oversized_frame_is_skipped_without_buffering(role):
    limit, length, chunk = 1024, 1 << 20, 4096
    conn = Connection(role, max_frame_size=limit)
    type_code = MessageType.SIGN if role is SERVER else MessageType.SIGNATURE
    conn.receive_data(frame(type_code, length=length, request_id=99))
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert (info.value.code, info.value.request_id) == (ErrorCode.FRAME_TOO_LARGE, 99)
    assert "exceeds" in str(info.value)
    body = bytes(length)
    for start in range(0, length - chunk, chunk):
        conn.receive_data(body[start : start + chunk])
        assert conn.next_event() is NEED_DATA
        assert conn.pending == 0
        assert len(conn._buffer) == 0  # dropped on arrival, never held
    # the end of the oversized body and the next frame arrive together
    conn.receive_data(body[length - chunk :] + Connection(OTHER[role]).send(REQUESTS[0] if role is SERVER else RESPONSES[0]))
    assert drain(conn) == [REQUESTS[0] if role is SERVER else RESPONSES[0]]
    assert conn.pending == 0


def test_oversized_frame_already_buffered_is_skipped_exactly():
    server = Connection(SERVER, max_frame_size=16)
    big = frame(MessageType.SIGN, b"\x01k" + bytes(100), 3)
    after = Connection(CLIENT).send(SignRequest(4, "k", b"ok"))
    server.receive_data(big + after)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert (info.value.code, info.value.request_id) == (ErrorCode.FRAME_TOO_LARGE, 3)
    assert drain(server) == [SignRequest(4, "k", b"ok")]


def test_oversized_frames_back_to_back_each_get_an_error():
    server = Connection(SERVER, max_frame_size=32)
    data = frame(MessageType.SIGN, b"\x01k" + bytes(50), 1) + frame(MessageType.SIGN, b"\x01k" + bytes(60), 2)
    errors = []
    for piece in fixed_chunks(data, 3):
        server.receive_data(piece)
        while True:
            try:
                if server.next_event() is NEED_DATA:
                    break
            except RemoteProtocolError as exc:
                errors.append((exc.code, exc.request_id))
        assert server.pending <= 10
    assert errors == [(ErrorCode.FRAME_TOO_LARGE, 1), (ErrorCode.FRAME_TOO_LARGE, 2)]
    assert_usable(server)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"\x00payload", "length"),
        (b"\x00", "length"),
        (b"\x05abc", "length"),
        (b"\xff" + b"k" * 254, "length"),
        (b"\x02\xff\xfepayload", "UTF-8"),
        (b"\x01\x80", "UTF-8"),
    ],
    ids=["empty-body", "zero-key-length", "only-zero-length", "key-beyond-body", "key-one-short", "non-utf8-key", "lone-continuation-byte"],
)
def test_malformed_sign_body(body, words):
    error = remote_error(Connection(SERVER), frame(MessageType.SIGN, body, 31), ErrorCode.BAD_REQUEST, 31)
    assert "SIGN" in str(error) and words in str(error)


def test_sign_key_filling_the_whole_body_means_an_empty_payload():
    server = Connection(SERVER)
    server.receive_data(frame(MessageType.SIGN, b"\x03abc", 1))
    assert drain(server) == [SignRequest(1, "abc", b"")]


MALFORMED_CBOR = {
    "trailing-bytes": cbor.dumps({"nonce": b"x"}) + b"\x00",
    "duplicate-keys": bytes.fromhex("a2 616b 01 616b 02"),
    "array-not-map": bytes.fromhex("83 01 02 03"),
    "int-not-map": bytes.fromhex("01"),
    "int-keys": bytes.fromhex("a1 01 02"),
    "bytes-keys": bytes.fromhex("a1 41 6b 02"),
    "float-value": bytes.fromhex("a1 616b f9 3c00"),
    "tag": bytes.fromhex("a1 616b c1 1a 514b67b0"),
    "indefinite-map": bytes.fromhex("bf 616b 01 ff"),
    "non-minimal-int": bytes.fromhex("a1 616b 18 01"),
    "truncated": bytes.fromhex("a2 616b 01"),
    "empty-string-head": bytes.fromhex("7f"),
}


@pytest.mark.parametrize("kind", [MessageType.ATTEST, MessageType.PROVISION])
@pytest.mark.parametrize("body", MALFORMED_CBOR.values(), ids=MALFORMED_CBOR.keys())
def test_malformed_control_request_body(body, kind):
    error = remote_error(Connection(SERVER), frame(kind, body, 44), ErrorCode.BAD_REQUEST, 44)
    assert kind.name in str(error)
    assert "CBOR" in str(error)


@pytest.mark.parametrize("body", MALFORMED_CBOR.values(), ids=MALFORMED_CBOR.keys())
def test_malformed_control_response_body(body):
    error = remote_error(Connection(CLIENT), frame(MessageType.ATTESTATION, body, 45), ErrorCode.BAD_REQUEST, 45)
    assert "ATTESTATION" in str(error)


def test_an_empty_control_body_is_an_empty_map():
    server = Connection(SERVER)
    server.receive_data(frame(MessageType.KEYS, b"", 2) + frame(MessageType.KEYS, b"\xa0", 3))
    assert drain(server) == [ControlRequest(2, MessageType.KEYS, {}), ControlRequest(3, MessageType.KEYS, {})]


def _http_body(event: Any) -> bytes:
    role = CLIENT if isinstance(event, HttpSignRequest) else SERVER
    return Connection(role).send(event)[HEADER.size :]


HTTP_REQUEST = REQUESTS[7]  # unicode, params and body
HTTP_SIGNATURE = RESPONSES[4]  # unicode, headers and body


def test_every_truncation_of_a_sign_http_body_is_refused():
    body = _http_body(HTTP_REQUEST)
    server = Connection(SERVER)
    for cut in range(len(body)):
        error = remote_error(server, frame(MessageType.SIGN_HTTP, body[:cut], cut), ErrorCode.BAD_REQUEST, cut)
        assert "SIGN_HTTP" in str(error)
        assert "truncated" in str(error) or "empty" in str(error) or "UTF-8" in str(error)


def test_every_truncation_of_an_http_signature_body_is_refused():
    body = _http_body(HTTP_SIGNATURE)
    client = Connection(CLIENT)
    for cut in range(len(body)):
        error = remote_error(client, frame(MessageType.HTTP_SIGNATURE, body[:cut], cut), ErrorCode.BAD_REQUEST, cut)
        assert "HTTP_SIGNATURE" in str(error)
        assert "truncated" in str(error) or "UTF-8" in str(error)


@pytest.mark.parametrize("extra", [b"\x00", b"trailing"])
def test_sign_http_trailing_bytes(extra):
    error = remote_error(Connection(SERVER), frame(MessageType.SIGN_HTTP, _http_body(HTTP_REQUEST) + extra, 9), ErrorCode.BAD_REQUEST, 9)
    assert "trailing" in str(error)


@pytest.mark.parametrize("extra", [b"\x00", b"trailing"])
def test_http_signature_trailing_bytes(extra):
    error = remote_error(Connection(CLIENT), frame(MessageType.HTTP_SIGNATURE, _http_body(HTTP_SIGNATURE) + extra, 9), ErrorCode.BAD_REQUEST, 9)
    assert "trailing" in str(error)


def _sign_http(key: bytes, method: bytes, path: bytes, params: list[tuple[bytes, bytes]] = [], body: bytes = b"") -> bytes:  # noqa: B006
    # key_len u8, method_len u8, path_len u16, params_len u32, body_len u32; params "n\0v\0n\0v"
    text = b"\0".join(item for pair in params for item in pair)
    return struct.pack(">BBHII", len(key), len(method), len(path), len(text), len(body)) + key + method + path + text + body


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (_sign_http(b"", b"GET", b"/"), "key name is empty"),
        (_sign_http(b"\xff", b"GET", b"/"), "key name is not UTF-8"),
        (_sign_http(b"k", b"G\xffT", b"/"), "method is not UTF-8"),
        (_sign_http(b"k", b"GET", b"/\xc3"), "path is not UTF-8"),
        (_sign_http(b"k", b"GET", b"/", [(b"\xfe", b"v")]), "parameters are not UTF-8"),
        (_sign_http(b"k", b"GET", b"/", [(b"n", b"\xed\xa0\x80")]), "parameters are not UTF-8"),
        (_sign_http(b"k", b"GET", b"/", [(b"n", b"v")])[:-1] + b"", "truncated"),
        (_sign_http(b"k", b"", b"/"), "method"),
        (_sign_http(b"k", b"M" * 17, b"/"), "method"),
    ],
    ids=["empty-key", "bad-key", "bad-method", "bad-path", "bad-param-name", "surrogate-param-value", "truncated-body", "empty-method", "long-method"],
)
def test_malformed_sign_http_fields(body, words):
    error = remote_error(Connection(SERVER), frame(MessageType.SIGN_HTTP, body, 17), ErrorCode.BAD_REQUEST, 17)
    assert words in str(error)


def test_hand_written_sign_http_matches_the_encoder():
    event = HttpSignRequest(1, "k", "GET", "/p", (("a", "1"), ("b", "")), b"body")
    assert _http_body(event) == _sign_http(b"k", b"GET", b"/p", [(b"a", b"1"), (b"b", b"")], b"body")


@pytest.mark.parametrize(
    ("body", "words"),
    [(b"", "ERROR body is truncated"), (b"\x00\x05", "ERROR body is truncated"), (b"\x00\x05\x04abc", "rule name is truncated")],
    ids=["empty", "two-bytes", "rule-beyond-body"],
)
def test_malformed_error_body(body, words):
    error = remote_error(Connection(CLIENT), frame(MessageType.ERROR, body, 21), ErrorCode.BAD_REQUEST, 21)
    assert words in str(error)


def test_error_with_an_unknown_code_decodes_as_internal():
    client = Connection(CLIENT)
    client.receive_data(frame(MessageType.ERROR, b"\x03\xe7\x00boom", 8))
    assert drain(client) == [ErrorResponse(8, ErrorCode.INTERNAL, "boom")]


def test_error_message_that_is_not_utf8_is_shown_with_replacements():
    client = Connection(CLIENT)
    client.receive_data(frame(MessageType.ERROR, b"\x00\x0b\x00bad \xff byte", 8))
    assert drain(client) == [ErrorResponse(8, ErrorCode.POLICY_REFUSED, "bad \ufffd byte")]


@pytest.mark.parametrize("rule", [b"\xff", b"\xff" * 100, b"\xfe" * 255], ids=["one", "hundred", "max"])
def test_error_rule_that_is_not_utf8_is_a_remote_error(rule):
    # 255 bytes of junk would become 765 bytes of U+FFFD, longer than a rule may be
    body = struct.pack(">HB", ErrorCode.POLICY_REFUSED, len(rule)) + rule + b"message"
    error = remote_error(Connection(CLIENT), frame(MessageType.ERROR, body, 23), ErrorCode.BAD_REQUEST, 23)
    assert "rule" in str(error)


# -- local errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("event", RESPONSES[:5] + RESPONSES[-3:], ids=_id)
def test_a_client_cannot_send_a_response(event):
    with pytest.raises(LocalProtocolError, match="client cannot send"):
        Connection(CLIENT).send(event)


@pytest.mark.parametrize("event", REQUESTS[:6], ids=_id)
def test_a_server_cannot_send_a_request(event):
    with pytest.raises(LocalProtocolError, match="server cannot send"):
        Connection(SERVER).send(event)


def test_local_protocol_error_is_a_value_error_and_not_a_remote_one():
    assert issubclass(LocalProtocolError, ValueError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)


BAD_REQUEST_IDS = [-1, 2**32, 2**64, "1", 1.0, None]

EVENT_FACTORIES = {
    "SignRequest": lambda rid: SignRequest(rid, "k", b""),
    "Signature": lambda rid: Signature(rid, b"sig"),
    "HttpSignRequest": lambda rid: HttpSignRequest(rid, "k", "GET", "/"),
    "HttpSignature": lambda rid: HttpSignature(rid, "", b"", ()),
    "ControlRequest": lambda rid: ControlRequest(rid, MessageType.ATTEST),
    "ControlResponse": lambda rid: ControlResponse(rid, MessageType.ATTESTATION),
    "ErrorResponse": lambda rid: ErrorResponse(rid, ErrorCode.BAD_REQUEST, "no"),
}


@pytest.mark.parametrize("request_id", BAD_REQUEST_IDS, ids=repr)
@pytest.mark.parametrize("factory", EVENT_FACTORIES.values(), ids=EVENT_FACTORIES.keys())
def test_invalid_request_ids(factory, request_id):
    with pytest.raises(LocalProtocolError, match="request_id"):
        factory(request_id)


@pytest.mark.parametrize("factory", EVENT_FACTORIES.values(), ids=EVENT_FACTORIES.keys())
def test_request_id_bounds_are_inclusive(factory):
    for request_id in (0, 0xFFFFFFFF):
        event = factory(request_id)
        role = CLIENT if event.type in REQUEST_TYPES else SERVER
        ConnectionPair().send(role, event)


BAD_KEYS = ["", "x" * 256, "é" * 128, "🔑" * 64, "\ud800", b"bytes", None]


@pytest.mark.parametrize("key", BAD_KEYS, ids=["empty", "256-ascii", "256-bytes-latin", "256-bytes-emoji", "surrogate", "bytes", "none"])
def test_sign_request_key_names(key):
    with pytest.raises(LocalProtocolError, match="key name"):
        SignRequest(1, key, b"payload")


@pytest.mark.parametrize("key", BAD_KEYS, ids=["empty", "256-ascii", "256-bytes-latin", "256-bytes-emoji", "surrogate", "bytes", "none"])
def test_http_sign_request_key_names(key):
    with pytest.raises(LocalProtocolError, match="key name"):
        HttpSignRequest(1, key, "GET", "/")


def test_longest_key_name_is_255_bytes():
    ConnectionPair().send(CLIENT, [SignRequest(1, "é" * 127 + "x", b""), HttpSignRequest(2, "x" * 255, "GET", "/")])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"payload": "text"}, "payload"),
        ({"payload": bytearray(b"x")}, "payload"),
    ],
)
def test_sign_request_payload_must_be_bytes(kwargs, words):
    with pytest.raises(LocalProtocolError, match=words):
        SignRequest(1, "k", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"method": ""}, "method"),
        ({"method": "M" * 17}, "method"),
        ({"method": b"GET"}, "method"),
        ({"path": "/" * 0x10000}, "path"),
        ({"path": None}, "path"),
        ({"path": "/\udc80"}, "path"),
        ({"params": [("a", "b")]}, "params"),
        ({"params": (("a",),)}, "params"),
        ({"params": (("a", 1),)}, "params"),
        ({"params": (("a", "\ud800"),)}, "param"),
        ({"params": (("n\0", "v"),)}, "NUL"),
        ({"body": "text"}, "body"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_http_sign_request_fields(kwargs, words):
    with pytest.raises(LocalProtocolError, match=words):
        event = HttpSignRequest(**{"request_id": 1, "key": "k", "method": "GET", "path": "/", **kwargs})
        Connection(CLIENT).send(event)


@pytest.mark.parametrize(
    ("factory", "words"),
    [
        (lambda: Signature(1, "text"), "signature"),
        (lambda: HttpSignature(1, b"query", b"", ()), "query"),
        (lambda: HttpSignature(1, "", "body", ()), "body"),
        (lambda: HttpSignature(1, "", b"", [("a", "b")]), "headers"),
        (lambda: HttpSignature(1, "", b"", (("a", 1),)), "headers"),
        (lambda: HttpSignature(1, "", b"", (("a", "b", "c"),)), "headers"),
        (lambda: HttpSignature(1, "", b"", (("h", "v\0"),)), "NUL"),
        (lambda: HttpSignature(1, "q=\udfff", b"", ()), "UTF-8"),
        (lambda: HttpSignature(1, "", b"", (("X-H", "\ud83d"),)), "UTF-8"),
        (lambda: ErrorResponse(1, ErrorCode.BAD_REQUEST, "m", "r" * 256), "rule"),
        (lambda: ErrorResponse(1, ErrorCode.BAD_REQUEST, "m", "é" * 128), "rule"),
        (lambda: ErrorResponse(1, 0x10000, "m"), "code"),
        (lambda: ErrorResponse(1, ErrorCode.BAD_REQUEST, b"m"), "message"),
        (lambda: ErrorResponse(1, ErrorCode.BAD_REQUEST, "m", None), "rule"),
        (lambda: ControlRequest(1, MessageType.SIGN), "not a control request"),
        (lambda: ControlRequest(1, MessageType.ATTESTATION), "not a control request"),
        (lambda: ControlResponse(1, MessageType.ATTEST), "not a control response"),
        (lambda: ControlResponse(1, MessageType.ERROR), "not a control response"),
        (lambda: ControlRequest(1, MessageType.ATTEST, [("a", 1)]), "dict"),
        (lambda: ControlRequest(1, MessageType.ATTEST, {1: "int key"}), "text keys"),
        (lambda: ControlResponse(1, MessageType.KEY_LIST, {b"k": 1}), "text keys"),
        (lambda: ControlRequest(1, MessageType.ATTEST, {"f": 1.5}), "float"),
        (lambda: ControlResponse(1, MessageType.KEY_LIST, {"t": (1, 2)}), "tuple"),
        (lambda: ControlResponse(1, MessageType.KEY_LIST, {"n": 2**64}), "64-bit"),
    ],
)
def test_events_validate_themselves(factory, words):
    with pytest.raises(LocalProtocolError, match=words):
        event = factory()
        Connection(CLIENT if event.type in REQUEST_TYPES else SERVER).send(event)


def test_error_response_accepts_a_plain_int_code():
    event = ErrorResponse(1, 11, "refused", "rule")
    assert event.code is ErrorCode.POLICY_REFUSED
    ConnectionPair().send(SERVER, event)


@pytest.mark.parametrize("role", [CLIENT, SERVER])
def test_a_message_larger_than_the_frame_limit_is_a_local_error(role):
    conn = Connection(role, max_frame_size=100)
    event = SignRequest(1, "k", bytes(98)) if role is CLIENT else Signature(1, bytes(100))
    conn.send(event)  # exactly at the limit
    big = SignRequest(1, "k", bytes(99)) if role is CLIENT else Signature(1, bytes(101))
    with pytest.raises(LocalProtocolError, match="exceeds the frame limit of 100"):
        conn.send(big)


def test_events_are_frozen():
    event = SignRequest(1, "k", b"")
    with pytest.raises(AttributeError):
        event.key = "other"  # type: ignore[misc]


# -- the hot-path encoder ------------------------------------------------------------------------
@pytest.mark.parametrize("event", [e for e in REQUESTS if isinstance(e, SignRequest)], ids=_id)
def test_encode_sign_request_matches_send(event):
    assert encode_sign_request(event.request_id, event.key.encode(), event.payload) == Connection(CLIENT).send(event)


@FUZZ
@given(
    request_id=st.integers(0, 0xFFFFFFFF),
    key=st.text(min_size=1, max_size=60).filter(lambda k: len(k.encode()) <= 255),
    payload=st.binary(max_size=300),
)
def test_encode_sign_request_matches_send_for_any_request(request_id, key, payload):
    event = SignRequest(request_id, key, payload)
    data = encode_sign_request(request_id, key.encode(), payload)
    assert data == Connection(CLIENT).send(event)
    server = Connection(SERVER)
    server.receive_data(data)
    assert drain(server) == [event]


# -- hypothesis: arbitrary bytes ------------------------------------------------------------------
type_codes = st.sampled_from([int(t) for t in MessageType]) | st.integers(0, 255)
frames = st.builds(
    lambda type_code, body, request_id, version, lie: frame(type_code, body, request_id, version=version, length=max(0, len(body) + lie) if lie else None),
    type_codes,
    st.binary(max_size=80),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([VERSION, VERSION, VERSION, 0, 2]),
    st.sampled_from([0, 0, 0, 0, -1, 1, 500, 2**31]),
)
streams = st.lists(frames | st.binary(max_size=40), max_size=8).map(b"".join)


def _consume(conn: Connection, data: bytes, cuts: list[int]) -> None:
    """Feed ``data`` in pieces; ``next_event`` must return events or NEED_DATA, or raise only
    RemoteProtocolError, and stop asking for more within a bounded number of calls."""
    bounds = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    for start, end in zip(bounds, bounds[1:]):
        conn.receive_data(data[start:end])
        for _ in range(len(data) + 2):
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                assert isinstance(exc.code, ErrorCode)
                assert 0 <= exc.request_id <= 0xFFFFFFFF
                continue
            if event is NEED_DATA:
                break
            assert type(event) in (SignRequest, Signature, HttpSignRequest, HttpSignature, ControlRequest, ControlResponse, ErrorResponse)
            assert (event.type in REQUEST_TYPES) == (conn.role is SERVER)
        else:
            pytest.fail("next_event did not come back to NEED_DATA")


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 800), max_size=6), max_frame_size=st.sampled_from([32, 256, DEFAULT_MAX_FRAME_SIZE]))
def test_arbitrary_bytes_give_only_events_or_remote_errors_on_a_server(data, cuts, max_frame_size):
    _consume(Connection(SERVER, max_frame_size=max_frame_size), data, cuts)


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 800), max_size=6), max_frame_size=st.sampled_from([32, 256, DEFAULT_MAX_FRAME_SIZE]))
def test_arbitrary_bytes_give_only_events_or_remote_errors_on_a_client(data, cuts, max_frame_size):
    _consume(Connection(CLIENT, max_frame_size=max_frame_size), data, cuts)


@FUZZ
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=6), role=st.sampled_from(list(Role)))
def test_raw_random_bytes_give_only_events_or_remote_errors(data, cuts, role):
    _consume(Connection(role), data, cuts)


# -- hypothesis: round trips of generated events -----------------------------------------------------
request_ids = st.integers(0, 0xFFFFFFFF)
keys = st.text(min_size=1, max_size=40).filter(lambda k: len(k.encode()) <= 255)
short_text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=30)  # NUL separates pairs on the wire
pairs = st.lists(st.tuples(short_text, short_text), max_size=6).map(tuple)
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(-5, 50), children, max_size=4),
    max_leaves=12,
)
control_fields = st.dictionaries(st.text(max_size=12), cbor_values, max_size=5)

requests = st.one_of(
    st.builds(SignRequest, request_ids, keys, st.binary(max_size=200)),
    st.builds(HttpSignRequest, request_ids, keys, st.text(min_size=1, max_size=16), st.text(max_size=60), pairs, st.binary(max_size=100)),
    st.builds(ControlRequest, request_ids, st.sampled_from(REQUEST_KINDS), control_fields),
)
responses = st.one_of(
    st.builds(Signature, request_ids, st.binary(max_size=200)),
    st.builds(HttpSignature, request_ids, st.text(max_size=60), st.binary(max_size=100), pairs),
    st.builds(ControlResponse, request_ids, st.sampled_from(RESPONSE_KINDS), control_fields),
    st.builds(ErrorResponse, request_ids, st.sampled_from(list(ErrorCode)), st.text(max_size=60), st.text(max_size=40).filter(lambda r: len(r.encode()) <= 255)),
)


@FUZZ
@given(events=st.lists(requests, min_size=1, max_size=5), seed=st.integers(0, 2**32))
def test_generated_requests_round_trip(events, seed):
    data = b"".join(Connection(CLIENT).send(event) for event in events)
    ConnectionPair().send(CLIENT, events, [[data], random_chunks(data, random.Random(seed))])


@FUZZ
@given(events=st.lists(responses, min_size=1, max_size=5), seed=st.integers(0, 2**32))
def test_generated_responses_round_trip(events, seed):
    data = b"".join(Connection(SERVER).send(event) for event in events)
    ConnectionPair().send(SERVER, events, [[data], random_chunks(data, random.Random(seed))])


def test_encode_http_sign_request_matches_the_event_encoder():

    event = HttpSignRequest(77, "key", "POST", "/api/v3/order", (("symbol", "BTCUSDT"), ("qty", "1.5"), ("note", "ü")), b"body")
    fast = encode_http_sign_request(77, b"key", b"POST", b"/api/v3/order", "symbol\0BTCUSDT\0qty\x001.5\0note\0ü".encode(), b"body")
    assert fast == Connection(CLIENT).send(event)
    assert encode_http_sign_request(1, b"k", b"GET", b"/", b"", b"") == Connection(CLIENT).send(HttpSignRequest(1, "k", "GET", "/"))
    with pytest.raises(LocalProtocolError, match="NUL"):
        encode_http_sign_request(1, b"k", b"GET", b"/", b"a\0b\0c", b"")


# -- attested sessions (enclave/protocol/session.py) ---------------------------------------------
from enclave.protocol import SessionAccepted  # noqa: E402
from enclave.protocol import session as session_crypto  # noqa: E402


def open_session(*, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> tuple[Connection, Connection, bytes]:
    """A client and a server core through the handshake, as Signer and the enclave do it (the
    document is a stand-in: verifying it is zerocopy.attestation's job). Returns the binding."""
    client, server = Connection(CLIENT, max_frame_size=max_frame_size), Connection(SERVER, max_frame_size=max_frame_size)
    handshake = session_crypto.ClientHandshake()
    server.receive_data(client.send(ControlRequest(1, MessageType.OPEN_SESSION, handshake.fields())))
    (request,) = drain(server)
    accepted = session_crypto.accept(request.fields)
    client.receive_data(server.send(SessionAccepted(1, accepted.public_key, b"document", accepted.session)))
    (answer,) = drain(client)
    assert answer == ControlResponse(1, MessageType.SESSION, {"public_key": accepted.public_key, "document": b"document"})
    binding = handshake.binding(answer.fields["public_key"])
    assert binding == accepted.binding
    client.start_session(handshake.finish(answer.fields["public_key"]))
    return client, server, binding


def assert_session_failed(conn: Connection, data: bytes) -> RemoteProtocolError:
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        drain(conn)
    error = info.value
    assert error.code is ErrorCode.SESSION_FAILED and error.fatal and error.request_id == 0
    with pytest.raises(RemoteProtocolError):  # and it stays failed, whatever comes next
        conn.next_event()
    return error


def test_a_session_round_trips_every_event_in_fragments():
    client, server, _ = open_session()
    requests = [event for event in REQUESTS if getattr(event, "kind", None) is not MessageType.OPEN_SESSION]
    data = b"".join(client.send(event) for event in requests)
    assert feed(server, fixed_chunks(data, 7)) == requests
    data = b"".join(server.send(event) for event in RESPONSES)
    assert feed(client, random_chunks(data, random.Random(8))) == RESPONSES
    assert client.pending == server.pending == 0


def test_the_clients_pre_encoded_frames_are_sealed_like_events():
    client, server, _ = open_session()
    frames = [encode_sign_request(i, b"key", bytes([i]) * i) for i in range(50)]
    server.receive_data(b"".join(client.seal(frame) for frame in frames))
    assert drain(server) == [SignRequest(i, "key", bytes([i]) * i) for i in range(50)]


def test_a_sealed_frame_hides_its_body_and_authenticates_its_header():
    client, server, _ = open_session()
    plain = encode_sign_request(9, b"binance-main", b"symbol=BTCUSDT&quantity=1")
    sealed = client.seal(plain)
    assert b"BTCUSDT" not in sealed and b"binance-main" not in sealed
    length, version, type_code, request_id = HEADER.unpack_from(sealed)
    assert (length, version, type_code, request_id) == (len(plain) - HEADER.size + 16, VERSION, MessageType.SIGN, 9)
    server.receive_data(sealed)
    assert drain(server) == [SignRequest(9, "binance-main", b"symbol=BTCUSDT&quantity=1")]


def _sealed_pair() -> tuple[Connection, Connection, list[bytes]]:
    client, server, _ = open_session()
    return client, server, [client.send(SignRequest(i, "k", b"payload %d" % i)) for i in range(3)]


TAMPERING = {
    "a bit of the body": lambda frames: [frames[0][:12] + bytes([frames[0][12] ^ 1]) + frames[0][13:]],
    "a bit of the tag": lambda frames: [frames[0][:-1] + bytes([frames[0][-1] ^ 0x80])],
    "the request id": lambda frames: [frames[0][:6] + b"\x00\x00\x00\x63" + frames[0][10:]],
    "the message type": lambda frames: [frames[0][:5] + bytes([MessageType.KEYS]) + frames[0][6:]],
    "a dropped frame": lambda frames: [frames[1]],
    "two frames swapped": lambda frames: [frames[1], frames[0]],
    "a replayed frame": lambda frames: [frames[0], frames[0]],
    "an injected plain frame": lambda frames: [Connection(CLIENT).send(SignRequest(0, "k", b"the host's"))],
    "a frame from another session": lambda frames: [open_session()[0].send(SignRequest(0, "k", b"spliced"))],
    "a truncated frame with a shorter length": lambda frames: [struct.pack(">I", 10) + frames[0][4:20]],
    "a frame shorter than a tag": lambda frames: [frame(MessageType.SIGN, b"\x01k", 3)],
}


@pytest.mark.parametrize("tamper", sorted(TAMPERING))
def test_an_altered_dropped_reordered_replayed_or_injected_frame_fails_the_session(tamper):
    client, server, frames = _sealed_pair()
    data = b"".join(TAMPERING[tamper](frames))
    server.receive_data(data[: len(data) // 2])
    assert_session_failed(server, data[len(data) // 2 :])
    server.receive_data(frames[2])  # the genuine next frame no longer helps: no resynchronisation
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_the_client_side_fails_the_same_way():
    client, server, _ = open_session()
    genuine = server.send(Signature(1, b"sig"))
    assert_session_failed(client, Connection(SERVER).send(Signature(1, b"forged")))
    client.receive_data(genuine)
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_after_a_failure_the_server_can_still_say_why_and_nothing_else():
    client, server, _ = open_session()
    assert_session_failed(server, Connection(CLIENT).send(SignRequest(0, "k", b"injected")))
    with pytest.raises(LocalProtocolError):
        server.send(Signature(1, b"no more signatures"))
    client.receive_data(server.send(ErrorResponse(0, ErrorCode.SESSION_FAILED, "closing")))
    assert drain(client) == [ErrorResponse(0, ErrorCode.SESSION_FAILED, "closing")]


def test_an_oversized_frame_on_a_session_is_fatal_not_skipped():
    _, server, _ = open_session(max_frame_size=256)
    assert_session_failed(server, HEADER.pack(257, VERSION, MessageType.SIGN, 5))


def test_a_frame_the_peer_could_only_take_for_tampering_is_refused_locally():
    client, _, _ = open_session(max_frame_size=256)
    with pytest.raises(LocalProtocolError, match="frame limit"):
        client.seal(encode_sign_request(1, b"k", bytes(256 - 2 - 16 + 1)))  # body: key length, key, payload
    client.seal(encode_sign_request(1, b"k", bytes(256 - 2 - 16)))  # sealed, exactly at the limit
    with pytest.raises(LocalProtocolError, match="frame limit"):
        client.send(SignRequest(2, "k", bytes(256)))


def test_open_session_inside_a_session_is_a_bad_request_that_fails_nothing():
    client, server, _ = open_session()
    server.receive_data(client.send(ControlRequest(7, MessageType.OPEN_SESSION, session_crypto.ClientHandshake().fields())))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code is ErrorCode.BAD_REQUEST and not info.value.fatal
    server.receive_data(client.send(SignRequest(8, "k", b"still")))
    assert drain(server) == [SignRequest(8, "k", b"still")]


def test_session_accepted_answers_only_an_open_session_and_only_it_starts_a_session():
    server = Connection(SERVER)
    accepted = session_crypto.accept(session_crypto.ClientHandshake().fields())
    with pytest.raises(LocalProtocolError):
        server.send(SessionAccepted(1, accepted.public_key, b"doc", accepted.session))  # nothing asked for it
    with pytest.raises(LocalProtocolError, match="SessionAccepted"):
        server.send(ControlResponse(1, MessageType.SESSION, {"public_key": accepted.public_key, "document": b"doc"}))
    with pytest.raises(LocalProtocolError):
        Connection(CLIENT).send(SessionAccepted(1, accepted.public_key, b"doc", accepted.session))
    with pytest.raises(LocalProtocolError):
        SessionAccepted(1, accepted.public_key, b"doc", object())


def test_a_refused_handshake_leaves_the_connection_plain():
    client, server = Connection(CLIENT), Connection(SERVER)
    server.receive_data(client.send(ControlRequest(1, MessageType.OPEN_SESSION, {"suite": "other"})))
    drain(server)
    client.receive_data(server.send(ErrorResponse(1, ErrorCode.BAD_REQUEST, "unsupported suite")))
    server.receive_data(client.send(SignRequest(2, "k", b"plain")))
    assert drain(server) == [SignRequest(2, "k", b"plain")]
    assert server.session is None


def test_start_session_is_the_clients_and_happens_once():
    client, server, _ = open_session()
    with pytest.raises(LocalProtocolError):
        server.start_session(session_crypto.accept(session_crypto.ClientHandshake().fields()).session)
    with pytest.raises(LocalProtocolError):
        client.start_session(client.session)


GOOD_FIELDS = session_crypto.ClientHandshake().fields()


@pytest.mark.parametrize(
    "fields",
    [
        {},
        "not a map",
        {**GOOD_FIELDS, "extra": 1},
        {key: value for key, value in GOOD_FIELDS.items() if key != "nonce"},
        {**GOOD_FIELDS, "suite": "x25519-hkdf-sha256-none"},
        {**GOOD_FIELDS, "nonce": b"\x01" * 31},
        {**GOOD_FIELDS, "nonce": "text"},
        {**GOOD_FIELDS, "public_key": b"\x01" * 33},
        {**GOOD_FIELDS, "public_key": bytes(32)},  # a low-order point: an all-zero shared secret
        {**GOOD_FIELDS, "public_key": b"\x01" + bytes(31)},  # another one
    ],
    ids=lambda fields: ",".join(sorted(fields)) if isinstance(fields, dict) else "not-a-map",
)
def test_the_enclave_refuses_a_malformed_or_degenerate_handshake(fields):
    with pytest.raises(session_crypto.HandshakeError):
        session_crypto.accept(fields)


def test_the_client_refuses_a_malformed_or_degenerate_enclave_key():
    handshake = session_crypto.ClientHandshake()
    for bad in (b"", bytes(31), "text", None):
        with pytest.raises(session_crypto.HandshakeError):
            handshake.binding(bad)
    with pytest.raises(session_crypto.HandshakeError):
        handshake.finish(bytes(32))


def test_the_binding_commits_to_the_nonce_and_both_keys():
    nonce, client_key, server_key = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    reference = session_crypto.binding(nonce, client_key, server_key)
    assert len(reference) == 32
    variants = [
        session_crypto.binding(b"\x04" * 32, client_key, server_key),
        session_crypto.binding(nonce, b"\x04" * 32, server_key),
        session_crypto.binding(nonce, client_key, b"\x04" * 32),
        session_crypto.binding(nonce, server_key, client_key),
        session_crypto.binding(nonce, client_key, server_key, suite="another-suite"),
    ]
    assert reference not in variants and len(set(variants)) == len(variants)


def test_each_direction_has_its_own_key_and_counter():
    client, server, _ = open_session()
    # the same plaintext frame, sealed by each side at count 0, differs: separate keys per direction
    assert client.seal(encode_sign_request(1, b"k", b"x"))[10:] != server.session.seal_frame(encode_sign_request(1, b"k", b"x"))[10:]


def test_a_session_that_sealed_its_last_frame_refuses_to_seal_another():
    client, _, _ = open_session()
    client.session.sent = (1 << 64) - 1
    with pytest.raises(session_crypto.SessionBroken):
        client.seal(encode_sign_request(1, b"k", b"x"))


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 800), max_size=6), role=st.sampled_from(list(Role)))
def test_arbitrary_bytes_on_a_session_never_give_an_event(data, cuts, role):
    """Without the keys no byte string decodes to an event: only NEED_DATA or the fatal error."""
    client, server, _ = open_session()
    conn = client if role is CLIENT else server
    bounds = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    for start, end in zip(bounds, bounds[1:]):
        conn.receive_data(data[start:end])
        try:
            assert conn.next_event() is NEED_DATA
        except RemoteProtocolError as exc:
            assert exc.code is ErrorCode.SESSION_FAILED and exc.fatal
            return


def test_a_provision_events_repr_holds_no_credential_or_bundle():
    from enclave.protocol.messages import Provision

    credentials = {"access_key_id": "AKIAEXAMPLEKEYID0001", "secret_access_key": "s3cr3t-Access-Key/xyz", "session_token": "t0ken-Session-abc"}
    provision = Provision(bundles=(b"sealed-bundle-bytes",), credentials=credentials, region="eu-west-1")
    request = ControlRequest(7, MessageType.PROVISION, provision.to_fields())
    answer = ControlResponse(7, MessageType.PROVISIONED, {"echo": credentials["secret_access_key"]})
    for event in (request, answer):
        shown = repr(event)
        assert type(event).__name__ in shown and "request_id=7" in shown
        for value in (*credentials.values(), "sealed-bundle-bytes"):
            assert value not in shown, (value, shown)
    assert "credentials" in repr(request) and "echo" in repr(answer)  # the names, for debugging
    assert request.fields["credentials"] == credentials  # only the repr hides them


# -- the Signer against a fake enclave: every answer goes through one conversion -------------------
class FakeEnclave:
    """A server on a real Unix socket speaking the frame protocol (the sans-IO core, server side),
    answering each request with ``answer(event)``; ``None`` closes the connection instead."""

    def __init__(self, path, answer) -> None:
        import socket
        import threading

        self.answer, self.connections = answer, 0
        path = str(path)
        self.address = "unix://" + path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(4)
        self._thread = threading.Thread(target=self._serve, name="fake-enclave", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with client:
                self._converse(client)

    def _converse(self, client) -> None:
        conn = Connection(Role.SERVER)
        client.settimeout(10)
        while data := client.recv(65536):
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                reply = self.answer(event)
                if reply is None:
                    return
                if type(reply) is list:  # raw bytes, each chunk its own write a moment apart
                    for chunk in reply:
                        client.sendall(chunk)
                        time.sleep(0.02)
                    continue
                client.sendall(conn.send(reply))

    def close(self) -> None:
        import socket

        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture
def fake_enclave(tmp_path):
    servers = []

    def start(answer):
        servers.append(FakeEnclave(tmp_path / f"fake-{len(servers)}.sock", answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _wrong_answers():
    return {
        "an HTTP signature": lambda event: HttpSignature(event.request_id, "q=1", b"", ()),
        "a control answer": lambda event: ControlResponse(event.request_id, CONTROL_RESPONSES[MessageType.KEYS], {"keys": []}),
    }


@pytest.mark.parametrize("wrong", sorted(_wrong_answers()))
@pytest.mark.parametrize("call", ["sign", "sign_many"])
def test_a_wrong_answer_type_is_a_protocol_error_on_every_sign_path(wrong, call, fake_enclave):
    from zerocopy import Signer, errors

    server = fake_enclave(_wrong_answers()[wrong])
    with Signer(server.address) as signer:
        with pytest.raises(errors.ProtocolError, match="unexpected answer to SIGN"):
            if call == "sign":
                signer.sign("k", b"payload")
            else:
                signer.sign_many([("k", b"one"), ("k", b"two")])
        assert signer._sock is None  # out of step: the connection was dropped, not reused


def _http_answer(request_id: int, query: bytes, body: bytes, headers: bytes, *, lengths: tuple[int, int, int] | None = None) -> bytes:
    """An HTTP_SIGNATURE frame laid out by hand (``lengths`` may lie about its parts)."""
    payload = struct.pack(">III", *(lengths or (len(query), len(body), len(headers)))) + query + body + headers
    return HEADER.pack(len(payload), 1, 0x82, request_id) + payload


_ANSWERED_BY_HAND = {
    "a signature split over two reads": (lambda rid: [(frame := HEADER.pack(4, 1, 0x81, rid) + b"sig!")[:7], frame[7:]], b"sig!"),
    "a signature and then nothing else": (lambda rid: [HEADER.pack(4, 1, 0x81, rid) + b"sig!"], b"sig!"),
    "another request's signature": (lambda rid: [HEADER.pack(4, 1, 0x81, rid + 1) + b"sig!"], "arrived while waiting"),
    "a signature of another protocol version": (lambda rid: [HEADER.pack(4, 2, 0x81, rid) + b"sig!"], "version 2"),
}


@pytest.mark.parametrize("case", sorted(_ANSWERED_BY_HAND))
def test_a_raw_sign_answer_is_read_straight_from_the_bytes_only_when_it_is_exactly_the_answer(case, fake_enclave):
    """The sign path takes a read that is exactly its SIGNATURE frame straight from the bytes;
    anything else (a partial frame, another id, another version) goes through the Connection's
    checks: taken once whole, or a ProtocolError and the connection dropped."""
    from zerocopy import Signer, errors

    frames, expected = _ANSWERED_BY_HAND[case]
    with Signer(fake_enclave(lambda event: frames(event.request_id)).address) as signer:
        if isinstance(expected, bytes):
            assert signer.sign("k", b"payload") == expected
            assert signer._sock is not None
        else:
            with pytest.raises(errors.ProtocolError, match=expected):
                signer.sign("k", b"payload")
            assert signer._sock is None


_HTTP_ANSWERS = {
    "lengths past the frame": lambda rid: _http_answer(rid, b"a=1", b"", b"X\0y", lengths=(3, 0, 9)),
    "lengths short of the frame": lambda rid: _http_answer(rid, b"a=1", b"", b"X\0y", lengths=(3, 0, 1)),
    "a header without its value": lambda rid: _http_answer(rid, b"a=1", b"", b"X\0y\0Z"),
    "a query that is not UTF-8": lambda rid: _http_answer(rid, b"a=\xff", b"", b"X\0y"),
    "a body shorter than its fixed part": lambda rid: HEADER.pack(5, 1, 0x82, rid) + b"\0" * 5,
}


@pytest.mark.parametrize("case", sorted(_HTTP_ANSWERS))
def test_a_malformed_http_signature_is_a_protocol_error_and_drops_the_connection(case, fake_enclave):
    from zerocopy import Signer, errors

    with Signer(fake_enclave(lambda event: [_HTTP_ANSWERS[case](event.request_id)]).address) as signer:
        with pytest.raises(errors.ProtocolError, match="malformed response"):
            signer.sign_request("k", "GET", "/p", params={"a": "1"})
        assert signer._sock is None


def test_an_http_signature_read_from_the_bytes_is_the_one_the_connection_decodes(fake_enclave):
    from zerocopy import Signer

    frame = lambda rid: _http_answer(rid, "a=1&é=2".encode(), b"{}", b"X-KEY\0k\0X-SIG\0s")  # noqa: E731
    whole = fake_enclave(lambda event: [frame(event.request_id)])
    split = fake_enclave(lambda event: [(data := frame(event.request_id))[:15], data[15:]])
    with Signer(whole.address) as fast, Signer(split.address) as decoded:
        answers = [signer.sign_request("k", "post", "/p", params={"a": "1"}, body="{}") for signer in (fast, decoded)]
    assert answers[0] == answers[1]
    assert (answers[0].method, answers[0].query, answers[0].body, answers[0].headers) == ("POST", "a=1&é=2", "{}", {"X-KEY": "k", "X-SIG": "s"})


def test_sign_many_raises_the_enclaves_error_typed(fake_enclave):
    from zerocopy import Signer, errors

    def answer(event):
        if event.payload == b"refused":
            return ErrorResponse(event.request_id, ErrorCode.POLICY_REFUSED, "no", rule="raw_signing")
        return Signature(event.request_id, b"sig-" + event.payload)

    with Signer(fake_enclave(answer).address) as signer:
        with pytest.raises(errors.PolicyRefused) as refused:
            signer.sign_many([("k", b"a"), ("k", b"refused"), ("k", b"c")])
        assert refused.value.rule == "raw_signing"
        assert signer.sign_many([("k", b"a"), ("k", b"b")]) == [b"sig-a", b"sig-b"]  # the connection stays usable


def test_sign_many_retries_once_on_a_new_connection_as_every_request_does(fake_enclave):
    from zerocopy import Signer, errors

    first_connection = []

    def answer(event):  # the first connection breaks before answering (say, the enclave restarted)
        if not first_connection:
            first_connection.append(event.request_id)
            return None
        return Signature(event.request_id, b"sig-" + event.payload)

    server = fake_enclave(answer)
    with Signer(server.address) as signer:
        assert signer.sign_many([("k", b"a"), ("k", b"b")]) == [b"sig-a", b"sig-b"]
    assert server.connections == 2

    broken = fake_enclave(lambda event: None)
    with Signer(broken.address) as signer, pytest.raises(errors.ConnectionClosed):
        signer.sign_many([("k", b"a")])
    assert broken.connections == 2  # one retry, not more


def test_async_sign_many_retries_once_on_a_new_connection_as_the_signers_does(fake_enclave):
    import asyncio

    from zerocopy import AsyncSigner, errors

    first_connection = []

    def answer(event):  # the first connection breaks before answering (say, the enclave restarted)
        if not first_connection:
            first_connection.append(event.request_id)
            return None
        return Signature(event.request_id, b"sig-" + event.payload)

    async def sign_many(address, items):
        async with AsyncSigner(address) as signer:
            return await signer.sign_many(items)

    server = fake_enclave(answer)
    items = [("k", b"%d" % index) for index in range(300)]  # more than two windows
    assert asyncio.run(sign_many(server.address, items)) == [b"sig-" + payload for _, payload in items]
    assert server.connections == 2

    broken = fake_enclave(lambda event: None)
    with pytest.raises(errors.ConnectionClosed):
        asyncio.run(sign_many(broken.address, [("k", b"a")]))
    assert broken.connections == 2  # one retry, not more


# -- parameter text: what the Signer accepts is exactly what the enclave decodes (issue 12) ----------
# Any character: NUL (the wire's separator), controls, lone surrogates (not UTF-8).
_param_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@pytest.fixture(scope="module")
def recording_enclave(tmp_path_factory):
    """A Signer on a fake enclave (real socket, the server's sans-IO core) that keeps every
    SIGN_HTTP event it decoded."""
    from zerocopy import Signer

    decoded: list = []

    def answer(event):
        decoded.append(event)
        return HttpSignature(event.request_id, "", b"", ())

    server = FakeEnclave(tmp_path_factory.mktemp("params") / "enclave.sock", answer)
    try:
        with Signer(server.address) as signer:
            yield signer, decoded
    finally:
        server.close()


@settings(max_examples=400, deadline=None)
@given(params=st.lists(st.tuples(_param_text, _param_text), max_size=4))
def test_parameters_the_signer_accepts_reach_the_enclave_as_exactly_those_parameters(params, recording_enclave):
    """The Signer checked only the parity of NULs, so ``side="BUY\\0type\\0MARKET"`` reached the
    enclave as ``side=BUY`` and ``type=MARKET``. It holds names and values to the enclave's rule now."""
    signer, decoded = recording_enclave
    decoded.clear()
    if all("\0" not in text and _utf8(text) for pair in params for text in pair):
        signer.sign_request("k", "POST", "/api/v3/order", params=params)
        assert [event.params for event in decoded] == [tuple(params)]
    else:
        with pytest.raises(ValueError, match="cannot contain NUL|must be UTF-8 text"):
            signer.sign_request("k", "POST", "/api/v3/order", params=params)
        assert decoded == []  # nothing was sent


def test_a_value_smuggling_a_parameter_is_refused_before_anything_is_sent(recording_enclave):
    signer, decoded = recording_enclave
    decoded.clear()
    for params in ({"side": "BUY\0type\0MARKET"}, {"side": "BUY\0"}, {"type\0": "MARKET"}, [("side", "BUY"), ("\0x", "1\0")]):
        with pytest.raises(ValueError, match="cannot contain NUL"):
            signer.sign_request("k", "POST", "/api/v3/order", params=params)
    assert decoded == []
    signer.sign_request("k", "POST", "/api/v3/order", params={"side": "BUY", "type": "LIMIT"})
    assert decoded[0].params == (("side", "BUY"), ("type", "LIMIT"))


_PARAM_TEXT = st.text(max_size=6) | st.sampled_from(["a\0b", "BUY\0type\0MARKET", "\ud800", "é"])


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(st.tuples(_PARAM_TEXT, _PARAM_TEXT | st.integers(-10**6, 10**6) | st.decimals(allow_nan=False, allow_infinity=False, places=3)), max_size=6),
    form=st.sampled_from([dict, list, tuple]),
    body=st.none() | st.text(max_size=5) | st.binary(max_size=5),
)
def test_the_client_lays_out_a_request_once_as_the_enclave_reads_it(pairs: list, form: type, body: Any) -> None:
    """``sign_request``'s arguments, whatever form the parameters come in (a dict, a list or a
    tuple of pairs, text or numbers), become the body ``sign_http_prefix``, ``sign_http_body_with`` and ``http_params`` make of
    their text — or the same refusal (a NUL or a lone surrogate in a name or value) — and the
    enclave decodes exactly those pairs from it."""
    from enclave.protocol import http_params
    from zerocopy._client import _param_text, _sign_http_request

    params = form(pairs)
    texts = tuple((name, value if isinstance(value, str) else _param_text(name, value)) for name, value in (params.items() if form is dict else params))
    raw = body.encode() if isinstance(body, str) else (body or b"")
    try:
        expected: Any = sign_http_body(b"key", b"POST", b"/api/v3/order", http_params(texts), raw)
    except LocalProtocolError as exc:
        expected = ("refused", str(exc))
    try:
        laid_out: Any = _sign_http_request("key", "post", "/api/v3/order", params, body)
    except ValueError as exc:
        laid_out = ("refused", str(exc))
    assert laid_out == expected
    if isinstance(laid_out, bytes):
        server = Connection(SERVER)
        server.receive_data(HEADER.pack(len(laid_out), VERSION, MessageType.SIGN_HTTP, 9) + laid_out)
        event = server.next_event()
        assert (event.key, event.method, event.path, event.params, event.body) == ("key", "POST", "/api/v3/order", texts, raw)


@settings(max_examples=200, deadline=None)
@given(request_id=st.integers(0, 2**32 - 1), signature=st.binary(max_size=200))
def test_the_enclaves_unchecked_signature_answer_is_the_checked_one_on_the_wire(request_id: int, signature: bytes) -> None:
    """``signature_answer`` (the raw sign path's answer, built without the constructor's checks,
    framed without the generic ones) is the frame ``Signature`` makes, and decodes to it."""
    from enclave.protocol.frames import signature_answer

    server, client = Connection(Role.SERVER), Connection(Role.CLIENT)
    frame = server.send(signature_answer(request_id, signature))
    assert frame == Connection(Role.SERVER).send(Signature(request_id, signature))
    client.receive_data(frame)
    assert client.next_event() == Signature(request_id, signature)
    with pytest.raises(LocalProtocolError):  # a client still cannot send one
        client.send(signature_answer(request_id, signature))


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=64), st.builds(
    lambda lengths, rest: struct.pack(">III", *lengths) + rest,
    st.tuples(*[st.integers(0, 40)] * 3), st.binary(max_size=80),
)))
def test_the_clients_straight_read_of_an_http_signature_agrees_with_the_connection(body):
    """What the client takes straight from the bytes is what ``Connection`` decodes from the same
    frame, and whatever it does not take (None) ``Connection`` refuses: no garbage is read two ways."""
    frame = HEADER.pack(len(body), VERSION, MessageType.HTTP_SIGNATURE, 7) + body
    fields = http_signature_fields(frame)
    conn = Connection(Role.CLIENT)
    conn.receive_data(frame)
    try:
        event = conn.next_event()
    except RemoteProtocolError:
        assert fields is None
        return
    assert fields is not None and fields == (event.query, event.body, dict(event.headers))
