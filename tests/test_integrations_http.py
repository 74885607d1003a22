"""``zerocopy.integrations.requests`` and ``.httpx`` over real HTTP, against a fake exchange.

The fake exchange (``tests/fake_exchange.py``) is a real HTTP server on 127.0.0.1 in a thread that
verifies every request it receives independently, with ``tests/reference_signers.py``; it answers
200 for a verified request, 401 naming what failed otherwise, and keeps every request, so a refused
one can be shown to have sent nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_exchange import FakeExchange, fake_exchange, fake_exchange_server, header  # fake_exchange*: fixtures
from pytest_zerocopy import factories
from zerocopy import AsyncSigner, PolicyRefused
from zerocopy._client import plain_decimal

requests = pytest.importorskip("requests", reason="pip install 'zerocopy[test]' (requests is a test extra)")
httpx = pytest.importorskip("httpx", reason="pip install 'zerocopy[test]' (httpx is a test extra)")

from zerocopy.integrations.httpx import ZeroCopyAuth as HttpxAuth  # noqa: E402
from zerocopy.integrations.requests import ZeroCopyAuth as RequestsAuth  # noqa: E402

# An emulator of this module's own (the plugin's factories, as pytest-postgresql's): its keys do
# not count against the session enclave's limit of 64 keys, which the rest of the suite uses.
http_emulator = factories.emulator_proc(scope="module")
http_signer = factories.signer("http_emulator", scope="module")
http_key = factories.key_maker("http_emulator", "http_signer", scope="module")

RATE = {"per_second": "1000", "burst": 1000}
CLIENTS = ("requests", "httpx", "httpx-async")
BINANCE_ORDER = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "0.01"), ("price", "30000")]
BYBIT_ORDER = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01", "price": "30000"}
OKX_ORDER = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01", "px": "30000"}
KRAKEN_ORDER = [("ordertype", "limit"), ("type", "buy"), ("volume", "0.01"), ("pair", "XBTUSD"), ("price", "30000")]
COINBASE_ORDER = {"client_order_id": "a1", "product_id": "BTC-USD", "side": "BUY", "order_configuration": {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "30000"}}}


@pytest.fixture(scope="module")
def keys(http_key) -> dict[str, Any]:
    return {
        # named as in the README block, which runs against it
        "binance-hmac": http_key("binance-hmac", name="binance-main", policy={"symbols": ["BTCUSDT"], "max_quantity": "0.01", "rate": RATE}),
        "binance-ed25519": http_key("binance-ed25519", policy={"symbols": ["BTCUSDT"], "max_quantity": "0.01", "rate": RATE}),
        "bybit-hmac": http_key("bybit-hmac", policy={"symbols": ["BTCUSDT"], "max_quantity": "0.01", "rate": RATE}),
        "okx-hmac": http_key("okx-hmac", policy={"symbols": ["BTC-USDT"], "max_quantity": "0.01", "rate": RATE}),
        "kraken": http_key("kraken", policy={"symbols": ["XBTUSD"], "max_quantity": "0.01", "rate": RATE}),
        "coinbase-jwt": http_key("coinbase-jwt", policy={"rate": RATE}),
        "binance-ws-hmac": http_key("binance-ws-hmac", policy={"rate": RATE}),
    }


# == the clients ===================================================================================
@dataclass(frozen=True)
class Answer:
    status: int
    body: dict


def send(client: str, signer: Any, key: str, method: str, url: str, **options: Any) -> Answer:
    """One request through ``client`` with the adapter; ``options`` as both libraries take them
    (params, data, json, content, headers)."""
    if client == "requests":
        if "content" in options:
            options["data"] = options.pop("content")
        with requests.Session() as session:
            session.auth = RequestsAuth(signer, key)
            response = session.request(method, url, timeout=30, **options)
        return Answer(response.status_code, response.json())
    if isinstance(options.get("data"), list):  # httpx takes form fields as a dict (in order)
        options["data"] = dict(options["data"])
    if client == "httpx":
        with httpx.Client(auth=HttpxAuth(signer, key), timeout=30) as http:
            response = http.request(method, url, **options)
        return Answer(response.status_code, response.json())

    async def send_async() -> httpx.Response:
        async with httpx.AsyncClient(auth=HttpxAuth(signer, key), timeout=30) as http:
            return await http.request(method, url, **options)

    response = asyncio.run(send_async())
    return Answer(response.status_code, response.json())


def verified(answer: Answer) -> bool:
    assert answer.body == {"verified": True}, answer.body.get("reason")
    return answer.status == 200


# == one request per exchange and operation, through every client ==================================
CASES = {
    "binance-account-read": ("binance-hmac", "GET", "/api/v3/account", {"params": {"omitZeroBalances": "false"}}),
    "binance-order-form": ("binance-hmac", "POST", "/api/v3/order", {"data": BINANCE_ORDER}),
    "binance-ed25519-order": ("binance-ed25519", "POST", "/api/v3/order", {"params": BINANCE_ORDER}),
    "binance-open-orders": ("binance-hmac", "GET", "/api/v3/openOrders", {"params": {"symbol": "BTCUSDT"}}),
    "bybit-read": ("bybit-hmac", "GET", "/v5/order/realtime", {"params": {"category": "spot", "symbol": "BTCUSDT"}}),
    "bybit-order": ("bybit-hmac", "POST", "/v5/order/create", {"json": BYBIT_ORDER}),
    "okx-balance": ("okx-hmac", "GET", "/api/v5/account/balance", {"params": {"ccy": "BTC"}}),
    "okx-order": ("okx-hmac", "POST", "/api/v5/trade/order", {"json": OKX_ORDER}),
    "kraken-add-order": ("kraken", "POST", "/0/private/AddOrder", {"data": KRAKEN_ORDER}),
    "coinbase-order": ("coinbase-jwt", "POST", "/api/v3/brokerage/orders", {"json": COINBASE_ORDER}),
    "coinbase-accounts": ("coinbase-jwt", "GET", "/api/v3/brokerage/accounts", {"params": {"limit": "10"}}),
}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_request_signed_through_the_adapter_verifies_at_the_exchange(case, client, keys, fake_exchange, http_signer):
    scheme, method, path, options = CASES[case]
    fake_exchange.key = keys[scheme]
    answer = send(client, http_signer, fake_exchange.key.name, method, fake_exchange.url + path, **options)
    assert verified(answer)
    [received] = fake_exchange.received
    assert (received.method, received.path) == (method, path)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_binance_librarys_own_timestamp_signature_and_recv_window_are_replaced(client, keys, fake_exchange, http_signer):
    """python-binance and ccxt send recvWindow=10000 (above the default cap) and sign themselves:
    the adapter drops their timestamp, signature and window, and the enclave signs once."""
    fake_exchange.key = keys["binance-hmac"]
    stale = BINANCE_ORDER + [("recvWindow", "10000"), ("timestamp", "1600000000000"), ("signature", "f" * 64)]
    answer = send(client, http_signer, fake_exchange.key.name, "POST", fake_exchange.url + "/api/v3/order",
                  data=stale, headers={"X-MBX-APIKEY": "placeholder"})
    assert verified(answer)
    [received] = fake_exchange.received
    names = [name for name, _ in parse_qsl(received.query)]
    assert names == [name for name, _ in BINANCE_ORDER] + ["timestamp", "signature"]
    assert dict(parse_qsl(received.query))["timestamp"] != "1600000000000"
    assert received.body == b"" and header(received, "X-MBX-APIKEY") == fake_exchange.key.api_key


@pytest.mark.parametrize("client", CLIENTS)
def test_library_signature_headers_are_replaced_and_a_bybit_window_header_is_signed(client, keys, fake_exchange, http_signer):
    fake_exchange.key = keys["bybit-hmac"]
    headers = {"X-BAPI-API-KEY": "placeholder", "X-BAPI-SIGN": "0" * 64, "X-BAPI-RECV-WINDOW": "3000"}
    answer = send(client, http_signer, fake_exchange.key.name, "POST", fake_exchange.url + "/v5/order/create", json=BYBIT_ORDER, headers=headers)
    assert verified(answer)
    [received] = fake_exchange.received
    assert header(received, "X-BAPI-RECV-WINDOW") == "3000"
    assert json.loads(received.body) == BYBIT_ORDER


@pytest.mark.parametrize("client", CLIENTS)
def test_a_kraken_librarys_nonce_is_replaced_by_the_enclaves(client, keys, fake_exchange, http_signer):
    """The enclave owns the nonce's value; its place is the library's (krakenex puts it last), and a
    request without one gets the enclave's first."""
    fake_exchange.key = keys["kraken"]
    answer = send(client, http_signer, fake_exchange.key.name, "POST", fake_exchange.url + "/0/private/AddOrder",
                  data=KRAKEN_ORDER + [("nonce", "1")], headers={"API-Key": "placeholder", "API-Sign": "bogus"})
    assert verified(answer)
    assert verified(send(client, http_signer, fake_exchange.key.name, "POST", fake_exchange.url + "/0/private/AddOrder", data=KRAKEN_ORDER))
    last, first = (parse_qsl(received.body.decode()) for received in fake_exchange.received)
    assert last[-1][0] == "nonce" and last[-1][1] != "1" and last[:-1] == KRAKEN_ORDER
    assert first[0][0] == "nonce" and first[1:] == KRAKEN_ORDER and int(first[0][1]) > int(last[-1][1])


@pytest.mark.parametrize("client", CLIENTS)
def test_python_kraken_sdk_spellings_are_normalised_and_nothing_else(client, keys, fake_exchange, http_signer):
    """python-kraken-sdk's form: Python booleans and ``stp_type=cancel-newest`` (its restated
    ``stptype`` default) before its nonce. Sent: Kraken's ``true``/``false``, no ``stp_type``, the
    rest in place, and the Content-Type as the library wrote it."""
    fake_exchange.key = keys["kraken"]
    sdk_form = KRAKEN_ORDER[:4] + [("stp_type", "cancel-newest"), ("starttm", "0"), ("validate", "False"), ("reduce_only", "False"), KRAKEN_ORDER[4], ("nonce", "1")]
    answer = send(client, http_signer, fake_exchange.key.name, "POST", fake_exchange.url + "/0/private/AddOrder",
                  data=sdk_form, headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "API-Key": "placeholder"})
    assert verified(answer)
    [received] = fake_exchange.received
    fields = parse_qsl(received.body.decode())
    assert fields[:-1] == KRAKEN_ORDER[:4] + [("starttm", "0"), ("validate", "false"), ("reduce_only", "false"), KRAKEN_ORDER[4]]
    assert fields[-1][0] == "nonce" and header(received, "Content-Type") == "application/x-www-form-urlencoded; charset=utf-8"


@pytest.mark.parametrize(("field", "rule"), [(("stp_type", "cancel-oldest"), "unknown_parameter"), (("validate", "Yes"), "non_canonical")])
def test_other_kraken_spellings_are_refused_not_guessed(field, rule, keys, fake_exchange, http_signer):
    fake_exchange.key = keys["kraken"]
    with pytest.raises(PolicyRefused) as refusal:
        send("requests", http_signer, fake_exchange.key.name, "POST", fake_exchange.url + "/0/private/AddOrder", data=KRAKEN_ORDER + [field, ("nonce", "1")])
    assert refusal.value.rule == rule
    assert fake_exchange.received == []


@pytest.mark.parametrize("client", CLIENTS)
def test_a_refused_request_raises_policy_refused_and_sends_nothing(client, keys, fake_exchange, http_signer):
    fake_exchange.key = keys["binance-hmac"]
    withdrawal = {"coin": "BTC", "address": "bc1qattacker", "amount": "1"}
    with pytest.raises(PolicyRefused) as refusal:
        send(client, http_signer, fake_exchange.key.name, "POST", fake_exchange.url + "/sapi/v1/capital/withdraw/apply", data=withdrawal)
    assert refusal.value.rule == "funds"
    assert fake_exchange.received == []


@pytest.mark.parametrize("client", CLIENTS)
def test_a_key_whose_scheme_is_not_http_is_refused_before_anything_is_sent(client, keys, fake_exchange, http_signer):
    with pytest.raises(ValueError, match="binance-ws-hmac"):
        send(client, http_signer, keys["binance-ws-hmac"].name, "GET", fake_exchange.url + "/api/v3/account")
    with pytest.raises(LookupError, match="no key named"):
        send(client, http_signer, "no-such-key", "GET", fake_exchange.url + "/api/v3/account")
    assert fake_exchange.received == []


class AwaitingSigner:
    """A signer whose methods are coroutine functions, as ``zerocopy.AsyncSigner``'s are: the
    adapter awaits them instead of running them in a thread (here they call the real Signer)."""

    def __init__(self, signer: Any) -> None:
        self.signer = signer
        self.awaited = 0

    async def keys(self) -> list:
        return self.signer.keys()

    async def sign_request(self, *args: Any, **kwargs: Any) -> Any:
        self.awaited += 1
        return self.signer.sign_request(*args, **kwargs)


def test_an_async_signer_is_awaited_by_the_async_flow_and_refused_by_the_sync_one(keys, fake_exchange, http_signer):
    fake_exchange.key = keys["okx-hmac"]
    awaiting = AwaitingSigner(http_signer)
    assert verified(send("httpx-async", awaiting, fake_exchange.key.name, "POST", fake_exchange.url + "/api/v5/trade/order", json=OKX_ORDER))
    assert awaiting.awaited == 1
    with pytest.raises(TypeError, match="async"):
        send("httpx", awaiting, fake_exchange.key.name, "GET", fake_exchange.url + "/api/v5/account/balance")
    assert len(fake_exchange.received) == 1


def test_the_fake_exchange_rejects_a_request_signed_for_other_bytes(keys, fake_exchange, http_signer):
    """The verifier can fail: a signed request whose body was changed after signing is refused."""
    fake_exchange.key = keys["bybit-hmac"]
    signed = http_signer.sign_request(fake_exchange.key.name, "POST", "/v5/order/create", body=json.dumps(BYBIT_ORDER))
    tampered = signed.body.replace('"0.01"', '"0.02"')
    response = requests.post(fake_exchange.url + "/v5/order/create", data=tampered, headers={**signed.headers, "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 401 and "X-BAPI-SIGN" in response.json()["reason"]


def test_the_readme_block_runs_as_written_against_the_fake_exchange(keys, http_emulator, fake_exchange, monkeypatch):
    """README "Quick start for bot authors": the adapter block, with only the exchange's base URL
    pointed at the fake exchange and ZEROCOPY_ENCLAVE at this module's emulator."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(code for code in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "ZeroCopyAuth" in code)
    monkeypatch.setenv("ZEROCOPY_ENCLAVE", http_emulator.address)
    fake_exchange.key = keys["binance-hmac"]
    exec(compile(block.replace("https://api.binance.com", fake_exchange.url), "README.md", "exec"), {})
    assert [(request.method, request.path) for request in fake_exchange.received] == [("GET", "/api/v3/account"), ("POST", "/api/v3/order")]
    for request in fake_exchange.received:
        fake_exchange.verify(request)


# == numbers in requests ===========================================================================
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.decimals(allow_nan=False, allow_infinity=False), st.integers()))
def test_any_finite_number_is_written_as_a_plain_decimal_that_reads_back_as_the_same_value(number):
    text = plain_decimal(number)
    assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text), text
    assert type(number)(text) == number


@pytest.mark.parametrize(("number", "text"), [
    (1e-05, "0.00001"), (Decimal("1E+2"), "100"), (0.1, "0.1"), (30000.0, "30000.0"), (1e22, "10000000000000000000000"),
    (Decimal("0.010"), "0.010"), (7, "7"),
])
def test_numbers_are_written_without_an_exponent(number, text):
    assert plain_decimal(number) == text


@pytest.mark.parametrize(("value", "error"), [
    (True, TypeError), (None, TypeError), (b"1", TypeError), (float("nan"), ValueError), (float("inf"), ValueError),
    (Decimal("-Infinity"), ValueError), (Decimal("NaN"), ValueError),
])
def test_booleans_other_types_and_non_finite_numbers_are_refused_naming_the_parameter(value, error, keys, http_signer):
    with pytest.raises(error, match="'quantity'"):
        http_signer.sign_request(keys["binance-hmac"].name, "POST", "/api/v3/order", params=[("quantity", value)])


@pytest.mark.parametrize("client", ["sync", "async"])
def test_int_float_and_decimal_params_are_signed_as_plain_decimals_and_verify(client, keys, http_emulator, fake_exchange, http_signer):
    """``Signer`` and ``AsyncSigner`` write numbers the same way (one helper)."""
    fake_exchange.key = keys["binance-hmac"]
    order = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", 1e-05), ("price", Decimal("3E+4"))]
    if client == "sync":
        signed = http_signer.sign_request(fake_exchange.key.name, "POST", "/api/v3/order", params=order)
    else:
        async def sign_async() -> Any:
            async with AsyncSigner(http_emulator.address) as signer:
                return await signer.sign_request(fake_exchange.key.name, "POST", "/api/v3/order", params=order)
        signed = asyncio.run(sign_async())
    assert signed.query.startswith("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.00001&price=30000&timestamp=")
    response = requests.post(fake_exchange.url + signed.url_path, headers=signed.headers, timeout=30)
    assert response.json() == {"verified": True}


# == Binance account reads under the default policy =================================================
def test_a_bare_binance_account_read_is_refused_by_the_enclave_as_it_fits_the_fast_withdraw_switch(keys, http_signer):
    with pytest.raises(PolicyRefused) as refusal:
        http_signer.sign_request(keys["binance-hmac"].name, "GET", "/api/v3/account")
    assert refusal.value.rule == "security"


@pytest.mark.parametrize("client", CLIENTS)
def test_the_adapters_sign_a_bare_binance_account_read_with_omit_zero_balances_false(client, keys, fake_exchange, http_signer):
    """The library's timestamp and recvWindow are dropped, leaving no parameter: the adapter adds
    Binance's default ``omitZeroBalances=false`` so the parameter set is the account read's alone."""
    fake_exchange.key = keys["binance-hmac"]
    answer = send(client, http_signer, fake_exchange.key.name, "GET", fake_exchange.url + "/api/v3/account",
                  params={"timestamp": "1600000000000", "recvWindow": "10000"})
    assert verified(answer)
    [received] = fake_exchange.received
    assert [name for name, _ in parse_qsl(received.query)] == ["omitZeroBalances", "timestamp", "signature"]
    assert dict(parse_qsl(received.query))["omitZeroBalances"] == "false"


def test_an_account_read_that_names_omit_zero_balances_keeps_its_value(keys, fake_exchange, http_signer):
    fake_exchange.key = keys["binance-hmac"]
    answer = send("requests", http_signer, fake_exchange.key.name, "GET", fake_exchange.url + "/api/v3/account", params={"omitZeroBalances": "true"})
    assert verified(answer)
    [received] = fake_exchange.received
    assert parse_qsl(received.query)[0] == ("omitZeroBalances", "true")
