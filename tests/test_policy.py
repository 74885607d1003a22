"""The signing policy: its document format and the decision on every request (pure, no emulator).

A compromised host can still ask the enclave to sign, so these tests pin what a policy lets
through: the parsing and canonical form that get hashed into the KMS encryption context, the safe
default, and per exchange the rule that refuses each dangerous request — asserting the rule's name
and a word of its message, since the host and the audit log see both.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest

from enclave.protocol.bundle import policy_digest
from enclave.protocol.exchange import DANGEROUS_CATEGORIES, Flags
from enclave.protocol.policy import Authorized, PolicyError, PolicyState, Refusal, SigningPolicy, normalize_document
from enclave.protocol.policy import engine, limits
from enclave.schemes import load_key
from policy_helpers import (
    CATALOGUES,
    EXCHANGES,
    RAW_SCHEMES,
    DANGEROUS,
    ENUMERATED,
    EXCHANGE_SCHEMES,
    NOW,
    SCHEME_FOR,
    binance_order,
    concrete_path,
    endpoint_fields,
    json_body,
    misspellings,
    permissive,
    refusal,
    request,
    state,
    window_total,
)
from zerocopy._cli import main as cli
from zerocopy.policy import explain, load_policy, parse_policy_text, simulate

POLICIES = Path(__file__).parent / "data" / "policies"


def policy_error(document: object, scheme: str | None = None) -> str:
    with pytest.raises(PolicyError) as info:
        if scheme is None:
            normalize_document(document)
        else:
            SigningPolicy.parse(document, scheme=scheme)  # type: ignore[arg-type]
    return str(info.value)


# == parsing and the canonical form ============================================================
FULL = {
    "version": 1,
    "scheme": "binance-hmac",
    "allow": ["POST /api/v3/order", "DELETE /api/v3/order", "POST /api/v3/order/test", "POST /sapi/v1/margin/order"],
    "raw_signing": False,
    "symbols": ["ETHUSDT", "BTCUSDT"],
    "max_quantity": "0.50",
    "max_notional": "25000.00",
    "per_symbol": {"BTCUSDT": {"max_quantity": "0.10", "max_notional": 5000}},
    "notional_window": {"seconds": 3600, "max_notional": "100000"},
    "rate": {"per_second": "5.0", "burst": 10},
    "freshness": {"enabled": True, "max_skew_ms": 2000, "max_recv_window_ms": 3000},
}


def test_every_field_normalizes() -> None:
    assert normalize_document(FULL) == {
        "version": 1,
        "scheme": "binance-hmac",
        "allow": ["DELETE /api/v3/order", "POST /api/v3/order", "POST /api/v3/order/test", "POST /sapi/v1/margin/order"],
        "raw_signing": False,
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "max_quantity": "0.5",
        "max_notional": "25000",
        "per_symbol": {"BTCUSDT": {"max_quantity": "0.1", "max_notional": "5000"}},
        "notional_window": {"seconds": 3600, "max_notional": "100000"},
        "rate": {"per_second": "5", "burst": 10},
        "freshness": {"enabled": True, "max_skew_ms": 2000, "max_recv_window_ms": 3000},
    }


def test_every_field_is_parsed_for_the_scheme() -> None:
    policy = SigningPolicy.parse(FULL, scheme="binance-hmac")
    assert policy.exchange is not None and policy.exchange.name == "binance" and policy.raw_signing is False
    assert policy.allow == frozenset(FULL["allow"])
    assert policy.symbols == frozenset({"BTCUSDT", "ETHUSDT"})
    assert (policy.limits.max_quantity, policy.limits.max_notional) == (Decimal("0.5"), Decimal("25000"))
    assert policy.per_symbol["BTCUSDT"].max_quantity == Decimal("0.1")
    assert (policy.window_seconds, policy.window_max) == (3600, Decimal("100000"))
    assert policy.rate == (Decimal(5), 10)
    assert (policy.freshness, policy.max_skew_ms, policy.max_recv_window_ms) == (True, 2000, 3000)


def test_an_empty_document_is_version_1() -> None:
    assert normalize_document({}) == {"version": 1}


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("0.50", "0.5"), ("0.5", "0.5"), ("100", "100"), ("100.000", "100"), ("0.0", "0"), ("0", "0"), (7, "7"), ("0.000001", "0.000001"), ("1000000.10", "1000000.1")],
)
def test_decimals_are_normalized(written: object, canonical: str) -> None:
    assert normalize_document({"max_quantity": written})["max_quantity"] == canonical


@pytest.mark.parametrize("written", ["1e3", "-1", "+1", ".5", "5.", "1,5", "01.5", " 1", "0x10", "", "NaN", "Infinity", 0.5, True, None, -3, 10**40, [1], {"a": 1}])
def test_bad_decimals_are_refused_naming_the_field(written: object) -> None:
    assert "max_notional" in policy_error({"max_notional": written})
    assert "per_symbol.BTCUSDT.max_quantity" in policy_error({"per_symbol": {"BTCUSDT": {"max_quantity": written}}})


def test_toml_floats_are_refused_and_integers_accepted() -> None:
    with pytest.raises(PolicyError, match=r"as a string"):
        parse_policy_text('max_quantity = 0.5\n')
    with pytest.raises(PolicyError, match=r"as a string"):
        parse_policy_text('[rate]\nper_second = 2.5\nburst = 3\n')
    with pytest.raises(PolicyError, match=r"as a string"):
        parse_policy_text('{"max_notional": 100.0}')  # JSON too
    assert parse_policy_text('max_quantity = 2\n[rate]\nper_second = 5\nburst = 10\n') == {
        "version": 1, "max_quantity": "2", "rate": {"per_second": "5", "burst": 10},
    }


def test_text_that_is_neither_toml_nor_json_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match=r"not valid TOML or JSON"):
        parse_policy_text("allow = [")
    with pytest.raises(PolicyError, match=r"not valid TOML or JSON"):
        parse_policy_text('{"allow": ')


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"allowed": []}, "'allowed'"),
        ({"rate": {"per_second": "1", "burst": 1, "bucket": 2}}, "rate.bucket"),
        ({"notional_window": {"seconds": 1, "max_notional": "1", "hours": 1}}, "notional_window.hours"),
        ({"freshness": {"enabled": True, "skew": 1}}, "freshness.skew"),
        ({"per_symbol": {"BTCUSDT": {"max_size": "1"}}}, "per_symbol.BTCUSDT.max_size"),
        ({7: "x"}, "field names must be strings"),
        ({"rate": {1: 2}}, "rate: field names must be strings"),
    ],
)
def test_unknown_fields_are_refused_by_name(document: dict, named: str) -> None:
    assert named in policy_error(document)


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ([], "table"),
        ("allow", "table"),
        ({"version": 2}, "version"),
        ({"version": True}, "version"),
        ({"version": 1.0}, "version"),
        ({"version": "1"}, "version"),
        ({"scheme": "binance"}, "scheme must be one of"),
        ({"scheme": ["binance-hmac"]}, "scheme"),
        ({"allow": "POST /api/v3/order"}, "allow must be a list"),
        ({"allow": [1]}, "allow must be a list"),
        ({"allow": ["/api/v3/order"]}, "allow entry"),
        ({"allow": ["FETCH /api/v3/order"]}, "allow entry"),
        ({"allow": ["POST  /api/v3/order"]}, "allow entry"),
        ({"allow": ["POST /api/v3/order", "POST /api/v3/order"]}, "twice"),
        ({"raw_signing": "no"}, "raw_signing"),
        ({"raw_signing": 0}, "raw_signing"),
        ({"symbols": []}, "symbols"),
        ({"symbols": "BTCUSDT"}, "symbols"),
        ({"symbols": ["BTC USDT"]}, "symbols"),
        ({"symbols": ["BTCUSDT", 1]}, "symbols"),
        ({"per_symbol": {}}, "per_symbol"),
        ({"per_symbol": {"BTCUSDT": {}}}, "per_symbol"),
        ({"per_symbol": {"BTC USDT": {"max_quantity": "1"}}}, "per_symbol"),
        ({"per_symbol": ["BTCUSDT"]}, "per_symbol"),
        ({"notional_window": {"seconds": 60}}, "notional_window needs"),
        ({"notional_window": {"seconds": 0, "max_notional": "1"}}, "notional_window.seconds"),
        ({"notional_window": {"seconds": "60", "max_notional": "1"}}, "notional_window.seconds"),
        ({"notional_window": 60}, "notional_window must be a table"),
        ({"rate": {"per_second": "1"}}, "rate needs"),
        ({"rate": {"per_second": "0", "burst": 1}}, "rate.per_second"),
        ({"rate": {"per_second": "1", "burst": 0}}, "rate.burst"),
        ({"rate": {"per_second": "1", "burst": True}}, "rate.burst"),
        ({"rate": {"per_second": "1", "burst": 100001}}, "rate.burst"),
        ({"freshness": {"enabled": "yes"}}, "freshness.enabled"),
        ({"freshness": {"max_skew_ms": 0}}, "freshness.max_skew_ms"),
        ({"freshness": {"max_recv_window_ms": 60001}}, "freshness.max_recv_window_ms"),
        ({"freshness": {"max_skew_ms": "5000"}}, "freshness.max_skew_ms"),
        ({"removable": "yes"}, "removable must be true or false"),
        ({"removable": 1}, "removable must be true or false"),
    ],
)
def test_wrong_types_and_values_are_refused_by_name(document: object, named: str) -> None:
    assert named in policy_error(document)


@pytest.mark.parametrize(
    ("scheme", "endpoint"),
    [
        ("binance-hmac", "POST /api/v5/trade/order"),  # an OKX endpoint
        ("binance-hmac", "POST /api/v3/orders"),
        ("binance-ws-hmac", "POST /api/v3/order"),  # REST, not a WebSocket method
        ("okx-hmac", "GET /api/v5/trade/order-history"),
        ("kraken", "POST /0/private/Stake"),
        ("coinbase-jwt", "GET /api/v3/brokerage/products"),
    ],
)
def test_endpoints_the_scheme_does_not_know_are_refused(scheme: str, endpoint: str) -> None:
    message = policy_error({"allow": [endpoint]}, scheme)
    assert "allow" in message and endpoint in message and scheme in message


def test_a_policy_written_for_another_scheme_is_refused() -> None:
    message = policy_error({"scheme": "okx-hmac", "max_quantity": "1"}, "binance-hmac")
    assert "okx-hmac" in message and "binance-hmac" in message
    assert SigningPolicy.parse({"scheme": "binance-rsa"}, scheme="binance-rsa").scheme == "binance-rsa"


def test_canonical_form_and_digest_ignore_key_order_and_trailing_zeros() -> None:
    shuffled = {
        "freshness": {"max_recv_window_ms": 3000, "max_skew_ms": 2000, "enabled": True},
        "rate": {"burst": 10, "per_second": "5"},
        "notional_window": {"max_notional": "100000.0", "seconds": 3600},
        "per_symbol": {"BTCUSDT": {"max_notional": "5000.000", "max_quantity": "0.1"}},
        "max_notional": "25000",
        "max_quantity": "0.5",
        "symbols": ["BTCUSDT", "ETHUSDT", "BTCUSDT"],
        "raw_signing": False,
        "allow": list(reversed(FULL["allow"])),
        "scheme": "binance-hmac",
    }
    assert normalize_document(shuffled) == normalize_document(FULL)
    assert policy_digest(normalize_document(shuffled)) == policy_digest(normalize_document(FULL))
    # ... and a real difference is a different digest
    assert policy_digest(normalize_document({**FULL, "max_quantity": "0.51"})) != policy_digest(normalize_document(FULL))
    assert policy_digest(None) == "default"


def test_toml_and_json_texts_of_one_policy_have_one_digest() -> None:
    toml = 'max_quantity = "0.50"\nsymbols = ["BTCUSDT"]\n[rate]\nburst = 3\nper_second = "1.0"\n'
    text = json.dumps({"rate": {"per_second": "1", "burst": 3}, "symbols": ["BTCUSDT"], "max_quantity": "0.5"})
    assert policy_digest(parse_policy_text(toml)) == policy_digest(parse_policy_text(text))
    assert load_policy({"max_quantity": "0.500"}) == {"version": 1, "max_quantity": "0.5"}
    assert load_policy(None) is None


@pytest.mark.parametrize("scheme", RAW_SCHEMES)
@pytest.mark.parametrize(
    "field",
    [
        {"allow": ["POST /api/v3/order"]},
        {"symbols": ["BTCUSDT"]},
        {"max_quantity": "1"},
        {"max_notional": "1"},
        {"per_symbol": {"BTCUSDT": {"max_quantity": "1"}}},
        {"notional_window": {"seconds": 1, "max_notional": "1"}},
        {"freshness": {"enabled": False}},
    ],
    ids=lambda field: next(iter(field)),
)
def test_raw_schemes_take_only_raw_signing_and_rate(scheme: str, field: dict) -> None:
    message = policy_error(field, scheme)
    assert "raw payloads only" in message and repr(next(iter(field))) in message


@pytest.mark.parametrize("scheme", RAW_SCHEMES)
def test_only_a_policy_that_says_so_makes_a_key_removable(scheme: str) -> None:
    """``removable`` (REMOVE may unload the key: test keys) applies to every scheme and is off by default."""
    assert state(None, scheme).policy.removable is False
    assert state({"removable": True}, scheme).policy.removable is True
    assert SigningPolicy.parse({"removable": True}, scheme="binance-hmac").removable is True
    assert any(line.startswith("Removable:") for line in explain(SigningPolicy.parse({"removable": True}, scheme=scheme)))
    assert not any(line.startswith("Removable:") for line in explain(SigningPolicy.parse(None, scheme=scheme)))


@pytest.mark.parametrize("scheme", RAW_SCHEMES)
def test_raw_schemes_sign_raw_payloads_by_default_and_obey_rate(scheme: str) -> None:
    state(None, scheme).authorize_raw(NOW)
    assert state({"raw_signing": False}, scheme).policy.raw_signing is False
    with pytest.raises(Refusal) as off:
        state({"raw_signing": False}, scheme).authorize_raw(NOW)
    assert off.value.rule == "raw_signing" and "off" in str(off.value)
    limited = state({"rate": {"per_second": "1", "burst": 2}}, scheme)
    limited.authorize_raw(NOW)
    limited.authorize_raw(NOW)
    with pytest.raises(Refusal) as rate:
        limited.authorize_raw(NOW)
    assert rate.value.rule == "rate" and "per second" in str(rate.value)
    limited.authorize_raw(NOW + 1000)
    # no request format at all
    assert refusal(state(None, scheme), "POST", "/api/v3/order", binance_order()).rule == "scheme"


@pytest.mark.parametrize(
    "field",
    [{"symbols": ["BTC-USD"]}, {"max_quantity": "1"}, {"max_notional": "1"}, {"per_symbol": {"BTC-USD": {"max_quantity": "1"}}}, {"notional_window": {"seconds": 60, "max_notional": "1"}}, {"borrowing": False}],
    ids=lambda field: next(iter(field)),
)
def test_coinbase_refuses_body_limits_and_says_why(field: dict) -> None:
    message = policy_error(field, "coinbase-jwt")
    assert "covers the method and path, not the body" in message and repr(next(iter(field))) in message


def test_coinbase_takes_endpoints_and_rate() -> None:
    policy = SigningPolicy.parse({"allow": ["POST /api/v3/brokerage/orders"], "rate": {"per_second": "1", "burst": 1}}, scheme="coinbase-jwt")
    assert policy.allow == {"POST /api/v3/brokerage/orders"}
    assert any("do not cover the request body" in line for line in explain(policy))


def test_explain_states_the_important_facts() -> None:
    text = "\n".join(explain(SigningPolicy.parse({**FULL, "freshness": {"enabled": False}}, scheme="binance-hmac")))
    assert "POST /api/v3/order" in text and "Requests that may be signed (3)" in text
    # GET /api/v3/order is not allowed and takes a cancel's parameters: the signature does not cover the path
    assert "DELETE /api/v3/order is signed only with cancelRestrictions or newClientOrderId: without, the policy does not allow GET /api/v3/order" in text
    assert "Withdrawals, transfers" in text and "refused" in text
    assert "do not cover the path" in text
    assert "Symbols: BTCUSDT, ETHUSDT" in text
    assert "at most 0.5 in quantity" in text and "at most 25000 in notional" in text
    assert "BTCUSDT orders: at most quantity 0.1 and notional 5000" in text
    assert "at most 100000 notional in any 3600 s" in text
    assert "5 signatures per second" in text and "bursts of 10" in text
    assert "freshness is NOT checked" in text and "do not use in production" in text
    assert "Raw payload signing (Signer.sign) is refused" in text


def test_explain_warns_about_dangerous_endpoints_and_raw_signing() -> None:
    allow = permissive("binance")["allow"] + ["POST /sapi/v1/capital/withdraw/apply"]
    text = "\n".join(explain(SigningPolicy.parse({"allow": allow, "raw_signing": True}, scheme="binance-hmac")))
    assert "WARNING" in text and "POST /sapi/v1/capital/withdraw/apply" in text
    assert "ALLOWED" in text and "no further checks" in text
    default = "\n".join(explain(SigningPolicy.parse(None, scheme="bybit-hmac")))
    assert "No policy was sealed" in default and "safe default" in default
    assert "within 5000 ms" in default and "10 signatures per second" in default


# == safe defaults ==============================================================================
@pytest.mark.parametrize("scheme", EXCHANGE_SCHEMES)
def test_default_refuses_raw_signing_for_exchange_keys(scheme: str) -> None:
    with pytest.raises(Refusal) as info:
        state(None, scheme).authorize_raw(NOW)
    assert info.value.rule == "raw_signing" and "sign_request" in str(info.value)


@pytest.mark.parametrize("scheme", EXCHANGE_SCHEMES)
def test_default_allows_exactly_the_trade_and_read_endpoints(scheme: str) -> None:
    policy = SigningPolicy.parse(None, scheme=scheme)
    assert policy.exchange is not None
    endpoints = CATALOGUES[policy.exchange.name]
    assert policy.allow == {e.name for e in endpoints if e.category in {"trade", "read"}}
    assert any(e.category == "trade" for e in endpoints if e.name in policy.allow)
    assert not policy.allow & {e.name for e in endpoints if e.category in DANGEROUS_CATEGORIES}
    assert policy.rate == (Decimal(10), 20) and policy.freshness and policy.max_skew_ms == 5000 and policy.max_recv_window_ms == 5000


@pytest.mark.parametrize(("catalogue", "endpoint"), DANGEROUS)
def test_default_refuses_every_dangerous_endpoint(catalogue: str, endpoint) -> None:
    method, path, params, body = request(catalogue, endpoint.method, concrete_path(endpoint.path), endpoint_fields(catalogue, endpoint))
    for document in (None, permissive(catalogue)):
        found = refusal(state(document, SCHEME_FOR[catalogue]), method, path, params, body)
        assert found.rule == endpoint.category, found
        assert "which the policy does not name" in str(found)
        # it names this endpoint, or another of the same category taking the same parameters
        # (a bare Binance timestamp fits both fast-withdraw switches; asset and futures transfers share theirs)
        named = [e for e in CATALOGUES[catalogue] if e.name in str(found)]
        assert named and all(e.category == endpoint.category for e in named), found


@pytest.mark.parametrize(("catalogue", "endpoint"), DANGEROUS)
def test_a_dangerous_endpoint_is_signed_once_named(catalogue: str, endpoint) -> None:
    method, path, params, body = request(catalogue, endpoint.method, concrete_path(endpoint.path), endpoint_fields(catalogue, endpoint))
    named = [e.name for e in CATALOGUES[catalogue]]  # everything: the parameter set may fit several endpoints
    authorized = state({"allow": named}, SCHEME_FOR[catalogue]).authorize_request(method, path, params, body, NOW)
    assert endpoint.name in authorized.endpoints


def test_default_applies_rate_and_freshness() -> None:
    binance = state(None, "binance-hmac")
    for _ in range(20):
        binance.authorize_request("POST", "/api/v3/order", binance_order(), b"", NOW)
    assert refusal(binance, "POST", "/api/v3/order", binance_order()).rule == "rate"
    old = refusal(state(None, "binance-hmac"), "POST", "/api/v3/order", binance_order(timestamp=str(NOW - 5001)))
    assert old.rule == "freshness" and "5001 ms" in str(old)


# == Binance REST: the signature covers the parameters only ==================================
def test_a_spot_order_fits_three_endpoints_and_is_signed_only_if_all_are_allowed() -> None:
    authorized = state(None, "binance-hmac").authorize_request("POST", "/api/v3/order", binance_order(), b"", NOW)
    assert authorized.endpoints == ("POST /api/v3/order", "POST /api/v3/order/test", "POST /sapi/v1/margin/order")
    assert authorized.kind == "order" and authorized.params == binance_order()
    assert (authorized.symbol, authorized.quantity, authorized.notional) == ("BTCUSDT", Decimal("0.01"), Decimal("300"))


def test_allowing_only_the_test_endpoint_refuses_a_test_order() -> None:
    found = refusal(state({"allow": ["POST /api/v3/order/test"]}, "binance-hmac"), "POST", "/api/v3/order/test", binance_order())
    assert found.rule == "endpoint"
    assert "POST /api/v3/order " in str(found) + " " and "does not cover the path" in str(found)
    # naming all three lets it through; a parameter only the test endpoint takes narrows it to that one
    three = ["POST /api/v3/order", "POST /api/v3/order/test", "POST /sapi/v1/margin/order"]
    state({"allow": three}, "binance-hmac").authorize_request("POST", "/api/v3/order/test", binance_order(), b"", NOW)
    only_test = state({"allow": ["POST /api/v3/order/test"]}, "binance-hmac")
    authorized = only_test.authorize_request("POST", "/api/v3/order/test", binance_order(computeCommissionRates="true"), b"", NOW)
    assert authorized.endpoints == ("POST /api/v3/order/test",)


def test_a_query_signature_would_also_cancel() -> None:
    params = (("symbol", "BTCUSDT"), ("orderId", "12345"), ("timestamp", str(NOW)))
    found = refusal(state({"allow": ["GET /api/v3/order"]}, "binance-hmac"), "GET", "/api/v3/order", params)
    assert found.rule == "endpoint" and "DELETE /api/v3/order" in str(found)
    authorized = state(None, "binance-hmac").authorize_request("GET", "/api/v3/order", params, b"", NOW)
    assert authorized.kind == "cancel" and "DELETE /api/v3/order" in authorized.endpoints


@pytest.mark.parametrize("claimed", ["GET /api/v3/account", "GET /api/v3/openOrders", "GET /api/v3/rateLimit/order", "POST /api/v3/order"])
def test_a_bare_timestamp_could_enable_fast_withdrawals(claimed: str) -> None:
    method, path = claimed.split()
    for params in ((), (("timestamp", str(NOW)),), (("recvWindow", "5000"),)):
        found = refusal(state(None, "binance-hmac"), method, path, params)
        assert found.rule == "security" and "enableFastWithdrawSwitch" in str(found)


def test_a_bare_timestamp_is_signed_when_the_switches_are_named() -> None:
    allow = permissive("binance")["allow"] + ["POST /sapi/v1/account/enableFastWithdrawSwitch", "POST /sapi/v1/account/disableFastWithdrawSwitch"]
    authorized = state({"allow": allow}, "binance-hmac").authorize_request("GET", "/api/v3/account", (), b"", NOW)
    assert "POST /sapi/v1/account/enableFastWithdrawSwitch" in authorized.endpoints
    # an account read with a parameter the switches do not take needs no such naming
    read = state(None, "binance-hmac").authorize_request("GET", "/api/v3/account", (("omitZeroBalances", "true"),), b"", NOW)
    assert read.endpoints == ("GET /api/v3/account",) and read.kind == "read"


BINANCE_FUNDS = {
    "withdraw": (("coin", "BTC"), ("address", "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh"), ("amount", "1"), ("network", "BTC")),
    "asset transfer": (("type", "MAIN_UMFUTURE"), ("asset", "USDT"), ("amount", "100")),
    "sub-account transfer": (("fromAccountType", "SPOT"), ("toAccountType", "SPOT"), ("asset", "USDT"), ("amount", "1"), ("toEmail", "a@b.c")),
    "sub to master": (("asset", "USDT"), ("amount", "1")),
    "margin borrow": (("asset", "USDT"), ("isIsolated", "FALSE"), ("symbol", "BTCUSDT"), ("amount", "1"), ("type", "BORROW")),
    "dust": (("asset", "ETH"),),
}


@pytest.mark.parametrize("params", BINANCE_FUNDS.values(), ids=BINANCE_FUNDS.keys())
@pytest.mark.parametrize("claimed", ["POST /api/v3/order", "GET /api/v3/account", "DELETE /api/v3/order", "GET /api/v3/myTrades", "PUT /x"])
def test_fund_moving_parameter_sets_are_refused_whatever_the_claimed_endpoint(params: tuple, claimed: str) -> None:
    method, path = claimed.split()
    for document in (None, permissive("binance", symbols=["BTCUSDT"])):
        found = refusal(state(document, "binance-hmac"), method, path, params + (("timestamp", str(NOW)),))
        assert found.rule == "funds" and "moves funds" in str(found)


def test_unknown_and_duplicate_parameters() -> None:
    binance = state(None, "binance-hmac")
    unknown = refusal(binance, "POST", "/api/v3/order", binance_order(reduceOnly="true"))
    assert unknown.rule == "unknown_parameter" and "'reduceOnly'" in str(unknown)
    missing = refusal(binance, "POST", "/api/v3/order", binance_order(side=None))
    assert missing.rule == "unknown_parameter" and "'side'" in str(missing)
    duplicate = refusal(binance, "POST", "/api/v3/order", binance_order() + (("quantity", "0.02"),))
    assert duplicate.rule == "duplicate_parameter" and "'quantity'" in str(duplicate)
    reserved = refusal(binance, "POST", "/api/v3/order", binance_order(signature="ab"))
    assert reserved.rule == "unknown_parameter" and "'signature'" in str(reserved)


@pytest.mark.parametrize("value", [" 0.1", "0.1 ", "0.1%", "1%2E0", "1&side=SELL", "1=2", "+1", "1e3", "01.5", "1.", ".5", "-1", "0x10", "１", "1\x01", "", "1" * 40])
def test_non_canonical_quantities_are_refused(value: str) -> None:
    found = refusal(state({"freshness": {"enabled": False}}, "binance-hmac"), "POST", "/api/v3/order", binance_order(quantity=value))
    assert found.rule == "non_canonical" and "quantity" in str(found)


@pytest.mark.parametrize("value", ["a b", "a%20b", "a&b", "a=b", "a\x01b", "ä", "a\nb", "x" * 257])
def test_non_canonical_values_are_refused(value: str) -> None:
    found = refusal(state(None, "binance-hmac"), "POST", "/api/v3/order", binance_order(newClientOrderId=value))
    assert found.rule == "non_canonical" and "newClientOrderId" in str(found)


@pytest.mark.parametrize("name", ["sym bol", "symbol=", "a&b", "", "1abc", "s\x01ymbol", "x" * 65])
def test_non_canonical_names_are_refused(name: str) -> None:
    found = refusal(state(None, "binance-hmac"), "POST", "/api/v3/order", binance_order() + ((name, "1"),))
    assert found.rule == "non_canonical" and "parameter name" in str(found)


def test_a_body_is_refused_params_only() -> None:
    found = refusal(state(None, "binance-hmac"), "POST", "/api/v3/order", (), b"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1")
    assert found.rule == "non_canonical" and "params" in str(found)


def test_freshness_of_the_client_timestamp() -> None:
    def order(timestamp: int, recv_window: str | None = None) -> tuple:
        return binance_order(timestamp=str(timestamp), recvWindow=recv_window)

    fresh = state(None, "binance-hmac")
    fresh.authorize_request("POST", "/api/v3/order", order(NOW - 5000), b"", NOW)
    fresh.authorize_request("POST", "/api/v3/order", order(NOW + 5000, "5000"), b"", NOW)
    fresh.authorize_request("POST", "/api/v3/order", binance_order(timestamp=None), b"", NOW)  # the enclave adds its own
    old = refusal(fresh, "POST", "/api/v3/order", order(NOW - 5001))
    assert old.rule == "freshness" and "enclave clock" in str(old)
    new = refusal(fresh, "POST", "/api/v3/order", order(NOW + 60_000))
    assert new.rule == "freshness" and "60000 ms" in str(new)
    window = refusal(fresh, "POST", "/api/v3/order", order(NOW, "5001"))
    assert window.rule == "recv_window" and "at most 5000" in str(window)
    assert refusal(fresh, "POST", "/api/v3/order", order(NOW, "5e3")).rule == "recv_window"
    assert refusal(fresh, "POST", "/api/v3/order", binance_order(timestamp="1700000000000000000")).rule == "non_canonical"
    tight = state({"freshness": {"max_skew_ms": 100, "max_recv_window_ms": 1000}}, "binance-hmac")
    assert refusal(tight, "POST", "/api/v3/order", order(NOW - 101)).rule == "freshness"
    assert refusal(tight, "POST", "/api/v3/order", order(NOW, "1001")).rule == "recv_window"


def test_freshness_can_be_switched_off() -> None:
    off = state({"freshness": {"enabled": False}}, "binance-hmac")
    authorized = off.authorize_request("POST", "/api/v3/order", binance_order(timestamp="1499827319559", recvWindow="60000"), b"", NOW)
    assert ("timestamp", "1499827319559") in authorized.params


def test_symbol_allowlist_covers_orders_and_cancels() -> None:
    policy = state({"symbols": ["BTCUSDT"]}, "binance-hmac")
    policy.authorize_request("POST", "/api/v3/order", binance_order(), b"", NOW)
    order = refusal(policy, "POST", "/api/v3/order", binance_order(symbol="ETHUSDT"))
    assert order.rule == "symbol" and "'ETHUSDT'" in str(order) and "allowlist" in str(order)
    cancel = refusal(policy, "DELETE", "/api/v3/order", (("symbol", "ETHUSDT"), ("orderId", "1")))
    assert cancel.rule == "symbol"
    cancel_all = refusal(policy, "DELETE", "/api/v3/openOrders", (("symbol", "ETHUSDT"),))
    assert cancel_all.rule == "symbol"


def test_max_quantity_and_max_notional() -> None:
    policy = state({"max_quantity": "0.5", "max_notional": "10000"}, "binance-hmac")
    policy.authorize_request("POST", "/api/v3/order", binance_order(quantity="0.5", price="20000"), b"", NOW)
    quantity = refusal(policy, "POST", "/api/v3/order", binance_order(quantity="0.51", price="1"))
    assert quantity.rule == "max_quantity" and "0.51" in str(quantity) and "above" in str(quantity)
    notional = refusal(policy, "POST", "/api/v3/order", binance_order(quantity="0.5", price="20000.01"))
    assert notional.rule == "max_notional" and "10000.005" in str(notional)
    market = refusal(policy, "POST", "/api/v3/order", binance_order(type="MARKET", timeInForce=None, price=None))
    assert market.rule == "notional_unknown" and "cannot be computed" in str(market)
    quote = binance_order(type="MARKET", timeInForce=None, price=None, quantity=None, quoteOrderQty="10001")
    assert refusal(state({"max_notional": "10000"}, "binance-hmac"), "POST", "/api/v3/order", quote).rule == "max_notional"
    within = state({"max_notional": "10000"}, "binance-hmac").authorize_request("POST", "/api/v3/order", binance_order(type="MARKET", timeInForce=None, price=None, quantity=None, quoteOrderQty="10000"), b"", NOW)
    assert within.notional == Decimal("10000") and within.quantity is None


def test_a_quote_quantity_cannot_dodge_max_quantity() -> None:
    # MARKET BUY quoteOrderQty=1000000 buys any amount of base: with only max_quantity set it was signed
    quote = binance_order(type="MARKET", timeInForce=None, price=None, quantity=None, quoteOrderQty="1000000")
    found = refusal(state({"max_quantity": "0.5"}, "binance-hmac"), "POST", "/api/v3/order", quote)
    assert found.rule == "quantity_unknown" and "quote quantity" in str(found)
    per_symbol = refusal(state({"per_symbol": {"BTCUSDT": {"max_quantity": "0.5"}}}, "binance-hmac"), "POST", "/api/v3/order", quote)
    assert per_symbol.rule == "quantity_unknown" and "for BTCUSDT" in str(per_symbol)


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"type": "MARKET", "timeInForce": None}, "notional_unknown"),  # Binance rejects a price on MARKET; never trust it
        ({"type": "STOP_LOSS", "timeInForce": None, "stopPrice": "1"}, "notional_unknown"),
        ({"pegPriceType": "PRIMARY_PEG"}, "notional_unknown"),  # the exchange picks the price
        ({"type": "LIMIT_MAKER", "timeInForce": None, "price": "1000"}, None),
        ({"type": "STOP_LOSS_LIMIT", "stopPrice": "1", "price": "1000"}, None),
    ],
)
def test_only_a_limit_price_bounds_the_notional(overrides: dict, rule: str | None) -> None:
    params = binance_order(**{"quantity": "1", "price": "1000", **overrides})
    policy = state({"max_notional": "1000"}, "binance-hmac")
    if rule is None:
        assert policy.authorize_request("POST", "/api/v3/order", params, b"", NOW).notional == Decimal("1000")
    else:
        assert refusal(policy, "POST", "/api/v3/order", params).rule == rule


def test_per_symbol_limits_are_tighter() -> None:
    policy = state({"max_quantity": "1", "per_symbol": {"BTCUSDT": {"max_quantity": "0.1", "max_notional": "3000"}}}, "binance-hmac")
    policy.authorize_request("POST", "/api/v3/order", binance_order(symbol="ETHUSDT", quantity="1"), b"", NOW)
    tight = refusal(policy, "POST", "/api/v3/order", binance_order(quantity="0.2"))
    assert tight.rule == "max_quantity" and "for BTCUSDT" in str(tight)
    notional = refusal(policy, "POST", "/api/v3/order", binance_order(quantity="0.1", price="30001"))
    assert notional.rule == "max_notional" and "for BTCUSDT" in str(notional)
    policy.authorize_request("POST", "/api/v3/order", binance_order(quantity="0.1", price="30000"), b"", NOW)
    assert refusal(policy, "POST", "/api/v3/order", binance_order(symbol="ETHUSDT", quantity="1.1")).rule == "max_quantity"


def test_notional_window_accumulates_and_expires() -> None:
    policy = state({"notional_window": {"seconds": 60, "max_notional": "1000"}}, "binance-hmac")

    def order(notional: str, at: int) -> Authorized:
        return policy.authorize_request("POST", "/api/v3/order", binance_order(quantity="1", price=notional, timestamp=str(at)), b"", at)

    order("600", NOW)
    order("300", NOW + 10_000)
    found = refusal(policy, "POST", "/api/v3/order", binance_order(quantity="1", price="101", timestamp=str(NOW + 20_000)), now=NOW + 20_000)
    assert found.rule == "notional_window" and "1001" in str(found) and "60 s" in str(found)
    order("100", NOW + 20_000)  # exactly at the cap
    assert refusal(policy, "POST", "/api/v3/order", binance_order(quantity="1", price="1", timestamp=str(NOW + 59_999)), now=NOW + 59_999).rule == "notional_window"
    order("600", NOW + 60_000)  # the first order has left the window
    market = refusal(policy, "POST", "/api/v3/order", binance_order(type="MARKET", timeInForce=None, price=None))
    assert market.rule == "notional_unknown" and "window" in str(market)
    # cancels and reads are not orders: no window, no rate
    policy.authorize_request("DELETE", "/api/v3/order", (("symbol", "BTCUSDT"), ("orderId", "1")), b"", NOW + 60_000)


def test_rate_is_a_token_bucket() -> None:
    policy = state({"rate": {"per_second": "2", "burst": 3}, "freshness": {"enabled": False}}, "binance-hmac")
    for _ in range(3):
        policy.authorize_request("POST", "/api/v3/order", binance_order(), b"", NOW)
    found = refusal(policy, "POST", "/api/v3/order", binance_order())
    assert found.rule == "rate" and "2 orders per second" in str(found) and "bursts of 3" in str(found)
    assert refusal(policy, "POST", "/api/v3/order", binance_order(), now=NOW + 499).rule == "rate"
    policy.authorize_request("POST", "/api/v3/order", binance_order(), b"", NOW + 500)  # one token back
    assert refusal(policy, "POST", "/api/v3/order", binance_order(), now=NOW + 500).rule == "rate"
    for _ in range(3):  # a long pause refills to the burst, not beyond
        policy.authorize_request("POST", "/api/v3/order", binance_order(), b"", NOW + 100_000)
    assert refusal(policy, "POST", "/api/v3/order", binance_order(), now=NOW + 100_000).rule == "rate"
    # cancels and reads are never rate-limited
    policy.authorize_request("DELETE", "/api/v3/openOrders", (("symbol", "BTCUSDT"),), b"", NOW + 100_000)


def test_refused_requests_consume_no_tokens_and_no_window() -> None:
    policy = state({"max_quantity": "1", "rate": {"per_second": "1", "burst": 2}, "notional_window": {"seconds": 60, "max_notional": "1000"}}, "binance-hmac")

    def order(quantity: str, price: str, at: int = NOW) -> tuple:
        return binance_order(quantity=quantity, price=price, timestamp=str(at))

    policy.authorize_request("POST", "/api/v3/order", order("1", "500"), b"", NOW)
    assert refusal(policy, "POST", "/api/v3/order", order("2", "1")).rule == "max_quantity"
    assert refusal(policy, "POST", "/api/v3/order", order("1", "501")).rule == "notional_window"
    assert refusal(policy, "POST", "/api/v3/order", order("1", "x")).rule == "non_canonical"
    policy.authorize_request("POST", "/api/v3/order", order("1", "400"), b"", NOW)  # the second token is still there
    assert refusal(policy, "POST", "/api/v3/order", order("1", "1")).rule == "rate"
    # the rate refusal did not count its notional: after a refill exactly 100 is left
    policy.authorize_request("POST", "/api/v3/order", order("1", "100", NOW + 1000), b"", NOW + 1000)


def test_verdicts_are_remembered_per_shape_but_values_are_checked_every_time() -> None:
    policy = state({"symbols": ["BTCUSDT"], "max_quantity": "1"}, "binance-hmac")
    for _ in range(3):
        policy.authorize_request("POST", "/api/v3/order", binance_order(), b"", NOW)
        assert refusal(policy, "POST", "/api/v3/order", binance_order(symbol="ETHUSDT")).rule == "symbol"
        assert refusal(policy, "POST", "/api/v3/order", binance_order(quantity="2")).rule == "max_quantity"
        assert refusal(policy, "GET", "/api/v3/account", ()).rule == "security"


# == Binance WebSocket API ======================================================================
def test_websocket_orders_with_implicit_api_key_and_timestamp() -> None:
    ws = state(None, "binance-ws-hmac")
    params = tuple((name, value) for name, value in binance_order() if name != "timestamp")
    authorized = ws.authorize_request("WS", "order.place", params, b"", NOW)
    assert authorized.endpoints == ("WS order.place", "WS order.test") and authorized.kind == "order"
    only_test = refusal(state({"allow": ["WS order.test"]}, "binance-ws-hmac"), "WS", "order.test", params)
    assert only_test.rule == "endpoint" and "WS order.place" in str(only_test)
    assert refusal(ws, "WS", "order.place", params + (("signature", "x"),)).rule == "unknown_parameter"
    limited = state({"max_quantity": "0.001"}, "binance-ws-hmac")
    assert refusal(limited, "WS", "order.place", params).rule == "max_quantity"


@pytest.mark.parametrize("params", [(), (("recvWindow", "5000"),), (("timestamp", str(NOW)),)])
@pytest.mark.parametrize("claimed", ["account.status", "openOrders.status", "session.logon", "order.place"])
def test_websocket_logon_parameters_are_refused_as_session(params: tuple, claimed: str) -> None:
    found = refusal(state(None, "binance-ws-hmac"), "WS", claimed, params)
    assert found.rule == "session" and "session.logon" in str(found) and "unsigned session" in str(found)


def test_websocket_logon_when_named() -> None:
    allow = permissive("binance-ws")["allow"] + ["WS session.logon"]
    authorized = state({"allow": allow}, "binance-ws-hmac").authorize_request("WS", "session.logon", (), b"", NOW)
    assert "WS session.logon" in authorized.endpoints
    status = state(None, "binance-ws-hmac").authorize_request("WS", "account.status", (("omitZeroBalances", "true"),), b"", NOW)
    assert status.endpoints == ("WS account.status",)


def test_websocket_cancel_replace_is_judged_as_the_order_it_places_and_alone() -> None:
    """``order.cancelReplace`` (ccxt.pro's edit_order_ws): its required ``cancelReplaceMode`` is
    taken by no other method, so its parameters are its own; the order it places meets the limits."""
    params = tuple((name, value) for name, value in binance_order() if name != "timestamp") + (("cancelReplaceMode", "STOP_ON_FAILURE"), ("cancelOrderId", "1"))
    authorized = state(None, "binance-ws-hmac").authorize_request("WS", "order.cancelReplace", params, b"", NOW)
    assert authorized.endpoints == ("WS order.cancelReplace",) and authorized.kind == "order"
    assert refusal(state({"max_quantity": "0.001"}, "binance-ws-hmac"), "WS", "order.cancelReplace", params).rule == "max_quantity"
    assert refusal(state({"symbols": ["ETHUSDT"]}, "binance-ws-hmac"), "WS", "order.cancelReplace", params).rule == "symbol"
    without_mode = tuple(pair for pair in params if pair[0] != "cancelReplaceMode")
    assert "needs the parameter 'cancelReplaceMode'" in str(refusal(state(None, "binance-ws-hmac"), "WS", "order.cancelReplace", without_mode))


@pytest.mark.parametrize(("catalogue", "name"), [("binance", "POST /api/v3/order/cancelReplace"), ("binance-ws", "WS order.cancelReplace")])
def test_no_other_endpoint_accepts_a_cancel_replace_s_parameter_sets(catalogue: str, name: str) -> None:
    [replace] = [endpoint for endpoint in CATALOGUES[catalogue] if endpoint.name == name]
    accepted = replace.required | replace.optional
    for other in CATALOGUES[catalogue]:
        if other is not replace:  # a set both accept holds both's required names, within both's accepted names
            assert not (replace.required | other.required) <= accepted & (other.required | other.optional), other.name


# == Bybit: GET query vs POST JSON body ========================================================
BYBIT_ORDER = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01", "price": "30000", "timeInForce": "GTC"}


def test_bybit_formats_decide_which_endpoints_a_signature_fits() -> None:
    bybit = state(None, "bybit-hmac")
    read = bybit.authorize_request("GET", "/v5/order/realtime", (("category", "linear"), ("symbol", "BTCUSDT")), b"", NOW)
    assert set(read.endpoints) == {"GET /v5/order/realtime", "GET /v5/order/history", "GET /v5/position/list"} and read.kind == "read"
    as_body = bybit.authorize_request("POST", "/v5/order/realtime", (), json_body(category="linear", symbol="BTCUSDT"), NOW)
    assert "POST /v5/order/cancel" in as_body.endpoints and not any(e.startswith("GET") for e in as_body.endpoints)
    only_reads = {"allow": ["GET /v5/order/realtime", "GET /v5/order/history", "GET /v5/position/list"]}
    state(only_reads, "bybit-hmac").authorize_request("GET", "/v5/order/realtime", (("category", "linear"), ("symbol", "BTCUSDT")), b"", NOW)
    found = refusal(state(only_reads, "bybit-hmac"), "POST", "/v5/order/realtime", (), json_body(category="linear", symbol="BTCUSDT"))
    assert found.rule == "endpoint" and "POST /v5/order/" in str(found)


def test_bybit_bodies_are_parsed_strictly() -> None:
    bybit = state(None, "bybit-hmac")
    duplicate = refusal(bybit, "POST", "/v5/order/create", (), b'{"category":"linear","symbol":"BTCUSDT","symbol":"ETHUSDT"}')
    assert duplicate.rule == "duplicate_parameter" and "'symbol'" in str(duplicate)
    floating = refusal(bybit, "POST", "/v5/order/create", (), b'{"category":"linear","qty":0.1}')
    assert floating.rule == "non_canonical" and "float" in str(floating)
    nested = refusal(bybit, "POST", "/v5/order/create", (), b'{"category":"linear","symbol":{"a":"b"}}')
    assert nested.rule == "non_canonical" and "nested" in str(nested)
    listed = refusal(bybit, "POST", "/v5/order/create", (), b'{"category":["linear"]}')
    assert listed.rule == "non_canonical" and "nested" in str(listed)
    null = refusal(bybit, "POST", "/v5/order/create", (), b'{"category":null}')
    assert null.rule == "non_canonical"
    mixed = refusal(bybit, "POST", "/v5/order/create", (("category", "linear"),), json_body(**BYBIT_ORDER))
    assert mixed.rule == "non_canonical" and "JSON body" in str(mixed)
    for bad in (b"[1]", b"{", b"\xff", b'{"a":NaN}', b'"x"', b'{"category":"linear"} {}'):
        assert refusal(bybit, "POST", "/v5/order/create", (), bad).rule == "non_canonical", bad
    get_body = refusal(bybit, "GET", "/v5/order/realtime", (), b'{"category":"linear"}')
    assert get_body.rule == "non_canonical" and "params" in str(get_body)
    surrogate = refusal(bybit, "POST", "/v5/order/cancel", (), b'{"category":"\\ud800","symbol":"BTCUSDT"}')
    assert surrogate.rule == "non_canonical"  # used to escape as UnicodeEncodeError


def test_bybit_bodies_are_reserialised_compactly_in_the_given_order() -> None:
    sent = b'{ "symbol" : "BTCUSDT",\n "category": "linear", "side":"Buy", "orderType":"Limit", "qty":"0.01", "price": "30000", "reduceOnly": false, "positionIdx": 0 }'
    authorized = state(None, "bybit-hmac").authorize_request("POST", "/v5/order/create", (), sent, NOW)
    assert authorized.body == b'{"symbol":"BTCUSDT","category":"linear","side":"Buy","orderType":"Limit","qty":"0.01","price":"30000","reduceOnly":false,"positionIdx":0}'
    assert authorized.params == ()  # a JSON body is signed as the body; its fields are not query parameters
    assert authorized.endpoints == ("POST /v5/order/create",) and authorized.notional == Decimal("300")


@pytest.mark.parametrize(
    ("path", "body", "rule"),
    [
        ("/v5/asset/transfer/inter-transfer", {"transferId": "42d3a1b6", "coin": "USDT", "amount": "100", "fromAccountType": "UNIFIED", "toAccountType": "FUND"}, "funds"),
        ("/v5/asset/transfer/universal-transfer", {"transferId": "1", "coin": "USDT", "amount": "1", "fromMemberId": "1", "toMemberId": "2", "fromAccountType": "UNIFIED", "toAccountType": "UNIFIED"}, "funds"),
        ("/v5/asset/withdraw/create", {"coin": "USDT", "chain": "ETH", "address": "0xabc", "amount": "10", "timestamp": NOW, "forceChain": 0}, "funds"),
        ("/v5/position/set-leverage", {"category": "linear", "symbol": "BTCUSDT", "buyLeverage": "100", "sellLeverage": "100"}, "settings"),
    ],
)
@pytest.mark.parametrize("claimed", ["/v5/order/create", "/v5/order/cancel", None])
def test_bybit_fund_moving_and_settings_bodies_are_refused(path: str, body: dict, rule: str, claimed: str | None) -> None:
    found = refusal(state(permissive("bybit"), "bybit-hmac"), "POST", claimed or path, (), json.dumps(body).encode())
    assert found.rule == rule and path in str(found)


def test_bybit_order_limits() -> None:
    policy = state({"symbols": ["BTCUSDT"], "max_quantity": "0.1", "max_notional": "5000"}, "bybit-hmac")
    policy.authorize_request("POST", "/v5/order/create", (), json_body(**BYBIT_ORDER), NOW)
    assert refusal(policy, "POST", "/v5/order/create", (), json_body(**{**BYBIT_ORDER, "qty": "0.2", "price": "1"})).rule == "max_quantity"
    assert refusal(policy, "POST", "/v5/order/create", (), json_body(**{**BYBIT_ORDER, "price": "500001"})).rule == "max_notional"
    assert refusal(policy, "POST", "/v5/order/create", (), json_body(**{**BYBIT_ORDER, "symbol": "ETHUSDT"})).rule == "symbol"
    assert refusal(policy, "POST", "/v5/order/create", (), json_body(**{**BYBIT_ORDER, "qty": 1})).rule == "max_quantity"  # an int counts too
    amend = refusal(policy, "POST", "/v5/order/amend", (), json_body(category="linear", symbol="BTCUSDT", orderId="1", qty="0.5"))
    assert amend.rule == "max_quantity"


def test_bybit_market_orders_ignore_price_so_it_does_not_bound_the_notional() -> None:
    # Bybit: "Market order will ignore this field" — qty=100 price=1 used to pass as notional 100
    market = json_body(**{**BYBIT_ORDER, "orderType": "Market", "qty": "100", "price": "1"})
    found = refusal(state({"max_notional": "1000"}, "bybit-hmac"), "POST", "/v5/order/create", (), market)
    assert found.rule == "notional_unknown"
    assert state({"max_quantity": "100"}, "bybit-hmac").authorize_request("POST", "/v5/order/create", (), market, NOW).notional is None


def test_bybit_cancels_are_not_refused_for_their_unknown_notional() -> None:
    # A cancel's body also fits /v5/order/amend (an amend that changes nothing); with a notional cap
    # every cancel used to be refused as notional_unknown.
    policy = state({"max_notional": "1000", "notional_window": {"seconds": 60, "max_notional": "1000"}}, "bybit-hmac")
    authorized = policy.authorize_request("POST", "/v5/order/cancel", (), json_body(category="linear", symbol="BTCUSDT", orderId="abc"), NOW)
    assert "POST /v5/order/cancel" in authorized.endpoints and authorized.notional is None
    price_only = refusal(policy, "POST", "/v5/order/amend", (), json_body(category="linear", symbol="BTCUSDT", orderId="abc", price="10"))
    assert price_only.rule == "notional_unknown"


# == OKX: method and path signed ===============================================================
OKX_ORDER = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01", "px": "30000"}


def test_okx_endpoints_are_decided_by_method_and_path() -> None:
    okx = state(None, "okx-hmac")
    authorized = okx.authorize_request("POST", "/api/v5/trade/order", (), json_body(**OKX_ORDER), NOW)
    assert authorized.endpoints == ("POST /api/v5/trade/order",) and authorized.notional == Decimal("300")
    assert okx.authorize_request("GET", "/api/v5/trade/order", (("instId", "BTC-USDT"), ("ordId", "1")), b"", NOW).kind == "read"
    for method, path in (("POST", "/api/v5/trade/orders"), ("POST", "/api/v5/trade/order/"), ("GET", "/api/v5/asset/withdrawal"), ("POST", "/API/v5/trade/order")):
        found = refusal(okx, method, path, (), json_body(**OKX_ORDER) if method != "GET" else b"")
        assert found.rule == "endpoint" and "not an endpoint" in str(found), (method, path)
    assert refusal(okx, "DELETE", "/api/v5/trade/order", (("instId", "BTC-USDT"),)).rule == "endpoint"
    assert refusal(okx, "DELETE", "/api/v5/trade/order", (), b"{}").rule == "non_canonical"  # only POST carries a JSON body
    withdrawal = refusal(okx, "POST", "/api/v5/asset/withdrawal", (), json_body(ccy="USDT", amt="100", dest="4", toAddr="0xabc", chain="USDT-ERC20"))
    assert withdrawal.rule == "funds" and "moves funds" in str(withdrawal)
    transfer = refusal(state(permissive("okx"), "okx-hmac"), "POST", "/api/v5/asset/transfer", (), json_body(ccy="USDT", amt="1", **{"from": "6", "to": "18"}))
    assert transfer.rule == "funds"
    leverage = refusal(okx, "POST", "/api/v5/account/set-leverage", (), json_body(lever="100", mgnMode="cross"))
    assert leverage.rule == "settings" and "settings" in str(leverage)
    unknown = refusal(okx, "POST", "/api/v5/trade/order", (), json_body(**OKX_ORDER, toAddr="0xabc"))
    assert unknown.rule == "unknown_parameter" and "'toAddr'" in str(unknown)
    query = refusal(okx, "GET", "/api/v5/account/balance", (("ccy", "BTC"), ("amt", "1")))
    assert query.rule == "unknown_parameter" and "'amt'" in str(query)


def test_okx_sizes_and_amends() -> None:
    policy = state({"symbols": ["BTC-USDT"], "max_quantity": "0.1", "max_notional": "5000"}, "okx-hmac")
    assert refusal(policy, "POST", "/api/v5/trade/order", (), json_body(**{**OKX_ORDER, "sz": "0.11", "px": "1"})).rule == "max_quantity"
    assert refusal(policy, "POST", "/api/v5/trade/order", (), json_body(**{**OKX_ORDER, "sz": "0.1", "px": "50001"})).rule == "max_notional"
    assert refusal(policy, "POST", "/api/v5/trade/order", (), json_body(**{**OKX_ORDER, "instId": "ETH-USDT"})).rule == "symbol"
    market = json_body(**{**OKX_ORDER, "side": "sell", "ordType": "market", "px": "1", "sz": "0.1"})
    assert refusal(policy, "POST", "/api/v5/trade/order", (), market).rule == "notional_unknown"  # px is ignored by a market order
    market_buy = json_body(**{**OKX_ORDER, "ordType": "market", "sz": "0.1"})  # a spot market buy's sz is quote by default
    assert refusal(policy, "POST", "/api/v5/trade/order", (), market_buy).rule == "quantity_unknown"
    amend = lambda **fields: json_body(instId="BTC-USDT", ordId="1", **fields)  # noqa: E731
    policy.authorize_request("POST", "/api/v5/trade/amend-order", (), amend(newSz="0.1", newPx="50000"), NOW)
    size = refusal(policy, "POST", "/api/v5/trade/amend-order", (), amend(newSz="0.2", newPx="1"))
    assert size.rule == "max_quantity" and "0.2" in str(size)
    notional = refusal(policy, "POST", "/api/v5/trade/amend-order", (), amend(newSz="0.1", newPx="50001"))
    assert notional.rule == "max_notional"
    assert refusal(policy, "POST", "/api/v5/trade/amend-order", (), amend(newPx="50001")).rule == "notional_unknown"
    assert refusal(policy, "POST", "/api/v5/trade/amend-order", (), json_body(instId="ETH-USDT", ordId="1", newSz="0.01")).rule == "symbol"
    assert policy.authorize_request("POST", "/api/v5/trade/cancel-order", (), json_body(instId="BTC-USDT", ordId="1"), NOW).kind == "cancel"


# == Kraken: path signed, nonce implicit ========================================================
def kraken_order(**overrides: str) -> tuple:
    fields = {"ordertype": "limit", "type": "buy", "volume": "0.01", "pair": "XBTUSD", "price": "30000", **overrides}
    return tuple(fields.items())


def test_kraken_orders_and_limits() -> None:
    policy = state({"symbols": ["XBTUSD"], "max_quantity": "0.1", "max_notional": "5000"}, "kraken")
    authorized = policy.authorize_request("POST", "/0/private/AddOrder", kraken_order(), b"", NOW)
    assert authorized.endpoints == ("POST /0/private/AddOrder",) and authorized.notional == Decimal("300")
    # A nonce chosen by the host could be signed now and used much later: the enclave sets it.
    assert refusal(policy, "POST", "/0/private/AddOrder", kraken_order() + (("nonce", str(NOW)),)).rule == "freshness"
    unchecked = state({"freshness": {"enabled": False}}, "kraken")
    assert unchecked.authorize_request("POST", "/0/private/AddOrder", kraken_order() + (("nonce", "1"),), b"", NOW).kind == "order"
    assert refusal(policy, "POST", "/0/private/AddOrder", kraken_order(volume="0.2", price="1")).rule == "max_quantity"
    assert refusal(policy, "POST", "/0/private/AddOrder", kraken_order(volume="0.1", price="50001")).rule == "max_notional"
    assert refusal(policy, "POST", "/0/private/AddOrder", kraken_order(pair="ETHUSD")).rule == "symbol"
    assert refusal(policy, "POST", "/0/private/AddOrder", kraken_order(ordertype="market", price="1")).rule == "notional_unknown"
    assert refusal(policy, "POST", "/0/private/AddOrder", kraken_order(price="+1.5")).rule == "non_canonical"  # relative prices
    assert refusal(policy, "POST", "/0/private/EditOrder", (("txid", "O1"), ("pair", "XBTUSD"), ("volume", "0.2"))).rule == "max_quantity"
    assert refusal(policy, "POST", "/0/private/addorder", kraken_order()).rule == "endpoint"


def test_a_parameterless_bybit_get_is_refused_under_every_policy_that_allows_no_more_than_the_catalogue() -> None:
    """ccxt's account-type reads (GET /v5/user/query-api, /v5/account/info) sign an empty payload,
    the bytes an empty-bodied POST such as /v5/user/delete-api would carry: not catalogued, so
    refused (docs/policy.md, "ccxt's defaults"); a WebSocket auth is another format, not a GET."""
    for document in (None, permissive("bybit")):
        for path in ("/v5/user/query-api", "/v5/account/info", "/v5/asset/coin/query-info"):
            assert refusal(state(document, "bybit-hmac"), "GET", path, ()).rule == "unknown_parameter"
    assert refusal(state(None, "bybit-hmac"), "WS", "auth", ()).rule == "session"


def test_kraken_amend_order_is_sized_by_its_own_fields_and_needs_a_symbol_where_the_policy_limits_symbols() -> None:
    """AmendOrder (ccxt's edit_order) names the new size and price order_qty and limit_price, and no pair."""
    capped = state({"max_quantity": "0.1", "max_notional": "5000"}, "kraken")
    amended = capped.authorize_request("POST", "/0/private/AmendOrder", (("txid", "O1"), ("order_qty", "0.1"), ("limit_price", "30000")), b"", NOW)
    assert (amended.kind, amended.quantity, amended.notional) == ("amend", Decimal("0.1"), Decimal("3000"))
    assert refusal(capped, "POST", "/0/private/AmendOrder", (("txid", "O1"), ("order_qty", "0.2"))).rule == "max_quantity"
    assert refusal(capped, "POST", "/0/private/AmendOrder", (("txid", "O1"), ("order_qty", "0.1"), ("limit_price", "50001"))).rule == "max_notional"
    assert refusal(capped, "POST", "/0/private/AmendOrder", (("txid", "O1"), ("limit_price", "+5"))).rule == "non_canonical"  # relative prices
    assert refusal(capped, "POST", "/0/private/AmendOrder", (("txid", "O1"), ("post_only", "True"))).rule == "non_canonical"
    # Without a pair, neither the allowlist nor per-symbol caps could apply: refused where the policy has them.
    for document in ({"symbols": ["XBTUSD"]}, {"per_symbol": {"XBTUSD": {"max_quantity": "0.1"}}}):
        assert refusal(state(document, "kraken"), "POST", "/0/private/AmendOrder", (("txid", "O1"), ("order_qty", "0.01"))).rule == "symbol"
    # ...and under an allowlist even an amend that changes neither: a stop's trigger_price fires an order
    # of whatever pair (tests/attacks/test_attack_review.py). Per-symbol caps alone bound only sizes.
    for change in (("trigger_price", "1"), ("post_only", "true")):
        assert refusal(state({"symbols": ["XBTUSD"]}, "kraken"), "POST", "/0/private/AmendOrder", (("txid", "O1"), change)).rule == "symbol"
    per_symbol = state({"per_symbol": {"XBTUSD": {"max_quantity": "0.1"}}}, "kraken")
    assert per_symbol.authorize_request("POST", "/0/private/AmendOrder", (("txid", "O1"), ("trigger_price", "1")), b"", NOW).kind == "amend"
    # The default policy signs any amend.
    assert state(None, "kraken").authorize_request("POST", "/0/private/AmendOrder", (("txid", "O1"), ("order_qty", "5")), b"", NOW).quantity == Decimal("5")
    # EditOrder keeps reading volume and price.
    assert refusal(capped, "POST", "/0/private/EditOrder", (("txid", "O1"), ("pair", "XBTUSD"), ("volume", "0.2"))).rule == "max_quantity"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/0/private/Withdraw", (("asset", "XBT"), ("key", "my-wallet"), ("amount", "1"))),
        ("/0/private/WalletTransfer", (("asset", "XBT"), ("from", "Spot"), ("to", "Futures"), ("amount", "1"))),
        ("/0/private/WithdrawCancel", (("asset", "XBT"), ("refid", "AGBSO6T"))),
    ],
)
def test_kraken_fund_moving_endpoints_are_refused(path: str, params: tuple) -> None:
    for document in (None, permissive("kraken")):
        found = refusal(state(document, "kraken"), "POST", path, params)
        assert found.rule == "funds" and path in str(found)
    # the same fields sent to a trade path are another request, and fit nothing there
    assert refusal(state(None, "kraken"), "POST", "/0/private/AddOrder", params).rule == "unknown_parameter"


# == Coinbase: only method and path decide =====================================================
def test_coinbase_decides_on_method_and_path_only() -> None:
    coinbase = state(None, "coinbase-jwt")
    body = b'{"client_order_id":"1","product_id":"BTC-USD","side":"BUY","order_configuration":{"market_market_ioc":{"quote_size":"1000000"}}}'
    authorized = coinbase.authorize_request("POST", "/api/v3/brokerage/orders", (), body, NOW)
    assert authorized.body == body and authorized.kind == "order"  # the body is not covered, so not checked
    move = refusal(coinbase, "POST", "/api/v3/brokerage/portfolios/move_funds", (), b"{}")
    assert move.rule == "funds" and "move_funds" in str(move)
    uuid_path = "/v2/accounts/8bfc20d7-f7c6-4422-bf07-8243ca4169fe/transactions"
    send = refusal(state(permissive("coinbase"), "coinbase-jwt"), "POST", uuid_path, (), b'{"type":"send","to":"x","amount":"1","currency":"BTC"}')
    assert send.rule == "funds" and "{account_id}" in str(send)  # a UUID used to fall through as an unknown endpoint
    assert refusal(coinbase, "GET", uuid_path, ()).rule == "endpoint"
    assert refusal(coinbase, "DELETE", "/api/v3/brokerage/orders", ()).rule == "endpoint"
    assert refusal(coinbase, "POST", "/api/v3/brokerage/orders/", (), body).rule == "endpoint"


def test_coinbase_templated_paths_match_one_plain_segment() -> None:
    allow = permissive("coinbase")["allow"] + ["POST /v2/accounts/{account_id}/transactions"]
    named = state({"allow": allow}, "coinbase-jwt")
    named.authorize_request("POST", "/v2/accounts/8bfc20d7-f7c6-4422-bf07-8243ca4169fe/transactions", (), b"{}", NOW)
    named.authorize_request("POST", "/v2/accounts/primary/transactions", (), b"{}", NOW)
    for path in ("/v2/accounts/../transactions", "/v2/accounts/./transactions", "/v2/accounts//transactions", "/v2/accounts/a/b/transactions", "/v2/accounts/a%2Fb/transactions"):
        assert refusal(named, "POST", path, (), b"{}").rule == "endpoint", path


def test_coinbase_rate_limits_orders() -> None:
    policy = state({"rate": {"per_second": "1", "burst": 1}}, "coinbase-jwt")
    policy.authorize_request("POST", "/api/v3/brokerage/orders", (), b"{}", NOW)
    assert refusal(policy, "POST", "/api/v3/brokerage/orders", (), b"{}").rule == "rate"
    policy.authorize_request("GET", "/api/v3/brokerage/accounts", (), b"", NOW)


# == simulate ===================================================================================
STREAM_POLICY = {"symbols": ["BTCUSDT"], "max_quantity": "1", "rate": {"per_second": "1", "burst": 2}}


def recorded(times: list[int]) -> list[dict]:
    order = dict(binance_order(timestamp=None))
    return [
        {"time_ms": times[0], "method": "POST", "path": "/api/v3/order", "params": order},
        {"time_ms": times[1], "method": "POST", "path": "/api/v3/order", "params": {**order, "symbol": "ETHUSDT"}},
        {"time_ms": times[2], "method": "POST", "path": "/api/v3/order", "params": order},
        {"time_ms": times[3], "method": "POST", "path": "/api/v3/order", "params": order},
        {"time_ms": times[4], "method": "GET", "path": "/api/v3/account", "params": {}},
        {"time_ms": times[5], "method": "POST", "path": "/sapi/v1/capital/withdraw/apply", "params": {"coin": "BTC", "address": "x", "amount": "1"}},
        {"time_ms": times[6], "method": "POST", "path": "/api/v3/order", "params": {**order, "quantity": 2}},
        {"time_ms": times[7], "method": "DELETE", "path": "/api/v3/order", "params": [["symbol", "BTCUSDT"], ["orderId", 7]]},
        {"time_ms": times[8], "payload": "00ff"},
        {"time_ms": times[9], "path": "/api/v3/order"},
    ]


def test_simulate_reports_each_refusal_and_why() -> None:
    decisions = simulate(STREAM_POLICY, "binance-hmac", recorded([NOW] * 10))
    assert [(d.line, d.signed, d.rule) for d in decisions] == [
        (1, True, ""),
        (2, False, "symbol"),
        (3, True, ""),
        (4, False, "rate"),
        (5, False, "security"),
        (6, False, "funds"),
        (7, False, "max_quantity"),
        (8, True, ""),
        (9, False, "raw_signing"),
        (10, False, "malformed"),
    ]
    assert decisions[1].request == "POST /api/v3/order" and "'ETHUSDT'" in decisions[1].reason
    assert "enableFastWithdrawSwitch" in decisions[4].reason and "moves funds" in decisions[5].reason
    assert decisions[9].request == "malformed request" and "line 10" in decisions[9].reason


def test_simulate_rate_refusals_follow_the_recorded_times() -> None:
    spaced = simulate(STREAM_POLICY, "binance-hmac", recorded([NOW, NOW, NOW, NOW + 1000] + [NOW + 1000] * 6))
    assert [d.rule for d in spaced][:4] == ["", "symbol", "", ""]
    burst = simulate(STREAM_POLICY, "binance-hmac", recorded([NOW, NOW, NOW, NOW + 999] + [NOW + 999] * 6))
    assert [d.rule for d in burst][:4] == ["", "symbol", "", "rate"]
    # lines without a time keep the last one
    stream = [{"time_ms": NOW, "method": "POST", "path": "/api/v3/order", "params": dict(binance_order(timestamp=None))}] + [
        {"method": "POST", "path": "/api/v3/order", "params": dict(binance_order(timestamp=None))}
    ] * 2
    assert [d.rule for d in simulate(STREAM_POLICY, "binance-hmac", stream)] == ["", "", "rate"]


def test_simulate_bybit_bodies_given_as_objects() -> None:
    decisions = simulate(None, "bybit-hmac", [
        {"time_ms": NOW, "method": "POST", "path": "/v5/order/create", "body": BYBIT_ORDER},
        {"time_ms": NOW, "method": "POST", "path": "/v5/asset/withdraw/create", "body": {"coin": "USDT", "address": "0xabc", "amount": "1", "timestamp": str(NOW)}},
        {"time_ms": NOW, "method": "POST", "path": "/v5/order/create", "body": '{"category":"linear","category":"spot"}'},
    ])
    assert [(d.signed, d.rule) for d in decisions] == [(True, ""), (False, "funds"), (False, "duplicate_parameter")]


# == example policy files =======================================================================
EXAMPLES = {"binance-spot.toml": "binance-hmac", "bybit-linear.toml": "bybit-hmac", "okx-spot.toml": "okx-hmac"}


@pytest.mark.parametrize(("name", "scheme"), EXAMPLES.items())
def test_example_policies_parse_and_refuse_funds(name: str, scheme: str) -> None:
    document = parse_policy_text((POLICIES / name).read_text())
    assert document == load_policy(POLICIES / name) and document["scheme"] == scheme
    policy = SigningPolicy.parse(document, scheme=scheme)
    assert policy.symbols and policy.limits.max_notional is not None and policy.rate is not None
    text = "\n".join(explain(policy))
    assert "WARNING" not in text and "Withdrawals, transfers" in text
    assert len(policy_digest(document)) == 64


def test_example_binance_policy_in_use() -> None:
    policy = PolicyState(SigningPolicy.parse(load_policy(POLICIES / "binance-spot.toml"), scheme="binance-hmac"))
    policy.authorize_request("POST", "/api/v3/order", binance_order(quantity="0.05", price="60000"), b"", NOW)
    policy.authorize_request("DELETE", "/api/v3/order", (("symbol", "BTCUSDT"), ("orderId", "1")), b"", NOW)
    policy.authorize_request("GET", "/api/v3/myTrades", (("symbol", "ETHUSDT"),), b"", NOW)
    assert refusal(policy, "POST", "/api/v3/order", binance_order(quantity="0.2", price="1")).rule == "max_quantity"
    assert refusal(policy, "POST", "/api/v3/order", binance_order(symbol="DOGEUSDT")).rule == "symbol"
    assert refusal(policy, "GET", "/api/v3/account", ()).rule == "security"
    assert refusal(policy, "POST", "/api/v3/order", binance_order(recvWindow="10000")).rule == "recv_window"


def test_example_bybit_policy_in_use() -> None:
    policy = PolicyState(SigningPolicy.parse(load_policy(POLICIES / "bybit-linear.toml"), scheme="bybit-hmac"))
    policy.authorize_request("POST", "/v5/order/create", (), json_body(**BYBIT_ORDER), NOW)
    policy.authorize_request("POST", "/v5/order/cancel", (), json_body(category="linear", symbol="BTCUSDT", orderId="1"), NOW)
    policy.authorize_request("GET", "/v5/position/list", (("category", "linear"), ("symbol", "BTCUSDT")), b"", NOW)
    assert refusal(policy, "POST", "/v5/order/create", (), json_body(**{**BYBIT_ORDER, "qty": "2", "price": "1"})).rule == "max_quantity"
    assert refusal(policy, "POST", "/v5/position/set-leverage", (), json_body(category="linear", symbol="BTCUSDT", buyLeverage="5", sellLeverage="5")).rule == "settings"


def test_example_okx_policy_in_use() -> None:
    policy = PolicyState(SigningPolicy.parse(load_policy(POLICIES / "okx-spot.toml"), scheme="okx-hmac"))
    policy.authorize_request("POST", "/api/v5/trade/order", (), json_body(**OKX_ORDER), NOW)
    assert refusal(policy, "POST", "/api/v5/trade/order", (), json_body(**{**OKX_ORDER, "px": "100000000"})).rule == "max_notional"
    assert refusal(policy, "POST", "/api/v5/trade/amend-order", (), json_body(instId="BTC-USDT", ordId="1", newSz="0.01")).rule == "endpoint"


def test_borrowing_is_refused_unless_the_policy_allows_it() -> None:
    margin_buy = binance_order(sideEffectType="MARGIN_BUY")
    found = refusal(state(None, "binance-hmac"), "POST", "/sapi/v1/margin/order", margin_buy)
    assert found.rule == "borrowing" and "sideEffectType=MARGIN_BUY" in str(found)
    assert state({"borrowing": True}, "binance-hmac").authorize_request("POST", "/sapi/v1/margin/order", margin_buy, b"", NOW).kind == "order"
    assert state(None, "binance-hmac").authorize_request("POST", "/sapi/v1/margin/order", binance_order(sideEffectType="NO_SIDE_EFFECT"), b"", NOW)
    leveraged = json_body(category="spot", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.01", price="30000", isLeverage="1")
    assert refusal(state(None, "bybit-hmac"), "POST", "/v5/order/create", (), leveraged).rule == "borrowing"
    assert refusal(state(None, "kraken"), "POST", "/0/private/AddOrder", kraken_order() + (("leverage", "2"),)).rule == "borrowing"


def test_bybit_recv_window_rides_in_the_header_and_is_capped() -> None:
    body = json_body(category="spot", symbol="BTCUSDT", orderType="Limit", side="Buy", qty="0.01", price="30000")
    authorized = state(None, "bybit-hmac").authorize_request("POST", "/v5/order/create", (("recv_window", "3000"),), body, NOW)
    assert authorized.params == (("recv_window", "3000"),) and authorized.body == body
    assert refusal(state(None, "bybit-hmac"), "POST", "/v5/order/create", (("recv_window", "60000"),), body).rule == "recv_window"
    assert refusal(state(None, "bybit-hmac"), "GET", "/v5/order/realtime", (("category", "spot"), ("recv_window", "1e3"))).rule == "non_canonical"


@pytest.mark.parametrize(("method", "path", "params", "body"), [
    ("POST", "/v5/order/create", (), json_body(category="spot", symbol="BTCUSDT", orderType="Limit", side="Buy", qty="0.01", price="30000")),
    ("GET", "/v5/order/realtime", (("category", "spot"),), b""),
])
def test_bybit_recv_window_left_out_is_capped_too(method: str, path: str, params: tuple, body: bytes) -> None:
    # Left out, the scheme's default window (5000 ms) would be signed whatever the policy's cap.
    tight = state({"freshness": {"max_recv_window_ms": 1000}}, "bybit-hmac")
    assert refusal(tight, method, path, params + (("recv_window", "5000"),), body).rule == "recv_window"
    authorized = tight.authorize_request(method, path, params, body, NOW)
    assert ("recv_window", "1000") in authorized.params and authorized.body == body
    headers = dict(load_key("bybit-hmac", b"bybit-test-secret", "key").sign_http(method, path, authorized.params, authorized.body, NOW).headers)
    assert headers["X-BAPI-RECV-WINDOW"] == "1000"
    # At or above the default, and with freshness off, the scheme's default is what is signed.
    for document in (None, {"freshness": {"max_recv_window_ms": 5000}}, {"freshness": {"enabled": False, "max_recv_window_ms": 1000}}):
        assert ("recv_window", "5000") not in state(document, "bybit-hmac").authorize_request(method, path, params, body, NOW).params


def test_cancels_do_not_spend_rate_tokens() -> None:
    policy = state({"rate": {"per_second": "1", "burst": 1}}, "bybit-hmac")
    order = json_body(category="spot", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.01", price="30000")
    policy.authorize_request("POST", "/v5/order/create", (), order, NOW)
    cancel = json_body(category="spot", symbol="BTCUSDT", orderId="1")
    for _ in range(5):  # fits /v5/order/cancel and a size-less /v5/order/amend: a cancel
        policy.authorize_request("POST", "/v5/order/cancel", (), cancel, NOW)
    assert refusal(policy, "POST", "/v5/order/create", (), order).rule == "rate"



# == issue 8, item 5: spellings, borrowing, symbols, readings ====================================
def unlimited(catalogue: str) -> PolicyState:
    """Every trade and read endpoint, borrowing allowed, no limits that could refuse first."""
    document = permissive(catalogue, borrowing=True, freshness={"enabled": False}, rate={"per_second": "1000000", "burst": 100000})
    return state(document, SCHEME_FOR[catalogue])


def with_value(catalogue: str, endpoint, name: str, value: str) -> tuple:
    fields = [(field, text) for field, text in endpoint_fields(catalogue, endpoint) if field != name] + [(name, value)]
    return request(catalogue, endpoint.method, concrete_path(endpoint.path), fields)


@pytest.mark.parametrize(("catalogue", "endpoint", "name"), ENUMERATED)
def test_every_documented_spelling_is_signed(catalogue: str, endpoint, name: str) -> None:
    policy = unlimited(catalogue)
    for spelling in sorted(endpoint.values[name]):
        authorized = policy.authorize_request(*with_value(catalogue, endpoint, name, spelling), NOW)
        assert endpoint.name in authorized.endpoints


@pytest.mark.parametrize(("catalogue", "endpoint", "name"), ENUMERATED)
def test_every_other_spelling_is_refused_as_non_canonical(catalogue: str, endpoint, name: str) -> None:
    policy = unlimited(catalogue)
    spellings = endpoint.values[name]
    for spelling in sorted(spellings):
        for other in sorted(misspellings(spelling) - spellings):
            if not re.fullmatch(r"[A-Za-z0-9._:,@/+-]*", other):
                continue  # refused as non-canonical characters already
            if other == "" and _reads_empty_as_absent(catalogue, endpoint):
                _assert_judged_as_absent(policy, with_value(catalogue, endpoint, name, other), endpoint, name)
                continue
            found = refusal(policy, *with_value(catalogue, endpoint, name, other))
            assert found.rule == "non_canonical" and name in str(found), (name, other, str(found))


def _reads_empty_as_absent(catalogue: str, endpoint) -> bool:
    exchange = EXCHANGES[catalogue]
    return exchange.empty_means_absent and endpoint.method in exchange.json_body_methods


def _assert_judged_as_absent(policy: PolicyState, sent: tuple, endpoint, name: str) -> None:
    """An empty JSON field of an exchange that reads it as absent (OKX) is not a spelling: the
    request is judged, and signed, without it."""
    if name in endpoint.required:
        found = refusal(policy, *sent)
        assert found.rule == "unknown_parameter" and name in str(found)
    else:
        assert name not in json.loads(policy.authorize_request(*sent, NOW).body)


def test_kraken_order_flags_are_a_list_of_distinct_documented_flags() -> None:
    policy = unlimited("kraken")
    order = (("ordertype", "limit"), ("type", "buy"), ("volume", "1"), ("pair", "XBTUSD"), ("price", "1"))
    for flags in ("post", "post,fcib", "fciq,nompp,post", "viqc"):
        policy.authorize_request("POST", "/0/private/AddOrder", order + (("oflags", flags),), b"", NOW)
    for flags in ("post,post", "POST", "post,", ",post", "post,,fcib", "post fcib", "margin", ""):
        if re.fullmatch(r"[A-Za-z0-9._:,@/+-]*", flags):
            found = refusal(policy, "POST", "/0/private/AddOrder", order + (("oflags", flags),))
            assert found.rule == "non_canonical" and "flags" in str(found), flags


BYBIT_SPOT = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01", "price": "30000"}
OKX_SPOT = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01", "px": "30000"}


@pytest.mark.parametrize(
    ("scheme", "path", "params", "body"),
    [
        ("binance-hmac", "/sapi/v1/margin/order", binance_order(sideEffectType="MARGIN_BUY"), b""),
        ("binance-hmac", "/sapi/v1/margin/order", binance_order(sideEffectType="AUTO_BORROW_REPAY"), b""),
        ("bybit-hmac", "/v5/order/create", (), json_body(**BYBIT_SPOT, isLeverage=1)),
        ("bybit-hmac", "/v5/order/create", (), json_body(**BYBIT_SPOT, isLeverage="1")),
        ("okx-hmac", "/api/v5/trade/order", (), json_body(**{**OKX_SPOT, "tdMode": "cross"})),
        ("okx-hmac", "/api/v5/trade/order", (), json_body(**{**OKX_SPOT, "tdMode": "isolated", "ccy": "USDT"})),
        ("okx-hmac", "/api/v5/trade/order", (), json_body(**{**OKX_SPOT, "tdMode": "spot_isolated"})),
        ("okx-hmac", "/api/v5/trade/order", (), json_body(**{**OKX_SPOT, "quickMgnType": "auto_borrow"})),
        ("okx-hmac", "/api/v5/trade/order", (), json_body(**{**OKX_SPOT, "instId": "BTC-USDT-SWAP", "tdMode": "cross", "posSide": "long"})),
        ("kraken", "/0/private/AddOrder", (("ordertype", "limit"), ("type", "buy"), ("volume", "1"), ("pair", "XBTUSD"), ("price", "1"), ("leverage", "2")), b""),
        ("kraken", "/0/private/AddOrder", (("ordertype", "limit"), ("type", "buy"), ("volume", "1"), ("pair", "XBTUSD"), ("price", "1"), ("leverage", "none")), b""),
    ],
)
def test_every_exchanges_borrowing_parameters_are_refused_unless_allowed(scheme: str, path: str, params: tuple, body: bytes) -> None:
    found = refusal(state(None, scheme), "POST", path, params, body)
    assert found.rule == "borrowing" and "lend" in str(found)
    assert state({"borrowing": True}, scheme).authorize_request("POST", path, params, body, NOW).kind == "order"


def test_coinbase_says_it_cannot_refuse_borrowing() -> None:
    # an order body's leverage and margin_type are not covered by the JWT: no claim to refuse them
    text = "\n".join(explain(SigningPolicy.parse(None, scheme="coinbase-jwt")))
    assert "cannot be refused" in text and "Orders that make the exchange lend" not in text


def test_okx_cash_orders_and_manual_margin_flags_need_no_borrowing() -> None:
    okx = state(None, "okx-hmac")
    okx.authorize_request("POST", "/api/v5/trade/order", (), json_body(**OKX_SPOT), NOW)
    okx.authorize_request("POST", "/api/v5/trade/order", (), json_body(**OKX_SPOT, quickMgnType="manual"), NOW)
    okx.authorize_request("POST", "/api/v5/trade/order", (), json_body(**OKX_SPOT, quickMgnType="auto_repay"), NOW)
    assert "OKX tdMode" in "\n".join(explain(SigningPolicy.parse(None, scheme="okx-hmac")))


@pytest.mark.parametrize(
    ("scheme", "capped", "written"),
    [
        ("binance-hmac", "BTCUSDT", ["btcusdt", "BtcUsdt", "BTCusdt"]),
        ("binance-ws-hmac", "BTCUSDT", ["btcusdt"]),
        ("bybit-hmac", "BTCUSDT", ["btcusdt", "Btcusdt"]),
        ("okx-hmac", "BTC-USDT", ["btc-usdt", "Btc-Usdt"]),
        ("kraken", "XBTUSD", ["xbtusd", "XXBTZUSD", "xxbtzusd", "XBT/USD", "BTC/USD", "BTCUSD"]),
        ("kraken", "XXBTZUSD", ["XBTUSD", "BTCUSD"]),
        ("kraken", "XDGUSD", ["DOGEUSD", "xdg/usd"]),
    ],
)
def test_symbols_are_compared_in_the_exchanges_canonical_form(scheme: str, capped: str, written: list[str]) -> None:
    def order(symbol: str, quantity: str) -> tuple:
        if scheme == "binance-hmac":
            return "POST", "/api/v3/order", binance_order(symbol=symbol, quantity=quantity), b""
        if scheme == "binance-ws-hmac":
            return "WS", "order.place", tuple(p for p in binance_order(symbol=symbol, quantity=quantity) if p[0] != "timestamp"), b""
        if scheme == "bybit-hmac":
            return "POST", "/v5/order/create", (), json_body(**{**BYBIT_SPOT, "symbol": symbol, "qty": quantity})
        if scheme == "okx-hmac":
            return "POST", "/api/v5/trade/order", (), json_body(**{**OKX_SPOT, "instId": symbol, "sz": quantity})
        return "POST", "/0/private/AddOrder", (("ordertype", "limit"), ("type", "buy"), ("volume", quantity), ("pair", symbol), ("price", "1")), b""

    caps = state({"max_quantity": "10", "per_symbol": {capped: {"max_quantity": "0.01"}}}, scheme)
    allowlist = state({"symbols": [capped]}, scheme)
    for symbol in written:
        method, path, params, body = order(symbol, "1")
        found = refusal(caps, method, path, params, body)
        assert found.rule == "max_quantity" and "for " in str(found), symbol
        assert allowlist.authorize_request(method, path, params, body, NOW).symbol == symbol  # signed as written
    other = order("ETHUSDT" if scheme != "okx-hmac" else "ETH-USDT", "1")
    caps.authorize_request(*other, NOW)
    assert refusal(allowlist, *other).rule == "symbol"


def test_a_policy_naming_one_symbol_twice_is_refused() -> None:
    assert "one symbol" in policy_error({"per_symbol": {"BTCUSDT": {"max_quantity": "1"}, "btcusdt": {"max_quantity": "2"}}}, "binance-hmac")
    assert "one symbol" in policy_error({"per_symbol": {"XBTUSD": {"max_quantity": "1"}, "XXBTZUSD": {"max_quantity": "2"}}}, "kraken")
    assert SigningPolicy.parse({"symbols": ["btcusdt", "ETHUSDT"]}, scheme="binance-hmac").symbols == {"BTCUSDT", "ETHUSDT"}


def test_binance_quantity_and_quote_quantity_together_are_limited_by_the_larger() -> None:
    both = binance_order(type="MARKET", timeInForce=None, price=None, quantity="0.001", quoteOrderQty="1000000")
    found = refusal(state({"max_quantity": "0.01"}, "binance-hmac"), "POST", "/api/v3/order", both)
    assert found.rule == "quantity_unknown" and "quote quantity" in str(found)
    assert refusal(state({"max_notional": "1000"}, "binance-hmac"), "POST", "/api/v3/order", both).rule == "notional_unknown"  # a market order's base reading has no price
    limit = binance_order(quantity="1", price="30000", quoteOrderQty="1")
    found = refusal(state({"max_notional": "1000"}, "binance-hmac"), "POST", "/api/v3/order", limit)
    assert found.rule == "max_notional" and "30000" in str(found)
    within = state({"max_notional": "30000"}, "binance-hmac").authorize_request("POST", "/api/v3/order", limit, b"", NOW)
    assert within.notional == Decimal("30000") and within.quantity is None


@pytest.mark.parametrize(
    ("fields", "quantity", "notional"),
    [
        ({"side": "Buy"}, None, Decimal("100")),  # a spot market buy's qty is quote by default
        ({"side": "Sell"}, Decimal("100"), None),
        ({"side": "Buy", "marketUnit": "quoteCoin"}, None, Decimal("100")),
        ({"side": "Buy", "marketUnit": "baseCoin"}, None, None),  # a classic account ignores marketUnit
        ({"side": "Sell", "marketUnit": "quoteCoin"}, None, None),
        ({"side": "Sell", "marketUnit": "baseCoin"}, Decimal("100"), None),
        ({"side": "Buy", "category": "linear"}, Decimal("100"), None),
    ],
)
def test_bybit_market_order_units_are_read_every_way_the_exchange_could(fields: dict, quantity, notional) -> None:
    order = {**BYBIT_SPOT, "orderType": "Market", "qty": "100", **fields}
    order.pop("price")
    authorized = state(None, "bybit-hmac").authorize_request("POST", "/v5/order/create", (), json_body(**order), NOW)
    assert (authorized.quantity, authorized.notional) == (quantity, notional)


@pytest.mark.parametrize(
    ("fields", "quantity", "notional"),
    [
        ({"side": "buy"}, None, Decimal("100")),  # tgtCcy defaults to quote_ccy for buys
        ({"side": "sell"}, Decimal("100"), None),
        ({"side": "buy", "tgtCcy": "base_ccy"}, Decimal("100"), None),
        ({"side": "sell", "tgtCcy": "quote_ccy"}, None, Decimal("100")),
        ({"side": "buy", "instId": "BTC-USDT-SWAP", "tdMode": "cross"}, Decimal("100"), None),  # contracts
    ],
)
def test_okx_market_order_units_follow_tgtccy(fields: dict, quantity, notional) -> None:
    order = {**OKX_SPOT, "ordType": "market", "sz": "100", **fields}
    order.pop("px")
    authorized = state({"borrowing": True}, "okx-hmac").authorize_request("POST", "/api/v5/trade/order", (), json_body(**order), NOW)
    assert (authorized.quantity, authorized.notional) == (quantity, notional)


def test_kraken_volume_in_quote_currency_counts_both_ways() -> None:
    order = (("ordertype", "limit"), ("type", "buy"), ("volume", "2"), ("pair", "XBTUSD"), ("price", "30000"), ("oflags", "post,viqc"))
    authorized = state(None, "kraken").authorize_request("POST", "/0/private/AddOrder", order, b"", NOW)
    assert (authorized.quantity, authorized.notional) == (None, Decimal("60000"))
    assert refusal(state({"max_quantity": "5"}, "kraken"), "POST", "/0/private/AddOrder", order).rule == "quantity_unknown"


# == issue 8, item 3: bounded sizes ===============================================================
def test_refusal_reasons_are_a_few_hundred_bytes_whatever_the_request() -> None:
    binance = state(None, "binance-hmac")
    names = tuple((f"n{index:02d}".ljust(64, "x"), "1") for index in range(64))
    for path in ("/x", "/api/v3/order", "/" + "é" * 1000):
        found = refusal(binance, "POST", path[:1000], names)
        assert len(str(found).encode()) <= 300
    okx = state(None, "okx-hmac")
    assert len(str(refusal(okx, "POST", "/" + "€" * 1000, (), b"{}")).encode()) <= 300
    assert str(Refusal("x", "é" * 1000)).endswith("...") and len(str(Refusal("x", "é" * 1000)).encode()) <= 300
    assert str(Refusal("x", "a\ud800b")) == "a\\ud800b"  # always encodable in a frame
    assert len(str(PolicyError("p" * 10_000)).encode()) <= 300


@pytest.mark.parametrize(
    ("scheme", "method", "path", "params", "body", "what"),
    [
        ("binance-hmac", "POST", "/api/v3/order", tuple((f"p{index}", "1") for index in range(65)), b"", "parameters"),
        ("kraken", "POST", "/0/private/AddOrder", tuple((f"p{index}", "1") for index in range(14_000)), b"", "parameters"),
        ("bybit-hmac", "POST", "/v5/order/create", (), b'{"a":"' + b"x" * (64 * 1024) + b'"}', "body"),
        ("coinbase-jwt", "POST", "/api/v3/brokerage/orders", (), b"x" * (64 * 1024 + 1), "body"),  # echoed with the JWT: it must fit a frame
        ("okx-hmac", "POST", "/" + "a" * 1024, (), b"{}", "path"),
        ("okx-hmac", "POST", "/api/v5/trade/order", (), json_body(**{f"f{index}": "1" for index in range(65)}), "fields"),
    ],
)
def test_a_request_too_large_to_judge_is_refused_early(scheme: str, method: str, path: str, params: tuple, body: bytes, what: str) -> None:
    found = refusal(state(None, scheme), method, path, params, body)
    assert found.rule == "too_large" and what in str(found)


def test_every_catalogued_endpoint_fits_the_size_limits() -> None:
    largest = max(len(e.required | e.optional) for endpoints in CATALOGUES.values() for e in endpoints)
    assert largest + 2 <= engine._MAX_PARAMETERS  # + Bybit's recv_window and an implicit field
    assert max(len(e.path) for endpoints in CATALOGUES.values() for e in endpoints) < engine._MAX_PATH


def test_remembered_verdicts_stay_within_their_byte_budget() -> None:
    policy = state(None, "binance-hmac")
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for shape in range(3000):
            params = tuple((f"s{shape:04d}n{index:02d}".ljust(64, "x"), "1") for index in range(60))
            refusal(policy, "POST", "/api/v3/order", params)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # What the engine's code, and this test's requests, allocated that is still alive: the requests'
    # names are the test's strings, kept only if the cache keeps them. (Not other modules' caches
    # filled meanwhile, which made a whole-process figure depend on the tests run before.)
    kept_by = [tracemalloc.Filter(True, str(Path(engine.__file__).parent / "*")), tracemalloc.Filter(True, __file__)]
    retained = sum(stat.size_diff for stat in after.filter_traces(kept_by).compare_to(before.filter_traces(kept_by), "filename"))
    verdicts = policy._verdicts
    assert verdicts.bytes <= limits.VERDICT_BYTES and len(verdicts) < 3000
    assert retained <= limits.VERDICT_BYTES  # the estimate is generous: what is kept is less
    # nothing remembered holds an exception (its traceback would keep the request alive)
    assert not any(isinstance(verdict, BaseException) for verdict, _ in verdicts._entries.values())
    # the bot's own shapes still get remembered, and still decide the same
    policy.authorize_request("POST", "/api/v3/order", binance_order(), b"", NOW)
    assert refusal(policy, "POST", "/api/v3/order", binance_order(symbol="ETH USDT")).rule == "non_canonical"


def test_the_notional_window_keeps_a_bounded_number_of_sums() -> None:
    policy = state({"notional_window": {"seconds": 31 * 86400, "max_notional": "1000000000"}, "rate": {"per_second": "100000", "burst": 100000}}, "binance-hmac")
    for index in range(20_000):
        at = NOW + index * 1000  # one order a second for 20,000 s
        policy.authorize_request("POST", "/api/v3/order", binance_order(quantity="1", price="1", timestamp=str(at)), b"", at)
    assert len(policy._window) <= 20_000 * 1000 // (31 * 86400 * 1000 // limits.WINDOW_BUCKETS) + 1
    assert window_total(policy._window, NOW + 20_000 * 1000) == Decimal(20_000)  # nothing lost: buckets only ever over-count


# == issue 8, item 7: untrusted policy text fails typed ==========================================
@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 100_000 + "]" * 100_000,
        "x = " + "{a = " * 5000 + "1" + "}" * 5000,
        '{"per_symbol": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        "[" * 100_000,
    ],
)
def test_deeply_nested_policy_text_is_a_policy_error(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text)
    assert len(str(info.value)) <= 300


def test_policy_commands_fail_typed_on_deeply_nested_files(tmp_path, capsys) -> None:
    nested = tmp_path / "nested.toml"
    nested.write_text("x = " + "[" * 100_000 + "]" * 100_000)
    assert cli(["policy", "check", str(nested), "--scheme", "binance-hmac"]) == 1
    assert "nested too deeply" in capsys.readouterr().err
    good, log = tmp_path / "good.toml", tmp_path / "requests.jsonl"
    good.write_text('scheme = "binance-hmac"\n')
    log.write_text('{"method": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert cli(["policy", "simulate", str(good), "--requests", str(log)]) == 1
    assert "not a JSON line" in capsys.readouterr().err
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert cli(["policy", "check", str(binary), "--scheme", "binance-hmac"]) == 1


def test_simulate_reports_nested_requests_as_malformed() -> None:
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    decisions = simulate(None, "binance-hmac", [{"method": "POST", "path": "/api/v3/order", "params": {"symbol": nested}}, {"method": nested, "path": "/x"}])
    assert [decision.rule for decision in decisions] == ["malformed", "malformed"]
    assert all(len(decision.reason) <= 300 for decision in decisions)


def test_every_documented_spelling_is_in_docs_policy_md() -> None:
    text = (POLICIES.parent.parent.parent / "docs" / "policy.md").read_text()
    for catalogue, endpoints in CATALOGUES.items():
        for endpoint in endpoints:
            for name, spellings in endpoint.values.items():
                row = next((line for line in text.splitlines() if line.startswith(f"| {catalogue} | `{name}` |")), None)
                assert row is not None, f"docs/policy.md has no row for {catalogue} {name}"
                assert all(f"`{spelling}`" in row for spelling in spellings), (catalogue, name)
                assert isinstance(spellings, Flags) == ("comma-separated" in row), (catalogue, name)


# -- OKX: null and "" mean absent ------------------------------------------------------------------
# python-okx's TradeAPI.place_order for a market buy: every optional field "" and attachAlgoOrds null,
# serialised with json.dumps' default separators.
PYTHON_OKX_MARKET = {
    "instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "market", "sz": "100", "ccy": "", "clOrdId": "", "tag": "",
    "posSide": "", "px": "", "reduceOnly": "", "tgtCcy": "", "stpMode": "", "attachAlgoOrds": None, "pxUsd": "", "pxVol": "",
    "banAmend": "", "tradeQuoteCcy": "",
}


def test_okx_null_and_empty_fields_are_judged_and_signed_as_absent() -> None:
    okx = state({"max_notional": "1000"}, "okx-hmac")
    authorized = okx.authorize_request("POST", "/api/v5/trade/order", (), json.dumps(PYTHON_OKX_MARKET).encode(), NOW)
    assert authorized.body == b'{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"market","sz":"100"}'
    assert authorized.kind == "order" and authorized.notional == Decimal(100)  # a spot market buy's sz is quote
    over = refusal(okx, "POST", "/api/v5/trade/order", (), json.dumps({**PYTHON_OKX_MARKET, "sz": "1001"}).encode())
    assert over.rule == "max_notional"


@pytest.mark.parametrize("empty", ["", None], ids=["empty", "null"])
def test_okx_an_empty_field_never_skips_a_check(empty: object) -> None:
    okx = state({"max_notional": "1000"}, "okx-hmac")
    # A limit order whose px is empty has no price: its notional is unknown, not "0".
    limit = json.dumps({**OKX_SPOT, "px": empty}).encode()
    assert refusal(okx, "POST", "/api/v5/trade/order", (), limit).rule == "notional_unknown"
    # A required field left empty is missing; an empty margin mode is not read as cash.
    for field in ("tdMode", "sz", "instId"):
        found = refusal(okx, "POST", "/api/v5/trade/order", (), json.dumps({**OKX_SPOT, field: empty}).encode())
        assert found.rule == "unknown_parameter" and field in str(found)
    # Under a quantity cap, an empty tgtCcy leaves the market buy quoted (its default), so refused.
    capped = state({"max_quantity": "1"}, "okx-hmac")
    market = {**OKX_SPOT, "ordType": "market", "px": "", "tgtCcy": empty}
    assert refusal(capped, "POST", "/api/v5/trade/order", (), json.dumps(market).encode()).rule == "quantity_unknown"


def test_only_okx_reads_null_and_empty_as_absent() -> None:
    bybit_order = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01", "price": "30000"}
    found = refusal(state(None, "bybit-hmac"), "POST", "/v5/order/create", (), json.dumps({**bybit_order, "orderLinkId": None}).encode())
    assert found.rule == "non_canonical"
    authorized = state(None, "bybit-hmac").authorize_request("POST", "/v5/order/create", (), json.dumps({**bybit_order, "orderLinkId": ""}).encode(), NOW)
    assert b'"orderLinkId":""' in authorized.body


def test_explain_names_the_nonce_unit_of_a_kraken_key():
    default = "\n".join(explain(SigningPolicy.parse(None, scheme="kraken")))
    migrated = "\n".join(explain(SigningPolicy.parse({"nonce": {"per_second": 100000000}}, scheme="kraken")))
    assert "nonce from its clock, 1000 per second" in default
    assert "nonce from its clock, 100000000 per second" in migrated
    assert "nonce" not in "\n".join(explain(SigningPolicy.parse(None, scheme="binance-hmac")))


# == Unicode symbols (issue 10) =================================================================
FULL_WIDTH = "１２３４５６"  # Binance's official non-ASCII example symbol
UNICODE_SYMBOLS = [FULL_WIDTH, "币安人生USDT", "ÀÉÎUSDT", "АBCUSDT", "ΟKBUSDT", "١٢٣USDT"]  # Cyrillic А, Greek Ο, Arabic-Indic digits
NOT_SYMBOLS = {
    "E\u0301USDT": "NFC",  # É written as E + combining acute: not NFC
    "BTC\u200dUSDT": "(Cf)",  # zero-width joiner
    "BTC\u200fUSDT": "(Cf)",  # right-to-left mark
    "\u202eTDSUCTB": "(Cf)",  # right-to-left override
    "BTC\u3000USDT": "(Zs)",  # ideographic space
    "BTC\u2028USDT": "(Zl)",
    "BTC\x85USDT": "(Cc)",
    "BTC1\u0301": "(Mn)",  # a combining mark with nothing to compose with
    "ßUSDT": "upper case",  # upper-cases to SSUSDT
    "аBCUSDT": "upper case",  # lower-case Cyrillic а
    "BTC€": "(Sc)",
    "ＢＴＣＵＳＤＴ": "compatibility form",  # full-width Latin letters (full-width digits are symbols: Binance's example)
    "ｶｶUSDT": "compatibility form",  # half-width katakana
    "币" * 41: "1 to 40",
}


def _unicode_order(scheme: str, symbol: str, quantity: str = "1") -> tuple[str, str, tuple, bytes]:
    """An order for ``symbol`` as each scheme's requests carry it."""
    if scheme == "binance-hmac":
        return "POST", "/api/v3/order", binance_order(symbol=symbol, quantity=quantity), b""
    if scheme == "binance-ws-hmac":
        return "WS", "order.place", tuple(p for p in binance_order(symbol=symbol, quantity=quantity) if p[0] != "timestamp"), b""
    if scheme == "bybit-hmac":
        return "POST", "/v5/order/create", (), json_body(**{**BYBIT_SPOT, "symbol": symbol, "qty": quantity})
    if scheme == "okx-hmac":
        return "POST", "/api/v5/trade/order", (), json_body(**{**OKX_SPOT, "instId": symbol, "sz": quantity})
    return "POST", "/0/private/AddOrder", (("ordertype", "limit"), ("type", "buy"), ("volume", quantity), ("pair", symbol), ("price", "1")), b""


UNICODE_SCHEMES = ["binance-hmac", "binance-ws-hmac", "bybit-hmac", "okx-hmac", "kraken"]


@pytest.mark.parametrize("symbol", UNICODE_SYMBOLS)
def test_a_policy_may_name_symbols_of_any_script(symbol: str) -> None:
    document = normalize_document({"symbols": [symbol], "per_symbol": {symbol: {"max_quantity": "1"}}})
    assert document["symbols"] == [symbol] and list(document["per_symbol"]) == [symbol]
    assert SigningPolicy.parse({"symbols": ["币安人生USDT"]}, scheme="binance-hmac").symbols == {"币安人生USDT"}


@pytest.mark.parametrize(("symbol", "reason"), NOT_SYMBOLS.items(), ids=[ascii(symbol)[:24] for symbol in NOT_SYMBOLS])
def test_a_policy_refuses_symbol_names_that_are_not_nfc_letters_and_digits(symbol: str, reason: str) -> None:
    for document in ({"symbols": ["BTCUSDT", symbol]}, {"per_symbol": {symbol: {"max_quantity": "1"}}}):
        message = policy_error(document)
        assert "is not a symbol name" in message and reason in message
        assert "\u200d" not in message and "\u202e" not in message and "\u2028" not in message  # shown escaped


@pytest.mark.parametrize("scheme", UNICODE_SCHEMES)
@pytest.mark.parametrize("symbol", UNICODE_SYMBOLS)
def test_a_unicode_symbol_is_allowed_capped_and_signed_as_written(scheme: str, symbol: str) -> None:
    order = _unicode_order(scheme, symbol)
    authorized = state({"symbols": [symbol]}, scheme).authorize_request(*order, NOW)
    assert authorized.symbol == symbol
    capped = state({"per_symbol": {symbol: {"max_quantity": "0.5"}}}, scheme)
    found = refusal(capped, *order)
    assert found.rule == "max_quantity" and symbol in str(found)
    assert refusal(state({"symbols": ["BTCUSDT"]}, scheme), *order).rule == "symbol"


@pytest.mark.parametrize("scheme", UNICODE_SCHEMES)
@pytest.mark.parametrize(
    ("listed", "requested"),
    [
        (FULL_WIDTH, "123456"),  # full-width digits are a different Binance symbol: never NFKC-folded
        ("123456", FULL_WIDTH),
        ("ABCUSDT", "АBCUSDT"),  # Cyrillic А
        ("АBCUSDT", "ABCUSDT"),
        ("OKBUSDT", "ΟKBUSDT"),  # Greek omicron
        ("ΑBCUSDT", "АBCUSDT"),  # Greek Α, Cyrillic А
    ],
)
def test_look_alike_symbols_are_distinct_symbols(scheme: str, listed: str, requested: str) -> None:
    order = _unicode_order(scheme, requested)
    assert refusal(state({"symbols": [listed]}, scheme), *order).rule == "symbol"
    capped = state({"per_symbol": {listed: {"max_quantity": "0.5"}}}, scheme)
    assert capped.authorize_request(*order, NOW).symbol == requested  # the cap is the other symbol's


@pytest.mark.parametrize("scheme", UNICODE_SCHEMES)
@pytest.mark.parametrize("symbol", list(NOT_SYMBOLS))
def test_a_request_for_a_symbol_that_is_not_nfc_letters_and_digits_is_non_canonical(scheme: str, symbol: str) -> None:
    found = refusal(state(None, scheme), *_unicode_order(scheme, symbol))
    assert found.rule == "non_canonical"


def test_only_the_symbol_parameter_may_be_non_ascii() -> None:
    found = refusal(state(None, "binance-hmac"), "POST", "/api/v3/order", binance_order(symbol=FULL_WIDTH, newClientOrderId="注文1"))
    assert found.rule == "non_canonical" and "newClientOrderId" in str(found)
    found = refusal(state(None, "okx-hmac"), "POST", "/api/v5/trade/order", (), json_body(**OKX_SPOT, clOrdId="注文1"))
    assert found.rule == "non_canonical" and "clOrdId" in str(found)


def test_the_official_binance_non_ascii_vector_passes_the_policy_and_signs_to_the_published_signature() -> None:
    vector = next(v for v in json.loads((Path(__file__).parent / "data" / "exchange-vectors" / "binance-rest.json").read_text("utf-8"))["vectors"] if v["id"] == "hmac-non-ascii-symbol")
    request_ = vector["request"]
    params = tuple((name, value) for name, value in request_["params"])
    policy = state({"symbols": [FULL_WIDTH], "max_quantity": "1", "freshness": {"enabled": False}}, "binance-hmac")
    authorized = policy.authorize_request(request_["method"], request_["path"], params, b"", NOW)
    signed = load_key("binance-hmac", vector["secret"].encode(), vector["api_key"]).sign_http(request_["method"], request_["path"], authorized.params, authorized.body, 0)
    assert signed.query == vector["expected"]["query"]
    assert signed.query.endswith("&signature=e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3")
    assert refusal(state({"symbols": ["123456"], "freshness": {"enabled": False}}, "binance-hmac"), "POST", "/api/v3/order", params).rule == "symbol"


def test_a_binance_keep_priority_amend_is_a_trade_sized_by_its_new_quantity() -> None:
    """binance-sdk-spot's ``order_amend_keep_priority``: ``newQty`` is the order's new size, checked
    against the caps; its parameter set fits no other endpoint."""
    policy = state({"symbols": ["BTCUSDT"], "max_quantity": "0.01"}, "binance-hmac")
    amend = (("symbol", "BTCUSDT"), ("newQty", "0.005"), ("orderId", "12345"), ("timestamp", str(NOW)))
    authorized = policy.authorize_request("PUT", "/api/v3/order/amend/keepPriority", amend, b"", NOW)
    assert authorized.endpoints == ("PUT /api/v3/order/amend/keepPriority",) and authorized.kind == "amend"
    assert authorized.quantity == Decimal("0.005")
    assert refusal(policy, "PUT", "/api/v3/order/amend/keepPriority", (("symbol", "BTCUSDT"), ("newQty", "0.02"), ("orderId", "1"))).rule == "max_quantity"
    assert refusal(policy, "PUT", "/api/v3/order/amend/keepPriority", (("symbol", "ETHUSDT"), ("newQty", "0.001"), ("orderId", "1"))).rule == "symbol"
    assert refusal(policy, "PUT", "/api/v3/order/amend/keepPriority", (("symbol", "BTCUSDT"), ("newQty", "1e-3"), ("orderId", "1"))).rule == "non_canonical"
