"""Attacks on the signing policy, through the real enclave on the emulator (issue 8, items 3 and 5).

The attacker is root on the host: it cannot read the key, but it can ask the enclave to sign
anything. These are the requests it used to get signed in spite of the sealed policy — by
spelling a margin flag another way, writing a symbol in lower case, giving an order two sizes —
and the requests it used to blow up the enclave's memory and the bot's connection with. Each test
asserts the attacker gets a typed refusal, and nothing else.
"""

from __future__ import annotations

import json

import pytest

import reference_signers as reference
from zerocopy import ConnectionClosed, PolicyRefused

pytestmark = pytest.mark.zerocopy

BINANCE_LIMIT = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01", "price": "30000"}
BYBIT_SPOT = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01", "price": "30000"}
OKX_SPOT = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01", "px": "30000"}
KRAKEN_LIMIT = {"ordertype": "limit", "type": "buy", "volume": "0.01", "pair": "XBTUSD", "price": "30000"}


def refused(signer, key, method: str, path: str, *, params=None, body=None) -> PolicyRefused:
    with pytest.raises(PolicyRefused) as info:
        signer.sign_request(key.name, method, path, params=params, body=body)
    return info.value


def json_text(fields: dict) -> str:
    return json.dumps(fields, separators=(",", ":"))


# == item 5: borrowing and size limits sidestepped by spelling ===================================
@pytest.fixture(scope="module")
def default_keys(zerocopy_key):
    """Keys sealed without a policy: the safe default, borrowing = false."""
    return {scheme: zerocopy_key(scheme) for scheme in ("binance-hmac", "bybit-hmac", "okx-hmac")}


@pytest.mark.parametrize(
    "margin",
    [
        {"tdMode": "cross"},  # spot margin: the exchange lends what the order lacks
        {"tdMode": "isolated", "ccy": "USDT", "quickMgnType": "auto_borrow"},
        {"tdMode": "isolated"},
        {"quickMgnType": "auto_borrow"},
    ],
    ids=lambda fields: ",".join(f"{name}={value}" for name, value in fields.items()),
)
def test_okx_margin_orders_are_refused_without_borrowing(margin, default_keys, zerocopy_signer):
    found = refused(zerocopy_signer, default_keys["okx-hmac"], "POST", "/api/v5/trade/order", body=json_text({**OKX_SPOT, **margin}))
    assert found.rule == "borrowing" and "lend" in str(found)


@pytest.mark.parametrize("spelling", ["margin_buy", "Margin_Buy", "margin_BUY", "auto_borrow_repay", "MARGIN-BUY", "MARGINBUY"])
def test_binance_side_effects_in_other_spellings_are_refused(spelling, default_keys, zerocopy_signer):
    params = {**BINANCE_LIMIT, "sideEffectType": spelling}
    found = refused(zerocopy_signer, default_keys["binance-hmac"], "POST", "/sapi/v1/margin/order", params=params)
    assert found.rule == "non_canonical" and "sideEffectType" in str(found) and "documented" in str(found)


@pytest.mark.parametrize("spelling", ['"01"', '"+1"', "true", '"true"', '"1.0"', '"0x1"', "2"])
def test_bybit_leverage_flags_in_other_spellings_are_refused(spelling, default_keys, zerocopy_signer):
    body = json_text(BYBIT_SPOT)[:-1] + f',"isLeverage":{spelling}}}'
    found = refused(zerocopy_signer, default_keys["bybit-hmac"], "POST", "/v5/order/create", body=body)
    assert found.rule == "non_canonical" and "isLeverage" in str(found)


SYMBOL_CAPS = [
    ("binance-hmac", "BTCUSDT", "POST", "/api/v3/order", {**BINANCE_LIMIT, "symbol": "btcusdt", "quantity": "1"}, None),
    ("bybit-hmac", "BTCUSDT", "POST", "/v5/order/create", None, {**BYBIT_SPOT, "symbol": "btcusdt", "qty": "1"}),
    ("okx-hmac", "BTC-USDT", "POST", "/api/v5/trade/order", None, {**OKX_SPOT, "instId": "btc-usdt", "sz": "1"}),
    ("kraken", "XBTUSD", "POST", "/0/private/AddOrder", {**KRAKEN_LIMIT, "pair": "XXBTZUSD", "volume": "1"}, None),
    ("kraken", "XBTUSD", "POST", "/0/private/AddOrder", {**KRAKEN_LIMIT, "pair": "xbt/usd", "volume": "1"}, None),
]


@pytest.mark.parametrize(("scheme", "capped", "method", "path", "params", "body"), SYMBOL_CAPS, ids=lambda v: v if isinstance(v, str) and "/" not in v else None)
def test_a_symbol_written_another_way_still_gets_its_cap(scheme, capped, method, path, params, body, zerocopy_key, zerocopy_signer):
    key = zerocopy_key(scheme, policy={"max_quantity": "10", "per_symbol": {capped: {"max_quantity": "0.01"}}})
    found = refused(zerocopy_signer, key, method, path, params=params, body=json_text(body) if body else None)
    assert found.rule == "max_quantity" and "for " in str(found)


def test_an_order_with_two_sizes_is_limited_by_the_larger(zerocopy_key, zerocopy_signer):
    # Binance may fill either quantity or quoteOrderQty: the caps must hold for whichever it picks.
    capped_quantity = zerocopy_key("binance-hmac", policy={"max_quantity": "0.01"})
    market = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001", "quoteOrderQty": "1000000"}
    found = refused(zerocopy_signer, capped_quantity, "POST", "/api/v3/order", params=market)
    assert found.rule == "quantity_unknown" and "quote quantity" in str(found)
    capped_notional = zerocopy_key("binance-hmac", policy={"max_notional": "1000"})
    limit = {**BINANCE_LIMIT, "quantity": "1", "quoteOrderQty": "1"}  # 1 x 30000, or 1 USDT
    found = refused(zerocopy_signer, capped_notional, "POST", "/api/v3/order", params=limit)
    assert found.rule == "max_notional" and "30000" in str(found)


# == a recv window the host leaves out ============================================================
@pytest.mark.parametrize(("method", "path", "params", "body"), [
    ("POST", "/v5/order/create", None, json_text(BYBIT_SPOT)),
    ("GET", "/v5/order/realtime", {"category": "spot"}, None),
], ids=["order", "read"])
def test_a_bybit_request_without_a_recv_window_is_signed_within_the_policy_cap(method, path, params, body, zerocopy_key, zerocopy_signer):
    # The cap refuses recv_window=5000 when asked for, but leaving it out used to sign Bybit's
    # default 5000 ms window: a request replayable five times longer than the policy allows.
    key = zerocopy_key("bybit-hmac", policy={"freshness": {"max_recv_window_ms": 1000}})
    found = refused(zerocopy_signer, key, method, path, params={**(params or {}), "recv_window": "5000"}, body=body)
    assert found.rule == "recv_window"
    signed = zerocopy_signer.sign_request(key.name, method, path, params=params, body=body)
    headers = signed.headers
    assert int(headers["X-BAPI-RECV-WINDOW"]) <= 1000
    expected = reference.bybit(
        "bybit-hmac", key.secret, key.api_key, method, [*(params or {}).items(), ("recv_window", headers["X-BAPI-RECV-WINDOW"])],
        (body or "").encode(), int(headers["X-BAPI-TIMESTAMP"]),
    )
    assert tuple(headers.items()) == expected.headers and signed.query == expected.query


# == item 3: requests too large to judge ===========================================================
def long_names(count: int, tag: str) -> list[tuple[str, str]]:
    """``count`` distinct parameter names of 64 characters (the longest a name may be)."""
    return [(f"{tag}{index:06d}".ljust(64, "x"), "1") for index in range(count)]


@pytest.mark.parametrize("count", [14_000, 15_450])  # a 938 KB refusal; one past the 1 MiB frame
def test_thousands_of_long_parameter_names_get_a_short_typed_refusal(count, default_keys, zerocopy_signer):
    try:
        found = refused(zerocopy_signer, default_keys["binance-hmac"], "POST", "/x", params=long_names(count, "a"))
    except ConnectionClosed:
        pytest.fail("the bot got ConnectionClosed instead of a refusal")
    assert found.rule == "too_large" and len(str(found).encode()) <= 300
    # the connection still serves
    assert zerocopy_signer.sign_request(default_keys["binance-hmac"].name, "POST", "/api/v3/order", params=BINANCE_LIMIT).query


def _rss_kib(emulator) -> int:
    pid = getattr(getattr(emulator, "enclave", None), "pid", None)
    if pid is None:
        pytest.skip("needs the emulator's own enclave process (not --zerocopy-enclave)")
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_huge_requests_leave_the_enclave_memory_where_it_was(zerocopy_emulator, zerocopy_key, zerocopy_signer):
    # 40 requests of 14,000 long names took the enclave from 61 to 279 MB (refusals, receipts, verdicts).
    key = zerocopy_key("binance-hmac")
    before = _rss_kib(zerocopy_emulator)
    for attempt in range(40):
        with pytest.raises(PolicyRefused):
            zerocopy_signer.sign_request(key.name, "POST", "/x", params=long_names(14_000, f"m{attempt:02d}"))
    assert _rss_kib(zerocopy_emulator) - before < 32 * 1024


def test_remembered_verdicts_are_bounded_in_bytes(zerocopy_emulator, zerocopy_key, zerocopy_signer):
    # Every new parameter set is a new shape to remember: 3,000 of 60 long names each kept ~40 MB.
    key = zerocopy_key("binance-hmac")
    before = _rss_kib(zerocopy_emulator)
    for shape in range(3000):
        with pytest.raises(PolicyRefused):
            zerocopy_signer.sign_request(key.name, "POST", "/api/v3/order", params=long_names(60, f"v{shape:05d}"))
    assert _rss_kib(zerocopy_emulator) - before < 16 * 1024
