"""``ZeroCopyAuth`` as the session's auth under the exchanges' official SDKs: a differential suite.

Each case runs one SDK call twice against the fake exchange (``tests/fake_exchange.py``, which
verifies every signature independently): once as the SDK ships, with the secret in memory, and once
with a placeholder secret and ``ZeroCopyAuth`` as the auth of the SDK's own HTTP session. The SDK's
clock and client ids are pinned (on the library's own module), and this module's enclave runs on a
fixed clock at the same instant, so the two requests are byte-identical except where the enclave
owns a field; each case names its differences. Each SDK's tests are skipped when it is not installed.
"""

from __future__ import annotations

import base64
import json
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives import serialization

from fake_exchange import FakeExchange, Received, fake_exchange, fake_exchange_server, header, limited_keys  # fake_exchange*: fixtures
from pytest_zerocopy import factories
from pytest_zerocopy.keys import make_secret
from reference_signers import b64url_decode

requests = pytest.importorskip("requests", reason="pip install 'zerocopy[test]' (requests is a test extra)")

from zerocopy.integrations.requests import ZeroCopyAuth  # noqa: E402

NOW_MS = 1_700_000_000_000  # the SDKs' pinned clock, and the enclave's (a launch option)
PLACEHOLDER = "zerocopy+placeholder+secret="  # valid base64: krakenex decodes its secret
sdk_emulator = factories.emulator_proc(scope="module", clock=f"fixed:{NOW_MS}")
sdk_signer = factories.signer("sdk_emulator", scope="module")
sdk_key = factories.key_maker("sdk_emulator", "sdk_signer", scope="module")

RATE = {"per_second": "1000", "burst": 1000}
BYBIT_SUCCESS = {"retCode": 0, "retMsg": "OK", "result": {"list": []}, "time": NOW_MS}
KRAKEN_SUCCESS = {"error": [], "result": {}}
OKX_SUCCESS = {"code": "0", "msg": "", "data": [{}]}


@pytest.fixture(scope="module")
def keys(sdk_key) -> dict[str, Any]:
    return limited_keys(sdk_key, RATE)


@dataclass(frozen=True)
class Sdk:
    """How to build one SDK's client: ``make(secret, url)`` returns ``(client, its requests.Session)``."""

    make: Callable[[str, str], tuple[Any, Any]]
    answer: Any = None
    auth: Callable[[Any, str], Any] = ZeroCopyAuth  # the httpx adapter for an SDK built on httpx
    placeholder: str = PLACEHOLDER  # what the SDK is given instead of the secret


def wire(fake: FakeExchange) -> list[Received]:
    """The requests the fake exchange received, each verified again here (raises if one fails)."""
    for received in fake.received:
        fake.verify(received)
    return list(fake.received)


def _call_and_close(client_and_session: tuple[Any, Any], call: Callable) -> None:
    client, session = client_and_session
    try:
        call(client)
    finally:
        session.close()  # requests.Session and httpx.Client alike


def run_both(fake: FakeExchange, key: Any, sdk: Sdk, call: Callable, signer: Any, secret: str) -> tuple[Received, Received]:
    """``call`` with the secret in memory, then with a placeholder and ``ZeroCopyAuth``."""
    fake.key = key
    fake.answers["*"] = sdk.answer if sdk.answer is not None else {"verified": True}
    _call_and_close(sdk.make(secret, fake.url), call)
    with_secret = wire(fake)
    fake.received.clear()
    client, session = sdk.make(sdk.placeholder, fake.url)
    session.auth = sdk.auth(signer, key.name)
    _call_and_close((client, session), call)
    through_zerocopy = wire(fake)
    assert all(sdk.placeholder.encode() not in _raw(request) for request in through_zerocopy)
    [with_secret_request], [through_request] = with_secret, through_zerocopy
    assert (through_request.method, through_request.path) == (with_secret_request.method, with_secret_request.path)
    return with_secret_request, through_request


def _raw(received: Received) -> bytes:
    return (received.query + json.dumps(received.headers)).encode() + received.body


# == python-binance (binance.client.Client) =========================================================
def _python_binance(monkeypatch: pytest.MonkeyPatch, api_key: str) -> Sdk:
    binance_client = pytest.importorskip("binance.client", reason="pip install python-binance")
    base_client = pytest.importorskip("binance.base_client")
    monkeypatch.setattr(base_client, "time", types.SimpleNamespace(time=lambda: NOW_MS / 1000))
    monkeypatch.setattr(base_client.BaseClient, "uuid22", staticmethod(lambda length=22: "0123456789abcdef012345"))

    def make(secret: str, url: str) -> tuple[Any, Any]:
        client = binance_client.Client(api_key, secret, ping=False)
        client.API_URL = f"{url}/api"
        return client, client.session

    return Sdk(make)


def _binance_params(received: Received) -> list[tuple[str, str]]:
    return parse_qsl(received.query, keep_blank_values=True) + parse_qsl(received.body.decode(), keep_blank_values=True)


BINANCE_CALLS = {
    "create_order": lambda client: client.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="30000"),
    "cancel_order": lambda client: client.cancel_order(symbol="BTCUSDT", orderId="12345"),
    "get_order": lambda client: client.get_order(symbol="BTCUSDT", orderId="12345"),
}


@pytest.mark.parametrize("call", BINANCE_CALLS.values(), ids=BINANCE_CALLS.keys())
def test_python_binance_orders_differ_only_in_the_fields_the_enclave_owns(call, keys, fake_exchange, sdk_signer, monkeypatch):
    """A place, a cancel and an order query. Differences: the SDK's form body moves to the query (the enclave signs a query), its
    ``recvWindow=10000`` is dropped (the enclave owns the window), the enclave writes ``timestamp``
    after the request's parameters (the SDK sorts it in), and so the signature differs. Every other
    parameter, its value and order (the SDK's client order id included) is the same."""
    key = keys["binance"]
    with_secret, through = run_both(fake_exchange, key, _python_binance(monkeypatch, key.api_key), call, sdk_signer, key.secret.decode())
    sdk_params = _binance_params(with_secret)
    assert ("timestamp", str(NOW_MS)) in sdk_params and ("recvWindow", "10000") in sdk_params
    request_params = [pair for pair in sdk_params if pair[0] not in ("timestamp", "recvWindow", "signature")]
    assert [pair for pair in _binance_params(through) if pair[0] != "signature"] == request_params + [("timestamp", str(NOW_MS))]
    assert through.body == b"" and header(through, "X-MBX-APIKEY") == key.api_key


def test_python_binance_account_read_is_signed_under_the_default_policy(keys, fake_exchange, sdk_signer, monkeypatch):
    """Differences: ``recvWindow`` dropped, ``omitZeroBalances=false`` (Binance's default) added so
    the parameter set is the account read's alone (docs/policy.md), and the signature."""
    key = keys["binance"]
    with_secret, through = run_both(fake_exchange, key, _python_binance(monkeypatch, key.api_key), lambda client: client.get_account(), sdk_signer, key.secret.decode())
    assert (through.method, through.path) == ("GET", "/api/v3/account")
    assert [name for name, _ in _binance_params(with_secret)] == ["recvWindow", "timestamp", "signature"]
    assert _binance_params(through)[:2] == [("omitZeroBalances", "false"), ("timestamp", str(NOW_MS))]


# == pybit (pybit.unified_trading.HTTP) =============================================================
def _pybit(monkeypatch: pytest.MonkeyPatch, api_key: str) -> Sdk:
    unified_trading = pytest.importorskip("pybit.unified_trading", reason="pip install pybit")
    pybit_helpers = pytest.importorskip("pybit._helpers")
    monkeypatch.setattr(pybit_helpers, "generate_timestamp", lambda: NOW_MS)

    def make(secret: str, url: str) -> tuple[Any, Any]:
        client = unified_trading.HTTP(api_key=api_key, api_secret=secret, max_retries=1)
        client.endpoint = url
        return client, client.client

    return Sdk(make, BYBIT_SUCCESS)


PYBIT_CALLS = {
    "place_order": lambda client: client.place_order(category="spot", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.01", price="30000"),
    "amend_order": lambda client: client.amend_order(category="spot", symbol="BTCUSDT", orderId="12345", qty="0.005"),
    "cancel_order": lambda client: client.cancel_order(category="spot", symbol="BTCUSDT", orderId="12345"),
    "get_open_orders": lambda client: client.get_open_orders(category="spot", symbol="BTCUSDT", orderId="12345"),
    "get_wallet_balance": lambda client: client.get_wallet_balance(accountType="UNIFIED"),
}


def _bapi_headers(received: Received) -> dict[str, str]:
    return {name.upper(): value for name, value in received.headers.items() if name.upper().startswith("X-BAPI-")}


def compact_json(body: bytes) -> bytes:
    """A JSON body as the enclave signs it: the same document, same key order, no spaces."""
    return json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("call", PYBIT_CALLS.values(), ids=PYBIT_CALLS.keys())
def test_pybit_requests_differ_only_in_json_spacing(call, keys, fake_exchange, sdk_signer, monkeypatch):
    """A GET (the balance read, the open-orders query): same query and X-BAPI-* headers (timestamp, recv window, sign type
    and signature); one difference: pybit's session sends ``Content-Type: application/json`` on a
    bodiless GET, and the adapter, which owns Content-Type, sets it only on a signed body. A POST differs in one documented way: pybit writes its JSON
    body with ``json.dumps``'s default ``", "``/``": "`` spacing; the enclave signs the document it
    parsed and checked, re-serialised compactly (same keys, same order, same values), so the body
    bytes and X-BAPI-SIGN differ, and every other X-BAPI-* header is the same."""
    key = keys["bybit"]
    with_secret, through = run_both(fake_exchange, key, _pybit(monkeypatch, key.api_key), call, sdk_signer, key.secret.decode())
    assert through.query == with_secret.query
    sdk_headers, signed_headers = _bapi_headers(with_secret), _bapi_headers(through)
    if with_secret.method == "GET":
        assert through.body == with_secret.body == b"" and signed_headers == sdk_headers
        assert header(with_secret, "Content-Type") == "application/json" and header(through, "Content-Type") == ""
        return
    assert header(through, "Content-Type") == header(with_secret, "Content-Type") == "application/json"
    assert b", " in with_secret.body and through.body == compact_json(with_secret.body) != with_secret.body
    assert list(json.loads(through.body).items()) == list(json.loads(with_secret.body).items())
    assert signed_headers.pop("X-BAPI-SIGN") != sdk_headers.pop("X-BAPI-SIGN")
    assert signed_headers == sdk_headers


# == binance-connector (binance.spot.Spot; installs alongside python-binance: the two share the
# ``binance`` package directory without a clashing module) ==========================================
def _binance_connector(monkeypatch: pytest.MonkeyPatch, api_key: str) -> Sdk:
    spot = pytest.importorskip("binance.spot", reason="pip install binance-connector")
    connector_api = pytest.importorskip("binance.api")
    monkeypatch.setattr(connector_api, "get_timestamp", lambda: NOW_MS)

    def make(secret: str, url: str) -> tuple[Any, Any]:
        client = spot.Spot(api_key, secret, base_url=url)
        return client, client.session

    return Sdk(make)


CONNECTOR_CALLS = {
    "new_order": lambda client: client.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="30000"),
    "cancel_order": lambda client: client.cancel_order(symbol="BTCUSDT", orderId="12345"),
    "get_order": lambda client: client.get_order(symbol="BTCUSDT", orderId="12345"),
}


@pytest.mark.parametrize("call", CONNECTOR_CALLS.values(), ids=CONNECTOR_CALLS.keys())
def test_binance_connector_orders_are_byte_identical(call, keys, fake_exchange, sdk_signer, monkeypatch):
    """No differences: the connector sends its parameters in the query with ``timestamp`` last and
    no recvWindow, as the enclave signs them, so query (signature included), body and
    X-MBX-APIKEY are the same bytes."""
    key = keys["binance"]
    with_secret, through = run_both(fake_exchange, key, _binance_connector(monkeypatch, key.api_key), call, sdk_signer, key.secret.decode())
    assert (through.query, through.body) == (with_secret.query, with_secret.body)
    assert _binance_params(through)[-2] == ("timestamp", str(NOW_MS))
    assert header(through, "X-MBX-APIKEY") == header(with_secret, "X-MBX-APIKEY") == key.api_key


def test_binance_connector_account_read_differs_in_the_implied_default(keys, fake_exchange, sdk_signer, monkeypatch):
    """Differences: ``omitZeroBalances=false`` (Binance's default) added before the timestamp, so the
    parameter set is the account read's alone (docs/policy.md), and so the signature."""
    key = keys["binance"]
    with_secret, through = run_both(fake_exchange, key, _binance_connector(monkeypatch, key.api_key), lambda client: client.account(), sdk_signer, key.secret.decode())
    assert (through.method, through.path) == ("GET", "/api/v3/account")
    assert [name for name, _ in _binance_params(with_secret)] == ["timestamp", "signature"]
    assert [pair for pair in _binance_params(through) if pair[0] != "signature"] == [("omitZeroBalances", "false"), ("timestamp", str(NOW_MS))]


# == krakenex (krakenex.API) ========================================================================
def _krakenex(monkeypatch: pytest.MonkeyPatch, api_key: str) -> Sdk:
    krakenex_api = pytest.importorskip("krakenex.api", reason="pip install krakenex")
    monkeypatch.setattr(krakenex_api, "time", types.SimpleNamespace(time=lambda: NOW_MS / 1000))

    def make(secret: str, url: str) -> tuple[Any, Any]:
        client = krakenex_api.API(api_key, secret)
        client.uri = url
        return client, client.session

    return Sdk(make, KRAKEN_SUCCESS)


KRAKENEX_CALLS = {
    "AddOrder": lambda client: client.query_private("AddOrder", {"ordertype": "limit", "type": "buy", "volume": "0.01", "pair": "XBTUSD", "price": "30000"}),
    "CancelOrder": lambda client: client.query_private("CancelOrder", {"txid": "OABCDE-FGHIJ-KLMNOP"}),
    "BalanceEx": lambda client: client.query_private("BalanceEx"),
}


@pytest.mark.parametrize("call", KRAKENEX_CALLS.values(), ids=KRAKENEX_CALLS.keys())
def test_krakenex_requests_differ_only_in_the_nonce(call, keys, fake_exchange, sdk_signer, monkeypatch):
    """Differences: only the nonce's value (the enclave owns it: its clock in milliseconds, as
    krakenex counts, raised by one per request within a tick) and so API-Sign. krakenex appends the
    nonce after the fields, and the enclave writes its own in that place: the other fields, their
    order, the path, Content-Type and API-Key are the same."""
    key = keys["kraken"]
    with_secret, through = run_both(fake_exchange, key, _krakenex(monkeypatch, key.api_key), call, sdk_signer, key.secret.decode())
    assert_kraken_differs_only_in_the_nonce_value(with_secret, through, str(NOW_MS))


def assert_kraken_differs_only_in_the_nonce_value(with_secret: Received, through: Received, sdk_nonce: str) -> None:
    sdk_fields, fields = parse_qsl(with_secret.body.decode()), parse_qsl(through.body.decode())
    assert sdk_fields[-1] == ("nonce", sdk_nonce) and fields[-1][0] == "nonce" and int(fields[-1][1]) >= int(sdk_nonce)
    assert fields[:-1] == sdk_fields[:-1]
    assert with_secret.body.replace(sdk_nonce.encode(), fields[-1][1].encode()) == through.body
    for name in ("API-Key", "Content-Type", "User-Agent"):
        assert header(through, name) == header(with_secret, name), name


# == python-okx (okx.Trade.TradeAPI, okx.Account.AccountAPI: httpx.Client subclasses) ===============
def _python_okx(monkeypatch: pytest.MonkeyPatch, key: Any, api: str) -> Sdk:
    okx_utils = pytest.importorskip("okx.utils", reason="pip install python-okx")
    module = pytest.importorskip(f"okx.{api}")
    httpx_integration = pytest.importorskip("zerocopy.integrations.httpx")
    monkeypatch.setattr(okx_utils, "get_timestamp", lambda: "2023-11-14T22:13:20.000Z")  # NOW_MS
    passphrase = json.loads(key.secret)["passphrase"]  # not a secret to the SDK: a header it sends

    def make(secret: str, url: str) -> tuple[Any, Any]:
        client = getattr(module, f"{api}API")(key.api_key, secret, passphrase, flag="0", domain=url)
        return client, client

    return Sdk(make, OKX_SUCCESS, httpx_integration.ZeroCopyAuth)


OKX_CALLS = {
    "place_order": ("Trade", lambda client: client.place_order(instId="BTC-USDT", tdMode="cash", side="buy", ordType="limit", sz="0.01", px="30000")),
    "amend_order": ("Trade", lambda client: client.amend_order(instId="BTC-USDT", ordId="12345", newSz="0.005")),
    "cancel_order": ("Trade", lambda client: client.cancel_order(instId="BTC-USDT", ordId="12345")),
    "get_order": ("Trade", lambda client: client.get_order(instId="BTC-USDT", ordId="12345")),
    "get_account_balance": ("Account", lambda client: client.get_account_balance()),
}


def _okx_headers(received: Received) -> dict[str, str]:
    return {name.upper(): value for name, value in received.headers.items() if name.upper().startswith("OK-ACCESS-")}


@pytest.mark.parametrize("api, call", OKX_CALLS.values(), ids=OKX_CALLS.keys())
def test_python_okx_requests_differ_only_in_the_empty_fields_the_enclave_drops(api, call, keys, fake_exchange, sdk_signer, monkeypatch):
    """A GET (the balance read, the order query) is byte-identical: query and OK-ACCESS-* headers, signature included.
    A POST differs in one documented way (docs/policy.md): python-okx sends every optional field as
    ``""`` or ``null``, which OKX reads as absent; the enclave drops them and signs the rest compactly
    (python-okx writes ``json.dumps``'s default spacing), so the body bytes and OK-ACCESS-SIGN differ.
    Every non-empty field, its value and order, and the other OK-ACCESS-* headers are the same."""
    key = keys["okx"]
    with_secret, through = run_both(fake_exchange, key, _python_okx(monkeypatch, key, api), call, sdk_signer, json.loads(key.secret)["secret"])
    assert through.query == with_secret.query
    sdk_headers, signed_headers = _okx_headers(with_secret), _okx_headers(through)
    if with_secret.method == "GET":
        assert through.body == with_secret.body == b"" and signed_headers == sdk_headers
        return
    sdk_fields = json.loads(with_secret.body)
    assert any(value in ("", None) for value in sdk_fields.values())
    kept = {name: value for name, value in sdk_fields.items() if value not in ("", None)}
    assert through.body == json.dumps(kept, separators=(",", ":")).encode()
    assert signed_headers.pop("OK-ACCESS-SIGN") != sdk_headers.pop("OK-ACCESS-SIGN")
    assert signed_headers == sdk_headers


# == python-kraken-sdk (kraken.spot.Trade, kraken.spot.User) ========================================
KRAKEN_SDK_UNIT = {"nonce": {"per_second": 100_000_000}}  # the SDK's nonce unit, sealed with the key (docs/policy.md)
KRAKEN_TXID = "OABCDE-FGHIJ-KLMNOP"


def _python_kraken_sdk(monkeypatch: pytest.MonkeyPatch, api_key: str, api: str, now_ms: int = NOW_MS) -> Sdk:
    spot = pytest.importorskip("kraken.spot", reason="pip install python-kraken-sdk")
    base_api = pytest.importorskip("kraken.base_api")
    monkeypatch.setattr(base_api, "time", types.SimpleNamespace(time=lambda: now_ms / 1000))

    def make(secret: str, url: str) -> tuple[Any, Any]:
        client = getattr(spot, api)(key=api_key, secret=secret, url=url)
        return client, client._SpotClient__session  # the SDK's own requests.Session (a private, name-mangled attribute)

    return Sdk(make, KRAKEN_SUCCESS)


# (class, call, byte-identical?): the SDK writes booleans as Python does, and every order carries
# stp_type=cancel-newest; the integration normalises both (docs/policy.md), so those bodies differ.
KRAKEN_SDK_CALLS = {
    "create_order": ("Trade", lambda client: client.create_order(ordertype="limit", side="buy", pair="XBTUSD", volume="0.01", price="30000"), False),
    "edit_order": ("Trade", lambda client: client.edit_order(txid=KRAKEN_TXID, pair="XBTUSD", volume="0.01", price="30100"), False),
    "cancel_order": ("Trade", lambda client: client.cancel_order(txid=KRAKEN_TXID), True),
    "get_orders_info": ("User", lambda client: client.get_orders_info(txid=KRAKEN_TXID), False),
    "get_balances": ("User", lambda client: client.get_balances(), True),
}


def kraken_sdk_normalised(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The SDK's form fields as the integration hands them over: booleans in Kraken's spelling, its
    restated stptype default dropped; everything else, the nonce's place included, as it was."""
    return [(name, {"True": "true", "False": "false"}.get(value, value)) for name, value in fields if (name, value) != ("stp_type", "cancel-newest")]


@pytest.mark.parametrize("api, call, identical", KRAKEN_SDK_CALLS.values(), ids=KRAKEN_SDK_CALLS.keys())
def test_python_kraken_sdk_requests_differ_only_in_the_spellings_the_integration_normalises(api, call, identical, sdk_key, fake_exchange, sdk_signer, monkeypatch):
    """A key sealed with the SDK's nonce unit, fresh per case, so its first enclave nonce is the
    SDK's own at the pinned instant. A cancel and the balance read are byte-identical: body (nonce
    value and place included), API-Sign, API-Key, Content-Type (the SDK's ``; charset=utf-8``
    kept). An order, an edit and an order query differ only by the normalisation: ``False`` written
    ``false`` (Kraken documents ``true``/``false``), ``stp_type=cancel-newest`` (not a name
    Kraken documents; its ``stptype`` default) dropped; and so API-Sign."""
    key = sdk_key("kraken", policy=KRAKEN_SDK_UNIT)
    with_secret, through = run_both(fake_exchange, key, _python_kraken_sdk(monkeypatch, key.api_key, api), call, sdk_signer, key.secret.decode())
    sdk_fields, fields = parse_qsl(with_secret.body.decode()), parse_qsl(through.body.decode())
    assert sdk_fields[-1] == fields[-1] == ("nonce", str(NOW_MS * 100_000))
    assert fields == kraken_sdk_normalised(sdk_fields)
    assert (fields == sdk_fields) is identical
    if identical:
        assert through.body == with_secret.body and header(through, "API-Sign") == header(with_secret, "API-Sign")
    for name in ("API-Key", "Content-Type", "User-Agent"):
        assert header(through, name) == header(with_secret, name), name


def test_a_key_used_with_python_kraken_sdk_keeps_trading_through_it(sdk_key, fake_exchange, sdk_signer, monkeypatch):
    """Kraken refuses a nonce not above the last one it saw for the API key, and so does the fake
    exchange here. The key was used with python-kraken-sdk a second before the enclave's instant.
    Sealed in milliseconds (the default unit) every enclave nonce is refused; sealed with
    ``[nonce] per_second = 100000000`` the same bot, with a placeholder secret, trades on."""
    secret, api_key = make_secret("kraken").decode(), "kraken-migrated-" + uuid.uuid4().hex[:8]
    in_milliseconds = sdk_key("kraken", secret=secret, api_key=api_key)
    in_sdk_unit = sdk_key("kraken", secret=secret, api_key=api_key, policy=KRAKEN_SDK_UNIT)
    fake_exchange.key, fake_exchange.remember_nonces, fake_exchange.answers["*"] = in_sdk_unit, True, KRAKEN_SUCCESS
    _call_and_close(_python_kraken_sdk(monkeypatch, api_key, "User", NOW_MS - 1000).make(secret, fake_exchange.url), lambda user: user.get_balances())
    assert fake_exchange.last_nonces[api_key] == (NOW_MS - 1000) * 100_000

    def through(key: Any, api: str) -> Any:
        client, session = _python_kraken_sdk(monkeypatch, api_key, api).make(PLACEHOLDER, fake_exchange.url)
        session.auth = ZeroCopyAuth(sdk_signer, key.name)
        return client

    with pytest.raises(Exception, match="EAPI:Invalid nonce"):
        through(in_milliseconds, "User").get_balances()
    trade, user = through(in_sdk_unit, "Trade"), through(in_sdk_unit, "User")
    trade.create_order(ordertype="limit", side="buy", pair="XBTUSD", volume="0.01", price="30000")
    user.get_orders_info(txid=KRAKEN_TXID)
    trade.cancel_order(txid=KRAKEN_TXID)
    user.get_balances()
    nonces = [int(dict(parse_qsl(request.body.decode()))["nonce"]) for request in wire(fake_exchange)]
    assert nonces[2:] == sorted(nonces[2:]) and nonces[2] > nonces[0] and len(nonces) == 6  # the refused one (ms) was received, not admitted


# == binance-sdk-spot (binance_sdk_spot.spot.Spot: Binance's modular SDK, on binance-common) ========
def _binance_sdk_spot(monkeypatch: pytest.MonkeyPatch, api_key: str, placeholder: str = PLACEHOLDER, credential: str = "api_secret") -> Sdk:
    """``credential``: ``api_secret`` (HMAC) or ``private_key`` (a PEM: RSA or Ed25519, as the SDK detects)."""
    spot = pytest.importorskip("binance_sdk_spot.spot", reason="pip install binance-sdk-spot")
    configuration = pytest.importorskip("binance_common.configuration")
    common_utils = pytest.importorskip("binance_common.utils")
    monkeypatch.setattr(common_utils, "get_timestamp", lambda: NOW_MS)

    def make(secret: str, url: str) -> tuple[Any, Any]:
        rest = spot.Spot(config_rest_api=configuration.ConfigurationRestAPI(api_key=api_key, base_path=url, **{credential: secret})).rest_api
        return rest, rest._session  # the SDK's own requests.Session (no public accessor)

    return Sdk(make, placeholder=placeholder)


SDK_SPOT_CALLS = {
    "new_order": lambda rest: rest.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.01, price=30000.0),
    "order_amend_keep_priority": lambda rest: rest.order_amend_keep_priority(symbol="BTCUSDT", new_qty=0.005, order_id=12345),
    "delete_order": lambda rest: rest.delete_order(symbol="BTCUSDT", order_id=12345),
    "get_order": lambda rest: rest.get_order(symbol="BTCUSDT", order_id=12345),
    "get_account(omit_zero_balances=False)": lambda rest: rest.get_account(omit_zero_balances=False),
}


@pytest.mark.parametrize("call", SDK_SPOT_CALLS.values(), ids=SDK_SPOT_CALLS.keys())
def test_binance_sdk_spot_requests_are_byte_identical(call, keys, fake_exchange, sdk_signer, monkeypatch):
    """No differences: the SDK sends its parameters in the query with ``timestamp`` last and no
    recvWindow, as the enclave signs them, so method, path, query (signature included), body and
    X-MBX-APIKEY are the same bytes, for a place, a keep-priority amend, a cancel, an order query and an
    account read that names ``omitZeroBalances``."""
    key = keys["binance"]
    with_secret, through = run_both(fake_exchange, key, _binance_sdk_spot(monkeypatch, key.api_key), call, sdk_signer, key.secret.decode())
    assert (through.query, through.body) == (with_secret.query, with_secret.body)
    assert _binance_params(through)[-2] == ("timestamp", str(NOW_MS))
    assert header(through, "X-MBX-APIKEY") == header(with_secret, "X-MBX-APIKEY") == key.api_key


def test_binance_sdk_spot_default_account_read_differs_in_the_implied_default(keys, fake_exchange, sdk_signer, monkeypatch):
    """``get_account()`` sends a bare timestamp, which also fits the fast-withdraw switch: the
    adapter adds ``omitZeroBalances=false`` (Binance's default, docs/policy.md), and so the signature differs."""
    key = keys["binance"]
    with_secret, through = run_both(fake_exchange, key, _binance_sdk_spot(monkeypatch, key.api_key), lambda rest: rest.get_account(), sdk_signer, key.secret.decode())
    assert [name for name, _ in _binance_params(with_secret)] == ["timestamp", "signature"]
    assert [pair for pair in _binance_params(through) if pair[0] != "signature"] == [("omitZeroBalances", "false"), ("timestamp", str(NOW_MS))]


@pytest.fixture(scope="module")
def binance_asymmetric_keys(sdk_key) -> dict[str, Any]:
    """Binance's RSA and Ed25519 API keys, with the limits of ``keys["binance"]``."""
    return {scheme: sdk_key(scheme, policy={"symbols": ["BTCUSDT"], "max_quantity": "0.01", "rate": RATE}) for scheme in ("binance-rsa", "binance-ed25519")}


@pytest.mark.parametrize("scheme", ["binance-rsa", "binance-ed25519"])
@pytest.mark.parametrize("call", SDK_SPOT_CALLS.values(), ids=SDK_SPOT_CALLS.keys())
def test_binance_sdk_spot_with_a_private_key_sends_the_same_bytes(call, scheme, binance_asymmetric_keys, fake_exchange, sdk_signer, monkeypatch):
    """RSA (PKCS#1 v1.5, SHA-256) and Ed25519 signatures are deterministic, so the SDK signing with
    the private key in memory and the enclave through ``ZeroCopyAuth`` send the same query (the
    base64 signature percent-encoded alike), body and X-MBX-APIKEY; the fake exchange verifies both
    with the reference signer."""
    key = binance_asymmetric_keys[scheme]
    placeholder = make_secret(scheme).decode()  # another key of the same type: the SDK parses its key when built
    sdk = _binance_sdk_spot(monkeypatch, key.api_key, placeholder, credential="private_key")
    with_secret, through = run_both(fake_exchange, key, sdk, call, sdk_signer, key.secret.decode())
    assert (through.query, through.body) == (with_secret.query, with_secret.body)
    assert _binance_params(through)[-2] == ("timestamp", str(NOW_MS))
    public_key = serialization.load_pem_public_key(key.public_key)
    size = 64 if scheme == "binance-ed25519" else public_key.key_size // 8  # type: ignore[union-attr]
    assert len(base64.b64decode(_binance_params(through)[-1][1], validate=True)) == size
    assert header(through, "X-MBX-APIKEY") == header(with_secret, "X-MBX-APIKEY") == key.api_key


# == coinbase-advanced-py (coinbase.rest.RESTClient) ================================================
COINBASE_KEY_NAME = "organizations/3f2b7c1e-0000-4000-8000-000000000001/apiKeys/9d4e5f60-0000-4000-8000-000000000003"
COINBASE_ORDER_ID = "0000-000000-000000"
COINBASE_HOST = "https://api.coinbase.com"


class ToFakeExchange(requests.adapters.HTTPAdapter):
    """The stand-in for DNS and TLS: the session's ``https://api.coinbase.com`` requests (which
    the SDK cannot point elsewhere: its JWT names the host it sends to) go to the fake exchange over
    plain HTTP, exactly as signed."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def send(self, request: Any, **kwargs: Any) -> Any:
        request.url = self.url + request.url.removeprefix(COINBASE_HOST)
        return super().send(request, **kwargs)


def _coinbase_sdk(monkeypatch: pytest.MonkeyPatch, key_kind: str) -> Sdk:
    rest = pytest.importorskip("coinbase.rest", reason="pip install coinbase-advanced-py")
    jwt_generator = pytest.importorskip("coinbase.jwt_generator")
    monkeypatch.setattr(jwt_generator, "time", types.SimpleNamespace(time=lambda: NOW_MS / 1000))

    def make(secret: str, url: str) -> tuple[Any, Any]:
        client = rest.RESTClient(api_key=COINBASE_KEY_NAME, api_secret=secret, timeout=30)
        client.session.mount(COINBASE_HOST, ToFakeExchange(url))
        return client, client.session

    # The SDK signs before sending, so it needs a key of the same kind: one made here, never sealed
    # and never shown to the enclave; the enclave's JWT replaces the one signed with it.
    return Sdk(make, placeholder=make_secret("coinbase-jwt", key_kind=key_kind).decode())


COINBASE_CALLS = {
    "limit_order_gtc_buy": lambda client: client.limit_order_gtc_buy(client_order_id="zc-1", product_id="BTC-USD", base_size="0.01", limit_price="30000"),
    "edit_order": lambda client: client.edit_order(order_id=COINBASE_ORDER_ID, size="0.01", price="30100"),
    "cancel_orders": lambda client: client.cancel_orders(order_ids=[COINBASE_ORDER_ID]),
    "get_order": lambda client: client.get_order(order_id=COINBASE_ORDER_ID),
    "get_accounts": lambda client: client.get_accounts(),
}


def _jwt_parts(received: Received) -> tuple[dict, bytes]:
    """The JWT's header (decoded) and its claims segment (the bytes as sent)."""
    scheme, _, token = header(received, "Authorization").partition(" ")
    assert scheme == "Bearer"
    header_b64, claims_b64, _signature = token.split(".")
    return json.loads(b64url_decode(header_b64)), claims_b64.encode()


@pytest.fixture(scope="module")
def coinbase_keys(sdk_key) -> dict[str, Any]:
    """An ES256 and an Ed25519 key under the default policy (Coinbase JWTs do not cover bodies, so
    a policy could restrict only endpoints and rate)."""
    return {kind: sdk_key("coinbase-jwt", secret=make_secret("coinbase-jwt", key_kind=kind), api_key=COINBASE_KEY_NAME) for kind in ("p256", "ed25519")}


@pytest.mark.parametrize("key_kind", ["p256", "ed25519"])
@pytest.mark.parametrize("call", COINBASE_CALLS.values(), ids=COINBASE_CALLS.keys())
def test_coinbase_advanced_py_requests_differ_only_in_the_jwt_nonce_and_signature(call, key_kind, coinbase_keys, fake_exchange, sdk_signer, monkeypatch):
    """Method, path, query, body and every header but Authorization are the same bytes. In the JWT
    (ES256 for a P-256 key, EdDSA for an Ed25519 one) the claims segment is byte-identical
    (sub, iss, nbf, exp, uri naming api.coinbase.com), the header the same but for its random
    ``nonce``, which the enclave draws itself; and so the signature differs."""
    key = coinbase_keys[key_kind]
    with_secret, through = run_both(fake_exchange, key, _coinbase_sdk(monkeypatch, key_kind), call, sdk_signer, key.secret.decode())
    assert (through.query, through.body) == (with_secret.query, with_secret.body)
    authorization = [name for name in with_secret.headers if name.lower() == "authorization"]
    assert {name: value for name, value in through.headers.items() if name not in authorization} == {name: value for name, value in with_secret.headers.items() if name not in authorization}
    (sdk_header, sdk_claims), (jwt_header, claims) = _jwt_parts(with_secret), _jwt_parts(through)
    assert claims == sdk_claims and json.loads(b64url_decode(claims.decode()))["uri"] == f"{with_secret.method} api.coinbase.com{with_secret.path}"
    assert jwt_header.pop("nonce") != sdk_header.pop("nonce")
    assert jwt_header == sdk_header == {"alg": "ES256" if key_kind == "p256" else "EdDSA", "kid": COINBASE_KEY_NAME, "typ": "JWT"}
