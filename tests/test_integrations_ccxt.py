"""``zerocopy.integrations.ccxt.attach``: ccxt's own requests, signed through the enclave.

A differential suite. Each case runs one ccxt call twice against the fake exchange
(``tests/fake_exchange.py``, which verifies every signature independently): once as ccxt ships,
with the secret in memory, and once through ``attach`` with only a placeholder in the process.
ccxt's clock and client order ids are pinned, and this module's enclave runs on a fixed clock at
the same instant, so the two requests are byte-identical except where the enclave owns a field;
each case names its differences (Coinbase's JWT is compared claim by claim). No network is used:
ccxt's ``urls['api']`` point at the fake exchange and its markets are set in memory. A second part
runs every exchange x operation with ccxt's default options and keys sealed without a policy.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import reference_signers as reference
from enclave.protocol.exchanges.coinbase import CoinbaseJwt
from fake_exchange import FakeExchange, Received, fake_exchange, fake_exchange_server, header, limited_keys  # fake_exchange*: fixtures
from pytest_zerocopy import factories
from zerocopy import AsyncSigner, PolicyRefused

ccxt = pytest.importorskip("ccxt", reason="pip install ccxt (a test extra)")
import ccxt.async_support as ccxt_async  # noqa: E402

from zerocopy.integrations.ccxt import ACCOUNT_TYPE_ASSUMED, PLACEHOLDER_SECRET, attach  # noqa: E402

NOW_MS = 1_700_000_000_000  # ccxt's pinned clock, and the enclave's (a launch option)
ccxt_emulator = factories.emulator_proc(scope="module", clock=f"fixed:{NOW_MS}")
ccxt_signer = factories.signer("ccxt_emulator", scope="module")
ccxt_key = factories.key_maker("ccxt_emulator", "ccxt_signer", scope="module")

# What the fake exchange answers a verified request, so that ccxt reads it as a success.
SUCCESS = {
    "bybit": {"retCode": 0, "retMsg": "OK", "result": {"list": []}, "time": NOW_MS},
    "okx": {"code": "0", "msg": "", "data": [{}]},
    "kraken": {"error": [], "result": {}},
}
RATE = {"per_second": "1000", "burst": 1000}
MARKETS = {  # exchange id -> (market id, base, quote)
    "binance": ("BTCUSDT", "BTC", "USDT"),
    "bybit": ("BTCUSDT", "BTC", "USDT"),
    "okx": ("BTC-USDT", "BTC", "USDT"),
    "kraken": ("XBTUSD", "BTC", "USD"),
    "coinbase": ("BTC-USD", "BTC", "USD"),
}


@pytest.fixture(scope="module")
def keys(ccxt_key) -> dict[str, Any]:
    return limited_keys(ccxt_key, RATE)


# == ccxt, pinned and pointed at the fake exchange ==================================================
def _credentials(key: Any) -> dict[str, str]:
    """The secret as ccxt takes it (for the run with the secret in memory)."""
    if key.scheme == "okx-hmac":
        document = json.loads(key.secret)
        return {"apiKey": key.api_key, "secret": document["secret"], "password": document["passphrase"]}
    return {"apiKey": key.api_key, "secret": key.secret.decode()}


def _market(exchange: Any) -> dict:
    market_id, base, quote = MARKETS[exchange.id]
    ticks = exchange.precisionMode == ccxt.TICK_SIZE
    return exchange.safe_market_structure({
        "id": market_id, "symbol": f"{base}/{quote}", "base": base, "quote": quote, "baseId": base, "quoteId": quote,
        "type": "spot", "spot": True, "active": True, "altname": market_id, "wsName": f"{base}/{quote}",
        "precision": {"amount": 0.00001 if ticks else 5, "price": 0.01 if ticks else 2},
        "limits": {"amount": {"min": 0.00001}, "price": {}, "cost": {}},
        "info": {"orderTypes": ["LIMIT", "MARKET"]},
    })


def make_exchange(module: Any, exchange_id: str, url: str, credentials: dict[str, str]) -> Any:
    """A ccxt instance with its clock and client ids pinned, its API at ``url``, markets in memory."""
    exchange = getattr(module, exchange_id)({**credentials, "enableRateLimit": False})
    rest = {name: re.sub(r"^https://[^/]+", url, base) for name, base in exchange.urls["api"].items() if isinstance(base, str)}
    exchange.urls["api"] = {**exchange.urls["api"], **rest}  # ccxt.pro's WebSocket URLs (a dict) are the test's to set
    exchange.milliseconds = lambda: NOW_MS
    exchange.seconds = lambda: NOW_MS // 1000
    exchange.uuid = lambda: "01234567-89ab-cdef-0123-456789abcdef"
    exchange.uuid16 = lambda: "0123456789abcdef"
    exchange.uuid22 = lambda: "0123456789abcdef012345"
    exchange.set_markets([_market(exchange)])
    return exchange


# == the calls ======================================================================================
def create_order(exchange: Any) -> Any:
    return exchange.create_order("BTC/USDT" if exchange.id != "kraken" else "BTC/USD", "limit", "buy", 0.01, 30000)


def fetch_balance(exchange: Any) -> Any:
    return exchange.fetch_balance()


def cancel_order(exchange: Any) -> Any:
    return exchange.cancel_order("12345", "BTC/USDT")


def wire(fake: FakeExchange) -> list[Received]:
    """The requests the fake exchange received, each verified again here (raises if one fails)."""
    for received in fake.received:
        fake.verify(received)
    return list(fake.received)


def run_both(fake: FakeExchange, key: Any, exchange_id: str, call: Callable, signer: Any) -> tuple[Received, Received]:
    """``call`` with the secret in memory, then through ``attach``: the call's request in each run."""
    fake.key = key
    fake.answers["*"] = SUCCESS.get(exchange_id, {"verified": True})
    in_memory = make_exchange(ccxt, exchange_id, fake.url, _credentials(key))
    # What attach assumes of a Bybit account (unified), so that ccxt does not first ask for it
    # with its two parameterless GETs, which attach never sends (docs/policy.md).
    in_memory.options.update(ACCOUNT_TYPE_ASSUMED.get(exchange_id, {}))
    call(in_memory)
    with_secret = wire(fake)
    fake.received.clear()
    attached = attach(make_exchange(ccxt, exchange_id, fake.url, {}), signer, key.name)
    call(attached)
    through_zerocopy = wire(fake)
    assert [(request.method, request.path) for request in through_zerocopy] == [(request.method, request.path) for request in with_secret]
    assert all(PLACEHOLDER_SECRET.encode() not in _raw(request) for request in through_zerocopy)
    [with_secret_request], [through_request] = with_secret, through_zerocopy
    return with_secret_request, through_request


def _raw(received: Received) -> bytes:
    return (received.query + json.dumps(received.headers)).encode() + received.body


def _binance_params(received: Received) -> list[tuple[str, str]]:
    return parse_qsl(received.query, keep_blank_values=True) + parse_qsl(received.body.decode(), keep_blank_values=True)


# == Binance ========================================================================================
@pytest.mark.parametrize("call", [create_order, cancel_order])
def test_binance_orders_through_zerocopy_differ_only_in_the_fields_the_enclave_owns(call, keys, fake_exchange, ccxt_signer):
    """Differences: ccxt's form body moves to the query (the enclave signs a query), ccxt's
    ``recvWindow=10000`` is dropped (the enclave owns the window: Binance's default 5000 applies),
    the enclave writes ``timestamp`` after the request's parameters (ccxt first), and so the
    signature differs. Every parameter and value, the timestamp's included, is the same."""
    with_secret, through = run_both(fake_exchange, keys["binance"], "binance", call, ccxt_signer)
    assert (through.method, through.path) == (with_secret.method, with_secret.path)
    ccxt_params = _binance_params(with_secret)
    assert ccxt_params[0] == ("timestamp", str(NOW_MS)) and ("recvWindow", "10000") in ccxt_params
    request_params = [pair for pair in ccxt_params if pair[0] not in ("timestamp", "recvWindow", "signature")]
    assert [pair for pair in _binance_params(through) if pair[0] != "signature"] == request_params + [("timestamp", str(NOW_MS))]
    assert through.body == b"" and header(through, "X-MBX-APIKEY") == keys["binance"].api_key


def test_binance_fetch_balance_is_signed_under_the_default_policy(keys, fake_exchange, ccxt_signer):
    """Differences: ``recvWindow`` dropped, ``omitZeroBalances=false`` (Binance's default) added so
    the parameter set is the account read's alone (docs/policy.md), and the signature."""
    with_secret, through = run_both(fake_exchange, keys["binance"], "binance", fetch_balance, ccxt_signer)
    assert (through.method, through.path) == (with_secret.method, with_secret.path) == ("GET", "/api/v3/account")
    assert [name for name, _ in _binance_params(with_secret)] == ["timestamp", "recvWindow", "signature"]
    assert _binance_params(through)[:2] == [("omitZeroBalances", "false"), ("timestamp", str(NOW_MS))]


# == Bybit, OKX, Kraken =============================================================================
def _headers(received: Received, prefix: str) -> dict[str, str]:
    return {name.upper(): value for name, value in received.headers.items() if name.upper().startswith(prefix)}


@pytest.mark.parametrize("call", [create_order, cancel_order, fetch_balance])
def test_bybit_requests_through_zerocopy_are_byte_identical(call, keys, fake_exchange, ccxt_signer):
    """Same query, same JSON body bytes, same X-BAPI-* headers, signature included (ccxt's recv
    window, 5000, is within the default policy's cap and is signed as sent). One difference: the
    enclave also sends ``X-BAPI-SIGN-TYPE: 2``, as Bybit's examples and pybit do; ccxt leaves it out
    (HMAC is Bybit's default), and it is not part of what is signed."""
    with_secret, through = run_both(fake_exchange, keys["bybit"], "bybit", call, ccxt_signer)
    assert (through.method, through.path, through.query, through.body) == (with_secret.method, with_secret.path, with_secret.query, with_secret.body)
    signed_headers = _headers(through, "X-BAPI-")
    assert signed_headers.pop("X-BAPI-SIGN-TYPE") == "2"
    assert signed_headers == _headers(with_secret, "X-BAPI-")


@pytest.mark.parametrize("call", [create_order, cancel_order, fetch_balance])  # create_order: POST /api/v5/trade/batch-orders
def test_okx_requests_through_zerocopy_are_byte_identical(call, keys, fake_exchange, ccxt_signer):
    """No differences: same query, body bytes and OK-ACCESS-* headers (timestamp and signature
    included)."""
    with_secret, through = run_both(fake_exchange, keys["okx"], "okx", call, ccxt_signer)
    assert (through.method, through.path, through.query, through.body) == (with_secret.method, with_secret.path, with_secret.query, with_secret.body)
    assert _headers(through, "OK-ACCESS-") == _headers(with_secret, "OK-ACCESS-")


def kraken_create_order(exchange: Any) -> Any:
    return exchange.create_order("BTC/USD", "limit", "buy", 0.01, 30000)


def kraken_cancel_order(exchange: Any) -> Any:
    return exchange.cancel_order("OABCDE-FGHIJ-KLMNOP")


@pytest.mark.parametrize("call", [
    kraken_create_order, kraken_cancel_order,
    fetch_balance,  # /0/private/BalanceEx
])
def test_kraken_requests_through_zerocopy_differ_only_in_the_nonce(call, keys, fake_exchange, ccxt_signer):
    """Differences: the nonce (the enclave owns it: strictly increasing from its own clock) and so
    API-Sign. The form fields, their order (nonce first in both) and the path are the same."""
    with_secret, through = run_both(fake_exchange, keys["kraken"], "kraken", call, ccxt_signer)
    assert (through.method, through.path, through.query) == (with_secret.method, with_secret.path, with_secret.query)
    ccxt_fields, fields = parse_qsl(with_secret.body.decode()), parse_qsl(through.body.decode())
    assert ccxt_fields[0][0] == fields[0][0] == "nonce"
    assert fields[1:] == ccxt_fields[1:]
    assert header(through, "API-Key") == keys["kraken"].api_key


# == ccxt.async_support =============================================================================
async def _async_calls(fake: FakeExchange, signer: Any, key: str) -> None:
    exchange = attach(make_exchange(ccxt_async, "binance", fake.url, {}), signer, key)
    try:
        await asyncio.gather(exchange.fetch_balance(), exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 30000))
        assert await exchange.fetch_currencies() == {}  # load_markets' private part: skipped, nothing sent
    finally:
        await exchange.close()


@pytest.mark.parametrize("signer_kind", ["AsyncSigner", "Signer in a thread"])
def test_an_async_exchange_signs_through_an_async_signer_or_a_signer_in_a_thread(signer_kind, keys, fake_exchange, ccxt_emulator, ccxt_signer):
    fake_exchange.key = keys["binance"]

    async def main() -> None:
        if signer_kind == "Signer in a thread":
            return await _async_calls(fake_exchange, ccxt_signer, fake_exchange.key.name)
        async with AsyncSigner(ccxt_emulator.address) as signer:
            await _async_calls(fake_exchange, signer, fake_exchange.key.name)

    asyncio.run(main())
    received = wire(fake_exchange)
    assert sorted((request.method, request.path) for request in received) == [("GET", "/api/v3/account"), ("POST", "/api/v3/order")]
    assert all(PLACEHOLDER_SECRET.encode() not in _raw(request) for request in received)


# == refusals, credentials, misuse ==================================================================
def test_a_refused_request_raises_permission_denied_naming_the_rule_and_sends_nothing(keys, fake_exchange, ccxt_signer):
    fake_exchange.key = keys["binance"]
    exchange = attach(make_exchange(ccxt, "binance", fake_exchange.url, {}), ccxt_signer, fake_exchange.key.name)
    with pytest.raises(ccxt.PermissionDenied, match="'funds'") as refusal:
        exchange.withdraw("BTC", 1, "bc1qattacker")
    assert isinstance(refusal.value.__cause__, PolicyRefused) and refusal.value.__cause__.rule == "funds"
    assert fake_exchange.received == []


def test_an_async_refusal_is_permission_denied_too(keys, fake_exchange, ccxt_signer):
    fake_exchange.key = keys["binance"]

    async def main() -> None:
        exchange = attach(make_exchange(ccxt_async, "binance", fake_exchange.url, {}), ccxt_signer, fake_exchange.key.name)
        try:
            await exchange.withdraw("BTC", 1, "bc1qattacker")
        finally:
            await exchange.close()

    with pytest.raises(ccxt.PermissionDenied, match="'funds'"):
        asyncio.run(main())
    assert fake_exchange.received == []


def test_attach_replaces_a_secret_and_passphrase_on_the_instance_with_placeholders(keys, fake_exchange, ccxt_signer):
    exchange = make_exchange(ccxt, "okx", fake_exchange.url, _credentials(keys["okx"]))
    attach(exchange, ccxt_signer, keys["okx"].name)
    assert exchange.secret == exchange.password == PLACEHOLDER_SECRET
    assert exchange.apiKey == keys["okx"].api_key  # not a secret: kept


def test_attach_keeps_a_bybit_account_type_the_user_set(keys, fake_exchange, ccxt_signer):
    exchange = make_exchange(ccxt, "bybit", fake_exchange.url, {})
    exchange.options["enableUnifiedAccount"] = False  # a classic account
    attach(exchange, ccxt_signer, keys["bybit"].name)
    assert (exchange.options["enableUnifiedAccount"], exchange.options["enableUnifiedMargin"]) == (False, False)
    assert make_exchange(ccxt, "bybit", fake_exchange.url, {}).options.get("enableUnifiedAccount") is None  # ccxt's default: ask
    assert attach(make_exchange(ccxt, "bybit", fake_exchange.url, {}), ccxt_signer, keys["bybit"].name).options["enableUnifiedAccount"] is True


def test_a_public_request_goes_out_as_ccxt_built_it(keys, fake_exchange, ccxt_signer):
    fake_exchange.key = keys["binance"]
    fake_exchange.answers["/api/v3/time"] = {"serverTime": NOW_MS}
    exchange = attach(make_exchange(ccxt, "binance", fake_exchange.url, {}), ccxt_signer, fake_exchange.key.name)
    with pytest.raises(ccxt.ExchangeError):  # the fake exchange refuses an unsigned request (401)
        exchange.public_get_time()
    [received] = fake_exchange.received
    assert (received.method, received.path, received.query, received.body) == ("GET", "/api/v3/time", "", b"")
    assert header(received, "X-MBX-APIKEY") == ""


def test_misuse_fails_at_attach_time(keys, fake_exchange, ccxt_emulator, ccxt_signer):
    with pytest.raises(LookupError, match="no key named"):
        attach(make_exchange(ccxt, "binance", fake_exchange.url, {}), ccxt_signer, "no-such-key")
    with pytest.raises(TypeError, match="ccxt exchange instance"):
        attach(object(), ccxt_signer, keys["binance"].name)

    async def with_async_signer() -> None:
        async with AsyncSigner(ccxt_emulator.address) as signer:
            attach(make_exchange(ccxt, "binance", fake_exchange.url, {}), signer, keys["binance"].name)

    with pytest.raises(TypeError, match="async_support"):
        asyncio.run(with_async_signer())


# == ccxt's defaults under the default policy =======================================================
# An ordinary bot: ccxt's default options (only the clock, client ids, URLs and markets pinned) and
# a key sealed without a policy. Each case names the request ccxt sends for it.
DEFAULT_SCHEMES = {"binance": "binance-hmac", "bybit": "bybit-hmac", "okx": "okx-hmac", "kraken": "kraken", "coinbase": "coinbase-jwt"}
BYBIT_ORDER = {**SUCCESS["bybit"], "result": {"list": [{"orderId": "12345", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01", "price": "30000"}]}}
KRAKEN_ORDER = {"error": [], "result": {"OABCDE-FGHIJ-KLMNOP": {"status": "open", "descr": {"pair": "XBTUSD", "type": "buy", "ordertype": "limit"}, "vol": "0.01"}}}
OPERATIONS: dict[str, Callable[[Any, str], Any]] = {
    "create_order": lambda exchange, symbol: exchange.create_order(symbol, "limit", "buy", 0.01, 30000),
    "edit_order": lambda exchange, symbol: exchange.edit_order(ORDER_ID[exchange.id], symbol, "limit", "buy", 0.01, 31000),
    "cancel_order": lambda exchange, symbol: exchange.cancel_order(ORDER_ID[exchange.id], symbol),
    # ccxt's Bybit fetch_order refuses to run until told it sees only the last 500 orders
    "fetch_order": lambda exchange, symbol: exchange.fetch_order(ORDER_ID[exchange.id], symbol, {"acknowledged": True} if exchange.id == "bybit" else {}),
    "fetch_open_orders": lambda exchange, symbol: exchange.fetch_open_orders(symbol),
    "fetch_balance": lambda exchange, symbol: exchange.fetch_balance(),
    "fetch_currencies": lambda exchange, symbol: exchange.fetch_currencies(),  # load_markets' private part
}
ORDER_ID = {"kraken": "OABCDE-FGHIJ-KLMNOP"}
ORDER_ID = {exchange: ORDER_ID.get(exchange, "12345") for exchange in DEFAULT_SCHEMES}
SENT = {  # (exchange, operation) -> the request ccxt sends; None: none (attach answers as ccxt does without credentials)
    ("binance", "create_order"): ("POST", "/api/v3/order"), ("binance", "edit_order"): ("POST", "/api/v3/order/cancelReplace"),
    ("binance", "cancel_order"): ("DELETE", "/api/v3/order"), ("binance", "fetch_order"): ("GET", "/api/v3/order"),
    ("binance", "fetch_open_orders"): ("GET", "/api/v3/openOrders"), ("binance", "fetch_balance"): ("GET", "/api/v3/account"),
    ("binance", "fetch_currencies"): None,
    ("bybit", "create_order"): ("POST", "/v5/order/create"), ("bybit", "edit_order"): ("POST", "/v5/order/amend"),
    ("bybit", "cancel_order"): ("POST", "/v5/order/cancel"), ("bybit", "fetch_order"): ("GET", "/v5/order/realtime"),
    ("bybit", "fetch_open_orders"): ("GET", "/v5/order/realtime"), ("bybit", "fetch_balance"): ("GET", "/v5/account/wallet-balance"),
    ("bybit", "fetch_currencies"): None,
    ("okx", "create_order"): ("POST", "/api/v5/trade/batch-orders"), ("okx", "edit_order"): ("POST", "/api/v5/trade/amend-order"),
    ("okx", "cancel_order"): ("POST", "/api/v5/trade/cancel-order"), ("okx", "fetch_order"): ("GET", "/api/v5/trade/order"),
    ("okx", "fetch_open_orders"): ("GET", "/api/v5/trade/orders-pending"), ("okx", "fetch_balance"): ("GET", "/api/v5/account/balance"),
    ("okx", "fetch_currencies"): ("GET", "/api/v5/asset/currencies"),
    ("kraken", "create_order"): ("POST", "/0/private/AddOrder"), ("kraken", "edit_order"): ("POST", "/0/private/AmendOrder"),
    ("kraken", "cancel_order"): ("POST", "/0/private/CancelOrder"), ("kraken", "fetch_order"): ("POST", "/0/private/QueryOrders"),
    ("kraken", "fetch_open_orders"): ("POST", "/0/private/OpenOrders"), ("kraken", "fetch_balance"): ("POST", "/0/private/BalanceEx"),
    ("coinbase", "create_order"): ("POST", "/api/v3/brokerage/orders"), ("coinbase", "edit_order"): ("POST", "/api/v3/brokerage/orders/edit"),
    ("coinbase", "cancel_order"): ("POST", "/api/v3/brokerage/orders/batch_cancel"),
    ("coinbase", "fetch_order"): ("GET", "/api/v3/brokerage/orders/historical/12345"),
    ("coinbase", "fetch_open_orders"): ("GET", "/api/v3/brokerage/orders/historical/batch"), ("coinbase", "fetch_balance"): ("GET", "/v2/accounts"),
}
# Kraken's and Coinbase's currency lists (load_markets) are public: nothing to sign.


@pytest.fixture(scope="module")
def default_policy_keys(ccxt_key) -> dict[str, Any]:
    return {exchange: ccxt_key(scheme) for exchange, scheme in DEFAULT_SCHEMES.items()}


def _default_answers(fake: FakeExchange, exchange_id: str) -> None:
    fake.answers["*"] = SUCCESS.get(exchange_id, {"verified": True})
    fake.answers["/api/v3/openOrders"] = []
    fake.answers["/0/private/QueryOrders"] = KRAKEN_ORDER
    if exchange_id == "bybit":
        fake.answers["/v5/order/realtime"] = BYBIT_ORDER


@pytest.mark.parametrize(("exchange_id", "operation"), list(SENT))
def test_ccxt_defaults_trade_and_read_under_the_default_policy(exchange_id, operation, default_policy_keys, fake_exchange, ccxt_signer):
    key = default_policy_keys[exchange_id]
    fake_exchange.key = key
    _default_answers(fake_exchange, exchange_id)
    exchange = make_exchange(ccxt, exchange_id, fake_exchange.url, {"apiKey": key.api_key} if exchange_id == "coinbase" else {})
    attach(exchange, ccxt_signer, key.name)
    symbol = "BTC/USD" if MARKETS[exchange_id][2] == "USD" else "BTC/USDT"
    OPERATIONS[operation](exchange, symbol)
    received = wire(fake_exchange)  # every request verified independently
    expected = SENT[exchange_id, operation]
    assert [(request.method, request.path) for request in received] == ([expected] if expected else [])
    assert all(PLACEHOLDER_SECRET.encode() not in _raw(request) for request in received)


# == Coinbase: the JWT, compared structurally =======================================================
def _jwt(received: Received) -> tuple[dict, dict, str]:
    token = header(received, "Authorization").removeprefix("Bearer ")
    header_b64, claims_b64, _ = token.split(".")
    return json.loads(reference.b64url_decode(header_b64)), json.loads(reference.b64url_decode(claims_b64)), token


def _ccxt_jwt_verified(received: Received, key: Any) -> tuple[dict, dict]:
    """ccxt's own ES256 JWT, its signature checked with the key's public key (not by the fake
    exchange, which expects the enclave's claims)."""
    jwt_header, claims, token = _jwt(received)
    header_b64, claims_b64, signature_b64 = token.split(".")
    signature = reference.b64url_decode(signature_b64)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    serialization.load_pem_public_key(key.public_key).verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    return jwt_header, claims


@pytest.mark.parametrize("operation", ["create_order", "cancel_order", "fetch_order", "fetch_balance"])
def test_coinbase_requests_through_zerocopy_differ_only_in_the_jwt_claims_the_enclave_writes(operation, default_policy_keys, fake_exchange, ccxt_signer):
    """Same method, path, query and body bytes (client order id pinned). The JWT: the same ``alg``
    (ES256), ``kid``, ``typ``, ``sub``, ``nbf`` and ``exp`` (clock pinned), and a ``uri`` naming the same
    method and path. Differences: the ``nonce`` (random in both; ccxt 16 bytes, the enclave 32 as
    the official SDK), the host in ``uri`` (ccxt names the URL it sends to, here the fake exchange's;
    the enclave always api.coinbase.com), and ccxt's older claim form — ``iss: coinbase-cloud``,
    ``aud: [retail_rest_api_proxy]``, ``iat`` — where the enclave writes the SDK's (``iss: cdp``)."""
    key = default_policy_keys["coinbase"]
    fake_exchange.key = key
    _default_answers(fake_exchange, "coinbase")
    in_memory = make_exchange(ccxt, "coinbase", fake_exchange.url, {"apiKey": key.api_key, "secret": key.secret.decode()})
    with pytest.raises(ccxt.AuthenticationError):  # the fake exchange checks for the enclave's claims
        OPERATIONS[operation](in_memory, "BTC/USD")
    [with_secret] = fake_exchange.received
    fake_exchange.received.clear()
    OPERATIONS[operation](attach(make_exchange(ccxt, "coinbase", fake_exchange.url, {"apiKey": key.api_key}), ccxt_signer, key.name), "BTC/USD")
    [through] = wire(fake_exchange)
    assert (through.method, through.path, through.query, through.body) == (with_secret.method, with_secret.path, with_secret.query, with_secret.body)
    ccxt_header, ccxt_claims = _ccxt_jwt_verified(with_secret, key)
    jwt_header, claims, _ = _jwt(through)
    assert {**ccxt_header, "nonce": None} == {**jwt_header, "nonce": None} == {"alg": "ES256", "kid": key.api_key, "typ": "JWT", "nonce": None}
    assert len(ccxt_header["nonce"]) <= 32 and len(jwt_header["nonce"]) == 64  # ccxt's hex drops leading zeros
    seconds = NOW_MS // 1000
    # ccxt's uri is the URL it sends to less "https://" (here plain http, so it stays)
    assert ccxt_claims.pop("uri") == f"{through.method} {fake_exchange.url}{through.path}"
    assert claims.pop("uri") == f"{through.method} api.coinbase.com{through.path}"
    assert ccxt_claims == {"sub": key.api_key, "nbf": seconds, "exp": seconds + 120, "iss": "coinbase-cloud", "aud": ["retail_rest_api_proxy"], "iat": seconds}
    assert claims == {"sub": key.api_key, "nbf": seconds, "exp": seconds + 120, "iss": "cdp"}


@pytest.fixture(scope="module")
def coinbase_ed25519_key(ccxt_key) -> Any:
    return ccxt_key("coinbase-jwt", secret=CoinbaseJwt.fresh_secret(key_kind="ed25519"))


@pytest.mark.parametrize("operation", ["create_order", "cancel_order", "fetch_balance"])
def test_a_coinbase_ed25519_key_signs_ccxt_requests_with_eddsa(operation, coinbase_ed25519_key, fake_exchange, ccxt_signer):
    """Coinbase's recommended key type: the enclave signs EdDSA JWTs for it, whichever JWT ccxt
    would have built (its placeholder makes it build one, so the request is recognised as signed)."""
    key = coinbase_ed25519_key
    fake_exchange.key = key
    _default_answers(fake_exchange, "coinbase")
    OPERATIONS[operation](attach(make_exchange(ccxt, "coinbase", fake_exchange.url, {"apiKey": key.api_key}), ccxt_signer, key.name), "BTC/USD")
    [received] = wire(fake_exchange)  # verified with the Ed25519 public key
    assert _jwt(received)[0]["alg"] == "EdDSA" and (received.method, received.path) == SENT["coinbase", operation]



# == ccxt.pro: the Binance WebSocket API ============================================================
# A WebSocket server on 127.0.0.1 (aiohttp, as ccxt.pro's own client) that verifies each request's
# signature with the reference signer and answers as Binance's WebSocket API does.
WS_ORDER = {"symbol": "BTCUSDT", "orderId": 1, "clientOrderId": "c1", "transactTime": NOW_MS, "price": "30000", "origQty": "0.01",
            "executedQty": "0", "status": "NEW", "timeInForce": "GTC", "type": "LIMIT", "side": "BUY"}
WS_REPLACED = {"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS", "cancelResponse": {**WS_ORDER, "status": "CANCELED"},
               "newOrderResponse": {**WS_ORDER, "orderId": 2, "price": "31000", "origQty": "0.02"}}
WS_RESULTS = {"order.place": WS_ORDER, "order.cancelReplace": WS_REPLACED, "order.cancel": WS_ORDER, "order.status": WS_ORDER,
              "openOrders.status": [], "account.status": {"balances": [{"asset": "BTC", "free": "1", "locked": "0"}]}}


class BinanceWsApi:
    """Keeps every request it received and whether its signature verified."""

    def __init__(self, key: Any) -> None:
        self.key = key
        self.received: list[tuple[dict, bool]] = []

    def verified(self, params: dict) -> bool:
        signed = [(name, value) for name, value in params.items() if name not in ("apiKey", "signature")]
        expected = json.loads(reference.binance_ws(self.key.secret, self.key.api_key, signed, int(params["timestamp"])).body)
        return params.get("apiKey") == self.key.api_key and params.get("signature") == expected["signature"]

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for frame in socket:
            message = json.loads(frame.data)
            verified = self.verified(message["params"])
            self.received.append((message, verified))
            answer = {"status": 200, "result": WS_RESULTS[message["method"]]} if verified else {"status": 400, "error": {"code": -1022, "msg": "Signature for this request is not valid."}}
            await socket.send_str(json.dumps({"id": message["id"], **answer}))
        return socket


async def _binance_ws_calls(ws_api: BinanceWsApi, signer: Any, key: str, ws_key: str, calls: Callable) -> Any:
    from aiohttp import web

    import ccxt.pro as ccxt_pro

    app = web.Application()
    app.router.add_get("/ws-api/v3", ws_api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    exchange = make_exchange(ccxt_pro, "binance", "http://127.0.0.1:1", {})
    exchange.urls["api"]["ws"]["ws-api"]["spot"] = f"ws://127.0.0.1:{port}/ws-api/v3"
    try:
        return await calls(attach(exchange, signer, key, ws_key=ws_key))
    finally:
        await exchange.close()
        await runner.cleanup()


@pytest.fixture(scope="module")
def binance_ws_key(ccxt_key) -> Any:
    return ccxt_key("binance-ws-hmac")


async def _ws_trading(exchange: Any) -> None:
    await exchange.create_order_ws("BTC/USDT", "limit", "buy", 0.01, 30000)
    edited = await exchange.edit_order_ws("1", "BTC/USDT", "limit", "buy", 0.02, 31000)
    assert (edited["id"], edited["amount"], edited["price"]) == ("2", 0.02, 31000)
    await exchange.fetch_order_ws("1", "BTC/USDT")
    await exchange.fetch_open_orders_ws("BTC/USDT")
    await exchange.cancel_order_ws("1", "BTC/USDT")
    await exchange.fetch_balance_ws()


@pytest.mark.parametrize("signer_kind", ["AsyncSigner", "Signer in a thread"])
def test_ccxt_pro_binance_websocket_api_requests_are_signed_by_the_enclave(signer_kind, keys, binance_ws_key, ccxt_emulator, ccxt_signer):
    """ccxt.pro's WebSocket API requests, signed by the enclave under the default policy: the
    enclave's apiKey, timestamp and signature replace ccxt's placeholder ones, ccxt's
    ``returnRateLimits=false`` is left out (Binance's default applies), and ``account.status``
    gets ``omitZeroBalances=false`` (else it is ``session.logon``'s parameter set, refused);
    ``edit_order_ws`` is an ``order.cancelReplace``, judged as the order it places."""
    ws_api = BinanceWsApi(binance_ws_key)

    async def main() -> None:
        if signer_kind == "Signer in a thread":
            return await _binance_ws_calls(ws_api, ccxt_signer, keys["binance"].name, binance_ws_key.name, _ws_trading)
        async with AsyncSigner(ccxt_emulator.address) as signer:
            await _binance_ws_calls(ws_api, signer, keys["binance"].name, binance_ws_key.name, _ws_trading)

    asyncio.run(main())
    assert [(message["method"], verified) for message, verified in ws_api.received] == [
        ("order.place", True), ("order.cancelReplace", True), ("order.status", True), ("openOrders.status", True), ("order.cancel", True),
        ("account.status", True)]
    [place, replace, *_, account] = [message["params"] for message, _ in ws_api.received]
    assert (place["symbol"], place["side"], place["quantity"], place["price"], place["timestamp"]) == ("BTCUSDT", "BUY", "0.01", "30000", str(NOW_MS))
    assert account["omitZeroBalances"] == "false" and "recvWindow" not in account and "returnRateLimits" not in place
    assert (replace["cancelReplaceMode"], replace["cancelOrderId"], replace["quantity"], replace["price"]) == ("STOP_ON_FAILURE", "1", "0.02", "31000")
    assert "returnRateLimits" not in replace and replace["timestamp"] == str(NOW_MS)
    assert all(PLACEHOLDER_SECRET not in json.dumps(message) for message, _ in ws_api.received)


def test_a_refused_websocket_request_fails_alone_and_the_connection_stays_up(keys, ccxt_key, ccxt_signer):
    eth_only = ccxt_key("binance-ws-hmac", policy={"symbols": ["ETHUSDT"]})
    ws_api = BinanceWsApi(eth_only)

    async def calls(exchange: Any) -> None:
        with pytest.raises(ccxt.PermissionDenied, match="'symbol'") as refusal:
            await exchange.create_order_ws("BTC/USDT", "limit", "buy", 0.01, 30000)
        assert isinstance(refusal.value.__cause__, PolicyRefused)
        with pytest.raises(ccxt.PermissionDenied, match="'symbol'"):  # an edit places a new order: the same rule
            await exchange.edit_order_ws("1", "BTC/USDT", "limit", "buy", 0.01, 30000)
        await exchange.fetch_balance_ws()

    asyncio.run(_binance_ws_calls(ws_api, ccxt_signer, keys["binance"].name, eth_only.name, calls))
    assert [(message["method"], verified) for message, verified in ws_api.received] == [("account.status", True)]


def test_a_binance_websocket_request_without_a_ws_key_fails_and_sends_nothing(keys, binance_ws_key, ccxt_signer):
    ws_api = BinanceWsApi(binance_ws_key)

    async def calls(exchange: Any) -> None:
        with pytest.raises(ccxt.AuthenticationError, match="ws_key"):
            await exchange.create_order_ws("BTC/USDT", "limit", "buy", 0.01, 30000)

    asyncio.run(_binance_ws_calls(ws_api, ccxt_signer, keys["binance"].name, None, calls))
    assert ws_api.received == []


def test_ws_key_misuse_fails_at_attach_time(keys, fake_exchange, ccxt_signer):
    import ccxt.pro as ccxt_pro

    with pytest.raises(TypeError, match="ccxt.pro"):
        attach(make_exchange(ccxt_async, "binance", fake_exchange.url, {}), ccxt_signer, keys["binance"].name, ws_key=keys["binance"].name)
    with pytest.raises(ValueError, match="binance-ws-hmac"):
        attach(make_exchange(ccxt_pro, "binance", fake_exchange.url, {}), ccxt_signer, keys["binance"].name, ws_key=keys["binance"].name)
    with pytest.raises(LookupError, match="no key named"):
        attach(make_exchange(ccxt_pro, "binance", fake_exchange.url, {}), ccxt_signer, keys["binance"].name, ws_key="no-such-key")


# == ccxt.pro: OKX login, Bybit auth ================================================================
def okx_login_verified(key: Any, message: dict) -> bool:
    """OKX's WebSocket login, checked from its documentation: sign = base64 HMAC-SHA256 over
    timestamp (seconds) + "GET" + "/users/self/verify"; the passphrase as sealed."""
    document = json.loads(key.secret)
    [login] = message["args"]
    expected = reference.b64(reference.hmac_sha256(document["secret"].encode(), f"{login['timestamp']}GET/users/self/verify".encode()))
    return login == {"apiKey": key.api_key, "passphrase": document["passphrase"], "timestamp": str(NOW_MS // 1000), "sign": expected}


def bybit_auth_verified(key: Any, message: dict) -> bool:
    """Bybit's WebSocket auth, from its documentation: hex HMAC-SHA256 over "GET/realtime" + expires (ms)."""
    api_key, expires, signature = message["args"]
    expected = reference.hmac_sha256(key.secret, f"GET/realtime{expires}".encode()).hex()
    return (api_key, expires, signature) == (key.api_key, str(NOW_MS + 5000), expected)


LOGINS = {  # exchange id -> (how the server checks a login, its answer when verified, the policy's name for the login)
    "okx": (okx_login_verified, {"event": "login", "code": "0", "msg": "", "connId": "c1"}, "WS login"),
    "bybit": (bybit_auth_verified, {"success": True, "ret_msg": "", "op": "auth", "conn_id": "c1"}, "WS auth"),
}


async def _login(exchange_id: str, key: Any, signer: Any, received: list) -> None:
    from aiohttp import web

    import ccxt.pro as ccxt_pro

    verify, answer, _ = LOGINS[exchange_id]

    async def handle(request: Any) -> Any:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for frame in socket:
            message = json.loads(frame.data)
            received.append((message, verify(key, message)))
            await socket.send_str(json.dumps(answer if received[-1][1] else {"event": "error", "code": "60009", "msg": "Login failed."}))
        return socket

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/ws"  # type: ignore[union-attr]
    exchange = attach(make_exchange(ccxt_pro, exchange_id, "http://127.0.0.1:1", {}), signer, key.name)
    try:
        if exchange_id == "okx":
            exchange.urls["api"]["ws"] = url
            await asyncio.wait_for(exchange.authenticate(), 20)
        else:
            await asyncio.wait_for(exchange.authenticate(url), 20)
    finally:
        await exchange.close()
        await runner.cleanup()


@pytest.mark.parametrize("exchange_id", list(LOGINS))
def test_ccxt_pro_logins_are_signed_by_the_enclave_where_the_policy_names_the_session(exchange_id, ccxt_key, ccxt_signer):
    """A login opens a session that trades with no further signature, so the default policy refuses
    it (``session``); a policy that names it gets the enclave's login, verified independently."""
    scheme = DEFAULT_SCHEMES[exchange_id]
    default_key, named_key = ccxt_key(scheme), ccxt_key(scheme, policy={"allow": [LOGINS[exchange_id][2]]})
    received: list = []
    with pytest.raises(ccxt.PermissionDenied, match="'session'"):
        asyncio.run(_login(exchange_id, default_key, ccxt_signer, received))
    assert received == []
    asyncio.run(_login(exchange_id, named_key, ccxt_signer, received))
    assert [verified for _, verified in received] == [True]
    assert PLACEHOLDER_SECRET not in json.dumps(received[0][0])
