"""A fake exchange: a real HTTP server on 127.0.0.1 in a thread that verifies every request.

It knows the test keys' secrets (as the exchange does) and verifies every request it receives
independently, with ``tests/reference_signers.py``: the API key header, the signature over the
query and body bytes it actually received, and for Coinbase the ES256 or EdDSA JWT over header.claims with
the key's public key and ``uri`` naming api.coinbase.com (the request goes to 127.0.0.1: the
signature names the path, not the host). It answers 200 for a verified request (with the body set
for its path in ``answers``, else ``{"verified": true}``), 401 naming what failed otherwise, and
keeps every request, so a refused one can be shown to have sent nothing.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import reference_signers as reference
from enclave.protocol.exchanges import exchange_for_scheme


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeExchange:
    """Verifies each request against ``key`` (the test sets it) and keeps what it received."""

    key: Any = None
    received: list[Received] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)  # path (or "*": any) -> JSON body of a verified answer
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.key = None
        self.received.clear()
        self.answers.clear()

    def answer_for(self, path: str) -> Any:
        return self.answers.get(path, self.answers.get("*", {"verified": True}))

    def verify(self, request: Received) -> None:
        family = exchange_for_scheme(self.key.scheme).family
        VERIFIERS[family](self.key, request)


def header(request: Received, name: str) -> str:
    return next((value for key, value in request.headers.items() if key.lower() == name.lower()), "")


def _same(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise AssertionError(f"{what}: received {actual!r}, expected {expected!r}")


def verify_binance(key: Any, request: Received) -> None:
    params = [(name, value) for name, value in parse_qsl(request.query, keep_blank_values=True) if name != "signature"]
    body_fields = parse_qsl(request.body.decode("ascii"), keep_blank_values=True) if request.body else []
    stamp = int(dict(params + body_fields)["timestamp"])
    expected = reference.binance_rest(key.scheme, key.secret, key.api_key, params, request.body.rpartition(b"&signature=")[0], stamp)
    _same(request.query, expected.query, "query")
    _same(header(request, "X-MBX-APIKEY"), key.api_key, "X-MBX-APIKEY")


def verify_bybit(key: Any, request: Received) -> None:
    params = parse_qsl(request.query, keep_blank_values=True) + [("recv_window", header(request, "X-BAPI-RECV-WINDOW"))]
    expected = reference.bybit(key.scheme, key.secret, key.api_key, request.method, params, request.body, int(header(request, "X-BAPI-TIMESTAMP")))
    _same(request.query, expected.query, "query")
    for name, value in expected.headers:
        if name == "X-BAPI-SIGN-TYPE" and not header(request, name):
            continue  # optional on Bybit's side (HMAC is its default); ccxt does not send it
        _same(header(request, name), value, name)
    if request.method == "POST":
        _same(header(request, "Content-Type"), "application/json", "Content-Type")


def verify_okx(key: Any, request: Received) -> None:
    stamp = header(request, "OK-ACCESS-TIMESTAMP")
    now_ms = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000 + 0.5)
    params = parse_qsl(request.query, keep_blank_values=True)
    expected = reference.okx(key.secret, key.api_key, request.method, request.path, params, request.body, now_ms)
    _same(request.query, expected.query, "query")
    for name, value in expected.headers:
        _same(header(request, name), value, name)


def verify_kraken(key: Any, request: Received) -> None:
    fields = parse_qsl(request.body.decode("ascii"), keep_blank_values=True)
    expected = reference.kraken(key.secret, key.api_key, request.path, fields, now_ms=0)  # the nonce is in the fields
    _same(request.body, expected.body, "body")
    _same(header(request, "Content-Type"), "application/x-www-form-urlencoded", "Content-Type")
    for name, value in expected.headers:
        _same(header(request, name), value, name)


def verify_coinbase(key: Any, request: Received) -> None:
    scheme, _, token = header(request, "Authorization").partition(" ")
    _same(scheme, "Bearer", "Authorization scheme")
    nbf = json.loads(reference.b64url_decode(token.split(".")[1]))["nbf"]
    public_key = serialization.load_pem_public_key(key.public_key)
    check = reference.coinbase_eddsa_check if isinstance(public_key, ed25519.Ed25519PublicKey) else reference.coinbase_check
    check(public_key, key.api_key, request.method, request.path, nbf * 1000, token)


VERIFIERS = {"binance": verify_binance, "bybit": verify_bybit, "okx": verify_okx, "kraken": verify_kraken, "coinbase": verify_coinbase}


def _handler(exchange: FakeExchange) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Received(self.command, url.path, url.query, dict(self.headers.items()), body)
            with exchange.lock:
                exchange.received.append(request)
            try:
                exchange.verify(request)
                status, answer = 200, exchange.answer_for(request.path)
            except Exception as failure:  # the test reads the reason from the answer
                status, answer = 401, {"verified": False, "reason": f"{type(failure).__name__}: {failure}"}
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
            pass

    return Handler


@contextlib.contextmanager
def serving() -> Iterator[FakeExchange]:
    """A fake exchange listening on 127.0.0.1 until the block ends."""
    exchange = FakeExchange()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(exchange))
    exchange.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-exchange", daemon=True)
    thread.start()
    try:
        yield exchange
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# == fixtures for the suites that send through it (import both names into the test module) ========
@pytest.fixture(scope="module")
def fake_exchange_server() -> Iterator[FakeExchange]:
    with serving() as exchange:
        yield exchange


@pytest.fixture
def fake_exchange(fake_exchange_server: FakeExchange) -> FakeExchange:
    """The module's fake exchange, with what earlier tests sent forgotten."""
    fake_exchange_server.reset()
    return fake_exchange_server


LIMITED = {"binance": ("binance-hmac", "BTCUSDT"), "bybit": ("bybit-hmac", "BTCUSDT"), "okx": ("okx-hmac", "BTC-USDT"), "kraken": ("kraken", "XBTUSD")}


def limited_keys(make_key: Any, rate: dict) -> dict[str, Any]:
    """One key per exchange, limited to one symbol and 0.01 per order, at ``rate``."""
    return {exchange: make_key(scheme, policy={"symbols": [symbol], "max_quantity": "0.01", "rate": rate}) for exchange, (scheme, symbol) in LIMITED.items()}
