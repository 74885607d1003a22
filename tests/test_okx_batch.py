"""OKX as python-okx and ccxt send it: null/"" fields are absent, batches of orders are judged order
by order (and counted as that many orders), and what comes back is complete (Content-Type).

Engine-level tests first, then end to end through the real enclave on the emulator, checked with
the independent reference signer (``tests/reference_signers.py``) in an enclave of this module's
own, so its keys do not count against the session enclave's limit.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_signers as reference
from enclave.protocol.exchanges.okx import OkxHmac
from policy_helpers import NOW, refusal, state
from zerocopy import PolicyRefused, Signer
from zerocopy.policy import load_policy
from zerocopy.sealing import seal

BATCH = "/api/v5/trade/batch-orders"
ORDER = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01", "px": "30000"}
# python-okx's TradeAPI.place_order, market buy: every optional field "" and attachAlgoOrds null.
PYTHON_OKX_MARKET = {
    "instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "market", "sz": "100", "ccy": "", "clOrdId": "", "tag": "",
    "posSide": "", "px": "", "reduceOnly": "", "tgtCcy": "", "stpMode": "", "attachAlgoOrds": None, "pxUsd": "", "pxVol": "",
    "banAmend": "", "tradeQuoteCcy": "",
}


def order(**changes: str) -> dict:
    return {**ORDER, **changes}


def batch(*orders: dict) -> bytes:
    return json.dumps(list(orders)).encode()  # json.dumps' default spacing, as the clients send it


# -- the engine ------------------------------------------------------------------------------------
def test_a_batch_within_limits_is_signed_as_its_canonical_array() -> None:
    okx = state({"max_quantity": "1", "max_notional": "50000"}, "okx-hmac")
    authorized = okx.authorize_request("POST", BATCH, (), batch(order(), order(side="sell", px="31000", clOrdId="b2")), NOW)
    assert json.loads(authorized.body) == [order(), order(side="sell", px="31000", clOrdId="b2")]
    assert b" " not in authorized.body and authorized.endpoints == (f"POST {BATCH}",) and authorized.kind == "order"
    assert authorized.symbol == "BTC-USDT" and authorized.quantity == Decimal("0.02") and authorized.notional == Decimal("610")


@pytest.mark.parametrize(("bad", "rule"), [
    (order(sz="2"), "max_quantity"),
    (order(instId="ETH-USDT"), "symbol"),
    (order(tdMode="cross"), "borrowing"),
    (order(ordType="LIMIT"), "non_canonical"),
    (order(toAddr="0xabc"), "unknown_parameter"),
    ({**order(), "px": None, "ordType": "limit"}, "notional_unknown"),
])
def test_one_refused_order_refuses_the_batch_naming_its_index(bad: dict, rule: str) -> None:
    okx = state({"symbols": ["BTC-USDT"], "max_quantity": "1", "max_notional": "50000"}, "okx-hmac")
    found = refusal(okx, "POST", BATCH, (), batch(order(), order(), bad, order()))
    assert found.rule == rule and str(found).startswith("order 2 of the batch: ")


def test_a_batch_is_bounded_and_only_a_batch_endpoint_takes_an_array() -> None:
    okx = state({"rate": {"per_second": "1000", "burst": 1000}}, "okx-hmac")
    okx.authorize_request("POST", BATCH, (), batch(*[order()] * 20), NOW)
    assert refusal(okx, "POST", BATCH, (), batch(*[order()] * 21)).rule == "too_large"
    assert refusal(okx, "POST", BATCH, (), b"[]").rule == "non_canonical"
    assert refusal(okx, "POST", BATCH, (), b'[["x"]]').rule == "non_canonical"
    assert refusal(okx, "POST", "/api/v5/trade/order", (), batch(order())).rule == "non_canonical"
    # One object alone is a batch of one, and signed as the array OKX documents.
    assert okx.authorize_request("POST", BATCH, (), json.dumps(order()).encode(), NOW).body == json.dumps([order()], separators=(",", ":")).encode()


def test_batch_cancels_and_amends_are_judged_per_item() -> None:
    okx = state({"symbols": ["BTC-USDT"], "max_quantity": "1"}, "okx-hmac")
    cancels = batch({"instId": "BTC-USDT", "ordId": "1"}, {"instId": "BTC-USDT", "clOrdId": "c2"})
    assert okx.authorize_request("POST", "/api/v5/trade/cancel-batch-orders", (), cancels, NOW).kind == "cancel"
    found = refusal(okx, "POST", "/api/v5/trade/cancel-batch-orders", (), batch({"instId": "BTC-USDT", "ordId": "1"}, {"instId": "ETH-USDT", "ordId": "2"}))
    assert found.rule == "symbol" and "order 1 of the batch" in str(found)
    amends = "/api/v5/trade/amend-batch-orders"
    assert okx.authorize_request("POST", amends, (), batch({"instId": "BTC-USDT", "ordId": "1", "newSz": "0.5"}), NOW).kind == "amend"
    assert refusal(okx, "POST", amends, (), batch({"instId": "BTC-USDT", "ordId": "1", "newSz": "0.5"}, {"instId": "BTC-USDT", "ordId": "2", "newSz": "5"})).rule == "max_quantity"


def test_a_policy_naming_endpoints_must_name_the_batch() -> None:
    named = state({"allow": ["POST /api/v5/trade/order"]}, "okx-hmac")
    assert refusal(named, "POST", BATCH, (), batch(order())).rule == "endpoint"


def test_twenty_orders_just_under_the_cap_trip_the_window_as_twenty_requests_would() -> None:
    policy = {"max_notional": "1000", "notional_window": {"seconds": 60, "max_notional": "10000"}, "rate": {"per_second": "1000", "burst": 1000}}
    under = order(sz="0.0333", px="30000")  # 999 each: 20 of them are 19980
    one_by_one = state(policy, "okx-hmac")
    rules = []
    for _ in range(20):
        try:
            one_by_one.authorize_request("POST", "/api/v5/trade/order", (), json.dumps(under).encode(), NOW)
        except Exception as refused:  # noqa: BLE001 - the rule is what is compared
            rules.append(refused.rule)
    assert rules and set(rules) == {"notional_window"}
    batched = state(policy, "okx-hmac")
    assert refusal(batched, "POST", BATCH, (), batch(*[under] * 20)).rule == "notional_window"
    # All or none: the refused batch counted nothing, so ten of them still fit.
    batched.authorize_request("POST", BATCH, (), batch(*[under] * 10), NOW)


def test_each_order_of_a_batch_takes_a_token() -> None:
    okx = state({"rate": {"per_second": "1", "burst": 20}}, "okx-hmac")
    okx.authorize_request("POST", BATCH, (), batch(*[order()] * 15), NOW)
    assert refusal(okx, "POST", BATCH, (), batch(*[order()] * 6)).rule == "rate"
    okx.authorize_request("POST", BATCH, (), batch(*[order()] * 5), NOW)  # the refused batch gave its tokens back
    assert refusal(okx, "POST", "/api/v5/trade/order", (), json.dumps(order()).encode()).rule == "rate"


GENERATED_ORDER = st.fixed_dictionaries({
    "instId": st.sampled_from(["BTC-USDT", "ETH-USDT", "btc-usdt"]),
    "tdMode": st.sampled_from(["cash", "cash", "cross"]),
    "side": st.sampled_from(["buy", "sell"]),
    "ordType": st.sampled_from(["limit", "market", "post_only"]),
    "sz": st.sampled_from(["0.01", "0.5", "1", "3", "", "1e3"]),
    "px": st.sampled_from(["30000", "100", "", "70000"]),
}, optional={"clOrdId": st.sampled_from(["", "a1"]), "attachAlgoOrds": st.none(), "tgtCcy": st.sampled_from(["base_ccy", "quote_ccy", ""])})
PER_ORDER_POLICY = {"symbols": ["BTC-USDT"], "max_quantity": "2", "max_notional": "60000", "rate": {"per_second": "100000", "burst": 100000}}


@settings(max_examples=150, deadline=None)
@given(st.lists(GENERATED_ORDER, min_size=1, max_size=20))
def test_a_batch_is_refused_iff_some_order_alone_would_be(orders: list[dict]) -> None:
    alone = []
    for each in orders:
        try:
            state(PER_ORDER_POLICY, "okx-hmac").authorize_request("POST", "/api/v5/trade/order", (), json.dumps(each).encode(), NOW)
            alone.append(None)
        except Exception as refused:  # noqa: BLE001 - Refusal, compared below
            alone.append(refused.rule)
    first = next((index for index, rule in enumerate(alone) if rule is not None), None)
    okx = state(PER_ORDER_POLICY, "okx-hmac")
    if first is None:
        okx.authorize_request("POST", BATCH, (), batch(*orders), NOW)
    else:
        found = refusal(okx, "POST", BATCH, (), batch(*orders))
        assert found.rule == alone[first] and str(found).startswith(f"order {first} of the batch: ")


# -- end to end ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def enclave(zerocopy_emulator):
    with zerocopy_emulator.launch() as launched:
        yield launched


def _provision(emulator, address: str, name: str, policy: dict) -> tuple[bytes, str]:
    secret, api_key = OkxHmac.fresh_secret(), "okx-batch-" + os.urandom(4).hex()
    kms_key = emulator.kms.create_key()["KeyMetadata"]["Arn"]
    bundle = seal(emulator.kms, key_id=kms_key, name=name, scheme="okx-hmac", secret=secret, api_key=api_key, policy=load_policy(policy))
    with Signer(address) as signer:
        assert signer.provision([bundle.to_json()], credentials=emulator.credentials)[0].loaded
    return secret, api_key


@pytest.fixture(scope="module")
def okx_key(zerocopy_emulator, enclave):
    policy = {"symbols": ["BTC-USDT"], "max_notional": "1000", "notional_window": {"seconds": 600, "max_notional": "10000"},
              "freshness": {"enabled": True}, "rate": {"per_second": "1000", "burst": 1000}}
    return _provision(zerocopy_emulator, enclave.address, "okx-batch", policy)


def _verify(secret: bytes, api_key: str, path: str, signed) -> None:
    """The reference signer, at the enclave's timestamp, gives the same headers for the returned body."""
    body = signed.body.encode() if isinstance(signed.body, str) else bytes(signed.body)
    stamp = signed.headers["OK-ACCESS-TIMESTAMP"]
    now_ms = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000 + 0.5)
    expected = reference.okx(secret, api_key, "POST", path, (), body, now_ms)
    assert tuple(signed.headers.items()) == expected.headers
    assert signed.headers["Content-Type"] == "application/json"


@pytest.mark.zerocopy
def test_python_okx_market_order_is_signed_without_its_empty_fields(enclave, okx_key) -> None:
    secret, api_key = okx_key
    with Signer(enclave.address) as signer:
        signed = signer.sign_request("okx-batch", "POST", "/api/v5/trade/order", body=json.dumps(PYTHON_OKX_MARKET))
    assert json.loads(signed.body) == {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "market", "sz": "100"}
    _verify(secret, api_key, "/api/v5/trade/order", signed)


@pytest.mark.zerocopy
def test_batches_end_to_end(enclave, okx_key) -> None:
    secret, api_key = okx_key
    with Signer(enclave.address) as signer:
        signed = signer.sign_request("okx-batch", "POST", BATCH, body=batch(order(), order(side="sell", clOrdId="x2")).decode())
        assert json.loads(signed.body) == [order(), order(side="sell", clOrdId="x2")]
        _verify(secret, api_key, BATCH, signed)
        with pytest.raises(PolicyRefused) as refused:
            signer.sign_request("okx-batch", "POST", BATCH, body=batch(order(), order(sz="5")).decode())
        assert refused.value.rule == "max_notional" and "order 1 of the batch" in str(refused.value)
        # An attacker's 20 orders each just under the per-order cap: 20 × 999 is above the window's 10000.
        under = order(sz="0.0333")
        with pytest.raises(PolicyRefused) as refused:
            signer.sign_request("okx-batch", "POST", BATCH, body=batch(*[under] * 20).decode())
        assert refused.value.rule == "notional_window"
