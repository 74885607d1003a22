"""Property tests through the real enclave: for every exchange scheme, generated orders within the
policy are signed exactly as an independent reference (written from the exchange's docs) signs
them, and generated fund-moving requests are always refused.

The enclave stamps the time itself (its own clock), so each check reads the time the enclave used
back from the signed request and gives the same time to the reference.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hypothesis import HealthCheck, given, settings

import reference_signers as reference
from pytest_zerocopy.strategies import fund_moving_requests, orders
from zerocopy import PolicyRefused

pytestmark = pytest.mark.zerocopy

PROPERTY = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LIMITS = {"max_quantity": "5", "max_price": "50000"}
SCHEMES = ["binance-hmac", "binance-rsa", "binance-ed25519", "binance-ws-hmac", "bybit-hmac", "bybit-rsa", "okx-hmac", "kraken", "coinbase-jwt"]


def _policy(scheme: str) -> str:
    limits = "" if scheme == "coinbase-jwt" else f'max_quantity = "{LIMITS["max_quantity"]}"\n'
    return f'scheme = "{scheme}"\n{limits}rate = {{ per_second = "10000", burst = 10000 }}\n'


@pytest.fixture(scope="module")
def keys(zerocopy_key):
    return {scheme: zerocopy_key(scheme, policy=_policy(scheme)) for scheme in SCHEMES}


def _expected(key, request, signed):
    """The reference's signature for the same request at the time the enclave stamped on it."""
    params, body = list(request.params), request.body.encode()
    scheme = key.scheme
    if scheme.startswith("binance-") and scheme != "binance-ws-hmac":
        now = int(dict(parse_qsl(signed.query))["timestamp"])
        return reference.binance_rest(scheme, key.secret, key.api_key, params, body, now).query
    if scheme == "binance-ws-hmac":
        now = int(json.loads(signed.body)["timestamp"])
        return reference.binance_ws(key.secret, key.api_key, params, now).body.decode()
    if scheme.startswith("bybit-"):
        now = int(signed.headers["X-BAPI-TIMESTAMP"])
        return dict(reference.bybit(scheme, key.secret, key.api_key, request.method, params, body, now).headers)
    if scheme == "okx-hmac":
        from datetime import datetime

        stamp = signed.headers["OK-ACCESS-TIMESTAMP"]
        now = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
        return dict(reference.okx(key.secret, key.api_key, request.method, request.path, params, body, now).headers)
    if scheme == "kraken":
        nonce = dict(parse_qsl(signed.body))["nonce"]
        return dict(reference.kraken(key.secret, key.api_key, request.path, params, int(nonce)).headers)
    raise AssertionError(scheme)


def _actual(key, signed):
    if key.scheme.startswith("binance-") and key.scheme != "binance-ws-hmac":
        return signed.query
    if key.scheme == "binance-ws-hmac":
        return signed.body
    return signed.headers


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "coinbase-jwt"])
def test_generated_orders_sign_like_the_reference(scheme, keys, zerocopy_signer):
    key = keys[scheme]

    @PROPERTY
    @given(request=orders(scheme, **LIMITS))
    def check(request):
        signed = zerocopy_signer.sign_request(key.name, **request.call_args())
        assert _actual(key, signed) == _expected(key, request, signed)

    check()


def test_generated_coinbase_orders_get_a_jwt_that_verifies(keys, zerocopy_signer):
    key = keys["coinbase-jwt"]
    public_key = load_pem_public_key(key.public_key)

    @PROPERTY
    @given(request=orders("coinbase-jwt"))
    def check(request):
        signed = zerocopy_signer.sign_request(key.name, **request.call_args())
        token = signed.headers["Authorization"].removeprefix("Bearer ")
        header, claims = reference.coinbase_check(public_key, key.api_key, request.method, request.path, _jwt_nbf(token) * 1000, token)
        assert claims["uri"] == f"{request.method} api.coinbase.com{request.path}"

    check()


def _jwt_nbf(token: str) -> int:
    return json.loads(reference.b64url_decode(token.split(".")[1]))["nbf"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_generated_fund_moving_requests_are_always_refused(scheme, keys, zerocopy_signer):
    key = keys[scheme]

    @PROPERTY
    @given(request=fund_moving_requests(scheme))
    def check(request):
        with pytest.raises(PolicyRefused) as refused:
            zerocopy_signer.sign_request(key.name, **request.call_args())
        assert refused.value.rule in {"funds", "security", "session", "settings", "endpoint", "unknown_parameter"}

    check()


@pytest.mark.parametrize("scheme", ["binance-hmac", "bybit-hmac", "okx-hmac", "kraken"])
def test_generated_orders_above_the_limit_are_refused(scheme, keys, zerocopy_signer):
    key = keys[scheme]

    @PROPERTY
    @given(request=orders(scheme, max_quantity="500", max_price="10"))
    def check(request):
        from decimal import Decimal

        if Decimal(request.meta["quantity"]) <= Decimal(LIMITS["max_quantity"]):
            return
        with pytest.raises(PolicyRefused) as refused:
            zerocopy_signer.sign_request(key.name, **request.call_args())
        assert refused.value.rule == "max_quantity"

    check()
